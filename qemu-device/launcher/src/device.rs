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
    /// Shadow-doorbell polling in µs, per controller (the last repeats).
    pub poll_us: &'a [u64],
    /// Adaptive interrupt moderation in µs (0: off), per controller (the
    /// last repeats).
    pub irq_moderation_us: &'a [u64],
    pub stats_socket: &'a Path,
    /// Fault rules installed before the guest boots (already checked).
    pub faults: &'a [String],
    /// Where the device writes its command trace.
    pub trace: Option<&'a Path>,
    /// Controllers that interrupt by MSI instead of MSI-X (`irq=msi`).
    pub msi: &'a [usize],
}

/// The `--controller` spec of controller `i`.
fn controller_spec(cfg: &DeviceConfig, i: usize) -> String {
    let c = &cfg.controllers[i];
    let mut spec = format!(
        "socket={},cmb-mib={},serial={}",
        c.socket.display(),
        cfg.cmb_mib,
        nvme_serial(i)
    );
    if cfg.msi.contains(&i) {
        spec.push_str(",irq=msi");
    }
    // One value for all travels as the device's global option.
    for (key, list) in [
        ("poll-us", cfg.poll_us),
        ("moderation-us", cfg.irq_moderation_us),
    ] {
        if list.len() > 1 {
            spec.push_str(&format!(",{key}={}", per_controller(list, i)));
        }
    }
    for f in &c.namespaces {
        spec.push_str(&format!(",ns={}:{}:{}", f.display(), cfg.ns_size, cfg.lba));
    }
    spec
}

/// Controller `i`'s value of a per-controller list (the last one repeats;
/// 0 for an empty list).
fn per_controller(list: &[u64], i: usize) -> u64 {
    list.get(i).or(list.last()).copied().unwrap_or(0)
}

/// Starts the device process and waits for its sockets.
pub fn start(cfg: &DeviceConfig, log: PathBuf) -> Result<Helper> {
    let exe = std::env::current_exe().context("locating the p2pnvme binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("device");
    for i in 0..cfg.controllers.len() {
        cmd.arg("--controller").arg(controller_spec(cfg, i));
    }
    cmd.arg("--stats-socket").arg(cfg.stats_socket);
    cmd.arg("--poll-us")
        .arg(per_controller(cfg.poll_us, 0).to_string());
    cmd.arg("--irq-moderation-us")
        .arg(per_controller(cfg.irq_moderation_us, 0).to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_controllers_listed_for_msi_get_irq_msi() {
        let controllers: Vec<Controller> = (0..2)
            .map(|i| Controller {
                socket: format!("/r/nvme{i}.sock").into(),
                namespaces: vec![format!("/r/ns{i}.img").into()],
            })
            .collect();
        let cfg = DeviceConfig {
            controllers: &controllers,
            cmb_mib: 16,
            ns_size: 1 << 30,
            lba: 512,
            poll_us: &[200],
            irq_moderation_us: &[30, 0],
            stats_socket: Path::new("/r/stats.sock"),
            faults: &[],
            trace: None,
            msi: &[1],
        };
        assert_eq!(
            controller_spec(&cfg, 0),
            "socket=/r/nvme0.sock,cmb-mib=16,serial=p2pnvme-0,moderation-us=30,ns=/r/ns0.img:1073741824:512"
        );
        assert_eq!(
            controller_spec(&cfg, 1),
            "socket=/r/nvme1.sock,cmb-mib=16,serial=p2pnvme-1,irq=msi,moderation-us=0,ns=/r/ns1.img:1073741824:512"
        );
        // The device's own parser takes the spec.
        let args = p2pnvme_device::DeviceArgs {
            socket: None,
            cmb_mib: 16,
            namespace: vec![],
            controller: vec![controller_spec(&cfg, 1)],
            stats_socket: None,
            poll_us: 0,
            irq_moderation_us: 0,
            fault: vec![],
            trace: None,
        };
        assert!(args.controllers().is_ok());
    }
}
