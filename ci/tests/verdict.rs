//! Verdicts a CI can trust: PASS (0), FAIL (1), UNKNOWN (2, evidence
//! missing), kernel health (3) over the whole run, devices named by
//! identity, modules checked against the kernel before boot, and the
//! accelerator asked for or a clear refusal.

use p2pnvme_ci::*;
use std::path::{Path, PathBuf};

/// ci/guest-modules/warn built in a scratch folder (with `kernel_args`,
/// e.g. `--guest-kernel debian`); returns the .ko.
fn warn_module(name: &str, kernel_args: &[&str]) -> PathBuf {
    guest_module("warn", &format!("verdict-{name}"), kernel_args)
}

fn reasons(r: &ProveReport) -> String {
    r.reasons.join(" | ")
}

/// Also: the old spelling nvme0n1 still names the project's controller 0,
/// with a deprecation note.
#[test]
fn prove_of_a_command_that_moves_nothing_is_unknown_not_pass() {
    let out = p2pnvme(&[
        "run",
        "--json",
        "--nvme",
        "1",
        "--prove",
        "nvme0n1:64K",
        "--require-bypass",
        "--",
        "true",
    ]);
    let r: ProveReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{r:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("old spelling of p2p0n1"), "{err}");
    assert_eq!(r.verdict, Verdict::Unknown, "{r:?}");
    assert_eq!(r.bypassed_system_memory, None, "{r:?}");
    assert!(reasons(&r).contains("no data moved"), "{r:?}");
    assert_eq!(r.accel, "tcg");
}

/// QEMU's nvme has no counters: a bypass claim on it is unknown. The
/// report names both controllers by identity (the project's p2p0 is the
/// guest's nvme1 here, after QEMU's).
#[test]
fn prove_on_qemu_nvme_is_unknown_and_controllers_are_named_by_identity() {
    let a = [
        "--qemu-nvme",
        "1",
        "--nvme",
        "1",
        "--prove",
        "qemu0n1:64K",
        "--require-bypass",
    ];
    let mut args = vec!["run", "--json"];
    args.extend_from_slice(&a);
    args.extend_from_slice(&[
        "--",
        "echo src=$P2PNVME_PROVE_SRC p2p0=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1) >&2",
    ]);
    let out = p2pnvme(&args);
    let r: ProveReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{r:?}");
    assert_eq!(r.verdict, Verdict::Unknown, "{r:?}");
    assert!(reasons(&r).contains("no counters: qemu0"), "{r:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("src=/dev/nvme0n1 p2p0=/dev/nvme1n1"), "{err}");
    let names: Vec<(&str, &str)> = r
        .controllers
        .iter()
        .map(|c| (c.name.as_str(), c.serial.as_str()))
        .collect();
    assert_eq!(names, [("qemu0", "qemu-nvme-0"), ("p2p0", "p2pnvme-0")]);
    assert!(
        r.controllers
            .iter()
            .all(|c| c.pci.is_some() && c.failures.is_empty()),
        "{r:?}"
    );
}

/// A p2p copy that bypassed RAM, in a run where another controller failed
/// (CSTS.CFS, which the driver recovers from by a reset): FAIL.
#[test]
fn a_controller_that_failed_during_the_run_fails_the_bypass_claim() {
    // A flush carries no data: the failure is the only thing wrong.
    let copy = "p2pcopy copy --src $P2PNVME_PROVE_SRC:$P2PNVME_PROVE_OFF \
                --dst $P2PNVME_PROVE_DST:$P2PNVME_PROVE_DST_OFF --len $P2PNVME_PROVE_LEN --mode p2p && \
                nvme flush $(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-2 1) >/dev/null 2>&1; \
                sleep 3; true";
    let (code, r) = prove(
        &[
            "--nvme",
            "3",
            "--fault",
            "ctrl=2,op=flush,nth=1,cfs",
            "--prove",
            "p2p0n1:1M",
            "--prove-dst",
            "p2p1n1",
            "--require-bypass",
        ],
        copy,
    );
    assert_eq!(
        r.guest_ram_data_bytes,
        Some(0),
        "the copy bypassed RAM: {r:?}"
    );
    assert_eq!(r.dst_match, Some(true), "{r:?}");
    assert_eq!(code, Some(1), "{r:?}");
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert!(
        reasons(&r).contains("controller p2p2 (p2pnvme-2) failed"),
        "{r:?}"
    );
}

/// The RAM scan finds data that went through guest RAM at an odd 512-byte
/// offset, split across pages (fio's buffer three sectors into a page,
/// filled by O_DIRECT DMA), and lists the ranges it scanned. 1 MiB: the
/// pages fio frees are partly reused (and zeroed) before the dump.
#[test]
fn ram_scan_finds_data_at_an_odd_sector_offset_across_pages() {
    let fio = "fio --name=odd --filename=$P2PNVME_PROVE_SRC --rw=read --bs=1m --size=1m \
               --offset=$P2PNVME_PROVE_OFF --direct=1 --ioengine=psync --iomem_align=1536 \
               --output=/dev/null";
    let (code, r) = prove(&["--nvme", "1", "--prove", "p2p0n1:1M"], fio);
    assert_eq!(code, Some(0), "{r:?}");
    assert_eq!(r.guest_ram_data_bytes, Some(1 << 20), "{r:?}");
    assert!(r.ram_dump_hits > 0, "{r:?}");
    assert_eq!(r.ram_dump_sectors, 2048);
    assert_eq!(r.ram_ranges.len(), 1, "{r:?}");
    assert_eq!((r.ram_ranges[0].start, r.ram_ranges[0].len), (0, 1 << 30));
    assert_eq!(r.ram_sectors_scanned, (1 << 30) / 512);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
}

/// A WARNING raised by a command that is not the last one fails the run
/// (exit 3) unless --allow-warn; --module loads the module before the command.
#[test]
fn a_kernel_warning_in_the_middle_of_a_run_fails_it_unless_allowed() {
    let ko = warn_module("warn", &[]);
    let share = format!("{}:/mnt/warn", ko.parent().unwrap().display());
    let out = p2pnvme(&[
        "run",
        "--share",
        &share,
        "--",
        "insmod /mnt/warn/warn.ko; echo after",
    ]);
    let err = stderr_of_exit(&out, 3);
    assert!(
        err.contains("WARNING") && err.contains("--allow-warn"),
        "{err}"
    );
    let out = p2pnvme(&[
        "run",
        "--allow-warn",
        "--module",
        ko.to_str().unwrap(),
        "--",
        "grep -c '^warn ' /proc/modules",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn a_module_built_for_another_kernel_is_refused_before_boot() {
    let ko = warn_module("drift", &["--guest-kernel", "debian"]);
    let marker = unique_marker("verdict-drift");
    let out = p2pnvme(&[
        "run",
        "--guest-kernel",
        "minimal",
        "--append",
        &marker,
        "--module",
        ko.to_str().unwrap(),
        "--",
        "true",
    ]);
    let err = stderr_of_exit(&out, 2);
    assert!(
        err.contains("was built for kernel") && err.contains("p2pnvme module build"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(processes_mentioning(&marker).is_empty());
}

/// --kvm where KVM does not work is an error, not TCG behind the job's
/// back; --accel auto says in the report which one it picked.
#[test]
fn kvm_is_refused_where_unusable_and_auto_reports_its_choice() {
    let out = p2pnvme(&["run", "--kvm", "--", "true"]);
    let kvm_works = out.status.code() == Some(0);
    if !kvm_works {
        let err = stderr_of_exit(&out, 2);
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].contains("--accel kvm:") && errors[0].contains("--accel auto"),
            "{err}"
        );
    }
    let (_, r) = prove(
        &["--accel", "auto", "--nvme", "1", "--prove", "p2p0n1:4K"],
        "true",
    );
    assert_eq!(r.accel, if kvm_works { "kvm" } else { "tcg" }, "{r:?}");
}

/// `image info`'s `kernel:` line is the kernel a run boots next.
#[test]
fn image_info_names_the_kernel_the_next_run_boots() {
    let info = p2pnvme(&["image", "info"]);
    let text = String::from_utf8_lossy(&info.stdout);
    let line = text.lines().find(|l| l.starts_with("kernel:")).unwrap();
    let release = line.split_whitespace().nth(1).unwrap();
    let booted = guest_ok(&[], "uname -r");
    assert_eq!(release, booted.trim(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("initrd:")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("modules:")), "{text}");
}

/// The repository's documents stand on their own: no pointer to design
/// notes or style guides kept outside it.
#[test]
fn documents_refer_to_nothing_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("git")
        .args(["ls-files", "*.md"])
        .current_dir(&root)
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(files.lines().any(|f| f == "README.md"), "{files}");
    for f in files.lines() {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        for needle in [
            "DESIGN.md",
            "STYLE.md",
            "design document",
            "in the shared folder",
        ] {
            assert!(!text.contains(needle), "{f} mentions '{needle}'");
        }
    }
}
