//! The device process for black-box tests: `p2pnvme-device` with two
//! controllers in two peer groups (two VMs), each on its own socket, and a
//! stats socket; killed when dropped.

#![allow(dead_code)] // each test file uses part of it

pub mod qemu;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running device process.
pub struct Device {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The controllers' sockets: [0] in group a, [1] in group b.
    pub sockets: [PathBuf; 2],
    pub stats: PathBuf,
}

/// Options of one start.
#[derive(Default)]
pub struct Start<'a> {
    /// Extra command-line arguments.
    pub args: &'a [&'a str],
    /// RLIMIT_NOFILE (soft and hard) of the process.
    pub nofile: Option<u64>,
    /// Directory to run in (default: a new temporary one).
    pub dir: Option<tempfile::TempDir>,
    /// Both controllers in one peer group (default: one group each).
    pub one_group: bool,
    /// k=v items added to both `--controller` lists (e.g.
    /// `unannounced-dma=probe`).
    pub ctrl_keys: &'a [&'a str],
}

impl Device {
    /// Starts the device with `args` and waits for its sockets.
    pub fn start(args: &[&str]) -> Device {
        Device::start_with(Start {
            args,
            ..Default::default()
        })
    }

    /// Starts the device as `s` says and waits for its sockets.
    pub fn start_with(s: Start<'_>) -> Device {
        let mut d = Device::spawn(s);
        let start = Instant::now();
        while !d.sockets.iter().chain([&d.stats]).all(|p| p.exists()) {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("device exited ({st}): {}", d.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "device sockets did not appear: {}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Starts the device without waiting for anything.
    pub fn spawn(s: Start<'_>) -> Device {
        let dir = s.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let p = |n: &str| dir.path().join(n);
        let sockets = [p("c0.sock"), p("c1.sock")];
        let stats = p("stats.sock");
        let ctrl = |i: usize, group: &str| {
            let mut c = format!(
                "socket={},group={group},serial=iso-{i},cmb-mib=2,ns={}:1M",
                sockets[i].display(),
                p(&format!("ns{i}.img")).display()
            );
            for k in s.ctrl_keys {
                c.push(',');
                c.push_str(k);
            }
            c
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2pnvme-device"));
        let second = if s.one_group { "a" } else { "b" };
        cmd.args([
            "--controller",
            &ctrl(0, "a"),
            "--controller",
            &ctrl(1, second),
        ])
        .arg("--stats-socket")
        .arg(&stats)
        .args(s.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(p("stderr")).unwrap());
        if let Some(n) = s.nofile {
            // SAFETY: setrlimit only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start p2pnvme-device");
        Device {
            child,
            dir,
            sockets,
            stats,
        }
    }

    /// The process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// What the process logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Sends SIGTERM; how long the process took to exit (None: it had not
    /// after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `path` exists (for socket files).
pub fn exists(path: &Path) -> bool {
    path.exists()
}
