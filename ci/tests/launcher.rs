//! The launcher boots guests, runs commands in them and cleans up.

use p2pnvme_ci::*;
use std::time::{Duration, Instant};

#[test]
fn exit_status_and_streams_come_back_separately() {
    let out = p2pnvme(&["run", "--", "echo out-line; echo err-line >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-line\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err-line\n");
}

#[test]
fn qemu_nvme_cmbs_published_as_p2pmem_with_sqs_in_cmb() {
    let s = guest_ok(
        &["--qemu-nvme", "2", "--cmb-mib", "16"],
        "sh /opt/p2pnvme/ci/check-p2pmem.sh 2 partial",
    );
    assert_eq!(s.matches("published=1 size=16777216").count(), 2, "{s}");
}

#[test]
fn qemu_nvme_cmbs_published_as_p2pmem_without_sqs_in_cmb() {
    let s = guest_ok(
        &[
            "--qemu-nvme",
            "2",
            "--cmb-mib",
            "16",
            "--append",
            "nvme.use_cmb_sqes=0",
        ],
        "sh /opt/p2pnvme/ci/check-p2pmem.sh 2 full",
    );
    assert_eq!(s.matches("available=16777216").count(), 2, "{s}");
}

/// Bridge chains above each controller, from the guest's sysfs.
fn parents(topology: &str) -> Vec<String> {
    let s = guest_ok(
        &["--qemu-nvme", "2", "--topology", topology],
        "sh /opt/p2pnvme/ci/pci-parents.sh",
    );
    let lines: Vec<String> = s
        .lines()
        .filter(|l| l.contains("parents:"))
        .map(|l| l.split("parents:").nth(1).unwrap().trim().to_string())
        .collect();
    assert_eq!(lines.len(), 2, "{s}");
    lines
}

#[test]
fn switch_topology_shares_one_upstream_port() {
    let p = parents("switch");
    // root port -> upstream port -> downstream port -> controller
    let chains: Vec<Vec<&str>> = p.iter().map(|c| c.split(' ').collect()).collect();
    assert_eq!(chains[0].len(), 3, "{p:?}");
    assert_eq!(
        chains[0][..2],
        chains[1][..2],
        "same root and upstream port: {p:?}"
    );
    assert_ne!(
        chains[0][2], chains[1][2],
        "different downstream ports: {p:?}"
    );
}

#[test]
fn root_port_topology_gives_each_controller_its_own_port() {
    let p = parents("root-ports");
    let chains: Vec<Vec<&str>> = p.iter().map(|c| c.split(' ').collect()).collect();
    assert_eq!(chains[0].len(), 1, "{p:?}");
    assert_eq!(chains[1].len(), 1, "{p:?}");
    assert_ne!(chains[0], chains[1], "{p:?}");
}

#[test]
fn hung_guest_times_out_clearly_and_leaves_no_qemu() {
    let marker = unique_marker("timeout");
    let t = Instant::now();
    let out = p2pnvme(&[
        "run",
        "--timeout",
        "20",
        "--append",
        &marker,
        "--",
        "sleep 600",
    ]);
    assert_eq!(out.status.code(), Some(124), "a timeout exits 124");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not finish within 20 s"), "{err}");
    assert!(
        err.contains("-- console tail") || err.lines().count() > 2,
        "console tail shown: {err}"
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(processes_mentioning(&marker).is_empty(), "QEMU left behind");
}

#[test]
fn interrupt_stops_guest_and_devices() {
    let marker = unique_marker("sigint");
    let mut child = std::process::Command::new(p2pnvme_bin())
        .args([
            "run",
            "--qemu-nvme",
            "1",
            "--append",
            &marker,
            "--",
            "sleep 600",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_mentioning(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "guest never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        processes_mentioning(&marker).is_empty(),
        "processes left behind"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn bad_options_get_one_line_errors() {
    for (args, needle) in [
        (vec!["run", "--cmb-mib", "3", "--", "true"], "power of two"),
        (vec!["run", "--ns-size", "12Q", "--", "true"], "bad size"),
        (vec!["run", "--lba", "1000", "--", "true"], "512 or 4096"),
        (vec!["run", "--mem", "64", "--", "true"], "too small"),
        (
            vec!["run", "--nvme", "1", "--namespaces", "100000", "--", "true"],
            "at most 256 namespaces",
        ),
        (
            vec![
                "run",
                "--kernel",
                "/tmp",
                "--guest-kernel",
                "minimal",
                "--",
                "true",
            ],
            "give one of them",
        ),
    ] {
        let out = p2pnvme(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 3, "{args:?}: {err}");
    }
}

#[test]
fn controller_counts_whose_sum_overflows_are_refused_before_any_boot() {
    // usize::MAX + 1 wraps to 0 controllers unless the sum is checked; a
    // timeout turns an attempt to boot them into a failure, not a hang.
    let out = std::process::Command::new("timeout")
        .args(["120", p2pnvme_bin().to_str().unwrap()])
        .args(["run", "--nvme", &usize::MAX.to_string(), "--qemu-nvme", "1"])
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 30 NVMe controllers"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn guest_reaches_the_host_control_channel() {
    let s = guest_ok(
        &["--mem", "512"],
        "p2pnvme-host ping && p2pnvme-host pmemsave ram.bin && \
         ! p2pnvme-host bogus && ! p2pnvme-host pmemsave ../escape && \
         ! p2pnvme-host stats-reset && echo channel-ok",
    );
    assert!(s.contains("pong\nok\n"), "{s}");
    assert!(s.contains("channel-ok"), "{s}");
}

/// `image info`'s `default kernel:` value.
fn default_kernel(src: Option<&std::path::Path>) -> String {
    let mut cmd = std::process::Command::new(p2pnvme_bin());
    cmd.args(["image", "info"]).env_remove(GUEST_KERNEL_ENV);
    if let Some(s) = src {
        cmd.env("P2PNVME_SRC", s);
    }
    let out = cmd.output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.lines()
        .find_map(|l| l.strip_prefix("default kernel: "))
        .unwrap_or_else(|| panic!("no 'default kernel:' line: {s}"))
        .to_string()
}

const GUEST_KERNEL_ENV: &str = "P2PNVME_GUEST_KERNEL";

/// `uname -r` in a guest booted without --guest-kernel, with `env` set and
/// otherwise without P2PNVME_GUEST_KERNEL: (exit status, stdout, stderr).
fn uname_r(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(p2pnvme_bin())
        .args(["run", "--no-guest-driver", "--", "uname -r"])
        .env_remove(GUEST_KERNEL_ENV)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn default_guest_kernel_is_minimal_once_built_and_debian_with_a_notice_before() {
    // Built (ci/test builds it first; this builds it when it is not).
    let out = p2pnvme(&["image", "build", "--guest-kernel", "minimal"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(default_kernel(None), "minimal");
    let (code, out, stderr) = uname_r(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        out.trim(),
        "7.3.4-p2pnvme",
        "the default boots the minimal kernel"
    );
    // The environment picks the default (to run a suite on one kernel).
    let (code, out, stderr) = uname_r(&[(GUEST_KERNEL_ENV, "debian")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.trim().ends_with("+deb13-amd64"), "{out} {stderr}");
    assert!(!stderr.contains("guest kernel"), "no notice: {stderr}");
    let (code, _, stderr) = uname_r(&[(GUEST_KERNEL_ENV, "mainline")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("P2PNVME_GUEST_KERNEL=mainline: set it to minimal, debug or debian"),
        "{stderr}"
    );

    // Not built: a source copy whose fragment differs keys another kernel
    // (the image's key does not include images/kernel, so no image build).
    let src = std::env::temp_dir().join(format!("p2pnvme-unbuilt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .args([root.join("images"), root.join("ci")])
        .arg(&src)
        .status()
        .unwrap();
    assert!(cp.success());
    let fragment = src.join("images/kernel/p2pnvme.config");
    let mut text = std::fs::read_to_string(&fragment).unwrap();
    text.push_str("# a fragment no kernel was built from\n");
    std::fs::write(&fragment, text).unwrap();
    assert!(default_kernel(Some(&src)).starts_with("debian"));
    let (code, stdout, stderr) = uname_r(&[("P2PNVME_SRC", src.to_str().unwrap())]);
    let _ = std::fs::remove_dir_all(&src);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.trim().ends_with("+deb13-amd64"),
        "Debian's kernel boots, without a kernel build: {stdout}"
    );
    let notice: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("guest kernel"))
        .collect();
    assert_eq!(notice.len(), 1, "{stderr}");
    assert!(
        notice[0].contains("not built yet")
            && notice[0].contains("p2pnvme image build --guest-kernel minimal"),
        "{stderr}"
    );
}

/// Parallel guests (`p2pnvme test --jobs`) build modules at the same time:
/// two builds against one kernel must not pull each other's mounts away.
#[test]
fn two_module_builds_at_once_both_succeed() {
    let dirs: Vec<_> = (0..2)
        .map(|i| guest_module_source("warn", &format!("parallel-build-{i}")))
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            std::process::Command::new(p2pnvme_bin())
                .args(["module", "build", d.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dirs.iter().all(|d| d.join("warn.ko").exists()));
}
