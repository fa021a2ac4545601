//! The trace's consumer cannot hurt the device: a FIFO nobody reads stalls
//! no controller and no shutdown, and a symbolic link is never followed.
//! Black-box, against the `p2pnvme-device` binary.

mod common;

use common::{Device, Start};
use p2pnvme_device::testhost::SocketHost;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn stats_get(path: &std::path::Path) -> serde_json::Value {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"get\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_trace_fifo_nobody_reads_stalls_no_controller_and_sigterm_still_exits() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("trace.fifo");
    mkfifo(&fifo);
    // A consumer that opened the FIFO and never reads it.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let arg = fifo.to_str().unwrap().to_string();
    let mut d = Device::start_with(Start {
        args: &["--trace", &arg],
        dir: Some(dir),
        ..Default::default()
    });
    let mut a = SocketHost::connect(&d.sockets[0]).unwrap();
    assert!(a.enable());
    // Far more records than the pipe (64 KiB) and the buffer (1 MiB) hold.
    for i in 0..8000 {
        assert!(
            a.identify().is_some(),
            "identify {i} on the traced controller"
        );
    }
    let mut b = SocketHost::connect(&d.sockets[1]).unwrap();
    assert!(b.enable());
    assert_eq!(b.identify().as_deref(), Some("iso-1"), "another group");
    let doc = stats_get(&d.stats);
    assert!(doc["trace_dropped"].as_u64().unwrap() > 0, "{doc}");
    let took = d.terminate(Duration::from_secs(5));
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(2)),
        "SIGTERM took {took:?}"
    );
}

#[test]
fn a_trace_path_that_is_a_symlink_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    let link = dir.path().join("trace.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let arg = link.to_str().unwrap().to_string();
    let mut d = Device::spawn(Start {
        args: &["--trace", &arg],
        dir: Some(dir),
        ..Default::default()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success());
    let err = d.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}
