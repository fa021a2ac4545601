//! p2pnvme device: NVMe controllers with a Controller Memory Buffer, served
//! to QEMU over vfio-user. One process serves several controllers so that
//! DMA between their CMBs is a real peer-to-peer transfer.
//!
//! Modules, top layer first (each imports only from layers below it):
//! - `config`: the command line and the `DeviceConfig` document, checked
//!   once by `config::validate`; [`run_config`] starts what it describes.
//! - `vfio`: the adapter the vfio-user server (crate `p2pnvme-vfio-user`)
//!   calls: BAR0 and CMB region accesses, DMA maps, interrupt fds, and the
//!   PCI configuration space (`vfio::pci`). `control`: the stats socket.
//! - `controller`: one NVMe controller, a struct of owned parts (registers,
//!   queues, worker timing, CMB, vectors, interrupts, events, error log,
//!   shadow doorbells, held completions) and its worker.
//! - `commands`: admin and I/O command execution on narrow contexts, driven
//!   by the command table (`commands::table`); `commands::features` is the
//!   controller's features part (feature values, SMART host counters).
//! - `dma` (address routing, PRP/SGL walking, guest RAM, CMBs),
//!   `namespace` (backing files), `faults` (rules and matching).
//! - `stats` (exact counters), `trace` (one JSON line per command).
//! - `wire`, `nvme`, `limits`, `irq_mode`: spec layouts and constants.
//!
//! Data path of one command: the host rings a doorbell (a BAR0 write in
//! `vfio`, or a shadow doorbell the worker polls, `controller::shadow`) ->
//! the worker fetches the submission entry (`controller::queues` through
//! `controller::io_queues`) ->
//! `commands::table` runs the command -> every data pointer is resolved by
//! `dma` to guest RAM, the own CMB or a peer's CMB -> `stats::Counters`
//! counts each byte by where it went -> the completion is posted
//! (`controller::queues`) -> the interrupt is signalled on its eventfd
//! (`controller::irq`).

#![deny(missing_docs)]

mod commands;
mod config;
mod control;
mod controller;
mod dma;
mod error;
pub mod faults;
mod irq_mode;
mod limits;
mod namespace;
mod nvme;
mod stats;
#[cfg(any(test, feature = "test-utils"))]
pub mod testhost;
#[cfg(test)]
mod tests;
mod trace;
mod vfio;
pub mod wire;

use error::{config_bail as bail, io, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use config::{
    parse_size, validate as validate_config, CtrlSpec, DeviceArgs, Limits, NsSpec,
    DEFAULT_MODERATION_US, DEFAULT_POLL_US, MAX_DMA_MAPS, MAX_MODERATION_US, MAX_POLL_US,
};
#[cfg(any(test, feature = "test-utils"))]
pub use controller::regs::RegMirror;
pub use error::Error;
pub use irq_mode::IrqMode;
pub use p2pnvme_docs::device_config::{
    ControllerConfig, DeviceConfig, Irq, NamespaceConfig, UnannouncedDma,
};

/// Serves every configured controller until SIGTERM or SIGINT, with the
/// default per-client limits.
pub fn run(args: DeviceArgs) -> Result<()> {
    run_limited(args, Limits::default())
}

/// [`run`] with per-client limits (`--max-dma-maps`).
pub fn run_limited(args: DeviceArgs, limits: Limits) -> Result<()> {
    run_config(args.to_config(&limits)?)
}

/// Serves what `cfg` describes (after [`validate_config`]) until SIGTERM
/// or SIGINT.
pub fn run_config(cfg: DeviceConfig) -> Result<()> {
    raise_fd_limit();
    let specs = validate_config(&cfg)?;
    let faults = Arc::new(faults::FaultTable::new(specs.len()));
    for rule in &cfg.faults {
        faults.add(rule).map_err(|e| Error::Config(e.to_string()))?;
    }
    let tracer = Arc::new(trace::Tracer::default());
    if let Some(f) = &cfg.trace {
        tracer
            .start(Some(f))
            .map_err(io(format!("cannot write --trace {}", f.display())))?;
    }
    let registries = peer_groups(&specs);
    let mut all_stats = vec![];
    let mut sockets: Vec<PathBuf> = vec![];
    let mut servers = vec![];
    for (id, s) in specs.into_iter().enumerate() {
        let mut namespaces = vec![];
        for ns in &s.namespaces {
            namespaces.push(namespace::Namespace::open(&ns.file, ns.size, ns.lba)?);
        }
        let counters = Arc::new(stats::Counters::new(id, &s.serial));
        all_stats.push(counters.clone());
        let mut ctrl = controller::Controller::new(
            controller::CtrlConfig {
                id,
                serial: s.serial.clone(),
                cmb_bytes: s.cmb_mib << 20,
                namespaces,
                irq: s.irq,
            },
            registries[id].clone(),
            counters,
        )
        .map_err(io("creating the CMB memory"))?;
        ctrl.set_poll(std::time::Duration::from_micros(s.poll_us));
        ctrl.set_moderation(std::time::Duration::from_micros(s.moderation_us));
        ctrl.faults = faults.clone();
        ctrl.trace = tracer.clone();
        ctrl.ram
            .set_limit(usize::try_from(cfg.max_dma_maps).unwrap_or(usize::MAX));
        ctrl.ram.set_unannounced(s.unannounced_dma);
        let server = p2pnvme_vfio_user::Server::bind(&s.socket).map_err(|source| Error::Serve {
            socket: s.socket.clone(),
            source,
        })?;
        sockets.push(s.socket.clone());
        let pci = vfio::pci::PciConfig::new(ctrl.cmb_bytes(), s.irq, ctrl.bus_master.clone());
        servers.push((server, vfio::Backend::new(ctrl, pci)));
    }
    if let Some(p) = &cfg.stats_socket {
        claim_socket(p)?;
        let c = control::Control {
            stats: all_stats,
            faults: faults.clone(),
            trace: tracer.clone(),
        };
        control::serve(p, c).map_err(io(format!("cannot listen on {}", p.display())))?;
        sockets.push(p.clone());
    }
    for (server, mut backend) in servers {
        backend.worker();
        // One client at a time; after it goes, the backend starts clean.
        std::thread::spawn(move || {
            if let Err(e) = server.serve(&mut backend) {
                log::error!("vfio-user server on {}: {e}", server.path().display());
            }
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(io("installing the SIGTERM/SIGINT handler"))?;
    }
    let mut ticks = 0u32;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(20) && tracer.on() {
            tracer.flush(); // a live trace file stays at most ~1 s behind
        }
    }
    tracer.stop();
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    Ok(())
}

/// Raises RLIMIT_NOFILE to its hard limit: many clients' fds (in-flight
/// DMA_MAP fds, interrupt eventfds, sockets) then fit.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                log::warn!("cannot raise the open-file limit to {}", r.rlim_max);
            }
        }
    }
}

/// One CMB registry per peer group, indexed like `specs`: a controller's
/// DMA never resolves to the CMB of a controller outside its group (another
/// client, another VM).
fn peer_groups(specs: &[CtrlSpec]) -> Vec<dma::CmbRegistry> {
    let mut groups: std::collections::HashMap<&str, dma::CmbRegistry> = Default::default();
    specs
        .iter()
        .map(|s| groups.entry(s.group.as_str()).or_default().clone())
        .collect()
}

/// Frees a stale socket path; refuses one another process still serves.
fn claim_socket(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "socket {} is busy: another device serves it; pick another path",
            path.display()
        );
    }
    std::fs::remove_file(path).map_err(io(format!("cannot remove stale socket {}", path.display())))
}

pub use p2pnvme_docs::stats::StatsDoc;

/// One JSON request to a device's control endpoint (its stats socket) and
/// the reply (`ok` false is a reply, not an error).
pub fn control_request(
    path: &Path,
    req: &p2pnvme_docs::control::Request,
) -> Result<p2pnvme_docs::control::Reply> {
    let line = serde_json::to_string(req).map_err(|e| Error::Stats(e.to_string()))?;
    let reply = socket_line(path, &line)?;
    serde_json::from_str(&reply)
        .map_err(|e| Error::Stats(format!("bad control reply ({e}): {reply}")))
}

/// Sends one line to the stats socket and returns the reply line.
pub fn socket_line(path: &Path, line: &str) -> Result<String> {
    let mut s = UnixStream::connect(path).map_err(io(format!(
        "connecting to the device stats socket {}",
        path.display()
    )))?;
    let what = || format!("stats socket {}", path.display());
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(io(what()))?;
    s.write_all(format!("{}\n", line.trim()).as_bytes())
        .map_err(io(what()))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(io(what()))?;
    Ok(reply)
}

/// One request to a device's stats socket (`get` or `reset`): the document
/// (for `reset`, the counters just before they were zeroed).
pub fn stats_query(path: &Path, op: &str) -> Result<StatsDoc> {
    let line = socket_line(path, op)?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| Error::Stats(format!("bad stats reply ({e}): {line}")))?;
    if let Some(e) = v.get("error") {
        return Err(Error::Stats(format!(
            "stats socket {}: {e}",
            path.display()
        )));
    }
    serde_json::from_value(v).map_err(|e| Error::Stats(format!("bad stats document ({e}): {line}")))
}
