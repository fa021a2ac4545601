//! Command line of the device server.

use crate::error::{config_bail as bail, Error, Result};
use crate::irq_mode::IrqMode;
use std::path::PathBuf;

/// Default shadow-doorbell polling after the queues drain, in µs (see
/// `PollPace` in `controller/shadow.rs`).
pub const DEFAULT_POLL_US: u64 = 1000;

/// The `p2pnvme device` command line.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Socket of a single controller (with --cmb-mib and --namespace).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// CMB size in MiB of the single controller (power of two >= 2; 0 = none).
    #[arg(long, default_value_t = 16)]
    pub cmb_mib: u64,
    /// Namespace of the single controller: file=PATH,size=SIZE[,lba=512|4096].
    #[arg(long)]
    pub namespace: Vec<String>,
    /// A controller: socket=PATH[,cmb-mib=M][,serial=S][,group=NAME][,irq=msix|msi][,poll-us=US][,moderation-us=US],ns=FILE:SIZE[:LBA][,ns=...].
    /// `irq=msi` offers plain MSI instead of MSI-X (QEMU 11.1 can hot-unplug
    /// only such a controller). `poll-us` and `moderation-us` override
    /// --poll-us and --irq-moderation-us for this controller (so two
    /// settings can be compared in one guest). Controllers of one group (one VM) reach each other's CMBs; the
    /// default group is shared by every controller of the process.
    #[arg(long)]
    pub controller: Vec<String>,
    /// Unix socket serving the counters as JSON (`get`, `reset`).
    #[arg(long)]
    pub stats_socket: Option<PathBuf>,
    /// Microseconds to keep polling shadow doorbells after the queues
    /// drain, a quarter of that while the driver pauses for more than twice
    /// as long (0: publish event indices at once, so the driver rings every
    /// time).
    #[arg(long, default_value_t = DEFAULT_POLL_US, value_parser = clap::value_parser!(u64).range(0..=MAX_POLL_US))]
    pub poll_us: u64,
    /// Adaptive interrupt moderation, in µs (0: off): while the host has
    /// not set Interrupt Coalescing, an I/O vector is signalled once no
    /// command arrived for this long (at most 10 times that after its
    /// first held entry, or at 32 entries).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_MODERATION_US))]
    pub irq_moderation_us: u64,
    /// A fault rule, e.g. `op=read,ns=1,nth=10,status=0x281` (repeatable;
    /// grammar in the device README).
    #[arg(long, value_name = "RULE")]
    pub fault: Vec<String>,
    /// Write one JSON line per command here (the command trace).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// Limits on what one vfio-user client may make the process hold.
#[derive(clap::Args, Clone, Debug)]
pub struct Limits {
    /// DMA_MAP sections one client may hold; more are refused with ENOSPC.
    #[arg(long, default_value_t = crate::dma::DEFAULT_MAX_DMA_MAPS as u64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_dma_maps: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_dma_maps: crate::dma::DEFAULT_MAX_DMA_MAPS as u64,
        }
    }
}

pub struct NsSpec {
    pub file: PathBuf,
    pub size: u64,
    pub lba: u32,
}

pub struct CtrlSpec {
    pub socket: PathBuf,
    pub cmb_mib: u64,
    pub serial: String,
    /// Peer group: DMA resolves only to CMBs of this group's controllers.
    pub group: String,
    /// MSI-X or MSI.
    pub irq: IrqMode,
    /// Shadow-doorbell polling in µs (None: --poll-us).
    pub poll_us: Option<u64>,
    /// Interrupt moderation in µs (None: --irq-moderation-us).
    pub moderation_us: Option<u64>,
    pub namespaces: Vec<NsSpec>,
}

/// Largest --poll-us / poll-us=.
pub const MAX_POLL_US: u64 = 100_000;
/// Largest --irq-moderation-us / moderation-us=.
pub const MAX_MODERATION_US: u64 = 10_000;

/// A per-controller microsecond value, at most `max`.
fn micros(key: &str, v: &str, max: u64) -> Result<u64> {
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => bail!("bad {key}={v}: use a number of microseconds from 0 to {max}"),
    }
}

/// Parses a size with an optional binary K/M/G/T suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(format!(
                        "bad size '{s}': use a number with an optional K, M, G or T suffix"
                    ))
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("bad size '{s}': use a number with an optional K, M, G or T suffix")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

fn size(s: &str) -> Result<u64> {
    parse_size(s).map_err(Error::Config)
}

fn ns(file: &str, sz: &str, lba: &str) -> Result<NsSpec> {
    let lba: u32 = match lba {
        "512" => 512,
        "4096" => 4096,
        _ => bail!("bad lba '{lba}': use 512 or 4096"),
    };
    let size = size(sz)?;
    if size < lba as u64 || size % lba as u64 != 0 {
        bail!("namespace size {sz} must be a non-zero multiple of the LBA size {lba}");
    }
    Ok(NsSpec {
        file: file.into(),
        size,
        lba,
    })
}

fn check_cmb(mib: u64) -> Result<u64> {
    if mib != 0 && (mib < 2 || !mib.is_power_of_two()) {
        bail!("cmb-mib={mib}: use 0 or a power of two >= 2 (Linux maps CMBs in 2 MiB units)");
    }
    Ok(mib)
}

impl DeviceArgs {
    /// Every controller the arguments describe, checked.
    pub fn controllers(&self) -> Result<Vec<CtrlSpec>> {
        let mut out = vec![];
        if let Some(sock) = &self.socket {
            let mut namespaces = vec![];
            for n in &self.namespace {
                let (mut file, mut sz, mut lba) = (None, None, "512".to_string());
                for kv in n.split(',') {
                    match kv.split_once('=') {
                        Some(("file", v)) => file = Some(v.to_string()),
                        Some(("size", v)) => sz = Some(v.to_string()),
                        Some(("lba", v)) => lba = v.to_string(),
                        _ => bail!("bad --namespace '{n}': use file=PATH,size=SIZE[,lba=512|4096]"),
                    }
                }
                let (Some(f), Some(s)) = (file, sz) else {
                    bail!("--namespace '{n}' needs file= and size=");
                };
                namespaces.push(ns(&f, &s, &lba)?);
            }
            out.push(CtrlSpec {
                socket: sock.clone(),
                cmb_mib: check_cmb(self.cmb_mib)?,
                serial: "p2pnvme-0".into(),
                group: String::new(),
                irq: IrqMode::Msix,
                poll_us: None,
                moderation_us: None,
                namespaces,
            });
        } else if !self.namespace.is_empty() {
            bail!("--namespace goes with --socket; with --controller use ns=FILE:SIZE[:LBA]");
        }
        for c in &self.controller {
            let mut spec = CtrlSpec {
                socket: PathBuf::new(),
                cmb_mib: 16,
                serial: format!("p2pnvme-{}", out.len()),
                group: String::new(),
                irq: IrqMode::Msix,
                poll_us: None,
                moderation_us: None,
                namespaces: vec![],
            };
            for kv in c.split(',') {
                match kv.split_once('=') {
                    Some(("socket", v)) => spec.socket = v.into(),
                    Some(("cmb-mib", v)) => {
                        spec.cmb_mib = check_cmb(v.parse().map_err(|_| Error::Config(format!("bad cmb-mib '{v}': use a number of MiB")))?)?
                    }
                    Some(("serial", v)) if !v.is_empty() && v.len() <= 20 => spec.serial = v.into(),
                    Some(("group", v)) if !v.is_empty() => spec.group = v.into(),
                    Some(("irq", v)) => {
                        spec.irq = IrqMode::parse(v).ok_or_else(|| Error::Config(format!("bad irq '{v}': use irq=msix or irq=msi")))?
                    }
                    Some(("poll-us", v)) => spec.poll_us = Some(micros("poll-us", v, MAX_POLL_US)?),
                    Some(("moderation-us", v)) => {
                        spec.moderation_us = Some(micros("moderation-us", v, MAX_MODERATION_US)?)
                    }
                    Some(("ns", v)) => {
                        let p: Vec<&str> = v.rsplitn(3, ':').collect();
                        let n = match p.as_slice() {
                            [lba, sz, file] if *lba == "512" || *lba == "4096" => ns(file, sz, lba)?,
                            [sz, file] => ns(file, sz, "512")?,
                            [last, sz, file] => ns(&format!("{file}:{sz}"), last, "512")?,
                            _ => bail!("bad ns '{v}': use ns=FILE:SIZE[:LBA]"),
                        };
                        spec.namespaces.push(n);
                    }
                    _ => bail!("bad --controller item '{kv}': use socket=PATH,cmb-mib=M,serial=S,group=NAME,irq=msix|msi,poll-us=US,moderation-us=US,ns=FILE:SIZE[:LBA]"),
                }
            }
            if spec.socket.as_os_str().is_empty() {
                bail!("--controller '{c}' needs socket=PATH");
            }
            out.push(spec);
        }
        if out.is_empty() {
            bail!("nothing to serve: give --socket PATH or --controller socket=PATH,...");
        }
        for s in &out {
            if s.namespaces.is_empty() {
                bail!(
                    "controller on {} has no namespace: add ns=FILE:SIZE",
                    s.socket.display()
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_size, DeviceArgs, IrqMode};

    fn args(controller: &[&str]) -> DeviceArgs {
        DeviceArgs {
            socket: None,
            cmb_mib: 16,
            namespace: vec![],
            controller: controller.iter().map(|c| c.to_string()).collect(),
            stats_socket: None,
            poll_us: 0,
            irq_moderation_us: 0,
            fault: vec![],
            trace: None,
        }
    }

    #[test]
    fn controller_irq_mode_defaults_to_msix_and_msi_is_chosen_per_controller() {
        let specs = args(&[
            "socket=/tmp/a,ns=/tmp/a.img:1M",
            "socket=/tmp/b,irq=msi,ns=/tmp/b.img:1M",
            "socket=/tmp/c,irq=msix,ns=/tmp/c.img:1M",
        ])
        .controllers()
        .unwrap();
        let modes: Vec<IrqMode> = specs.iter().map(|s| s.irq).collect();
        assert_eq!(modes, [IrqMode::Msix, IrqMode::Msi, IrqMode::Msix]);
    }

    #[test]
    fn bad_controller_irq_mode_is_refused_with_the_fix() {
        let Err(e) = args(&["socket=/tmp/a,irq=intx,ns=/tmp/a.img:1M"]).controllers() else {
            panic!("irq=intx accepted");
        };
        assert_eq!(e.to_string(), "bad irq 'intx': use irq=msix or irq=msi");
    }

    #[test]
    fn poll_and_moderation_can_differ_per_controller() {
        let specs = args(&[
            "socket=/tmp/a,moderation-us=30,poll-us=500,ns=/tmp/a.img:1M",
            "socket=/tmp/b,ns=/tmp/b.img:1M",
        ])
        .controllers()
        .unwrap();
        assert_eq!(
            (specs[0].moderation_us, specs[0].poll_us),
            (Some(30), Some(500))
        );
        assert_eq!((specs[1].moderation_us, specs[1].poll_us), (None, None));
        let Err(e) = args(&["socket=/tmp/a,moderation-us=20000,ns=/tmp/a.img:1M"]).controllers()
        else {
            panic!("moderation-us=20000 accepted");
        };
        assert_eq!(
            e.to_string(),
            "bad moderation-us=20000: use a number of microseconds from 0 to 10000"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
