//! The one check of a [`DeviceConfig`], whether it came from `--config` or
//! from the hand flags: it refuses what the device cannot serve with a
//! one-line error and builds the runtime controller specs.

use crate::error::{config_bail as bail, Error, Result};
use crate::faults::Rule;
use crate::irq_mode::IrqMode;
use p2pnvme_docs::device_config::{
    DeviceConfig, NamespaceConfig, UnannouncedDma, DEVICE_CONFIG_VERSION,
};
use std::path::PathBuf;

/// Largest --poll-us / poll-us=.
pub const MAX_POLL_US: u64 = 100_000;
/// Largest --irq-moderation-us / moderation-us=.
pub const MAX_MODERATION_US: u64 = 10_000;
/// Largest --max-dma-maps.
pub const MAX_DMA_MAPS: u64 = 1 << 20;
/// Longest serial number (the Identify Controller field's size).
const MAX_SERIAL: usize = 20;

/// One namespace, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsSpec {
    /// Backing file.
    pub file: PathBuf,
    /// Bytes, a non-zero multiple of `lba`.
    pub size: u64,
    /// 512 or 4096.
    pub lba: u32,
}

/// One controller, checked, with the process defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtrlSpec {
    /// Its vfio-user socket.
    pub socket: PathBuf,
    /// CMB size in MiB (0 or a power of two >= 2).
    pub cmb_mib: u64,
    /// Serial number, 1 to 20 printable ASCII bytes.
    pub serial: String,
    /// Peer group: DMA resolves only to CMBs of this group's controllers.
    pub group: String,
    /// MSI-X or MSI.
    pub irq: IrqMode,
    /// Shadow-doorbell polling in µs.
    pub poll_us: u64,
    /// Interrupt moderation in µs (0: off).
    pub moderation_us: u64,
    /// DMA to an address no DMA_MAP announced: probe it or fail at once.
    pub unannounced_dma: UnannouncedDma,
    /// Namespaces, nsid 1.. in order (at least one).
    pub namespaces: Vec<NsSpec>,
}

fn micros(key: &str, v: u64, max: u64) -> Result<u64> {
    if v > max {
        bail!("bad {key}={v}: use a number of microseconds from 0 to {max}");
    }
    Ok(v)
}

fn namespace(n: &NamespaceConfig) -> Result<NsSpec> {
    if n.lba != 512 && n.lba != 4096 {
        bail!("bad lba '{}': use 512 or 4096", n.lba);
    }
    if n.size == 0 || !n.size.is_multiple_of(u64::from(n.lba)) {
        bail!(
            "namespace {}: size {} must be a non-zero multiple of the LBA size {}",
            n.file.display(),
            n.size,
            n.lba
        );
    }
    Ok(NsSpec {
        file: n.file.clone(),
        size: n.size,
        lba: n.lba,
    })
}

/// Checks `cfg` and returns the controllers to serve, in order.
pub fn validate(cfg: &DeviceConfig) -> Result<Vec<CtrlSpec>> {
    if cfg.version != DEVICE_CONFIG_VERSION {
        bail!(
            "device config version {} is not supported: this p2pnvme reads version {DEVICE_CONFIG_VERSION}",
            cfg.version
        );
    }
    if cfg.controllers.is_empty() {
        bail!(
            "nothing to serve: give --socket PATH, --controller socket=PATH,... or --config FILE"
        );
    }
    let poll = micros("poll-us", cfg.poll_us, MAX_POLL_US)?;
    let moderation = micros("moderation-us", cfg.irq_moderation_us, MAX_MODERATION_US)?;
    if !(1..=MAX_DMA_MAPS).contains(&cfg.max_dma_maps) {
        bail!(
            "bad max-dma-maps={}: use 1 to {MAX_DMA_MAPS}",
            cfg.max_dma_maps
        );
    }
    let mut out: Vec<CtrlSpec> = vec![];
    for (i, c) in cfg.controllers.iter().enumerate() {
        let at = c.socket.display();
        if c.socket.as_os_str().is_empty() {
            bail!("controller {i} has no socket: add socket=PATH");
        }
        if out.iter().any(|o| o.socket == c.socket) {
            bail!("two controllers on socket {at}: give each its own");
        }
        if c.cmb_mib != 0 && (c.cmb_mib < 2 || !c.cmb_mib.is_power_of_two()) {
            bail!(
                "cmb-mib={}: use 0 or a power of two >= 2 (Linux maps CMBs in 2 MiB units)",
                c.cmb_mib
            );
        }
        let serial = c.serial.clone().unwrap_or_else(|| format!("p2pnvme-{i}"));
        if serial.is_empty()
            || serial.len() > MAX_SERIAL
            || !serial.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            bail!("bad serial '{serial}': use 1 to {MAX_SERIAL} printable ASCII characters");
        }
        if c.namespaces.is_empty() {
            bail!("controller on {at} has no namespace: add ns=FILE:SIZE");
        }
        out.push(CtrlSpec {
            socket: c.socket.clone(),
            cmb_mib: c.cmb_mib,
            serial,
            group: c.group.clone(),
            irq: IrqMode::from(c.irq),
            poll_us: match c.poll_us {
                Some(v) => micros("poll-us", v, MAX_POLL_US)?,
                None => poll,
            },
            moderation_us: match c.moderation_us {
                Some(v) => micros("moderation-us", v, MAX_MODERATION_US)?,
                None => moderation,
            },
            unannounced_dma: c.unannounced_dma,
            namespaces: c.namespaces.iter().map(namespace).collect::<Result<_>>()?,
        });
    }
    for text in &cfg.faults {
        Rule::parse(text)
            .and_then(|r| r.check_controllers(text, out.len()))
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    Ok(out)
}
