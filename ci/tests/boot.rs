//! What a guest unpacks at boot: the image kernel's modules only for a
//! guest booting that kernel.

use p2pnvme_ci::*;

/// The image kernel's release, from `image info`'s `debian kernel:` line.
fn debian_release() -> String {
    let out = p2pnvme(&["image", "info"]);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.lines()
        .find_map(|l| l.strip_prefix("debian kernel:"))
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no 'debian kernel:' line: {s}"))
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
