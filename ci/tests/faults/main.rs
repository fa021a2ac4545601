//! Fault injection, guest side: each scenario boots a guest with `--fault`
//! rules and checks what the nvme driver and `p2pcopy` did (exit status,
//! errno, bytes done, P2P memory, kernel log), with a control in the same
//! guest so that no check passes by itself. Guest scripts:
//! ci/guest/fault-*.sh; they print `key=value` lines, one a line.
//!
//! This file holds what every scenario shares (booting one, reading what
//! the guest printed, the device's counters and trace); the scenarios are
//! grouped by fault class:
//! - copy_errors: a copy broken part-way (media error, failed peer DMA);
//! - stuck: commands that never complete, controller fatal status;
//! - removal: surprise removal during a copy, and replug;
//! - trace: the command trace of a plain read;
//! - rules: bad rules refused before boot.

mod copy_errors;
mod removal;
mod rules;
mod stuck;
mod trace;

use p2pnvme_ci::*;
use p2pnvme_docs::trace::{SegmentTarget, TraceRecord};
use std::path::Path;

/// Where the faulted copies start, and the LBA range a rule limits itself
/// to (512-byte LBAs), so that the guest's boot-time reads never match.
const OFF: u64 = 64 << 20;
/// A control range of the same size outside the rule's LBAs.
const CONTROL: u64 = 128 << 20;
/// Bytes each copy moves: 8 MiB = 32 chunks of 256 KiB, 4 per wave.
const LEN: u64 = 8 << 20;
/// Bytes of one p2pcopy wave (default chunk 256 KiB x depth 4).
const WAVE: u64 = 1 << 20;
const EIO: i64 = 5;
/// I/O timeout (s) the stuck-command and removal scenarios give the nvme
/// driver.
const IO_TIMEOUT: &str = "nvme_core.io_timeout=5";

fn lbas(off: u64, len: u64) -> String {
    format!("lba={}-{}", off / 512, (off + len) / 512 - 1)
}

/// The guest kernel a scenario boots.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Debian,
    Minimal,
}

/// What one scenario left: the launcher's exit status and stderr, what the
/// guest script printed, the device's final counters and its trace.
struct Run {
    code: Option<i32>,
    kv: GuestOutput,
    stats: StatsDoc,
    stderr: String,
    trace: Vec<TraceRecord>,
}

/// Boots `--nvme 2` with `rules` (and `--trace`), runs `script`.
fn scenario(k: Kernel, rules: &[String], extra: &[&str], script: &str) -> Run {
    let dir = std::env::temp_dir().join(format!("p2pnvme-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (stats, trace) = (dir.join("stats.json"), dir.join("trace.jsonl"));
    let (stats_arg, trace_arg) = (stats.display().to_string(), trace.display().to_string());
    let mut a = vec!["run", "--nvme", "2", "--timeout", "900"];
    // Named on both: the default kernel is the minimal one once built.
    a.extend_from_slice(&[
        "--guest-kernel",
        match k {
            Kernel::Debian => "debian",
            Kernel::Minimal => "minimal",
        },
    ]);
    for r in rules {
        a.extend_from_slice(&["--fault", r]);
    }
    a.extend_from_slice(extra);
    a.extend_from_slice(&[
        "--trace",
        &trace_arg,
        "--stats-json",
        &stats_arg,
        "--",
        script,
    ]);
    let out = p2pnvme(&a);
    let run = Run {
        code: out.status.code(),
        kv: GuestOutput::parse(&String::from_utf8_lossy(&out.stdout)),
        stats: read_stats(&stats),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        trace: read_trace(&trace),
    };
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn read_trace(p: &Path) -> Vec<TraceRecord> {
    std::fs::read_to_string(p)
        .expect("the trace file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn read_stats(p: &Path) -> StatsDoc {
    let text = std::fs::read_to_string(p).expect("--stats-json was written");
    serde_json::from_str(&text).expect("a stats document")
}

/// How often the rule `text` fired on controller `ctrl`.
fn fired(doc: &StatsDoc, ctrl: usize, text: &str) -> u64 {
    doc.controllers[ctrl]
        .faults
        .iter()
        .find(|f| f.rule == text)
        .unwrap_or_else(|| panic!("rule {text} is not in the stats of controller {ctrl}"))
        .fired
}
