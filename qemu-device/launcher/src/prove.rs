//! `--prove`: shows where the data of any guest command went. Before boot the
//! host writes random data into a range of a namespace's backing file (so it
//! never enters guest RAM on the way in); the guest's init resets the device
//! counters as the command starts and, when it ends, has the host save the
//! counters and a dump of guest RAM; the launcher then scans the dump for the
//! data, compares the destination range on the host and judges.

use crate::guest_ram::ProofWatch;
use crate::health::GuestReport;
use crate::hostctl::PROVE_STATS;
use crate::judge::{self, Evidence};
use crate::names::{Kind, NsName};
use crate::ramscan;
use crate::session::Session;
use anyhow::{bail, Context, Result};
use clap::Args;
use p2pnvme_docs::report::ProveReport;
use p2pnvme_docs::stats::{DataTotals, HealthView, StatsDoc};
use p2pnvme_docs::verdict::{KernelHealth, Timings};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where a range starts when `--prove` names no offset: clear of the
/// sectors the kernel's partition scan reads into RAM at the start of a disk.
pub const DEFAULT_OFFSET: u64 = 1 << 20;

/// `run`'s proof options.
#[derive(Args, Clone, Debug, Default)]
pub struct ProveArgs {
    /// Write random data into NS's backing file at OFF (default 1M) for LEN
    /// bytes, then prove where the command moved it (NS: p2p<C>n<N> for the
    /// project's controller C, qemu<C>n1 for QEMU's; host-side names, not
    /// the guest's /dev names). In the guest: $P2PNVME_PROVE_SRC, _DST,
    /// _OFF, _DST_OFF, _LEN.
    #[arg(long, value_name = "NS[:OFF]:LEN", value_parser = Range::parse_src)]
    pub prove: Option<Range>,
    /// Compare this range with the source on the host afterwards (default OFF: the source's).
    #[arg(long, value_name = "NS[:OFF]", requires = "prove", value_parser = Range::parse_dst)]
    pub prove_dst: Option<Range>,
    /// Exit with the verdict: 0 pass, 1 fail (data through guest RAM, the
    /// destination differs, ...), 2 unknown (evidence missing).
    #[arg(long, requires = "prove")]
    pub require_bypass: bool,
    /// Print the verdict as one JSON document.
    #[arg(long, requires = "prove")]
    pub json: bool,
}

/// A byte range of a namespace, as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// Namespace name (`p2p0n1`, `qemu1n1`; `nvme0n1` is the old `p2p0n1`).
    pub ns: String,
    /// Start in bytes (None: the default or the source's).
    pub off: Option<u64>,
    /// Length in bytes (0 for a destination: the source's).
    pub len: u64,
}

impl Range {
    fn parse_src(s: &str) -> Result<Range, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let size = |v: &str| p2pnvme_device::parse_size(v);
        let (ns, off, len) = match parts[..] {
            [ns, len] => (ns, None, size(len)?),
            [ns, off, len] => (ns, Some(size(off)?), size(len)?),
            _ => return Err(format!("'{s}' is not NS[:OFF]:LEN (e.g. p2p0n1:1M:16M)")),
        };
        if len == 0 || len % ramscan::SECTOR as u64 != 0 {
            return Err(format!(
                "--prove length must be a non-zero multiple of 512, not {len}"
            ));
        }
        NsName::parse(ns)?;
        Ok(Range {
            ns: ns.to_string(),
            off,
            len,
        })
    }

    fn parse_dst(s: &str) -> Result<Range, String> {
        let (ns, off) = match s.split_once(':') {
            Some((ns, off)) => (ns, Some(p2pnvme_device::parse_size(off)?)),
            None => (s, None),
        };
        NsName::parse(ns)?;
        Ok(Range {
            ns: ns.to_string(),
            off,
            len: 0,
        })
    }
}

/// A namespace resolved to its backing file and how the guest finds it.
struct Ns {
    name: NsName,
    file: PathBuf,
    serial: String,
}

fn resolve(s: &Session, text: &str) -> Result<Ns> {
    let (name, note) = NsName::parse(text).map_err(anyhow::Error::msg)?;
    if let Some(note) = note {
        log::warn!("{note}");
    }
    let file = match name.kind {
        Kind::P2p => s
            .controllers
            .get(name.ctrl)
            .and_then(|ctl| ctl.namespaces.get(name.nsid - 1)),
        Kind::Qemu if name.nsid == 1 => s.qemu_backing.get(name.ctrl),
        Kind::Qemu => None,
    };
    let serial = match name.kind {
        Kind::P2p => crate::device::nvme_serial(name.ctrl),
        Kind::Qemu => format!("qemu-nvme-{}", name.ctrl),
    };
    let file = file.cloned().with_context(|| {
        format!(
            "--prove names '{text}', which this guest does not have: it has {}",
            names(s)
        )
    })?;
    Ok(Ns { name, file, serial })
}

fn names(s: &Session) -> String {
    let mut v: Vec<String> = vec![];
    for (c, ctl) in s.controllers.iter().enumerate() {
        v.extend((1..=ctl.namespaces.len()).map(|n| format!("p2p{c}n{n}")));
    }
    v.extend((0..s.qemu_backing.len()).map(|c| format!("qemu{c}n1")));
    if v.is_empty() {
        "no namespaces (add --nvme N)".into()
    } else {
        v.join(", ")
    }
}

/// A proof in progress: the data and where it went.
pub struct Proof {
    data: Arc<Vec<u8>>,
    src: NsName,
    dst: Option<(Ns, u64)>,
}

impl Proof {
    /// Checks the ranges against the session's namespaces, writes the data
    /// and arms the guest's init; fails before boot on a bad range.
    pub fn arm(s: &mut Session, a: &ProveArgs) -> Result<Option<Proof>> {
        let Some(src_r) = &a.prove else {
            return Ok(None);
        };
        let len = src_r.len;
        let src_off = src_r.off.unwrap_or(DEFAULT_OFFSET);
        let src = resolve(s, &src_r.ns)?;
        let ns_size = s.opts.ns_size;
        let check = |name: &str, off: u64| -> Result<()> {
            match off.checked_add(len) {
                Some(end) if end <= ns_size => Ok(()),
                _ => bail!(
                    "--prove range {name} at {off} for {len} bytes runs past the namespace's end ({ns_size} bytes): shorten it or raise --ns-size"
                ),
            }
        };
        check(&src_r.ns, src_off)?;
        let dst = match &a.prove_dst {
            None => None,
            Some(d) => {
                let off = d.off.unwrap_or(src_off);
                check(&d.ns, off)?;
                Some((resolve(s, &d.ns)?, off))
            }
        };
        if let Some((d, off)) = &dst {
            if d.file == src.file && off.abs_diff(src_off) < len {
                bail!("--prove-dst overlaps the source range: pick another namespace or offset");
            }
        }
        let mut data = vec![0u8; usize::try_from(len).context("--prove length too large")?];
        fs::File::open("/dev/urandom")?.read_exact(&mut data)?;
        write_at(&src.file, src_off, &data)?;
        let mut env = format!(
            "export P2PNVME_PROVE_SRC=$(sh /opt/p2pnvme/ci/nvme-dev.sh {} {}) P2PNVME_PROVE_OFF={src_off} P2PNVME_PROVE_LEN={len}\n",
            src.serial, src.name.nsid
        );
        if let Some((d, off)) = &dst {
            write_at(&d.file, *off, &vec![0u8; data.len()])?;
            env += &format!(
                "export P2PNVME_PROVE_DST=$(sh /opt/p2pnvme/ci/nvme-dev.sh {} {}) P2PNVME_PROVE_DST_OFF={off}\n",
                d.serial, d.name.nsid
            );
        }
        s.preamble += &env;
        s.kernel_args.push("p2pnvme.prove=1".into());
        let data = Arc::new(data);
        let ranges = ramscan::q35_ranges(u64::from(s.opts.mem_mib) << 20);
        s.proof = Some(ProofWatch::new(data.clone(), ranges));
        Ok(Some(Proof {
            data,
            src: src.name,
            dst,
        }))
    }

    /// What happened to the data, once the command has ended.
    pub fn evidence(&self, s: &Session, guest: &GuestReport) -> Result<Evidence> {
        let watch = s.proof.as_ref().context("the session lost its proof")?;
        let seen = watch.seen();
        let Some(scan) = seen.scan else {
            bail!("the guest ended without the host scanning its RAM: did the command power the guest off?");
        };
        let stats = if s.controllers.is_empty() {
            None
        } else {
            let text =
                fs::read(s.run_file(PROVE_STATS)).context("the device counters of the proof")?;
            let doc: StatsDoc =
                serde_json::from_slice(&text).context("the device's stats document")?;
            let health: HealthView =
                serde_json::from_slice(&text).context("the device's stats document")?;
            Some((doc, health))
        };
        let involved = std::iter::once(self.src).chain(self.dst.as_ref().map(|(d, _)| d.name));
        let mut uncounted: Vec<String> = involved
            .filter(|n| n.kind == Kind::Qemu)
            .map(|n| n.controller())
            .collect();
        uncounted.dedup();
        let counters = match &stats {
            Some((doc, _)) if uncounted.is_empty() => Some(doc.data_totals()),
            _ => None,
        };
        let dst_match = match &self.dst {
            None => None,
            Some((d, off)) => Some(read_at(&d.file, *off, self.data.len())? == *self.data),
        };
        Ok(Evidence {
            bytes: self.data.len() as u64,
            ram_dump_hits: scan.hits,
            sectors: scan.sectors,
            ram_ranges: watch.ranges().to_vec(),
            ram_sectors_scanned: scan.scanned,
            counters,
            uncounted,
            dst_match,
            timings: Timings {
                command_s: seen
                    .started
                    .zip(seen.ended)
                    .map(|(a, b)| b.saturating_duration_since(a).as_secs_f64()),
                scan_s: Some(scan.seconds),
                scan_bytes: scan.coverage.bytes,
                scan_read_bytes: scan.coverage.resident,
                ..Timings::default()
            },
            command_started: seen.started,
            controllers: judge::controllers(
                s.qemu_backing.len(),
                s.controllers.len(),
                guest,
                stats.as_ref().map(|(d, h)| (d, h)),
            ),
        })
    }
}

/// `run --prove`'s report: the evidence and the verdict on the bypass claim.
pub fn report(
    ev: &Evidence,
    status: i32,
    kernel: KernelHealth,
    accel: &str,
    iommu: &str,
    launched: Instant,
) -> ProveReport {
    let timings = ev.timings_since(launched);
    let (verdict, reasons) = judge::prove(ev, status, &kernel);
    let c = |f: fn(&DataTotals) -> u64| ev.counters.as_ref().map(f);
    ProveReport {
        bytes: ev.bytes,
        guest_ram_data_bytes: c(|c| c.guest_ram),
        cmb_data_bytes: c(|c| c.own_cmb),
        peer_data_bytes: c(|c| c.peer_cmb),
        ram_dump_hits: ev.ram_dump_hits,
        ram_dump_sectors: ev.sectors,
        ram_ranges: ev.ram_ranges.clone(),
        ram_sectors_scanned: ev.ram_sectors_scanned,
        dst_match: ev.dst_match,
        bypassed_system_memory: ev.bypassed(),
        status,
        accel: accel.into(),
        iommu: iommu.into(),
        controllers: ev.controllers.clone(),
        kernel,
        elapsed_s: timings.total_s,
        timings,
        verdict,
        reasons,
        witness: None,
    }
}

fn write_at(path: &Path, off: u64, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(off))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn read_at(path: &Path, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(off))?;
    let mut v = vec![0u8; len];
    f.read_exact(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_and_without_offset() {
        let r = Range::parse_src("nvme0n1:16M").unwrap();
        assert_eq!((r.ns.as_str(), r.off, r.len), ("nvme0n1", None, 16 << 20));
        let r = Range::parse_src("p2p1n2:2M:4K").unwrap();
        assert_eq!((r.off, r.len), (Some(2 << 20), 4096));
        assert_eq!(Range::parse_src("qemu0n1:1536").unwrap().len, 1536);
        assert!(Range::parse_src("nvme0n1").is_err());
        assert!(Range::parse_src("nvme0n1:100")
            .unwrap_err()
            .contains("multiple of 512"));
        assert!(Range::parse_src("sda:4K")
            .unwrap_err()
            .contains("p2p<C>n<N>"));
        assert_eq!(Range::parse_dst("nvme1n1").unwrap().off, None);
        assert_eq!(Range::parse_dst("nvme1n1:8M").unwrap().off, Some(8 << 20));
    }
}
