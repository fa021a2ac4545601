//! The load test: the real QEMU 11.1 of the toolchain root filesystem loads
//! the witness and runs firmware only (no guest kernel; SeaBIOS alone makes
//! millions of memory accesses). A signature mistake in the sys layer shows
//! up here as a crash, a refused plugin, zero counts or a userdata mismatch.

use p2pnvme_docs::witness::{WindowReport, WitnessReport, CLASS_OTHER_MMIO, CLASS_RAM};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The newest cached root filesystem that has QEMU, if any.
fn rootfs() -> Option<PathBuf> {
    let cache = std::env::var_os("P2PNVME_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/p2pnvme".into());
    std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rootfs-"))
                && p.join("usr/bin/qemu-system-x86_64").exists()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// The cdylib cargo built next to this test's deps.
fn plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libp2pnvme_witness.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libp2pnvme_witness.so not found near {}", exe.display());
}

fn qemu(rootfs: &Path, plugin_arg: &str) -> Child {
    let r = rootfs.display();
    Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(format!(
            "{r}/lib/x86_64-linux-gnu:{r}/usr/lib/x86_64-linux-gnu"
        ))
        .arg(rootfs.join("usr/bin/qemu-system-x86_64"))
        .args([
            "-L",
            &format!("{r}/usr/share/qemu"),
            "-L",
            &format!("{r}/usr/share/seabios"),
        ])
        .args(["-M", "q35", "-m", "256", "-smp", "2", "-accel", "tcg"])
        .args([
            "-nographic",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "none",
        ])
        .args(["-nic", "none", "-no-reboot", "-plugin", plugin_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting QEMU")
}

struct Ctl {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Ctl {
    fn connect(path: &Path) -> Ctl {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = UnixStream::connect(path) {
                return Ctl {
                    w: s.try_clone().unwrap(),
                    r: BufReader::new(s),
                };
            }
            assert!(
                Instant::now() < deadline,
                "the plugin's control socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ask(&mut self, req: &str) -> String {
        self.w.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }
}

fn stop(q: Child) -> String {
    // SIGTERM: QEMU shuts down cleanly and runs the plugin's atexit callback.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(q.id() as i32, libc::SIGTERM) };
    let out = q.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn qemu_loads_the_witness_and_its_callbacks_get_their_userdata() {
    let Some(rootfs) = rootfs() else {
        eprintln!("SKIPPED: no root filesystem with QEMU under /var/cache/p2pnvme (run `p2pnvme image build`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (sock, out) = (dir.path().join("ctl.sock"), dir.path().join("exit.json"));
    let q = qemu(
        &rootfs,
        &format!(
            "{},arm=always,sock={},out={}",
            plugin().display(),
            sock.display(),
            out.display()
        ),
    );
    let mut ctl = Ctl::connect(&sock);
    assert_eq!(ctl.ask("ping"), "pong");
    // SeaBIOS's own code and data: the legacy BIOS area below 1 MiB.
    assert_eq!(
        ctl.ask(r#"windows [{"name":"bios","start":917504,"size":131072}]"#),
        "ok"
    );
    assert!(ctl.ask("stop").starts_with("error "), "stop without start");
    assert!(ctl
        .ask(r#"windows [{"name":"a","start":0,"size":8192},{"name":"b","start":4096,"size":1}]"#)
        .starts_with("error "));
    assert_eq!(ctl.ask("start fw"), "ok");
    // Windows nest: the inner one closes first and the outer one holds it.
    assert_eq!(ctl.ask("start inner"), "ok");
    assert!(
        ctl.ask(r#"windows [{"name":"c","start":0,"size":4096}]"#)
            .starts_with("error "),
        "no new addresses while a window is open"
    );
    std::thread::sleep(Duration::from_millis(300));
    let inner: WindowReport = serde_json::from_str(&ctl.ask("stop")).expect("a window report");
    std::thread::sleep(Duration::from_millis(1200));
    let win: WindowReport = serde_json::from_str(&ctl.ask("stop")).expect("a window report");
    assert!(ctl.ask("stop").starts_with("error "), "all windows closed");
    drop(ctl);
    let stderr = stop(q);
    eprintln!("QEMU stderr:\n{stderr}");

    assert_eq!(win.name, "fw");
    assert!(win.elapsed_s >= 1.0);
    assert!(win.instructions > 0);
    assert_eq!(inner.name, "inner");
    assert!(inner.elapsed_s < win.elapsed_s && inner.instructions <= win.instructions);
    assert_eq!(win.instructions_per_vcpu.len(), 2);

    let doc: WitnessReport =
        serde_json::from_slice(&std::fs::read(&out).expect("the plugin wrote its exit report"))
            .unwrap();
    let run = doc.window("run").unwrap();
    eprintln!("whole run: {:?}", run.health);
    assert_eq!(
        run.health.userdata_mismatches, 0,
        "a callback got foreign userdata"
    );
    assert!(run.health.translations > 100);
    assert!(run.health.mem_callbacks > 1_000_000, "{:?}", run.health);
    assert!(run.instructions > 1_000_000);
    let ram = run.class(CLASS_RAM).unwrap().total;
    assert!(
        ram.loads > 0 && ram.stores > 0 && ram.trapped() == 0,
        "{ram:?}"
    );
    // Firmware programs the APIC, the HPET, PCI config through MMCONFIG...
    let mmio = run.class(CLASS_OTHER_MMIO).unwrap().total;
    assert!(
        mmio.trapped() > 0 && mmio.trapped() == mmio.loads + mmio.stores,
        "{mmio:?}"
    );
    let bios = run.class("bios").unwrap();
    assert!(bios.total.loads > 0, "{bios:?}");
    assert_eq!(bios.window.as_ref().unwrap().size, 131072);
    // Every access is counted once: the classes add up to the callbacks.
    let classified: u64 = run
        .classes
        .iter()
        .map(|c| c.total.loads + c.total.stores)
        .sum();
    assert_eq!(
        classified + run.health.unresolved + run.health.dropped,
        run.health.mem_callbacks
    );
}

#[test]
fn memory_callbacks_are_in_place_only_while_a_window_is_open() {
    let Some(rootfs) = rootfs() else {
        eprintln!("SKIPPED: no root filesystem with QEMU under /var/cache/p2pnvme");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let q = qemu(
        &rootfs,
        &format!("{},sock={}", plugin().display(), sock.display()),
    );
    let mut ctl = Ctl::connect(&sock);
    std::thread::sleep(Duration::from_millis(700));
    let before: WindowReport = serde_json::from_str(&ctl.ask("report")).unwrap();
    assert!(before.instructions > 0, "instructions are always counted");
    assert_eq!(
        before.health.mem_callbacks, 0,
        "no window yet: no memory callbacks"
    );
    // `start` answers once a vCPU has flushed its code and instrumented anew.
    assert_eq!(ctl.ask("start fw"), "ok");
    std::thread::sleep(Duration::from_millis(700));
    let win: WindowReport = serde_json::from_str(&ctl.ask("stop")).unwrap();
    let ram = win.class(CLASS_RAM).unwrap().total;
    assert!(ram.loads + ram.stores > 0, "{win:?}");
    assert_eq!(win.health.userdata_mismatches, 0);
    // A second window arms again.
    assert_eq!(ctl.ask("start again"), "ok");
    let again: WindowReport = serde_json::from_str(&ctl.ask("stop")).unwrap();
    assert_eq!(again.health.userdata_mismatches, 0);
    drop(ctl);
    eprintln!("{}", stop(q));
}

#[test]
fn the_witness_refuses_unknown_arguments() {
    let Some(rootfs) = rootfs() else {
        eprintln!("SKIPPED: no root filesystem with QEMU under /var/cache/p2pnvme");
        return;
    };
    let q = qemu(&rootfs, &format!("{},verbose=on", plugin().display()));
    let out = q.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown key 'verbose'"), "{err}");
}
