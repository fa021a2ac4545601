//! Host control channel: the guest asks the host to act at exact points of a
//! test (reset device counters, save them, dump guest RAM through QMP, open
//! and close a witness measurement window) over a virtio-serial port backed
//! by a unix socket, and waits for each answer.
//!
//! Protocol: one request line, one reply line (`ok`, `pong`, `error MSG`).

use crate::guest_ram::ProofWatch;
use crate::procs::Worker;
use crate::witness::Witness;
use crate::{qmp, ramscan, stats};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The counters `prove-end` saves in the run directory.
pub const PROVE_STATS: &str = "prove-stats.json";
/// What the channel may touch on the host.
#[derive(Clone)]
pub struct HostCtx {
    pub run_dir: PathBuf,
    pub stats_socket: Option<PathBuf>,
    pub qmp_socket: PathBuf,
    pub mem_bytes: u64,
    pub witness: Option<Arc<Witness>>,
    /// `--prove`'s watch: times the command and scans guest RAM at its end.
    pub proof: Option<Arc<ProofWatch>>,
}

/// Serves the guest's requests until `stop` is set.
pub struct Server {
    /// Held for its Drop: stops and joins the thread.
    _thread: Worker,
}

impl Server {
    /// Starts serving the control socket `ctl_socket` (QEMU's) with `ctx`.
    pub fn start(ctl_socket: PathBuf, ctx: HostCtx) -> Server {
        Server {
            _thread: Worker::spawn(move |s| serve(&ctl_socket, &ctx, s)),
        }
    }
}

fn serve(path: &Path, ctx: &HostCtx, stop: &AtomicBool) {
    // QEMU creates the socket as it starts; connect when it appears.
    let stream = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(s) = UnixStream::connect(path) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                let reply = match handle(line.trim(), ctx) {
                    Ok(r) => r,
                    Err(e) => format!("error {e:#}"),
                };
                line.clear();
                if writer.write_all(format!("{reply}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// A plain file name inside the run directory (no paths from the guest).
fn run_file(ctx: &HostCtx, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("bad file name '{name}'");
    }
    Ok(ctx.run_dir.join(name))
}

fn handle(req: &str, ctx: &HostCtx) -> Result<String> {
    let mut words = req.split_whitespace();
    let stats = || {
        ctx.stats_socket
            .as_deref()
            .context("no p2pnvme device in this guest")
    };
    let witness = || {
        ctx.witness
            .as_deref()
            .context("no witness in this run (p2pnvme run --witness FILE)")
    };
    match (words.next(), words.next()) {
        (Some("ping"), None) => Ok("pong".into()),
        (Some("stats-reset"), None) => {
            stats::reset(stats()?)?;
            Ok("ok".into())
        }
        (Some("stats-save"), Some(name)) => {
            let doc = stats::get(stats()?)?;
            std::fs::write(run_file(ctx, name)?, serde_json::to_string(&doc)?)?;
            Ok("ok".into())
        }
        (Some("pmemsave"), Some(name)) => {
            // The RAM below 4 GiB (all of it for a guest below 2.75 GiB).
            let r = ramscan::q35_ranges(ctx.mem_bytes)[0];
            qmp::pmemsave(&ctx.qmp_socket, r.start, r.len, &run_file(ctx, name)?)?;
            Ok("ok".into())
        }
        // Sent by the guest's init around a `--prove` command.
        (Some("prove-start"), None) => {
            if let Some(s) = &ctx.stats_socket {
                stats::reset(s)?;
            }
            if let Some(p) = &ctx.proof {
                p.started();
            }
            Ok("ok".into())
        }
        (Some("prove-end"), None) => {
            if let Some(s) = &ctx.stats_socket {
                let doc = stats::get(s)?;
                std::fs::write(ctx.run_dir.join(PROVE_STATS), serde_json::to_string(&doc)?)?;
            }
            if let Some(p) = &ctx.proof {
                p.ended()?;
            }
            Ok("ok".into())
        }
        (Some("witness-start"), Some(name)) => {
            witness()?.start(&ctx.qmp_socket, name)?;
            Ok("ok".into())
        }
        (Some("witness-stop"), None) => {
            witness()?.stop()?;
            Ok("ok".into())
        }
        _ => bail!("unknown request '{req}' (ping, stats-reset, stats-save NAME, pmemsave NAME, prove-start, prove-end, witness-start NAME, witness-stop)"),
    }
}
