//! The device's command line and its configuration document.
//!
//! Two ways in, one way through: `--config FILE` reads a
//! [`DeviceConfig`] (what the launcher writes), and the hand flags
//! (`--socket`, `--namespace`, `--controller`, ...) are turned into the same
//! struct by [`DeviceArgs::to_config`]. Either way [`validate`] checks it
//! once and builds the runtime [`CtrlSpec`]s. Every `k=v` list goes through
//! `p2pnvme_docs::kv` (a doubled comma is a literal comma).

mod validate;

use crate::error::{config_bail as bail, io, Error, Result};
use p2pnvme_docs::device_config::{
    ControllerConfig, DeviceConfig, Irq, NamespaceConfig, UnannouncedDma,
};
use p2pnvme_docs::kv::{self, Key};
use std::path::PathBuf;

pub use p2pnvme_docs::device_config::{DEFAULT_MODERATION_US, DEFAULT_POLL_US};
pub use validate::{validate, CtrlSpec, NsSpec, MAX_DMA_MAPS, MAX_MODERATION_US, MAX_POLL_US};

/// The `p2pnvme device` command line.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// Read everything to serve from this JSON document (`"version": 1`;
    /// the launcher writes one). Replaces the flags below.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Socket of a single controller (with --cmb-mib and --namespace).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// CMB size in MiB of the single controller (power of two >= 2; 0 = none) [default: 16].
    #[arg(long)]
    pub cmb_mib: Option<u64>,
    /// Namespace of the single controller: file=PATH,size=SIZE[,lba=512|4096]
    /// (`,,` is a comma inside PATH).
    #[arg(long)]
    pub namespace: Vec<String>,
    /// A controller: socket=PATH[,cmb-mib=M][,serial=S][,group=NAME][,irq=msix|msi][,poll-us=US][,moderation-us=US][,unannounced-dma=off|probe],ns=FILE:SIZE[:LBA][,ns=...]
    /// (`,,` is a comma inside a value). `irq=msi` offers plain MSI instead
    /// of MSI-X (QEMU 11.1 can hot-unplug only such a controller). `poll-us`
    /// and `moderation-us` override --poll-us and --irq-moderation-us for
    /// this controller. Controllers of one group (one VM) reach each other's
    /// CMBs; the default group is shared by every controller of the process.
    /// `unannounced-dma=probe` places DMA to an address no DMA_MAP announced
    /// by asking the client, as for a map without fd (for virtio-iommu).
    #[arg(long)]
    pub controller: Vec<String>,
    /// Unix socket serving the counters as JSON (`get`, `reset`).
    #[arg(long)]
    pub stats_socket: Option<PathBuf>,
    /// Microseconds to keep polling shadow doorbells after the queues
    /// drain, a quarter of that while the driver pauses for more than twice
    /// as long (0: publish event indices at once, so the driver rings every
    /// time) [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_POLL_US))]
    pub poll_us: Option<u64>,
    /// Adaptive interrupt moderation, in µs (0: off): while the host has
    /// not set Interrupt Coalescing, an I/O vector is signalled once no
    /// command arrived for this long (at most 10 times that after its
    /// first held entry, or at 32 entries), or at once when it holds as
    /// many entries as the driver kept in flight last time [default: 50].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_MODERATION_US))]
    pub irq_moderation_us: Option<u64>,
    /// A fault rule, e.g. `op=read,ns=1,nth=10,status=0x281` (repeatable;
    /// grammar in the device README).
    #[arg(long, value_name = "RULE")]
    pub fault: Vec<String>,
    /// Write one JSON line per command here (the command trace).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// Limits on what one vfio-user client may make the process hold.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Limits {
    /// DMA_MAP sections one client may hold; more are refused with ENOSPC [default: 8192].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_DMA_MAPS))]
    pub max_dma_maps: Option<u64>,
}

const NAMESPACE_KEYS: &[Key] = &[Key::value("file"), Key::value("size"), Key::value("lba")];
const CONTROLLER_KEYS: &[Key] = &[
    Key::value("socket"),
    Key::value("cmb-mib"),
    Key::value("serial"),
    Key::value("group"),
    Key::value("irq"),
    Key::value("poll-us"),
    Key::value("moderation-us"),
    Key::value("unannounced-dma"),
    Key::repeated("ns"),
];

/// Parses a size with an optional binary K/M/G/T suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("bad size '{s}': use a number with an optional K, M, G or T suffix");
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// A number in a `k=v` list, or an error naming the key.
fn number(key: &str, v: &str, what: &str) -> Result<u64> {
    v.parse()
        .map_err(|_| Error::Config(format!("bad {key}={v}: use {what}")))
}

fn size(v: &str) -> Result<u64> {
    parse_size(v).map_err(Error::Config)
}

/// An LBA size as written; `validate` checks it is 512 or 4096.
fn lba(v: &str) -> Result<u32> {
    number("lba", v, "512 or 4096")?
        .try_into()
        .map_err(|_| Error::Config(format!("bad lba={v}: use 512 or 4096")))
}

/// `--namespace file=PATH,size=SIZE[,lba=512|4096]`.
fn namespace_flag(text: &str) -> Result<NamespaceConfig> {
    let items = kv::parse(text, NAMESPACE_KEYS)
        .map_err(|e| Error::Config(format!("--namespace '{text}': {e}")))?;
    let (mut file, mut sz, mut l) = (None, None, p2pnvme_docs::device_config::DEFAULT_LBA);
    for it in items {
        let v = it.value.unwrap_or_default();
        match it.key.as_str() {
            "file" => file = Some(PathBuf::from(v)),
            "size" => sz = Some(size(&v)?),
            _ => l = lba(&v)?,
        }
    }
    let (Some(file), Some(size)) = (file, sz) else {
        bail!("--namespace '{text}' needs file= and size=");
    };
    Ok(NamespaceConfig { file, size, lba: l })
}

/// `ns=FILE:SIZE[:LBA]` of a `--controller`: the last one or two `:`
/// fields are the size and LBA, so FILE may hold `:` itself.
fn ns_item(v: &str) -> Result<NamespaceConfig> {
    let p: Vec<&str> = v.rsplitn(3, ':').collect();
    let (file, sz, l) = match p.as_slice() {
        [l, sz, file] if *l == "512" || *l == "4096" => (file.to_string(), *sz, *l),
        [sz, file] => (file.to_string(), *sz, "512"),
        [last, sz, file] => (format!("{file}:{sz}"), *last, "512"),
        _ => bail!("bad ns={v}: use ns=FILE:SIZE[:LBA]"),
    };
    Ok(NamespaceConfig {
        file: file.into(),
        size: size(sz)?,
        lba: lba(l)?,
    })
}

/// One `--controller` list.
fn controller_flag(text: &str) -> Result<ControllerConfig> {
    let items = kv::parse(text, CONTROLLER_KEYS)
        .map_err(|e| Error::Config(format!("--controller '{text}': {e}")))?;
    let mut c = ControllerConfig::new(PathBuf::new(), vec![]);
    for it in items {
        let v = it.value.unwrap_or_default();
        let key = it.key.as_str();
        match key {
            "socket" => c.socket = v.into(),
            "cmb-mib" => c.cmb_mib = number(key, &v, "a number of MiB")?,
            "serial" => c.serial = Some(v),
            "group" => c.group = v,
            "irq" => {
                c.irq = match v.as_str() {
                    "msix" => Irq::Msix,
                    "msi" => Irq::Msi,
                    _ => bail!("bad irq '{v}': use irq=msix or irq=msi"),
                }
            }
            "unannounced-dma" => {
                c.unannounced_dma = match v.as_str() {
                    "off" => UnannouncedDma::Off,
                    "probe" => UnannouncedDma::Probe,
                    _ => bail!(
                    "bad unannounced-dma '{v}': use unannounced-dma=off or unannounced-dma=probe"
                ),
                }
            }
            "poll-us" => c.poll_us = Some(number(key, &v, "a number of microseconds")?),
            "moderation-us" => c.moderation_us = Some(number(key, &v, "a number of microseconds")?),
            _ => c.namespaces.push(ns_item(&v)?),
        }
    }
    if c.socket.as_os_str().is_empty() {
        bail!("--controller '{text}' needs socket=PATH");
    }
    Ok(c)
}

impl DeviceArgs {
    /// The document the arguments describe: `--config`'s file, or the hand
    /// flags turned into one. Not yet validated (see [`validate`]).
    pub fn to_config(&self, limits: &Limits) -> Result<DeviceConfig> {
        if let Some(path) = &self.config {
            return self.read_config_file(path, limits);
        }
        let mut controllers = vec![];
        if let Some(sock) = &self.socket {
            let mut c = ControllerConfig::new(sock.clone(), vec![]);
            c.cmb_mib = self.cmb_mib.unwrap_or(c.cmb_mib);
            for n in &self.namespace {
                c.namespaces.push(namespace_flag(n)?);
            }
            controllers.push(c);
        } else if !self.namespace.is_empty() {
            bail!("--namespace goes with --socket; with --controller use ns=FILE:SIZE[:LBA]");
        } else if self.cmb_mib.is_some() {
            bail!("--cmb-mib goes with --socket; with --controller use cmb-mib=M");
        }
        for c in &self.controller {
            controllers.push(controller_flag(c)?);
        }
        let mut cfg = DeviceConfig::new(controllers);
        cfg.stats_socket = self.stats_socket.clone();
        cfg.poll_us = self.poll_us.unwrap_or(cfg.poll_us);
        cfg.irq_moderation_us = self.irq_moderation_us.unwrap_or(cfg.irq_moderation_us);
        cfg.faults = self.fault.clone();
        cfg.trace = self.trace.clone();
        cfg.max_dma_maps = limits.max_dma_maps.unwrap_or(cfg.max_dma_maps);
        Ok(cfg)
    }

    fn read_config_file(&self, path: &std::path::Path, limits: &Limits) -> Result<DeviceConfig> {
        let flags = [
            ("--socket", self.socket.is_some()),
            ("--cmb-mib", self.cmb_mib.is_some()),
            ("--namespace", !self.namespace.is_empty()),
            ("--controller", !self.controller.is_empty()),
            ("--stats-socket", self.stats_socket.is_some()),
            ("--poll-us", self.poll_us.is_some()),
            ("--irq-moderation-us", self.irq_moderation_us.is_some()),
            ("--fault", !self.fault.is_empty()),
            ("--trace", self.trace.is_some()),
            ("--max-dma-maps", limits.max_dma_maps.is_some()),
        ];
        if let Some((flag, _)) = flags.iter().find(|(_, given)| *given) {
            bail!("--config replaces {flag}: put it in the config file or drop --config");
        }
        let text = std::fs::read_to_string(path)
            .map_err(io(format!("cannot read --config {}", path.display())))?;
        DeviceConfig::from_json(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests;
