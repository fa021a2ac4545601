//! `p2pnvme demo`: one verified copy offload. Random data is written into the
//! source namespace's backing file on the host (so it never enters guest RAM
//! on the way in), the guest module copies it, and the host checks the
//! destination file, the device's DMA counters and a dump of guest RAM.

use crate::qemu::{CpuModel, TcgThreads, Topology};
use crate::ramscan;
use crate::vm::{self, Output, Session, VmOptions};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    P2p,
    Bounce,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoDevice {
    /// The project's vfio-user controllers (with DMA counters).
    P2pnvme,
    /// QEMU's built-in nvme with a CMB, the reference (no counters).
    Qemu,
}

#[derive(Args, Clone)]
pub struct DemoArgs {
    /// Bytes to copy (K/M/G suffixes).
    #[arg(long, default_value = "64M", value_parser = p2pnvme_device::parse_size)]
    size: u64,
    #[arg(long, value_enum, default_value = "switch")]
    topology: Topology,
    #[arg(long, value_enum, default_value = "intel")]
    cpu: CpuModel,
    #[arg(long, value_enum, default_value = "p2p")]
    mode: Mode,
    /// Controllers: 1 copies between two namespaces of one controller through
    /// its own CMB; 2 or more copy from the first to the last (peer-to-peer).
    #[arg(long, default_value_t = 2)]
    nvme: usize,
    /// Which controllers to use.
    #[arg(long, value_enum, default_value = "p2pnvme")]
    device: DemoDevice,
    #[arg(long, default_value_t = 16)]
    cmb_mib: u32,
    /// p2pcopy chunk size.
    #[arg(long)]
    chunk: Option<String>,
    /// p2pcopy chunks in flight.
    #[arg(long)]
    depth: Option<u32>,
    /// Extra kernel arguments (e.g. nvme.use_cmb_sqes=0).
    #[arg(long)]
    append: Option<String>,
    /// Print the result as one JSON document.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Watch the guest CPU during the copy with the TCG witness and write its
    /// report here (also the `witness` object of --json).
    #[arg(long)]
    witness: Option<std::path::PathBuf>,
}

/// Where the copied range starts in both namespaces: clear of the sectors
/// the kernel's partition scan reads at the start and end of a disk.
const OFFSET: u64 = 1 << 20;

pub fn run(a: DemoArgs) -> Result<i32> {
    if a.nvme == 0 {
        bail!("--nvme must be at least 1");
    }
    if a.size == 0 || !a.size.is_multiple_of(4096) {
        bail!("--size must be a non-zero multiple of 4K");
    }
    let same_ctrl = a.nvme == 1;
    let ns_size = (OFFSET * 4 + a.size)
        .next_multiple_of(1 << 20)
        .max(256 << 20);
    let ours = a.device == DemoDevice::P2pnvme;
    let opts = VmOptions {
        qemu_nvme: if ours { 0 } else { a.nvme },
        nvme: if ours { a.nvme } else { 0 },
        namespaces: if same_ctrl { 2 } else { 1 },
        cmb_mib: a.cmb_mib,
        ns_size,
        lba: 512,
        topology: a.topology,
        cpu: a.cpu,
        append: a.append.clone(),
        qemu_args: vec![],
        mem_mib: 1024,
        smp: 2,
        kvm: false,
        tcg_threads: TcgThreads::Single,
        backing_dir: None,
        with_driver: true,
        poll_us: p2pnvme_device::DEFAULT_POLL_US,
        verbose: false,
    };
    if !ours && same_ctrl {
        bail!("QEMU's nvme has one namespace here: use --nvme 2 or more with --device qemu");
    }
    let start = Instant::now();
    let mut s = Session::prepare(opts)?;
    crate::witness::attach(&mut s, a.witness.is_some())?;
    let (src_file, dst_file, src, dst) = if ours {
        let last = a.nvme - 1;
        let dst_ns = if same_ctrl { 2 } else { 1 };
        (
            s.nvme_backing[0][0].clone(),
            s.nvme_backing[last][dst_ns - 1].clone(),
            (vm::nvme_serial(0), 1),
            (vm::nvme_serial(last), dst_ns),
        )
    } else {
        (
            s.qemu_backing[0].clone(),
            s.qemu_backing[a.nvme - 1].clone(),
            ("qemu-nvme-0".to_string(), 1),
            (format!("qemu-nvme-{}", a.nvme - 1), 1),
        )
    };

    progress(
        &a,
        &format!(
            "writing {} of random data into {}",
            human(a.size),
            src_file.display()
        ),
    );
    let data = random_bytes(a.size as usize)?;
    write_at(&src_file, OFFSET, &data)?;
    write_at(&dst_file, OFFSET, &vec![0u8; data.len()])?;

    let mode = a.mode.to_possible_value().unwrap().get_name().to_string();
    let mut cmd = format!(
        "sh /opt/p2pnvme/ci/demo-copy.sh {} {} {} {} {OFFSET} {} {mode} {}",
        src.0,
        src.1,
        dst.0,
        dst.1,
        a.size,
        u8::from(ours)
    );
    if let Some(c) = &a.chunk {
        cmd.push_str(&format!(" --chunk {c}"));
    }
    if let Some(d) = a.depth {
        cmd.push_str(&format!(" --depth {d}"));
    }
    if a.witness.is_some() {
        cmd.insert_str(0, "P2PNVME_WITNESS=1 ");
    }
    progress(&a, "booting the guest and copying");
    let r = s.run(&cmd, Duration::from_secs(a.timeout), Output::Capture)?;
    let stdout = String::from_utf8_lossy(&r.stdout);
    let copy: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    if r.status != 0 {
        bail!(
            "the copy failed in the guest (exit {}):\n{}{}",
            r.status,
            stdout,
            String::from_utf8_lossy(&r.stderr)
        );
    }

    let witness = match &a.witness {
        Some(file) => Some(crate::witness::save(&s, file)?),
        None => None,
    };
    progress(&a, "checking the destination, the counters and guest RAM");
    let copied = read_at(&dst_file, OFFSET, data.len())?;
    let checksum_match = copied == data;
    let ram = s.run_file("ram.bin");
    let ram_dump_hits = ramscan::hits(&data, &ram)?;
    let counters = if ours {
        let doc: Value = serde_json::from_slice(&fs::read(s.run_file("stats.json"))?)?;
        Some(crate::stats::DataRoutes::from_stats(&doc)?)
    } else {
        None
    };
    let used_mode = copy
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or(&mode)
        .to_string();
    let stderr = String::from_utf8_lossy(&r.stderr);
    let avail = |tag: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(|v| v.trim().to_string())
    };
    let (before, after) = (
        avail("p2pmem available before:"),
        avail("p2pmem available after:"),
    );
    let p2pmem_returned = before.is_some() && before == after;
    let mut verdict = Verdict::judge(
        &used_mode,
        a.size,
        checksum_match,
        ram_dump_hits,
        counters.as_ref(),
    );
    if !p2pmem_returned {
        verdict.ok = false;
        verdict.reasons.push(format!(
            "P2P memory not returned: available {before:?} before, {after:?} after"
        ));
    }
    // The claim itself, whatever the mode: no data block in the RAM dump and
    // (where the device counts) no data byte through guest RAM.
    let bypassed = ram_dump_hits == 0 && counters.as_ref().is_none_or(|c| c.guest_ram == 0);
    let doc = json!({
        "bytes": a.size,
        "bypassed_system_memory": bypassed,
        "p2pmem_returned": p2pmem_returned,
        "mode": used_mode,
        "requested_mode": mode,
        "device": if ours { "p2pnvme" } else { "qemu" },
        "topology": a.topology.to_possible_value().unwrap().get_name(),
        "cpu": a.cpu.to_possible_value().unwrap().get_name(),
        "provider": copy.get("provider").cloned().unwrap_or(Value::Null),
        "map_type": copy.get("map_type").cloned().unwrap_or(Value::Null),
        "guest_ram_data_bytes": counters.as_ref().map(|c| c.guest_ram),
        "cmb_data_bytes": counters.as_ref().map(|c| c.own_cmb),
        "peer_data_bytes": counters.as_ref().map(|c| c.peer_cmb),
        "checksum_match": checksum_match,
        "ram_dump_hits": ram_dump_hits,
        "ram_dump_blocks": a.size / ramscan::BLOCK as u64,
        "copy_elapsed_s": copy.get("elapsed_ns").and_then(Value::as_f64).map(|ns| ns / 1e9),
        "elapsed_s": start.elapsed().as_secs_f64(),
        "copy": copy,
        "verdict": verdict.ok,
        "reasons": verdict.reasons,
        "witness": witness,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", one_line(&doc));
        for r in &verdict.reasons {
            println!("  FAILED: {r}");
        }
    }
    Ok(if verdict.ok { 0 } else { 1 })
}

/// The checks a copy must pass, given the mode it actually used.
pub struct Verdict {
    pub ok: bool,
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn judge(
        mode: &str,
        size: u64,
        checksum_match: bool,
        ram_hits: u64,
        counters: Option<&crate::stats::DataRoutes>,
    ) -> Verdict {
        let mut reasons = vec![];
        if !checksum_match {
            reasons.push("destination differs from the source data".to_string());
        }
        let blocks = size / ramscan::BLOCK as u64;
        match mode {
            "p2p" => {
                if ram_hits != 0 {
                    reasons.push(format!(
                        "{ram_hits} of {blocks} data blocks found in guest RAM"
                    ));
                }
                if let Some(c) = counters {
                    if c.guest_ram != 0 {
                        reasons.push(format!("{} data bytes went through guest RAM", c.guest_ram));
                    }
                    // Each byte is written into a CMB by one controller and read
                    // back out of it by the other (or the same) controller.
                    if c.own_cmb + c.peer_cmb != 2 * size {
                        reasons.push(format!(
                            "CMB data bytes {} + peer {} != 2 x {size}",
                            c.own_cmb, c.peer_cmb
                        ));
                    }
                }
            }
            "bounce" => {
                if ram_hits == 0 {
                    reasons.push("bounce copy left no data blocks in guest RAM".into());
                }
                if let Some(c) = counters {
                    if c.guest_ram != 2 * size {
                        reasons.push(format!(
                            "guest RAM data bytes {} != 2 x {size} (read into RAM, written out of it)",
                            c.guest_ram
                        ));
                    }
                }
            }
            other => reasons.push(format!("unknown copy mode '{other}'")),
        }
        Verdict {
            ok: reasons.is_empty(),
            reasons,
        }
    }
}

fn one_line(d: &Value) -> String {
    let n = |k: &str| d[k].as_u64().map(|v| v.to_string()).unwrap_or("n/a".into());
    format!(
        "{verdict}: {bytes} copied in {mode} mode via {provider} ({map}); bypassed system memory: {bypassed}; guest RAM data bytes {ram}, CMB {cmb}, peer CMB {peer}; RAM dump hits {hits}/{blocks}; checksum {sum}; {secs:.1} s",
        bypassed = if d["bypassed_system_memory"] == true { "yes" } else { "NO" },
        verdict = if d["verdict"].as_bool() == Some(true) { "PASS" } else { "FAIL" },
        bytes = human(d["bytes"].as_u64().unwrap_or(0)),
        mode = d["mode"].as_str().unwrap_or("?"),
        provider = d["provider"].as_str().unwrap_or("system memory"),
        map = match &d["map_type"] {
            Value::Null => "no P2P mapping".to_string(),
            v => v.as_str().map(String::from).unwrap_or_else(|| v.to_string()),
        },
        ram = n("guest_ram_data_bytes"),
        cmb = n("cmb_data_bytes"),
        peer = n("peer_data_bytes"),
        hits = n("ram_dump_hits"),
        blocks = n("ram_dump_blocks"),
        sum = if d["checksum_match"].as_bool() == Some(true) { "match" } else { "MISMATCH" },
        secs = d["elapsed_s"].as_f64().unwrap_or(0.0),
    )
}

fn progress(a: &DemoArgs, msg: &str) {
    if !a.json {
        eprintln!("p2pnvme demo: {msg}");
    }
}

pub fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    fs::File::open("/dev/urandom")?.read_exact(&mut v)?;
    Ok(v)
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
    use crate::stats::DataRoutes;

    const MB: u64 = 1 << 20;

    fn routes(ram: u64, own: u64, peer: u64) -> DataRoutes {
        DataRoutes {
            guest_ram: ram,
            own_cmb: own,
            peer_cmb: peer,
        }
    }

    #[test]
    fn p2p_passes_only_without_ram_traffic() {
        assert!(Verdict::judge("p2p", MB, true, 0, Some(&routes(0, MB, MB))).ok);
        assert!(!Verdict::judge("p2p", MB, true, 3, Some(&routes(0, MB, MB))).ok);
        assert!(!Verdict::judge("p2p", MB, true, 0, Some(&routes(4096, MB, MB))).ok);
        assert!(!Verdict::judge("p2p", MB, false, 0, Some(&routes(0, MB, MB))).ok);
        assert!(!Verdict::judge("p2p", MB, true, 0, Some(&routes(0, MB, 0))).ok);
        // Reference device: no counters, RAM dump and data only.
        assert!(Verdict::judge("p2p", MB, true, 0, None).ok);
    }

    #[test]
    fn bounce_must_show_the_data_in_ram() {
        assert!(Verdict::judge("bounce", MB, true, 256, Some(&routes(2 * MB, 0, 0))).ok);
        assert!(!Verdict::judge("bounce", MB, true, 0, Some(&routes(2 * MB, 0, 0))).ok);
        assert!(!Verdict::judge("bounce", MB, true, 256, Some(&routes(0, 0, 0))).ok);
    }
}
