//! `--gdb`: the guest waits for a debugger before its first instruction, the
//! printed gdb command line names a vmlinux whose symbols match, and the
//! guest runs once gdb lets it go.

use p2pnvme_ci::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn gdb_stops_the_guest_at_start_kernel_and_the_guest_runs_when_it_detaches() {
    let port = "1247";
    let dir = tempfile_dir("gdb");
    let (out, err) = (dir.join("out"), dir.join("err"));
    let mut run = Command::new(p2pnvme_bin())
        .args([
            "run",
            "--guest-kernel",
            "minimal",
            "--gdb",
            port,
            "--",
            "echo guest-ran",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // The launcher prints the command line once QEMU waits.
    let start = Instant::now();
    let hint = loop {
        let e = std::fs::read_to_string(&err).unwrap();
        if let Some(l) = e.lines().find(|l| l.contains("attach with: gdb")) {
            break l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no gdb hint: {e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let vmlinux = hint.rsplit(' ').next().unwrap().to_string();
    assert!(vmlinux.ends_with("/vmlinux"), "{hint}");
    assert!(
        hint.contains(&format!("target remote 127.0.0.1:{port}")),
        "{hint}"
    );
    // Nothing runs while the debugger is away.
    std::thread::sleep(Duration::from_secs(3));
    assert!(run.try_wait().unwrap().is_none(), "the guest did not wait");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    let gdb = Command::new("gdb")
        .args(["-batch", "-ex", &format!("target remote 127.0.0.1:{port}")])
        .args([
            "-ex",
            "break start_kernel",
            "-ex",
            "continue",
            "-ex",
            "bt 1",
        ])
        .args(["-ex", "delete", "-ex", "detach", &vmlinux])
        .stdin(Stdio::null())
        .output()
        .expect("gdb (ci/setup installs it)");
    let g = String::from_utf8_lossy(&gdb.stdout);
    assert!(
        g.contains("in start_kernel"),
        "the breakpoint was not hit: {g}"
    );
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "guest-ran\n");
}
