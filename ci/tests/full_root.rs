//! `--root full|DIR`: the command runs in a full userland (the toolchain
//! root filesystem, or a directory of the user's), read-only over virtiofs
//! below a tmpfs overlay; the host's copy is never written. It boots
//! Debian's kernel unless told otherwise.

use p2pnvme_ci::*;
use std::path::Path;

#[test]
fn full_userland_runs_python_bash_fio_and_nvme_cli_and_leaves_the_root_untouched() {
    let marker = unique_marker("full-root");
    let s = guest_ok(
        &["--root", "full", "--nvme", "1"],
        &format!(
            "python3 -c 'print(6 * 7)'; bash -c 'echo bash=${{BASH_VERSINFO[0]}}; cat <(echo fd)'; \
             fio --version | cut -c1-4; nvme list | grep -c p2pnvme; \
             p2pcopy --help >/dev/null && echo p2pcopy; \
             echo x >/etc/{marker} && echo etc-writable; pwd"
        ),
    );
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines,
        [
            "42",
            "bash=5",
            "fd",
            "fio-",
            "1",
            "p2pcopy",
            "etc-writable",
            "/root"
        ],
        "{s}"
    );
    assert!(
        !image_rootfs().join("etc").join(&marker).exists(),
        "the guest wrote into the host's root filesystem"
    );
}

#[test]
fn a_users_root_directory_is_the_commands_root() {
    let dir = tempfile_dir("own-root");
    for d in ["bin", "etc", "dev", "proc", "sys", "tmp", "run", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(
        image_rootfs().join("usr/bin/busybox"),
        dir.join("bin/busybox"),
    )
    .unwrap();
    for applet in ["sh", "cat", "echo", "ls"] {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    std::fs::write(dir.join("etc/which-root"), "the user's root\n").unwrap();
    let s = guest_ok(
        &["--root", dir.to_str().unwrap()],
        "cat /etc/which-root; test -e /usr/bin/python3 || echo no-python3; \
         ls /usr/local/bin",
    );
    assert_eq!(
        s, "the user's root\nno-python3\np2pcopy\np2pnvme-host\n",
        "{s}"
    );
    let out = p2pnvme(&[
        "run",
        "--root",
        Path::new("/no/such/root").to_str().unwrap(),
        "--",
        "true",
    ]);
    let err = stderr_of_exit(&out, 2);
    assert!(err.contains("--root /no/such/root"), "{err}");
}

/// Under TCG, code translated from a guest page stayed cached after
/// virtiofsd (an outside writer) filled the page with another file: under
/// the minimal kernel, which does not zero pages it allocates, programs run
/// from virtiofs crashed at random (most of 30 runs). The launcher now boots
/// TCG guests with `init_on_alloc=1`.
#[test]
fn programs_from_a_virtiofs_root_run_under_the_minimal_kernel() {
    let s = guest_ok(
        &["--root", "full", "--guest-kernel", "minimal"],
        "n=0; for i in $(seq 30); do /usr/bin/true || n=$((n+1)); \
         bash -c : || n=$((n+1)); done; echo crashed=$n; \
         python3 -c 'print(6 * 7)'",
    );
    assert_eq!(s, "crashed=0\n42\n", "{s}");
}
