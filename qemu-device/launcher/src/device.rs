//! The device process: one `p2pnvme device` serving the project's
//! controllers over vfio-user, plus its stats socket.

use crate::procs::Helper;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One project controller: its vfio-user socket and a backing file per namespace.
pub struct Controller {
    /// vfio-user socket QEMU connects to.
    pub socket: PathBuf,
    /// Namespace backing files, nsid 1.. in order.
    pub namespaces: Vec<PathBuf>,
}

/// Serial number of the project's controller `i`, how guest scripts find it.
pub fn nvme_serial(i: usize) -> String {
    format!("p2pnvme-{i}")
}

/// What the device process serves.
pub struct DeviceConfig<'a> {
    pub controllers: &'a [Controller],
    pub cmb_mib: u32,
    pub ns_size: u64,
    pub lba: u32,
    pub poll_us: u64,
    pub stats_socket: &'a Path,
    /// Fault rules installed before the guest boots (already checked).
    pub faults: &'a [String],
    /// Where the device writes its command trace.
    pub trace: Option<&'a Path>,
    /// Controllers that interrupt by MSI instead of MSI-X (`irq=msi`).
    pub msi: &'a [usize],
}

/// Starts the device process and waits for its sockets.
pub fn start(cfg: &DeviceConfig, log: PathBuf) -> Result<Helper> {
    let exe = std::env::current_exe().context("locating the p2pnvme binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("device");
    for (i, c) in cfg.controllers.iter().enumerate() {
        let mut spec = format!(
            "socket={},cmb-mib={},serial={}",
            c.socket.display(),
            cfg.cmb_mib,
            nvme_serial(i)
        );
        if cfg.msi.contains(&i) {
            spec.push_str(",irq=msi");
        }
        for f in &c.namespaces {
            spec.push_str(&format!(",ns={}:{}:{}", f.display(), cfg.ns_size, cfg.lba));
        }
        cmd.arg("--controller").arg(spec);
    }
    cmd.arg("--stats-socket").arg(cfg.stats_socket);
    cmd.arg("--poll-us").arg(cfg.poll_us.to_string());
    for rule in cfg.faults {
        cmd.arg("--fault").arg(rule);
    }
    if let Some(t) = cfg.trace {
        cmd.arg("--trace").arg(t);
    }
    let ready: Vec<PathBuf> = cfg.controllers.iter().map(|c| c.socket.clone()).collect();
    Helper::start(
        "the device process",
        &mut cmd,
        log,
        &ready,
        Duration::from_secs(20),
    )
}
