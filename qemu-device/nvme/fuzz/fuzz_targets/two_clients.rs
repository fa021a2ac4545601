//! Two clients of one device process (controllers in two peer groups, as
//! two VMs): whatever the first sends on its controller's socket — a raw
//! vfio-user message stream, with memfds attached to some messages and
//! some of those shrunk right after (SIGBUS bait) — the second client's
//! Identify on the other controller keeps working, after every input.
//! cargo fuzz run two_clients (from qemu-device/nvme).
//!
//! Input: a sequence of [control byte][16-byte header][payload], the
//! payload as long as the header's message_size says (cut at the input's
//! end). Control bit 0: attach a memfd of ((ctl >> 1) & 7) + 1 pages;
//! bit 4: shrink that memfd to nothing after sending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pnvme_device::testhost::SocketHost;
use p2pnvme_vfio_user::build::Client;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Rig {
    _dir: tempfile::TempDir,
    first: PathBuf,
    second: Mutex<SocketHost>,
}

static RIG: OnceLock<Rig> = OnceLock::new();

/// The device (served by this process) and the second client, once.
fn rig() -> &'static Rig {
    RIG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let ctrl = |i: usize, g: &str| {
            let ns = p2pnvme_device::NamespaceConfig::new(p(&format!("ns{i}.img")), 1 << 20);
            let mut c = p2pnvme_device::ControllerConfig::new(p(&format!("c{i}.sock")), vec![ns]);
            c.group = g.into();
            c.serial = Some(format!("fuzz-{i}"));
            c.cmb_mib = 2;
            c
        };
        let mut cfg = p2pnvme_device::DeviceConfig::new(vec![ctrl(0, "a"), ctrl(1, "b")]);
        cfg.poll_us = 0;
        std::thread::spawn(move || p2pnvme_device::run_config(cfg).expect("device"));
        let start = Instant::now();
        while !p("c1.sock").exists() || !p("c0.sock").exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "no sockets");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut second = SocketHost::connect(&p("c1.sock")).unwrap();
        assert!(second.enable());
        Rig {
            first: p("c0.sock"),
            second: Mutex::new(second),
            _dir: dir,
        }
    })
}

fn memfd(pages: u64) -> std::fs::File {
    let name = std::ffi::CString::new("fuzz").unwrap();
    // SAFETY: memfd_create with a valid name; the fd is checked and owned.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd we own.
    let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.set_len(pages * 4096).unwrap();
    f
}

fuzz_target!(|data: &[u8]| {
    let rig = rig();
    let sock = UnixStream::connect(&rig.first).unwrap();
    let mut replies = sock.try_clone().unwrap();
    // Drain the replies so the server never blocks on its side.
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while matches!(replies.read(&mut buf), Ok(n) if n > 0) {}
    });
    let first = Client::new(sock);
    let mut rest = data;
    while rest.len() > 16 {
        let ctl = rest[0];
        let size = u32::from_le_bytes(rest[5..9].try_into().unwrap()) as usize;
        let n = size.clamp(16, 64 << 10).min(rest.len() - 1);
        let msg = &rest[1..1 + n];
        rest = &rest[1 + n..];
        let fd = (ctl & 1 == 1).then(|| memfd(u64::from(ctl >> 1 & 7) + 1));
        let fds: Vec<_> = fd.iter().map(|f| f.as_raw_fd()).collect();
        if first.try_send(msg, &fds).is_err() {
            break; // the server closed the connection
        }
        if let (Some(f), true) = (&fd, ctl & 0x10 != 0) {
            let _ = f.set_len(0);
        }
    }
    // End of the stream: the server disconnects the client and closes.
    let _ = first.sock.shutdown(std::net::Shutdown::Write);
    drain.join().unwrap();
    drop(first);
    let mut second = rig.second.lock().unwrap();
    assert_eq!(
        second.identify().as_deref(),
        Some("fuzz-1"),
        "the other client's Identify failed"
    );
});
