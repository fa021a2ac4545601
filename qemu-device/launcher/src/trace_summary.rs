//! `p2pnvme trace summary FILE`: a device command trace as a table (per
//! opcode: count, bytes, p50/p99 latency, errors; per target: bytes).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use p2pnvme_docs::trace::{SegmentTarget, TraceRecord};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum TraceOp {
    /// Print per-opcode and per-target totals of a trace file.
    Summary {
        /// The file `--trace` wrote.
        file: PathBuf,
    },
}

pub fn run(op: TraceOp) -> Result<i32> {
    let TraceOp::Summary { file } = op;
    print!("{}", summary_of(&file)?);
    Ok(0)
}

fn summary_of(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read trace {}", file.display()))?;
    let records = parse(&text).with_context(|| format!("trace {}", file.display()))?;
    Ok(Summary::of(&records).render())
}

/// The records of a trace; a cut-off last line (a device killed while
/// writing) is left out.
fn parse(text: &str) -> Result<Vec<TraceRecord>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                log::warn!("the last line is cut off: left out");
            }
            Err(e) => bail!("line {}: not a trace record: {e}", i + 1),
        }
    }
    Ok(out)
}

#[derive(Default)]
struct OpStats {
    count: u64,
    bytes: u64,
    errors: u64,
    dropped: u64,
    latencies: Vec<u64>,
}

#[derive(Default)]
struct Summary {
    ops: BTreeMap<String, OpStats>,
    targets: BTreeMap<String, u64>,
}

/// The value at quantile `q` (nearest rank) of sorted `v`.
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl Summary {
    fn of(records: &[TraceRecord]) -> Summary {
        let mut s = Summary::default();
        for r in records {
            let o = s.ops.entry(r.op.clone()).or_default();
            o.count += 1;
            o.bytes = o.bytes.saturating_add(r.bytes);
            if r.dropped {
                o.dropped += 1;
            } else {
                o.latencies.push(r.latency_us);
                if r.status != 0 {
                    o.errors += 1;
                }
            }
            for seg in &r.segments {
                let name = match (seg.target, seg.peer) {
                    (SegmentTarget::Ram, _) => "ram".to_string(),
                    (SegmentTarget::Cmb, _) => format!("cmb (ctrl {})", r.ctrl),
                    (SegmentTarget::Peer, Some(p)) => format!("peer cmb (ctrl {p})"),
                    (SegmentTarget::Peer, None) => "peer cmb".to_string(),
                };
                let t = s.targets.entry(name).or_default();
                *t = t.saturating_add(seg.bytes);
            }
        }
        for o in s.ops.values_mut() {
            o.latencies.sort_unstable();
        }
        s
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>14} {:>9} {:>9} {:>7} {:>8}",
            "op", "count", "bytes", "p50 µs", "p99 µs", "errors", "dropped"
        );
        for (op, o) in &self.ops {
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>14} {:>9} {:>9} {:>7} {:>8}",
                op,
                o.count,
                o.bytes,
                quantile(&o.latencies, 0.50),
                quantile(&o.latencies, 0.99),
                o.errors,
                o.dropped
            );
        }
        let _ = writeln!(out, "\n{:<24} {:>14}", "target", "bytes");
        for (t, b) in &self.targets {
            let _ = writeln!(out, "{t:<24} {b:>14}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(op: &str, ctrl: usize, lat: u64, status: u16, segs: &str, dropped: bool) -> String {
        format!(
            r#"{{"t_us":1,"ctrl":{ctrl},"q":1,"cid":1,"op":"{op}","nsid":1,"slba":0,"nlb":8,"bytes":4096,"segments":{segs},"status":{status},"latency_us":{lat},"fault":null,"dropped":{dropped}}}"#
        )
    }

    #[test]
    fn summary_counts_quantiles_errors_and_targets() {
        let ram = r#"[{"target":"ram","peer":null,"bytes":4096}]"#;
        let peer = r#"[{"target":"peer","peer":1,"bytes":4096}]"#;
        let mut lines = vec![];
        for lat in 1..=100 {
            lines.push(line("read", 0, lat, 0, ram, false));
        }
        lines.push(line("read", 0, 0, 0x281, peer, false));
        lines.push(line(
            "write",
            1,
            7,
            0,
            r#"[{"target":"cmb","peer":null,"bytes":4096}]"#,
            false,
        ));
        lines.push(line("write", 1, 0, 0, "[]", true));
        let s = Summary::of(&parse(&(lines.join("\n") + "\n")).unwrap());
        let read = &s.ops["read"];
        assert_eq!((read.count, read.bytes, read.errors), (101, 101 * 4096, 1));
        assert_eq!(quantile(&read.latencies, 0.5), 50);
        assert_eq!(quantile(&read.latencies, 0.99), 99);
        let write = &s.ops["write"];
        assert_eq!((write.count, write.dropped, write.errors), (2, 1, 0));
        assert_eq!(s.targets["ram"], 100 * 4096);
        assert_eq!(s.targets["peer cmb (ctrl 1)"], 4096);
        assert_eq!(s.targets["cmb (ctrl 1)"], 4096);
        let table = s.render();
        assert!(table.contains("read"), "{table}");
        let row = table.lines().find(|l| l.starts_with("read")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols, ["read", "101", "413696", "50", "99", "1", "0"]);
    }

    #[test]
    fn bad_line_named_cut_off_last_line_skipped() {
        let ok = line("read", 0, 1, 0, "[]", false);
        let e = parse(&format!("{ok}\nnot json\n{ok}\n")).unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        let r = parse(&format!("{ok}\n{}", &ok[..20])).unwrap();
        assert_eq!(r.len(), 1);
        assert!(quantile(&[], 0.5) == 0);
    }
}
