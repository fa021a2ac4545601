//! `--prove`: shows where the data of any guest command went. Before boot the
//! host writes random data into a range of a namespace's backing file (so it
//! never enters guest RAM on the way in); the guest's init resets the device
//! counters as the command starts and, when it ends, has the host save the
//! counters and a dump of guest RAM; the launcher then scans the dump for the
//! data, compares the destination range on the host and judges.

use crate::hostctl::{PROVE_RAM, PROVE_STATS};
use crate::ramscan;
use crate::session::Session;
use anyhow::{bail, Context, Result};
use clap::Args;
use p2pnvme_docs::report::ProveReport;
use p2pnvme_docs::stats::{DataTotals, StatsDoc};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where a range starts when `--prove` names no offset: clear of the
/// sectors the kernel's partition scan reads into RAM at the start of a disk.
pub const DEFAULT_OFFSET: u64 = 1 << 20;

/// `run`'s proof options.
#[derive(Args, Clone, Debug, Default)]
pub struct ProveArgs {
    /// Write random data into NS's backing file at OFF (default 1M) for LEN
    /// bytes, then prove where the command moved it (NS: nvme<C>n<N> for the
    /// project's controllers, qemu<C>n1 for QEMU's). In the guest:
    /// $P2PNVME_PROVE_SRC, _DST, _OFF, _DST_OFF, _LEN.
    #[arg(long, value_name = "NS[:OFF]:LEN", value_parser = Range::parse_src)]
    pub prove: Option<Range>,
    /// Compare this range with the source on the host afterwards (default OFF: the source's).
    #[arg(long, value_name = "NS[:OFF]", requires = "prove", value_parser = Range::parse_dst)]
    pub prove_dst: Option<Range>,
    /// Exit 1 when data went through guest RAM (or the destination differs).
    #[arg(long, requires = "prove")]
    pub require_bypass: bool,
    /// Print the verdict as one JSON document.
    #[arg(long, requires = "prove")]
    pub json: bool,
}

/// A byte range of a namespace, as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// Namespace name (`nvme0n1`, `qemu1n1`).
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
            _ => return Err(format!("'{s}' is not NS[:OFF]:LEN (e.g. nvme0n1:1M:16M)")),
        };
        if len == 0 || len % ramscan::BLOCK as u64 != 0 {
            return Err(format!(
                "--prove length must be a non-zero multiple of 4K, not {len}"
            ));
        }
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
        Ok(Range {
            ns: ns.to_string(),
            off,
            len: 0,
        })
    }
}

/// A namespace resolved to its backing file and how the guest finds it.
struct Ns {
    file: PathBuf,
    serial: String,
    nsid: usize,
}

fn resolve(s: &Session, name: &str) -> Result<Ns> {
    let parse = |prefix: &str| -> Option<(usize, usize)> {
        let (c, n) = name.strip_prefix(prefix)?.split_once('n')?;
        Some((c.parse().ok()?, n.parse().ok()?))
    };
    let found = if let Some((c, n)) = parse("nvme") {
        s.controllers
            .get(c)
            .and_then(|ctl| ctl.namespaces.get(n.checked_sub(1)?))
            .map(|f| Ns {
                file: f.clone(),
                serial: crate::device::nvme_serial(c),
                nsid: n,
            })
    } else if let Some((c, 1)) = parse("qemu") {
        s.qemu_backing.get(c).map(|f| Ns {
            file: f.clone(),
            serial: format!("qemu-nvme-{c}"),
            nsid: 1,
        })
    } else {
        None
    };
    found.with_context(|| {
        format!(
            "--prove names '{name}', which this guest does not have: it has {}",
            names(s)
        )
    })
}

fn names(s: &Session) -> String {
    let mut v: Vec<String> = vec![];
    for (c, ctl) in s.controllers.iter().enumerate() {
        v.extend((1..=ctl.namespaces.len()).map(|n| format!("nvme{c}n{n}")));
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
    data: Vec<u8>,
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
            src.serial, src.nsid
        );
        if let Some((d, off)) = &dst {
            write_at(&d.file, *off, &vec![0u8; data.len()])?;
            env += &format!(
                "export P2PNVME_PROVE_DST=$(sh /opt/p2pnvme/ci/nvme-dev.sh {} {}) P2PNVME_PROVE_DST_OFF={off}\n",
                d.serial, d.nsid
            );
        }
        s.preamble += &env;
        s.kernel_args.push("p2pnvme.prove=1".into());
        Ok(Some(Proof { data, dst }))
    }

    /// What happened to the data, once the command has ended.
    pub fn evidence(&self, s: &Session) -> Result<Evidence> {
        let ram = s.run_file(PROVE_RAM);
        if !ram.exists() {
            bail!("the guest ended without saving the proof (no RAM dump): did the command power the guest off?");
        }
        let ram_dump_hits = ramscan::hits(&self.data, &ram)?;
        let _ = fs::remove_file(&ram);
        let counters = if s.controllers.is_empty() {
            None
        } else {
            let text =
                fs::read(s.run_file(PROVE_STATS)).context("the device counters of the proof")?;
            let doc: StatsDoc =
                serde_json::from_slice(&text).context("the device's stats document")?;
            Some(doc.data_totals())
        };
        let dst_match = match &self.dst {
            None => None,
            Some((d, off)) => Some(read_at(&d.file, *off, self.data.len())? == self.data),
        };
        Ok(Evidence {
            bytes: self.data.len() as u64,
            ram_dump_hits,
            counters,
            dst_match,
        })
    }
}

/// Where the data went.
pub struct Evidence {
    pub bytes: u64,
    pub ram_dump_hits: u64,
    /// Data bytes by route (None: no counting device).
    pub counters: Option<DataTotals>,
    pub dst_match: Option<bool>,
}

impl Evidence {
    /// No data block in RAM and (where counted) no data byte through it.
    pub fn bypassed(&self) -> bool {
        self.ram_dump_hits == 0 && self.counters.is_none_or(|c| c.guest_ram == 0)
    }

    /// Blocks of the data.
    pub fn blocks(&self) -> u64 {
        self.bytes / ramscan::BLOCK as u64
    }

    /// Why the data did not bypass system memory (empty when it did): data
    /// bytes the device counted through guest RAM, data blocks in the dump.
    pub fn ram_reasons(&self) -> Vec<String> {
        let mut reasons = vec![];
        if let Some(c) = self.counters {
            if c.guest_ram != 0 {
                reasons.push(format!("{} data bytes went through guest RAM", c.guest_ram));
            }
        }
        if self.ram_dump_hits != 0 {
            reasons.push(format!(
                "{} of {} data blocks found in guest RAM",
                self.ram_dump_hits,
                self.blocks()
            ));
        }
        reasons
    }

    /// `run --prove`'s verdict: bypassed, and the destination (if checked) matches.
    pub fn report(&self, status: i32, elapsed_s: f64) -> ProveReport {
        let mut reasons = self.ram_reasons();
        if self.dst_match == Some(false) {
            reasons.push("destination differs from the source data".into());
        }
        if status != 0 {
            reasons.push(format!("the guest command exited {status}"));
        }
        ProveReport {
            bytes: self.bytes,
            guest_ram_data_bytes: self.counters.map(|c| c.guest_ram),
            cmb_data_bytes: self.counters.map(|c| c.own_cmb),
            peer_data_bytes: self.counters.map(|c| c.peer_cmb),
            ram_dump_hits: self.ram_dump_hits,
            ram_dump_blocks: self.blocks(),
            dst_match: self.dst_match,
            bypassed_system_memory: self.bypassed(),
            status,
            elapsed_s,
            verdict: reasons.is_empty(),
            reasons,
            witness: None,
        }
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
        let r = Range::parse_src("nvme1n2:2M:4K").unwrap();
        assert_eq!((r.off, r.len), (Some(2 << 20), 4096));
        assert!(Range::parse_src("nvme0n1").is_err());
        assert!(Range::parse_src("nvme0n1:100")
            .unwrap_err()
            .contains("multiple of 4K"));
        assert_eq!(Range::parse_dst("nvme1n1").unwrap().off, None);
        assert_eq!(Range::parse_dst("nvme1n1:8M").unwrap().off, Some(8 << 20));
    }

    #[test]
    fn verdict_fails_on_ram_bytes_dump_hits_or_mismatch() {
        let e = |ram, hits, m| Evidence {
            bytes: 1 << 20,
            ram_dump_hits: hits,
            counters: Some(DataTotals {
                guest_ram: ram,
                own_cmb: 1 << 20,
                peer_cmb: 0,
            }),
            dst_match: m,
        };
        assert!(e(0, 0, Some(true)).report(0, 1.0).verdict);
        assert!(e(0, 0, None).report(0, 1.0).verdict);
        let r = e(4096, 3, Some(true)).report(0, 1.0);
        assert!(!r.verdict && !r.bypassed_system_memory && r.reasons.len() == 2);
        assert!(!e(0, 0, Some(false)).report(0, 1.0).verdict);
        assert!(!e(0, 0, None).report(1, 1.0).verdict);
    }
}
