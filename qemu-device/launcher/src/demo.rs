//! `p2pnvme demo`: one verified copy offload. Random data is written into the
//! source namespace's backing file on the host (so it never enters guest RAM
//! on the way in), the guest module copies it, and the host checks the
//! destination file, the device's DMA counters and a dump of guest RAM —
//! all of it `run --prove`'s machinery (prove.rs); demo adds the copy
//! command and judges by the mode the copy used.

use crate::options::VmOptions;
use crate::prove::{Evidence, Proof, ProveArgs, Range};
use crate::session::{Output, Session};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use p2pnvme_docs::report::{human, DemoReport};
use serde_json::Value;
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
    #[command(flatten)]
    vm: VmOptions,
    /// Bytes to copy (K/M/G suffixes).
    #[arg(long, default_value = "64M", value_parser = p2pnvme_device::parse_size)]
    size: u64,
    #[arg(long, value_enum, default_value = "p2p")]
    mode: Mode,
    /// Which controllers to use; --nvme N (default 2) counts them: 1 copies
    /// between two namespaces of one controller through its own CMB, 2 or
    /// more from the first to the last (peer-to-peer).
    #[arg(long, value_enum, default_value = "p2pnvme")]
    device: DemoDevice,
    /// p2pcopy chunk size.
    #[arg(long)]
    chunk: Option<String>,
    /// p2pcopy chunks in flight.
    #[arg(long)]
    depth: Option<u32>,
    /// Print the result as one JSON document.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Watch the guest CPU during the copy with the TCG witness and write its
    /// report here (also the `witness` object of --json).
    #[arg(long, value_name = "FILE")]
    witness: Option<std::path::PathBuf>,
}

/// Where the copied range starts in both namespaces.
const OFFSET: u64 = crate::prove::DEFAULT_OFFSET;

fn name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value().unwrap().get_name().to_string()
}

pub fn run(a: DemoArgs) -> Result<i32> {
    let mut vm = a.vm.clone();
    let n = match (vm.nvme, vm.qemu_nvme) {
        (0, 0) => 2,
        (0, q) => q,
        (n, _) => n,
    };
    if a.size == 0 || !a.size.is_multiple_of(4096) {
        bail!("--size must be a non-zero multiple of 4K");
    }
    let same_ctrl = n == 1;
    let ours = a.device == DemoDevice::P2pnvme;
    if !ours && same_ctrl {
        bail!("QEMU's nvme has one namespace here: use --nvme 2 or more with --device qemu");
    }
    (vm.nvme, vm.qemu_nvme) = if ours { (n, 0) } else { (0, n) };
    vm.namespaces = vm.namespaces.max(if same_ctrl { 2 } else { 1 });
    vm.ns_size = vm
        .ns_size
        .max((OFFSET * 4 + a.size).next_multiple_of(1 << 20));
    let last = n - 1;
    let (src, dst) = if ours {
        (
            "nvme0n1".to_string(),
            format!("nvme{last}n{}", if same_ctrl { 2 } else { 1 }),
        )
    } else {
        ("qemu0n1".to_string(), format!("qemu{last}n1"))
    };
    let prove = ProveArgs {
        prove: Some(Range {
            ns: src,
            off: Some(OFFSET),
            len: a.size,
        }),
        prove_dst: Some(Range {
            ns: dst,
            off: Some(OFFSET),
            len: 0,
        }),
        ..Default::default()
    };
    let start = Instant::now();
    let mut s = Session::prepare(vm)?;
    crate::witness::attach(&mut s, a.witness.is_some())?;
    progress(
        &a,
        &format!(
            "writing {} of random data into the source namespace",
            human(a.size)
        ),
    );
    let proof = Proof::arm(&mut s, &prove)?.expect("demo always proves");

    let mode = name(a.mode);
    let mut cmd = format!("sh /opt/p2pnvme/ci/demo-copy.sh {mode}");
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
    let ev = proof.evidence(&s)?;
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
    let checksum_match = ev.dst_match == Some(true);
    let mut verdict = Verdict::judge(&used_mode, &ev);
    if !p2pmem_returned {
        verdict.ok = false;
        verdict.reasons.push(format!(
            "P2P memory not returned: available {before:?} before, {after:?} after"
        ));
    }
    let doc = DemoReport {
        bytes: a.size,
        bypassed_system_memory: ev.bypassed(),
        p2pmem_returned,
        mode: used_mode,
        requested_mode: mode,
        device: name(a.device),
        topology: name(a.vm.topology),
        cpu: name(a.vm.cpu),
        provider: copy
            .get("provider")
            .and_then(Value::as_str)
            .map(String::from),
        map_type: copy.get("map_type").cloned(),
        guest_ram_data_bytes: ev.counters.map(|c| c.guest_ram),
        cmb_data_bytes: ev.counters.map(|c| c.own_cmb),
        peer_data_bytes: ev.counters.map(|c| c.peer_cmb),
        checksum_match,
        ram_dump_hits: ev.ram_dump_hits,
        ram_dump_blocks: ev.blocks(),
        copy_elapsed_s: copy
            .get("elapsed_ns")
            .and_then(Value::as_f64)
            .map(|ns| ns / 1e9),
        elapsed_s: start.elapsed().as_secs_f64(),
        copy,
        verdict: verdict.ok,
        reasons: verdict.reasons.clone(),
        witness,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", doc.one_line());
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
    /// Judges a copy of `ev.bytes` in `mode`: the destination must match, a
    /// p2p copy must bypass guest RAM and move each byte through a CMB twice,
    /// a bounce copy must show its data in guest RAM.
    pub fn judge(mode: &str, ev: &Evidence) -> Verdict {
        let size = ev.bytes;
        let mut reasons = vec![];
        if ev.dst_match != Some(true) {
            reasons.push("destination differs from the source data".to_string());
        }
        match mode {
            "p2p" => {
                reasons.extend(ev.ram_reasons());
                if let Some(c) = &ev.counters {
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
                if ev.ram_dump_hits == 0 {
                    reasons.push("bounce copy left no data blocks in guest RAM".into());
                }
                if let Some(c) = &ev.counters {
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

fn progress(a: &DemoArgs, msg: &str) {
    if !a.json {
        eprintln!("p2pnvme demo: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pnvme_docs::stats::DataTotals;

    const MB: u64 = 1 << 20;

    /// Evidence of a 1 MiB copy: dump hits, destination match, counters.
    fn ev(hits: u64, matched: bool, counters: Option<(u64, u64, u64)>) -> Evidence {
        Evidence {
            bytes: MB,
            ram_dump_hits: hits,
            counters: counters.map(|(ram, own, peer)| DataTotals {
                guest_ram: ram,
                own_cmb: own,
                peer_cmb: peer,
            }),
            dst_match: Some(matched),
        }
    }

    #[test]
    fn p2p_passes_only_without_ram_traffic() {
        assert!(Verdict::judge("p2p", &ev(0, true, Some((0, MB, MB)))).ok);
        assert!(!Verdict::judge("p2p", &ev(3, true, Some((0, MB, MB)))).ok);
        assert!(!Verdict::judge("p2p", &ev(0, true, Some((4096, MB, MB)))).ok);
        assert!(!Verdict::judge("p2p", &ev(0, false, Some((0, MB, MB)))).ok);
        assert!(!Verdict::judge("p2p", &ev(0, true, Some((0, MB, 0)))).ok);
        // Reference device: no counters, RAM dump and data only.
        assert!(Verdict::judge("p2p", &ev(0, true, None)).ok);
    }

    #[test]
    fn bounce_must_show_the_data_in_ram() {
        assert!(Verdict::judge("bounce", &ev(256, true, Some((2 * MB, 0, 0)))).ok);
        assert!(!Verdict::judge("bounce", &ev(0, true, Some((2 * MB, 0, 0)))).ok);
        assert!(!Verdict::judge("bounce", &ev(256, true, Some((0, 0, 0)))).ok);
    }
}
