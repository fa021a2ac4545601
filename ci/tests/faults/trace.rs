//! The device's command trace (`--trace`) of a plain fio read.

use super::*;

#[test]
fn trace_of_a_fio_read_has_its_reads_and_bytes() {
    let dir = std::env::temp_dir().join(format!("p2pnvme-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.jsonl");
    let t = trace.display().to_string();
    let cmd = format!(
        "A=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1); \
         fio --name=r --filename=$A --offset={OFF} --size=1M --rw=read --bs=64k --direct=1 --ioengine=psync >/dev/null"
    );
    let s = guest_ok(&["--nvme", "1", "--trace", &t], &cmd);
    let _ = s;
    let records = read_trace(&trace);
    let _ = std::fs::remove_dir_all(&dir);
    let (first, last) = (OFF / 512, (OFF + (1 << 20)) / 512);
    let here = |r: &&TraceRecord| r.q > 0 && r.slba.is_some_and(|l| (first..last).contains(&l));
    let reads: Vec<_> = records
        .iter()
        .filter(here)
        .filter(|r| r.op == "read")
        .collect();
    // fio's 1 MiB in 64 KiB reads: 16 commands of 128 blocks each, into RAM.
    assert_eq!(reads.len(), 16, "{reads:?}");
    for r in &reads {
        assert_eq!(
            (r.nlb, r.bytes, r.status, r.ctrl),
            (Some(128), 65536, 0, 0),
            "{r:?}"
        );
        assert!(r.fault.is_none() && !r.dropped, "{r:?}");
        assert!(
            r.segments.iter().all(|s| s.target == SegmentTarget::Ram),
            "{r:?}"
        );
        assert_eq!(
            r.segments.iter().map(|s| s.bytes).sum::<u64>(),
            65536,
            "{r:?}"
        );
    }
    let total: u64 = reads.iter().map(|r| r.bytes).sum();
    assert_eq!(total, 1 << 20);
    // fio only read there.
    assert_eq!(records.iter().filter(here).count(), 16);
}
