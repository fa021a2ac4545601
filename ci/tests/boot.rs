//! How a guest boots: the minimal kernel through its PVH entry, and the
//! image kernel's modules unpacked only by a guest booting that kernel.

use p2pnvme_ci::*;

/// The image kernel's release, from `image info`'s `debian kernel:` line.
fn debian_release() -> String {
    let v = image_info("debian kernel");
    v.split(',').next().unwrap_or_default().trim().to_string()
}

#[test]
fn only_a_guest_booting_the_images_kernel_unpacks_its_modules() {
    let debian = debian_release();
    let s = guest_ok(
        &["--guest-kernel", "minimal", "--no-guest-driver"],
        "uname -r; ls /lib/modules",
    );
    let mut lines = s.lines();
    let release = lines.next().unwrap_or_default().to_string();
    let dirs: Vec<&str> = lines.collect();
    assert!(
        !dirs.contains(&debian.as_str()),
        "minimal kernel's guest has {debian}'s modules: {s}"
    );
    assert!(
        dirs.contains(&release.as_str()),
        "its own release's directory: {s}"
    );

    // Debian's kernel still gets them, and its init loads them.
    let s = guest_ok(
        &["--guest-kernel", "debian", "--no-guest-driver"],
        "uname -r; ls /lib/modules/$(uname -r)/kernel >/dev/null && echo modules-there; \
         grep -c '^nvme ' /proc/modules",
    );
    assert!(s.starts_with(&debian), "{s}");
    assert!(
        s.contains("modules-there\n1\n"),
        "Debian's modules unpacked and nvme loaded: {s}"
    );
}

#[test]
fn the_minimal_kernel_boots_through_its_pvh_entry_not_the_bzimage_decompressor() {
    let out = p2pnvme(&[
        "run",
        "-v",
        "--guest-kernel",
        "minimal",
        "--no-guest-driver",
        "--",
        // boot_params.hdr.version: the PVH entry fills in 2.12, a bzImage
        // boot keeps its own header's (2.15 for 7.3).
        "od -An -tx2 -j 518 -N2 /sys/kernel/boot_params/data",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let kernel = stderr
        .split(" -kernel ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no -kernel in the QEMU command line: {stderr}"));
    assert!(kernel.ends_with("/vmlinux"), "QEMU boots {kernel}");
    assert_eq!(
        stdout.trim(),
        "020c",
        "boot protocol version of the guest's entry"
    );
}

/// IRQ 0's count (the HPET's legacy timer interrupt) on every CPU.
fn irq0_total(proc_interrupts: &str) -> Option<u64> {
    let line = proc_interrupts
        .lines()
        .find(|l| l.trim_start().starts_with("0:"))?;
    line.split_whitespace()
        .skip(1)
        .map_while(|f| f.parse::<u64>().ok())
        .reduce(|a, b| a + b)
}

#[test]
fn a_tcg_guest_runs_its_ticks_on_the_hpet_instead_of_calibrating_the_local_apic_timer() {
    // The local APIC timer's calibration is 0.1 s of busy waiting per boot;
    // without it, the HPET (IRQ 0) keeps firing for sleeps after boot.
    let s = guest_ok(
        &["--guest-kernel", "minimal", "--no-guest-driver"],
        "cat /proc/interrupts; echo @@; sleep 0.3; cat /proc/interrupts",
    );
    let (before, after) = s
        .split_once("@@")
        .unwrap_or_else(|| panic!("no marker: {s}"));
    let (b, a) = (irq0_total(before), irq0_total(after));
    assert!(
        matches!((b, a), (Some(b), Some(a)) if a > b),
        "IRQ 0 did not fire during a sleep ({b:?} -> {a:?}): the local APIC timer runs the ticks\n{s}"
    );
}

#[test]
fn a_tcg_guests_cpu_offers_no_fast_string_moves_which_tcg_runs_a_byte_at_a_time() {
    // With ERMS/FSRM the kernel and glibc copy with `rep movsb`: page-cache
    // reads ran at a seventeenth of the speed of eight-byte moves.
    for cpu in ["intel", "amd"] {
        let s = guest_ok(
            &[
                "--guest-kernel",
                "minimal",
                "--no-guest-driver",
                "--cpu",
                cpu,
            ],
            "grep -m1 '^flags' /proc/cpuinfo",
        );
        let flags: Vec<&str> = s.split_whitespace().collect();
        assert!(flags.contains(&"sse2"), "--cpu {cpu}: no flags line: {s}");
        for f in ["erms", "fsrm"] {
            assert!(
                !flags.contains(&f),
                "--cpu {cpu}: the guest CPU has {f}: {s}"
            );
        }
    }
}
