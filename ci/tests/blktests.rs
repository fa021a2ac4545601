//! `p2pnvme blktests`: a blktests checkout (the user's; cloned here from
//! P2PNVME_BLKTESTS_GIT) runs in a full-userland guest against the project's and
//! QEMU's NVMe; one table, JUnit, and an exit status that never counts a
//! missing result as a pass.

use p2pnvme_ci::*;
use std::path::PathBuf;
use std::process::Command;

/// A fresh clone of blktests from P2PNVME_BLKTESTS_GIT (the suite is the
/// user's, never shipped here; ci/test skips this suite's real-suite test,
/// and says so, where no clone source is reachable).
fn checkout(tag: &str) -> PathBuf {
    let from = std::env::var("P2PNVME_BLKTESTS_GIT")
        .expect("set P2PNVME_BLKTESTS_GIT to a blktests repository (URL or path) to clone");
    let dir = tempfile_dir(&format!("blktests-{tag}")).join("blktests");
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new("git")
        .args(["clone", "-q", &from])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cloning blktests from {from} failed");
    dir
}

/// A checkout's shape without the suite: `check` and one test.
fn shape_only_checkout() -> PathBuf {
    let dir = tempfile_dir("blktests-shape").join("blktests");
    std::fs::create_dir_all(dir.join("tests/block")).unwrap();
    std::fs::write(dir.join("check"), "#!/bin/bash\nexit 1\n").unwrap();
    std::fs::write(dir.join("tests/block/001"), "#!/bin/bash\n").unwrap();
    dir
}

#[test]
fn blktests_run_on_both_devices_give_one_table_and_junit_with_not_run_as_skipped() {
    let src = checkout("both");
    let junit = src.parent().unwrap().join("junit.xml");
    let out = p2pnvme(&[
        "blktests",
        "--src",
        src.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "block/042",
        "nvme/039",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("test "))
        .collect();
    assert_eq!(
        table,
        [
            "test       ours        QEMU",
            "block/042  pass        pass",
            "nvme/039   not run     not run",
        ],
        "{stdout}"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains("tests=\"4\" failures=\"0\" errors=\"0\" skipped=\"2\""),
        "{x}"
    );
    for suite in ["blktests-p2pnvme", "blktests-qemu"] {
        assert!(
            x.contains(&format!("<testsuite name=\"{suite}\" tests=\"2\"")),
            "{x}"
        );
    }
    assert!(
        x.contains("<skipped message=\"not run: kernel option FAULT_INJECTION"),
        "{x}"
    );
    assert!(
        !src.join("results").exists() && !src.join("config").exists(),
        "the checkout's own config and results/ were written"
    );
}

#[test]
fn a_test_the_checkout_lacks_is_refused_before_boot_in_one_line() {
    let src = shape_only_checkout();
    let out = p2pnvme(&["blktests", "--src", src.to_str().unwrap(), "block/999"]);
    let err = stderr_of_exit(&out, 2);
    assert!(err.contains("no test or group 'block/999'"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = p2pnvme(&["blktests", "--src", "/nonexistent/blktests"]);
    let err = stderr_of_exit(&out, 2);
    assert!(err.contains("--src /nonexistent/blktests"), "{err}");
}
