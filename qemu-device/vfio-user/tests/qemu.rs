//! The real client: QEMU 11.1's vfio-user-pci from the cached root
//! filesystem, against the fake PCI function. Skips (with a printed reason)
//! only when no root filesystem with QEMU is cached.

use p2pnvme_vfio_user::testing::{Call, FakeBackend, FdSummary, IrqCall};
use p2pnvme_vfio_user::wire::cmd;
use p2pnvme_vfio_user::{End, Server};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cached root filesystem holding QEMU and its loader.
fn rootfs() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/var/cache/p2pnvme")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rootfs-"))
                && p.join("usr/bin/qemu-system-x86_64").exists()
                && p.join("lib64/ld-linux-x86-64.so.2").exists()
        })
        .collect();
    dirs.sort();
    dirs.pop()
}

/// QEMU through the root filesystem's own loader (as the launcher runs it).
fn qemu(rootfs: &Path, sock: &Path, qmp: &Path, log: &Path) -> Child {
    let r = rootfs.display();
    let device = format!(
        "{{\"driver\":\"vfio-user-pci\",\"socket\":{{\"path\":\"{}\",\"type\":\"unix\"}}}}",
        sock.display()
    );
    Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(format!(
            "{r}/lib/x86_64-linux-gnu:{r}/usr/lib/x86_64-linux-gnu"
        ))
        .arg(rootfs.join("usr/bin/qemu-system-x86_64"))
        .env(
            "QEMU_MODULE_DIR",
            rootfs.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .args([
            "-L",
            &format!("{r}/usr/share/qemu"),
            "-L",
            &format!("{r}/usr/share/seabios"),
        ])
        .args([
            "-machine",
            "q35,memory-backend=mem",
            "-accel",
            "tcg",
            "-m",
            "256M",
        ])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-device", &device])
        .args(["-nodefaults", "-display", "none", "-serial", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("start QEMU")
}

/// A line-based QMP session.
struct Qmp {
    out: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Qmp {
    fn connect(path: &Path, qemu: &mut Child) -> Qmp {
        let deadline = Instant::now() + Duration::from_secs(60);
        let s = loop {
            if let Ok(s) = UnixStream::connect(path) {
                break s;
            }
            assert!(qemu.try_wait().unwrap().is_none(), "QEMU exited early");
            assert!(Instant::now() < deadline, "no QMP socket");
            std::thread::sleep(Duration::from_millis(50));
        };
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut q = Qmp {
            out: s.try_clone().unwrap(),
            lines: BufReader::new(s),
        };
        // The greeting comes once the machine (and the device) is realised.
        assert!(q.line().contains("QMP"));
        q.command("qmp_capabilities");
        q
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).expect("QMP read");
        l
    }

    fn command(&mut self, name: &str) {
        writeln!(self.out, "{{\"execute\":\"{name}\"}}").unwrap();
        loop {
            let l = self.line();
            if l.is_empty() || l.contains("\"return\"") {
                return;
            }
            assert!(!l.contains("\"error\""), "QMP {name}: {l}");
        }
    }
}

#[test]
fn qemu_vfio_user_pci_completes_setup_and_disconnects_cleanly() {
    let Some(rootfs) = rootfs() else {
        println!("SKIPPED: no root filesystem with QEMU under /var/cache/p2pnvme (run `p2pnvme image build`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dev.sock");
    let qmp_path = dir.path().join("qmp.sock");
    let log = dir.path().join("qemu.log");
    let server = Server::bind(&sock).unwrap();
    let stop = server.stop_handle();
    let served = std::thread::spawn(move || {
        let mut be = FakeBackend::new();
        let summary = server.serve_one(&mut be).unwrap();
        (be, summary)
    });
    let mut child = qemu(&rootfs, &sock, &qmp_path, &log);
    let mut qmp = Qmp::connect(&qmp_path, &mut child);
    // Let SeaBIOS enumerate PCI (config writes, BAR placement) for a moment.
    std::thread::sleep(Duration::from_secs(3));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap_or_default();
    qmp.command("quit");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("QEMU did not quit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (be, summary) = served.join().unwrap();
    stop.stop();
    let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
    let summary = summary.expect("QEMU connected");
    println!("QEMU stderr: {err}");
    println!("requests per command: {:?}", summary.requests);
    let n = |c: u16| summary.requests[c as usize];
    assert_eq!(summary.end, End::Closed, "QEMU's quit closes the socket");
    assert_eq!(summary.refused, 0, "QEMU sent nothing the server refused");
    assert_eq!(n(cmd::VERSION), 1);
    assert!(n(cmd::DEVICE_GET_INFO) >= 1);
    assert!(
        n(cmd::DEVICE_GET_REGION_INFO) >= 8,
        "BARs, ROM and config asked for"
    );
    assert!(n(cmd::DEVICE_GET_IRQ_INFO) >= 1);
    assert!(n(cmd::REGION_READ) >= 1, "config space read");
    // What QEMU 11.1 never sends (README "What QEMU 11.1 sends").
    assert_eq!(n(cmd::DEVICE_GET_REGION_IO_FDS), 0);
    assert_eq!(
        n(cmd::DMA_READ) + n(cmd::DMA_WRITE) + n(cmd::DIRTY_PAGES),
        0
    );
    assert_eq!(n(cmd::REGION_WRITE_MULTI) + n(cmd::DEVICE_FEATURE), 0);
    assert!(
        be.calls
            .iter()
            .any(|c| matches!(c, Call::DmaMap { has_fd: true, .. })),
        "guest RAM mapped with its memfd"
    );
    assert!(
        be.calls.iter().any(|c| matches!(
            c,
            Call::SetIrqs {
                index: 0,
                set: IrqCall::Eventfds {
                    fds: FdSummary { assigned: 1, .. },
                    ..
                }
            }
        )),
        "INTx routed to an eventfd"
    );
    assert!(
        be.calls.iter().any(|c| matches!(
            c,
            Call::Read {
                index: 7,
                offset: 0,
                ..
            }
        )),
        "config space header read"
    );
    assert!(
        maps.contains("p2pnvme-fake-bar"),
        "QEMU mmapped BAR2 from the fd sent with its region info"
    );
    assert_eq!(be.calls.last(), Some(&Call::Disconnected));
}
