//! `p2pnvme demo`: one verified copy offload. Random data is written into the
//! source namespace's backing file on the host (so it never enters guest RAM
//! on the way in), the guest module copies it, and the host checks the
//! destination file, the device's DMA counters and a dump of guest RAM —
//! all of it `run --prove`'s machinery (prove.rs); demo adds the copy
//! command and judges by the mode the copy used.

use crate::health;
use crate::judge::{self, Evidence};
use crate::options::VmOptions;
use crate::prove::{Proof, ProveArgs, Range};
use crate::session::{Output, Session};
use crate::vm::value_name as name;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use p2pnvme_docs::report::{human, DemoReport};
use p2pnvme_docs::verdict::{KernelHealth, Verdict};
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
            "p2p0n1".to_string(),
            format!("p2p{last}n{}", if same_ctrl { 2 } else { 1 }),
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
    s.attach_witness(a.witness.is_some())?;
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
    let kernel = r.guest.kernel_health(s.opts.allow_warn);
    if r.status != 0 {
        health::enforce(&r.guest, &kernel)?;
        bail!(
            "the copy failed in the guest (exit {}):\n{}{}",
            r.status,
            stdout,
            String::from_utf8_lossy(&r.stderr)
        );
    }

    let witness = match &a.witness {
        Some(file) => Some(s.save_witness(file)?),
        None => None,
    };
    progress(&a, "checking the destination, the counters and guest RAM");
    let ev = proof.evidence(&s, &r.guest)?;
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
    let mut verdict = Judged::judge(&used_mode, &ev, &kernel);
    if !p2pmem_returned {
        verdict.failed.push(format!(
            "P2P memory not returned: available {before:?} before, {after:?} after"
        ));
    }
    let (outcome, reasons) = verdict.outcome();
    let doc = DemoReport {
        bytes: a.size,
        bypassed_system_memory: ev.bypassed(),
        ram_ranges: ev.ram_ranges.clone(),
        ram_sectors_scanned: ev.ram_sectors_scanned,
        accel: crate::accel::name(s.accel).into(),
        iommu: name(s.opts.iommu),
        controllers: ev.controllers.clone(),
        kernel: kernel.clone(),
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
        ram_dump_sectors: ev.sectors,
        copy_elapsed_s: copy
            .get("elapsed_ns")
            .and_then(Value::as_f64)
            .map(|ns| ns / 1e9),
        elapsed_s: start.elapsed().as_secs_f64(),
        timings: ev.timings_since(start),
        copy,
        verdict: outcome,
        reasons,
        witness,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", doc.one_line());
        for r in &doc.reasons {
            println!("  {outcome}: {r}");
        }
    }
    health::enforce(&r.guest, &kernel)?;
    Ok(i32::from(outcome.exit_code()))
}

/// The checks a copy must pass, given the mode it actually used: what
/// failed and what evidence is missing.
pub struct Judged {
    pub failed: Vec<String>,
    pub missing: Vec<String>,
}

impl Judged {
    /// Judges a copy of `ev.bytes` in `mode`: the destination must match, a
    /// p2p copy must hold the bypass claim (judge.rs) and move each byte
    /// through a CMB twice, a bounce copy must show its data in guest RAM;
    /// the kernel must stay healthy.
    pub fn judge(mode: &str, ev: &Evidence, kernel: &KernelHealth) -> Judged {
        let size = ev.bytes;
        let (mut failed, mut missing) = (vec![], vec![]);
        if ev.dst_match != Some(true) {
            failed.push("destination differs from the source data".to_string());
        }
        match mode {
            "p2p" => {
                let (f, m) = ev.bypass_checks();
                failed.extend(f);
                missing.extend(m);
                if let Some(c) = &ev.counters {
                    // Each byte is written into a CMB by one controller and read
                    // back out of it by the other (or the same) controller.
                    if c.own_cmb + c.peer_cmb != 2 * size {
                        failed.push(format!(
                            "CMB data bytes {} + peer {} != 2 x {size}",
                            c.own_cmb, c.peer_cmb
                        ));
                    }
                }
            }
            "bounce" => {
                // Data sectors in the dump are direct evidence of the RAM route.
                if ev.ram_dump_hits == 0 {
                    failed.push("bounce copy left no data sectors in guest RAM".into());
                }
                if let Some(c) = &ev.counters {
                    if c.guest_ram != 2 * size {
                        failed.push(format!(
                            "guest RAM data bytes {} != 2 x {size} (read into RAM, written out of it)",
                            c.guest_ram
                        ));
                    }
                }
            }
            other => failed.push(format!("unknown copy mode '{other}'")),
        }
        failed.extend(judge::kernel_reasons(kernel));
        Judged { failed, missing }
    }

    /// The verdict and every reason, failures first.
    pub fn outcome(&self) -> (Verdict, Vec<String>) {
        let v = Verdict::from_checks(!self.failed.is_empty(), !self.missing.is_empty());
        (
            v,
            self.failed.iter().chain(&self.missing).cloned().collect(),
        )
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
            sectors: MB / 512,
            ram_dump_hits: hits,
            counters: counters.map(|(ram, own, peer)| DataTotals {
                guest_ram: ram,
                own_cmb: own,
                peer_cmb: peer,
            }),
            uncounted: if counters.is_none() {
                vec!["qemu0".into(), "qemu1".into()]
            } else {
                vec![]
            },
            dst_match: Some(matched),
            ..Default::default()
        }
    }

    fn v(mode: &str, e: &Evidence) -> Verdict {
        Judged::judge(mode, e, &KernelHealth::default()).outcome().0
    }

    #[test]
    fn p2p_passes_only_without_ram_traffic() {
        assert_eq!(v("p2p", &ev(0, true, Some((0, MB, MB)))), Verdict::Pass);
        assert_eq!(v("p2p", &ev(3, true, Some((0, MB, MB)))), Verdict::Fail);
        assert_eq!(v("p2p", &ev(0, true, Some((4096, MB, MB)))), Verdict::Fail);
        assert_eq!(v("p2p", &ev(0, false, Some((0, MB, MB)))), Verdict::Fail);
        assert_eq!(v("p2p", &ev(0, true, Some((0, MB, 0)))), Verdict::Fail);
    }

    #[test]
    fn p2p_on_a_device_without_counters_is_unknown() {
        let j = Judged::judge("p2p", &ev(0, true, None), &KernelHealth::default());
        let (verdict, reasons) = j.outcome();
        assert_eq!(verdict, Verdict::Unknown);
        assert!(reasons[0].starts_with("no counters: qemu0"), "{reasons:?}");
        // Data in the dump still fails it.
        assert_eq!(v("p2p", &ev(5, true, None)), Verdict::Fail);
    }

    #[test]
    fn bounce_must_show_the_data_in_ram() {
        assert_eq!(
            v("bounce", &ev(2048, true, Some((2 * MB, 0, 0)))),
            Verdict::Pass
        );
        assert_eq!(
            v("bounce", &ev(0, true, Some((2 * MB, 0, 0)))),
            Verdict::Fail
        );
        assert_eq!(v("bounce", &ev(2048, true, Some((0, 0, 0)))), Verdict::Fail);
    }
}
