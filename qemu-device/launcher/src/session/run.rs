//! Running a command in a booted guest (the host side of the command
//! channel: fw_cfg in, virtio-serial ports out, the host control socket)
//! or an interactive console, and telling why a guest ended.

use super::Session;
use crate::console::{self, Tail};
use crate::exit;
use crate::health::GuestReport;
use crate::hostctl;
use crate::procs;
use crate::qemu::GuestPorts;
use anyhow::{bail, Result};
use std::fs;
use std::time::{Duration, Instant};

/// What the guest command produced.
pub struct GuestResult {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The guest's report: taint, kernel log, controllers (health.rs).
    pub guest: GuestReport,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Copy guest output to our stdout/stderr as it arrives.
    Stream,
    /// Keep it in the result only.
    Capture,
}

impl Session {
    /// Runs `command` with the guest's shell; returns its exit status,
    /// output and the guest's report (kernel health is the caller's to
    /// judge). A timeout is an error with exit status 124; a guest that
    /// died without reporting (a kernel panic) one with 255.
    pub fn run(&mut self, command: &str, timeout: Duration, output: Output) -> Result<GuestResult> {
        let dir = self.run_dir.path().to_path_buf();
        let script = dir.join("cmd.sh");
        fs::write(&script, format!("{}{command}\n", self.preamble))?;
        let ports = GuestPorts {
            stdout: dir.join("guest.stdout"),
            stderr: dir.join("guest.stderr"),
            status: dir.join("guest.status"),
            control: dir.join("ctl.sock"),
        };
        for p in [&ports.stdout, &ports.stderr, &ports.status] {
            let _ = fs::remove_file(p);
        }
        let (out_path, err_path, status_path) = (
            ports.stdout.clone(),
            ports.stderr.clone(),
            ports.status.clone(),
        );
        let control = ports.control.clone();
        let mut qemu = self.boot(Some((script, ports)))?;
        if let Some(p) = &self.proof {
            p.attach(qemu.child.id());
        }
        // The timeout covers the guest, not building the image overlay.
        let start = Instant::now();
        let _host = hostctl::Server::start(
            control,
            hostctl::HostCtx {
                run_dir: dir.clone(),
                stats_socket: (!self.controllers.is_empty()).then(|| self.stats_socket()),
                qmp_socket: self.qmp_socket(),
                mem_bytes: u64::from(self.opts.mem_mib) << 20,
                witness: self.witness.clone(),
                proof: self.proof.clone(),
            },
        );
        let _removals = self.watch_removals();
        let mut out = Tail::new(out_path, output == Output::Stream, false);
        let mut err = Tail::new(err_path, output == Output::Stream, true);
        let console = dir.join("console.log");
        let qemu_exit = loop {
            out.pump();
            err.pump();
            if let Some(code) = qemu.try_exit() {
                break code;
            }
            if let Some(sig) = procs::signalled() {
                qemu.stop(Duration::from_secs(2));
                bail!("interrupted by signal {sig}; the guest and its devices were stopped");
            }
            if self.opts.gdb.is_none() && start.elapsed() > timeout {
                qemu.stop(Duration::from_secs(2));
                let saved = console::save_log(&console);
                return Err(exit::with(
                    exit::TIMEOUT,
                    format!(
                        "the guest did not finish within {} s (raise --timeout, or look at the console log {}):\n{}",
                        timeout.as_secs(),
                        saved.display(),
                        console::report(&console)
                    ),
                ));
            }
            if let Some(h) = self
                .helpers
                .iter_mut()
                .find_map(|h| h.proc.try_exit().map(|_| &*h))
            {
                // virtiofsd leaves when the guest resets its device on the
                // way down: a helper that exits while QEMU shuts down is fine.
                if let Some(code) = qemu.wait_exit(Duration::from_secs(3)) {
                    break code;
                }
                qemu.stop(Duration::from_secs(2));
                bail!(
                    "{} died while the guest ran:\n{}",
                    h.name,
                    console::tail(&h.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        out.pump();
        err.pump();
        let text = fs::read_to_string(&console).unwrap_or_default();
        let report = fs::read_to_string(&status_path).unwrap_or_default();
        let Some(guest) = GuestReport::parse(&report) else {
            let saved = console::save_log(&console);
            let (code, who) = stop_cause(qemu_exit, &text);
            return Err(exit::with(
                code,
                format!(
                    "{who} stopped without reporting an exit status (QEMU exit {qemu_exit}; console log {}):\n{}{}",
                    saved.display(),
                    console::tail(&dir.join("qemu.log"), 10),
                    console::report(&console)
                ),
            ));
        };
        Ok(GuestResult {
            status: guest.status,
            stdout: out.captured,
            stderr: err.captured,
            guest,
        })
    }

    /// Interactive console on this terminal; returns QEMU's exit code.
    pub fn shell(&mut self) -> Result<i32> {
        // The terminal is QEMU's: Ctrl-C goes to the guest, Ctrl-A X quits.
        procs::ignore_interrupt();
        let mut qemu = self.boot(None)?;
        let _removals = self.watch_removals();
        Ok(qemu.child.wait().map(|s| s.code().unwrap_or(1))?)
    }
}

/// Why a guest ended without an exit status, as (launcher exit status,
/// who stopped): QEMU killed by a signal (an abort in QEMU itself) is not
/// the guest kernel dying; kernel output otherwise means the guest booted
/// and died; none means QEMU refused to start (bad --qemu-arg, say).
fn stop_cause(qemu_exit: i32, console: &str) -> (u8, &'static str) {
    if qemu_exit > 128 {
        (
            exit::REFUSED,
            "QEMU died (killed by a signal) and the guest",
        )
    } else if console.trim().is_empty() {
        (exit::REFUSED, "the guest")
    } else {
        (exit::KERNEL_DIED, "the guest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qemu_abort_is_not_reported_as_a_guest_kernel_death() {
        let booted = "p2pnvme-init: up\n[ 1.0] nvme nvme0: ...";
        assert_eq!(stop_cause(134, booted).0, exit::REFUSED);
        assert!(stop_cause(134, booted).1.starts_with("QEMU died"));
        assert_eq!(stop_cause(0, booted).0, exit::KERNEL_DIED);
        assert_eq!(stop_cause(1, "").0, exit::REFUSED);
    }
}
