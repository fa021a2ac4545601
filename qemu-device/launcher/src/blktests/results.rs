//! What a blktests run left: the per-test result files under `check -o
//! DIR` (`DIR/<device or nodev>[_<condition>]/<group>/<test>`, lines of
//! `key<TAB>value` with `status` pass, fail or "not run"), and for tests
//! that wrote none, check's own `[not run]` lines. Turned into one row per
//! selected test with a status per device column, a table, a verdict and
//! JUnit results. Never guesses: a test with neither is `Missing`.

use p2pnvme_testplan::{CaseResult, Expect, Outcome};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// The devices blktests runs against (columns of the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    /// The project's vfio-user controllers.
    Ours,
    /// QEMU's built-in nvme.
    Qemu,
}

impl Column {
    /// The JUnit suite and the table heading.
    pub fn name(self) -> &'static str {
        match self {
            Column::Ours => "p2pnvme",
            Column::Qemu => "qemu",
        }
    }
}

/// One test's outcome on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `status pass`.
    Pass,
    /// `status fail`.
    Fail,
    /// `not run`: a requirement missing (never a pass).
    NotRun,
    /// No result at all (the run ended early, or the test did not start).
    Missing,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::NotRun => "not run",
            Status::Missing => "no result",
        }
    }

    /// Several results of one test on one column (conditions, namespaces):
    /// a failure wins, then a pass, then not run.
    fn merge(self, other: Status) -> Status {
        use Status::*;
        match (self, other) {
            (Fail, _) | (_, Fail) => Fail,
            (Pass, _) | (_, Pass) => Pass,
            (NotRun, _) | (_, NotRun) => NotRun,
            _ => Missing,
        }
    }
}

/// A test's result on one column, with what JUnit shows of it.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The outcome.
    pub status: Status,
    /// blktests' reason (output, exit, dmesg) or its skip reasons.
    pub reason: String,
    /// Run time.
    pub runtime: Duration,
    /// The failure's evidence (.out.bad, .dmesg).
    pub log: String,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            status: Status::Missing,
            reason: String::new(),
            runtime: Duration::ZERO,
            log: String::new(),
        }
    }
}

/// Test name -> column -> result, for the selected tests.
pub type Rows = BTreeMap<String, BTreeMap<Column, Cell>>;

/// Reads `out` (check's -o DIR) and check's stdout into rows for `tests` on
/// `columns`; `devices` maps a block device name (nvme0n1) to its column.
pub fn collect(
    tests: &[String],
    columns: &[Column],
    out: &Path,
    devices: &BTreeMap<String, Column>,
    stdout: &str,
) -> Rows {
    let mut rows: Rows = tests
        .iter()
        .map(|t| {
            (
                t.clone(),
                columns.iter().map(|c| (*c, Cell::default())).collect(),
            )
        })
        .collect();
    for (dir, test, file) in result_files(out) {
        let base = dir.split('_').next().unwrap_or_default();
        let cols: Vec<Column> = match (base, devices.get(base)) {
            ("nodev", _) => columns.to_vec(),
            (_, Some(c)) => vec![*c],
            _ => continue,
        };
        let text = fs::read_to_string(&file).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('\t'))
                .unwrap_or_default()
                .to_string()
        };
        let status = match field("status").as_str() {
            "pass" => Status::Pass,
            "fail" => Status::Fail,
            "not run" => Status::NotRun,
            _ => Status::Missing,
        };
        let runtime = field("runtime")
            .trim_end_matches('s')
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_default();
        let mut log = String::new();
        for ext in ["out.bad", "dmesg"] {
            let p = file.with_file_name(format!(
                "{}.{ext}",
                file.file_name().unwrap_or_default().to_string_lossy()
            ));
            if let Ok(s) = fs::read_to_string(&p) {
                let _ = writeln!(log, "--- {}\n{s}", p.display());
            }
        }
        let Some(row) = rows.get_mut(&test) else {
            continue;
        };
        for c in cols {
            if let Some(cell) = row.get_mut(&c) {
                cell.status = cell.status.merge(status);
                if status == Status::Fail || cell.reason.is_empty() {
                    cell.reason = field("reason");
                }
                cell.runtime += runtime;
                cell.log += &log;
            }
        }
    }
    not_run_lines(&mut rows, devices, stdout);
    rows
}

/// (device dir, group/test, file) of every result file below `out`.
fn result_files(out: &Path) -> Vec<(String, String, std::path::PathBuf)> {
    let mut v = vec![];
    let names = |p: &Path| -> Vec<(String, std::path::PathBuf)> {
        let Ok(rd) = fs::read_dir(p) else {
            return vec![];
        };
        rd.filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect()
    };
    for (dir, dp) in names(out) {
        for (group, gp) in names(&dp) {
            for (test, tp) in names(&gp) {
                if tp.is_file() && !test.contains('.') {
                    v.push((dir.clone(), format!("{group}/{test}"), tp));
                }
            }
        }
    }
    v
}

/// check prints `TEST [=> DEV] (description) [not run]` and the skip
/// reasons below it, also for tests it writes no result for (a whole group,
/// a missing fallback device). Fills those cells that have no result yet,
/// and the reasons of not-run results.
fn not_run_lines(rows: &mut Rows, devices: &BTreeMap<String, Column>, stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if !l.trim_end().ends_with("[not run]") {
            continue;
        }
        let mut w = l.split_whitespace();
        let name = w.next().unwrap_or_default();
        let dev = (w.next() == Some("=>")).then(|| w.next()).flatten();
        let reasons: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|r| r.starts_with("    "))
            .map(|r| r.trim())
            .collect();
        let group = name.strip_suffix("/***");
        for (test, row) in rows.iter_mut() {
            let hit = test == name || group.is_some_and(|g| test.split('/').next() == Some(g));
            if !hit {
                continue;
            }
            for (col, cell) in row.iter_mut() {
                let on = dev.is_none_or(|d| devices.get(d) == Some(col));
                // Result files of skipped tests carry no reasons: take check's.
                let no_reason = cell.status == Status::NotRun && cell.reason.is_empty();
                if on && (cell.status == Status::Missing || no_reason) {
                    cell.status = Status::NotRun;
                    cell.reason = reasons.join("; ");
                }
            }
        }
    }
}

/// `exits` holds `TEST STATUS` per check run: a test without a result
/// whose check failed says so (check aborted before writing one).
pub fn note_aborts(rows: &mut Rows, exits: &str) {
    for l in exits.lines() {
        let Some((test, status)) = l.split_once(' ') else {
            continue;
        };
        let Some(row) = rows.get_mut(test) else {
            continue;
        };
        for cell in row.values_mut() {
            if cell.status == Status::Missing && status.trim() != "0" {
                cell.reason = format!(
                    "check exited with {} before writing a result",
                    status.trim()
                );
            }
        }
    }
}

/// The table: test, then one column per device.
pub fn table(rows: &Rows, columns: &[Column]) -> String {
    let width = rows.keys().map(String::len).max().unwrap_or(4).max(4);
    let mut t = format!("{:width$}", "test");
    for c in columns {
        let _ = write!(
            t,
            "  {:10}",
            if *c == Column::Ours { "ours" } else { "QEMU" }
        );
    }
    t = t.trim_end().to_string() + "\n";
    for (test, row) in rows {
        let mut l = format!("{test:width$}");
        for c in columns {
            let s = row.get(c).map_or(Status::Missing, |x| x.status);
            let _ = write!(l, "  {:10}", s.word());
        }
        t += l.trim_end();
        t.push('\n');
    }
    t
}

/// None when every test passed, or was not run on every device alike; else
/// one line saying which did not.
pub fn verdict(rows: &Rows) -> Option<String> {
    let bad: Vec<String> = rows
        .iter()
        .filter(|(_, row)| {
            let s: Vec<Status> = row.values().map(|c| c.status).collect();
            let all = |x: Status| s.iter().all(|v| *v == x);
            !(all(Status::Pass) || all(Status::NotRun))
        })
        .map(|(test, row)| {
            let cells: Vec<String> = row
                .iter()
                .map(|(c, x)| format!("{} {}", c.name(), x.status.word()))
                .collect();
            format!("{test} ({})", cells.join(", "))
        })
        .collect();
    if bad.is_empty() {
        return None;
    }
    let shown = bad.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = bad.len().saturating_sub(5);
    Some(format!(
        "{} of {} blktests did not pass on every device: {shown}{}",
        bad.len(),
        rows.len(),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// One JUnit case per test and device (suite `blktests-<device>`); not run
/// is skipped, no result is unknown.
pub fn junit_results(rows: &Rows) -> Vec<CaseResult> {
    let mut v = vec![];
    let columns: Vec<Column> = rows.values().flat_map(|r| r.keys().copied()).collect();
    let mut columns = columns;
    columns.sort();
    columns.dedup();
    for col in columns {
        for (test, row) in rows {
            let Some(cell) = row.get(&col) else {
                continue;
            };
            let outcome = match cell.status {
                Status::Pass => Outcome::Passed,
                Status::Fail => Outcome::Failed,
                Status::NotRun => Outcome::Skipped,
                Status::Missing => Outcome::Unknown,
            };
            let reason = match (cell.status, cell.reason.is_empty()) {
                (Status::Missing, true) => "blktests wrote no result for it".to_string(),
                (Status::Missing, false) => cell.reason.clone(),
                (_, true) => cell.status.word().to_string(),
                (_, false) => format!("{}: {}", cell.status.word(), cell.reason),
            };
            v.push(CaseResult {
                name: test.clone(),
                suite: format!("blktests-{}", col.name()),
                expect: Expect::Pass,
                outcome,
                reason,
                duration: cell.runtime,
                log: cell.log.clone(),
            });
        }
    }
    v
}

#[cfg(test)]
mod tests;
