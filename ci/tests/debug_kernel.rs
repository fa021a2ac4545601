//! `--guest-kernel debug`: the minimal kernel with the kernel's bug finders.
//! A use-after-free in a module is a KASAN report that fails the run (exit
//! 3); the same module on the minimal kernel goes unnoticed; lockdep,
//! kmemleak and the block layer's fault injection are there for tests.

use p2pnvme_ci::*;
use std::path::PathBuf;

/// ci/guest-modules/uaf built against `kernel` in a scratch folder.
fn uaf_module(kernel: &str) -> PathBuf {
    guest_module("uaf", &format!("uaf-{kernel}"), &["--guest-kernel", kernel])
}

#[test]
fn the_debug_kernel_offers_lockdep_kmemleak_and_block_fault_injection() {
    let s = guest_ok(
        &["--guest-kernel", "debug", "--nvme", "1"],
        "D=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1); \
         cat /sys/kernel/debug/fail_make_request/probability; \
         test -e /sys/kernel/debug/fail_io_timeout/probability && echo fail_io_timeout; \
         test -e /sys/block/${D#/dev/}/make-it-fail && echo make-it-fail; \
         test -e /sys/kernel/debug/kmemleak && echo kmemleak; \
         grep -c 'lock-classes' /proc/lockdep_stats; \
         dmesg | grep -c 'KernelAddressSanitizer initialized'",
    );
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines,
        ["0", "fail_io_timeout", "make-it-fail", "kmemleak", "1", "1"],
        "{s}"
    );
}

#[test]
fn a_use_after_free_fails_the_run_under_the_debug_kernel_only() {
    let ko = uaf_module("debug");
    let out = p2pnvme(&[
        "run",
        "--guest-kernel",
        "debug",
        "--module",
        ko.to_str().unwrap(),
        "--",
        "echo after",
    ]);
    let err = stderr_of_exit(&out, 3);
    // KASAN's report, or at least its mark: the bad-page taint (B).
    assert!(err.contains("KASAN") || err.contains("taint B"), "{err}");
    // The control: the same bug on the minimal kernel is not seen.
    let ko = uaf_module("minimal");
    let out = p2pnvme(&[
        "run",
        "--guest-kernel",
        "minimal",
        "--module",
        ko.to_str().unwrap(),
        "--",
        "echo after",
    ]);
    assert_eq!(out.status.code(), Some(0));
}
