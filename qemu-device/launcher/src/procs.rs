//! Child processes that never outlive the launcher, and signal handling.

use anyhow::{Context, Result};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The last signal that asked the launcher to stop (0: none).
fn signal_flag() -> &'static Arc<AtomicUsize> {
    static SIGNALLED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    SIGNALLED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Routes SIGINT/SIGTERM/SIGHUP to a flag the supervising loops poll, so
/// cleanup runs through normal drops instead of dying mid-way.
pub fn catch_signals() {
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        let value = usize::try_from(sig).unwrap_or(usize::MAX);
        if let Err(e) = signal_hook::flag::register_usize(sig, signal_flag().clone(), value) {
            log::warn!("cannot catch signal {sig} ({e}): it will stop the launcher at once");
        }
    }
}

/// The signal that asked us to stop, if any.
pub fn signalled() -> Option<i32> {
    match signal_flag().load(Ordering::SeqCst) {
        0 => None,
        s => i32::try_from(s).ok(),
    }
}

/// Ignores SIGINT from now on (the interactive console's terminal belongs
/// to QEMU: Ctrl-C goes to the guest).
pub fn ignore_interrupt() {
    // SAFETY: SIG_IGN installs no handler code; any earlier signal-hook
    // handler for SIGINT is simply no longer called.
    if let Err(e) = unsafe { signal::signal(Signal::SIGINT, SigHandler::SigIgn) } {
        log::warn!("cannot ignore SIGINT ({e}): Ctrl-C may stop the launcher");
    }
}

/// A thread that runs until asked to stop: its body polls the flag it is
/// given; dropping the handle sets the flag and joins the thread.
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Runs `body` on a new thread with the stop flag.
    pub fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || body(&s));
        Worker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
        // SAFETY: only async-signal-safe calls (prctl, setpgid) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                if own_group {
                    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
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
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_signal_is_reported_to_the_loops_instead_of_killing_the_launcher() {
        catch_signals();
        signal_hook::low_level::raise(SIGHUP).unwrap();
        assert_eq!(signalled(), Some(SIGHUP));
    }

    #[test]
    fn dropping_a_worker_stops_and_joins_its_thread() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let w = Worker::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            d.store(true, Ordering::SeqCst);
        });
        drop(w);
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn a_stopped_child_is_gone_and_its_exit_says_which_signal() {
        let mut c = Guarded::spawn("sleep", Command::new("sleep").arg("30"), true).unwrap();
        assert_eq!(c.try_exit(), None);
        c.stop(Duration::from_secs(5));
        assert_eq!(c.try_exit(), Some(128 + libc::SIGTERM));
    }
}
