//! The project's vfio-user controller under the stock Linux nvme driver.

use p2pnvme_ci::*;

const DEV0: &str = "$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1)";

#[test]
fn nvme_cli_sees_a_complete_controller() {
    let s = guest_ok(
        &["--nvme", "1", "--namespaces", "2"],
        &format!(
            "D={DEV0}; nvme list; nvme id-ctrl $D | grep -E '^(mn|sn|ver|mdts|oncs|sgls|nn) '; \
             nvme id-ns $D | grep -E '^(nsze|lbaf  0)'; nvme smart-log $D | grep -E 'temperature|spare'; \
             nvme error-log $D -e 1 | grep error_count; nvme get-log $D -i 0xc0 -l 112 | head -2; \
             nvme get-feature $D -f 7 -H | grep -i 'Number of IO'"
        ),
    );
    assert!(s.contains("p2pnvme CMB controller"), "{s}");
    assert!(s.contains("ver       : 0x20000"), "NVMe 2.0: {s}");
    assert!(s.contains("mdts      : 7"), "{s}");
    // SGLs, bit bucket, and lists longer than the data (blktests nvme/046).
    assert!(s.contains("sgls      : 0x50001"), "{s}");
    assert!(s.contains("nn        : 2"), "{s}");
    assert!(
        s.contains("nsze    : 0x80000"),
        "256 MiB of 512 B blocks: {s}"
    );
    assert!(s.contains("log-id:192"), "{s}");
    assert_eq!(s.matches("/dev/nvme0n").count(), 2, "two namespaces: {s}");
}

#[test]
fn fio_verify_with_several_jobs_and_queues() {
    let s = guest_ok(
        &["--nvme", "1"],
        &format!(
            "fio --name=v --filename={DEV0} --rw=randwrite --bsrange=4k-256k --size=16M \
             --offset_increment=16M --numjobs=2 --iodepth=16 --ioengine=libaio --direct=1 \
             --verify=crc32c --verify_fatal=1 --output-format=terse && \
             grep -c . /sys/block/nvme0n1/mq/*/cpu_list"
        ),
    );
    // Terse v3: field 5 is the job's error code.
    for line in s.lines().filter(|l| l.starts_with("3;fio")) {
        assert_eq!(line.split(';').nth(4), Some("0"), "{line}");
    }
    assert_eq!(s.lines().filter(|l| l.starts_with("3;fio")).count(), 2);
}

#[test]
fn the_stock_driver_uses_shadow_doorbells() {
    // QD1 reads: without shadow doorbells each costs two doorbell register
    // writes (SQ tail, CQ head); with them only the SQ tail of an idle
    // device rings. Admin commands at boot always ring both.
    let dir = tempfile_dir("dbbuf");
    let stats = dir.join("stats.json");
    guest_ok(
        &["--nvme", "1", "--stats-json", stats.to_str().unwrap()],
        &format!("dd if={DEV0} of=/dev/null bs=4k count=1000 iflag=direct"),
    );
    let doc: StatsDoc = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let c = &doc.controllers[0];
    let (cmds, rings) = (c.commands, c.doorbell_writes);
    assert!(cmds >= 1000, "{c:?}");
    assert!(
        (rings as f64) < 1.5 * cmds as f64,
        "{rings} doorbell writes for {cmds} commands: shadow doorbells unused"
    );
}

#[test]
fn ext4_survives_a_reboot_through_the_backing_file() {
    let dir = tempfile_dir("ext4");
    let d = dir.to_str().unwrap();
    let a = guest_ok(
        &["--nvme", "1", "--lba", "4096", "--backing-dir", d],
        &format!(
            "mkfs.ext4 -q {DEV0} && mount {DEV0} /mnt && dd if=/dev/urandom of=/mnt/f bs=1M count=8 2>/dev/null \
             && cp /mnt/f /mnt/g && sha256sum /mnt/f /mnt/g && umount /mnt"
        ),
    );
    let b = guest_ok(
        &["--nvme", "1", "--lba", "4096", "--backing-dir", d],
        &format!("mount {DEV0} /mnt && sha256sum /mnt/f /mnt/g && umount /mnt"),
    );
    let sums = |s: &str| {
        s.lines()
            .filter(|l| l.contains("/mnt/"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(sums(&a).len(), 2);
    assert_eq!(sums(&a), sums(&b));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cmb_published_with_and_without_sqs_in_it() {
    let s = guest_ok(
        &["--nvme", "2"],
        "sh /opt/p2pnvme/ci/check-p2pmem.sh 2 partial",
    );
    assert_eq!(s.matches("published=1 size=16777216").count(), 2, "{s}");
    let s = guest_ok(
        &["--nvme", "2", "--append", "nvme.use_cmb_sqes=0"],
        "sh /opt/p2pnvme/ci/check-p2pmem.sh 2 full",
    );
    assert_eq!(s.matches("available=16777216").count(), 2, "{s}");
}

#[test]
fn user_space_p2pmem_read_lands_in_the_cmb_not_in_ram() {
    let s = guest_ok(&["--nvme", "1"], "sh /opt/p2pnvme/ci/p2pmem-read.sh");
    assert!(
        s.contains("p2pmem read: guest RAM data +0 CMB data +4194304"),
        "{s}"
    );
    assert!(
        s.contains("ordinary read: guest RAM data +4194304 CMB data +0"),
        "{s}"
    );
}
