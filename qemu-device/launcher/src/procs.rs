//! Child processes that never outlive the launcher, and signal handling.

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// Routes SIGINT/SIGTERM/SIGHUP to a flag the supervising loops poll, so
/// cleanup runs through normal drops instead of dying mid-way.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The signal that asked us to stop, if any.
pub fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A child that is terminated (then killed) when dropped, and killed by the
/// kernel if the launcher dies without dropping it.
pub struct Guarded {
    pub child: Child,
}

impl Guarded {
    /// `own_group` keeps terminal Ctrl-C away from the child so the launcher
    /// decides how to stop it; interactive children must share the terminal.
    pub fn spawn(name: &str, cmd: &mut Command, own_group: bool) -> Result<Self> {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if own_group {
                    libc::setpgid(0, 0);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Guarded { child })
    }

    /// Exit code if the child has exited (signal deaths map to 128+n).
    pub fn try_exit(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))),
            Ok(None) => None,
            Err(_) => Some(-1),
        }
    }

    /// Waits up to `limit` for the child to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.try_exit() {
                return Some(c);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.try_exit().is_some() {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.try_exit().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A long-running helper process of a session (the device, virtiofsd, ...)
/// with its log file; the session watches it and stops it last.
pub struct Helper {
    /// What it is, for messages.
    pub name: String,
    /// The process.
    pub proc: Guarded,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Helper {
    /// Starts `cmd` with its output in `log` and waits until every path in
    /// `ready` exists (its sockets), failing with the log's tail if it exits
    /// first or takes longer than `timeout`.
    pub fn start(
        name: &str,
        cmd: &mut Command,
        log: PathBuf,
        ready: &[PathBuf],
        timeout: Duration,
    ) -> Result<Helper> {
        let f =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        let mut proc = Guarded::spawn(name, cmd, true)?;
        let deadline = Instant::now() + timeout;
        while !ready.iter().all(|p| p.exists()) {
            if let Some(code) = proc.try_exit() {
                anyhow::bail!(
                    "{name} exited ({code}) before it was ready:\n{}",
                    crate::console::tail(&log, 20)
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{name} was not ready within {} s:\n{}",
                    timeout.as_secs(),
                    crate::console::tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Helper {
            name: name.to_string(),
            proc,
            log,
        })
    }
}
