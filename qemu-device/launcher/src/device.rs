//! The device process: one `p2pnvme device` serving the project's
//! controllers over vfio-user, plus its stats socket.

use crate::procs::Helper;
use crate::vm::Iommu;
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
    /// The guest's IOMMU: under virtio-iommu every controller probes DMA to
    /// addresses no DMA_MAP announced (QEMU announces no MMIO mapping).
    pub iommu: Iommu,
}

/// The document the device process reads: every path travels as a JSON
/// string, so commas, spaces, '=' and ':' in it are plain characters.
fn document(cfg: &DeviceConfig) -> p2pnvme_device::DeviceConfig {
    let controllers = cfg
        .controllers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let namespaces = c
                .namespaces
                .iter()
                .map(|f| p2pnvme_device::NamespaceConfig {
                    file: f.clone(),
                    size: cfg.ns_size,
                    lba: cfg.lba,
                })
                .collect();
            let mut ctrl = p2pnvme_device::ControllerConfig::new(c.socket.clone(), namespaces);
            ctrl.cmb_mib = u64::from(cfg.cmb_mib);
            ctrl.serial = Some(nvme_serial(i));
            if cfg.msi.contains(&i) {
                ctrl.irq = p2pnvme_device::Irq::Msi;
            }
            ctrl.poll_us = Some(per_controller(cfg.poll_us, i));
            ctrl.moderation_us = Some(per_controller(cfg.irq_moderation_us, i));
            if cfg.iommu == Iommu::Virtio {
                ctrl.unannounced_dma = p2pnvme_device::UnannouncedDma::Probe;
            }
            ctrl
        })
        .collect();
    let mut doc = p2pnvme_device::DeviceConfig::new(controllers);
    doc.stats_socket = Some(cfg.stats_socket.to_path_buf());
    doc.faults = cfg.faults.to_vec();
    doc.trace = cfg.trace.map(Path::to_path_buf);
    doc
}

/// Controller `i`'s value of a per-controller list (the last one repeats;
/// 0 for an empty list).
fn per_controller(list: &[u64], i: usize) -> u64 {
    list.get(i).or(list.last()).copied().unwrap_or(0)
}

/// Starts the device process and waits for its sockets. Its configuration
/// goes to `device.json` beside the stats socket.
pub fn start(cfg: &DeviceConfig, log: PathBuf) -> Result<Helper> {
    let exe = std::env::current_exe().context("locating the p2pnvme binary")?;
    let file = cfg
        .stats_socket
        .parent()
        .unwrap_or(Path::new("."))
        .join("device.json");
    std::fs::write(&file, document(cfg).to_json())
        .with_context(|| format!("writing the device config {}", file.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("device").arg("--config").arg(&file);
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

    /// Two controllers with their sockets and one namespace each in `dir`.
    fn two_controllers_in(dir: &str) -> Vec<Controller> {
        (0..2)
            .map(|i| Controller {
                socket: format!("{dir}/nvme{i}.sock").into(),
                namespaces: vec![format!("{dir}/ns{i}.img").into()],
            })
            .collect()
    }

    #[test]
    fn the_written_document_passes_the_devices_validation() {
        let controllers = two_controllers_in("/r, x=y:z");
        let cfg = DeviceConfig {
            controllers: &controllers,
            cmb_mib: 16,
            ns_size: 1 << 30,
            lba: 512,
            poll_us: &[200],
            irq_moderation_us: &[30, 0],
            stats_socket: Path::new("/r, x=y:z/stats.sock"),
            faults: &["ctrl=1,op=read,never".into()],
            trace: None,
            msi: &[1],
            iommu: Iommu::Amd,
        };
        let doc = document(&cfg);
        let read = p2pnvme_device::DeviceConfig::from_json(&doc.to_json()).unwrap();
        let specs = p2pnvme_device::validate_config(&read).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].socket, controllers[1].socket);
        assert_eq!(specs[1].namespaces[0].file, controllers[1].namespaces[0]);
        assert_eq!(specs[1].serial, "p2pnvme-1");
        assert_eq!(specs[1].irq, p2pnvme_device::IrqMode::Msi);
        assert_eq!(specs[0].irq, p2pnvme_device::IrqMode::Msix);
        assert_eq!((specs[0].poll_us, specs[1].poll_us), (200, 200));
        assert_eq!((specs[0].moderation_us, specs[1].moderation_us), (30, 0));
        assert!(specs
            .iter()
            .all(|s| s.unannounced_dma == p2pnvme_device::UnannouncedDma::Off));
    }

    #[test]
    fn every_controller_probes_unannounced_dma_only_under_virtio_iommu() {
        let controllers = two_controllers_in("/r");
        for (iommu, want) in [
            (Iommu::None, p2pnvme_device::UnannouncedDma::Off),
            (Iommu::Intel, p2pnvme_device::UnannouncedDma::Off),
            (Iommu::Amd, p2pnvme_device::UnannouncedDma::Off),
            (Iommu::Virtio, p2pnvme_device::UnannouncedDma::Probe),
        ] {
            let cfg = DeviceConfig {
                controllers: &controllers,
                cmb_mib: 16,
                ns_size: 1 << 20,
                lba: 512,
                poll_us: &[],
                irq_moderation_us: &[],
                stats_socket: Path::new("/r/stats.sock"),
                faults: &[],
                trace: None,
                msi: &[],
                iommu,
            };
            let read = p2pnvme_device::DeviceConfig::from_json(&document(&cfg).to_json()).unwrap();
            let specs = p2pnvme_device::validate_config(&read).unwrap();
            assert!(specs.iter().all(|s| s.unannounced_dma == want), "{iommu:?}");
        }
    }

    #[test]
    fn the_launchers_poll_and_moderation_defaults_are_the_devices() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            vm: crate::options::VmOptions,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["p2pnvme"]).unwrap();
        assert_eq!(cli.vm.poll_us, [p2pnvme_device::DEFAULT_POLL_US]);
        assert_eq!(
            cli.vm.irq_moderation_us,
            [p2pnvme_device::DEFAULT_MODERATION_US]
        );
        assert!(
            cli.vm.irq_moderation_us.iter().all(|&us| us > 0),
            "moderation on"
        );
    }
}
