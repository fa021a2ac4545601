//! Outcomes of cases and what a CI system reads from them: one summary
//! line, JUnit XML (one testcase per case, the guest log of every unmet case
//! attached) and KTAP.

use crate::plan::{Case, Expect};
use std::fmt::Write;
use std::time::Duration;

/// How a case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The run passed.
    Passed,
    /// The run failed (a failed check, a bad exit status, a kernel report,
    /// a timeout, or the launcher could not run it).
    Failed,
    /// The verdict could not be judged (missing evidence): never a pass.
    Unknown,
    /// The command said it cannot run here (exit 4, kselftest's skip).
    Skipped,
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Its file's stem (the JUnit class).
    pub suite: String,
    /// What it was expected to do.
    pub expect: Expect,
    /// How it ended.
    pub outcome: Outcome,
    /// Why (the verdict's reasons, the exit status), one line.
    pub reason: String,
    /// Wall time of the run.
    pub duration: Duration,
    /// The run's output (attached to unmet cases).
    pub log: String,
}

impl CaseResult {
    /// A result for `case`.
    pub fn new(
        case: &Case,
        outcome: Outcome,
        reason: String,
        duration: Duration,
        log: String,
    ) -> Self {
        CaseResult {
            name: case.name.clone(),
            suite: case.suite(),
            expect: case.expect,
            outcome,
            reason,
            duration,
            log,
        }
    }

    /// The case ended as expected (a skip is not a failure).
    pub fn met(&self) -> bool {
        matches!(
            (self.expect, self.outcome),
            (_, Outcome::Skipped)
                | (Expect::Pass, Outcome::Passed)
                | (Expect::Fail, Outcome::Failed)
        )
    }
}

/// Counts over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases run.
    pub total: usize,
    /// Ended Passed.
    pub passed: usize,
    /// Ended Failed.
    pub failed: usize,
    /// Ended Unknown.
    pub unknown: usize,
    /// Ended Skipped.
    pub skipped: usize,
    /// Did not end as expected.
    pub unmet: usize,
}

impl Summary {
    /// Counts `results`.
    pub fn of(results: &[CaseResult]) -> Summary {
        let mut s = Summary {
            total: results.len(),
            ..Summary::default()
        };
        for r in results {
            match r.outcome {
                Outcome::Passed => s.passed += 1,
                Outcome::Failed => s.failed += 1,
                Outcome::Unknown => s.unknown += 1,
                Outcome::Skipped => s.skipped += 1,
            }
            s.unmet += usize::from(!r.met());
        }
        s
    }

    /// The closing line, e.g. `5 cases: 3 passed, 1 failed, 0 unknown, 1 skipped; all met expectations`.
    pub fn line(&self) -> String {
        let tail = match self.unmet {
            0 => "all met expectations".to_string(),
            n => format!("{n} did not meet expectations"),
        };
        format!(
            "{} cases: {} passed, {} failed, {} unknown, {} skipped; {tail}",
            self.total, self.passed, self.failed, self.unknown, self.skipped
        )
    }
}

/// The most guest log attached to one JUnit testcase.
const LOG_TAIL: usize = 64 << 10;

/// JUnit XML for `results` (one testsuite per file).
pub fn junit(results: &[CaseResult]) -> String {
    let total = Summary::of(results);
    let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let all: Duration = results.iter().map(|r| r.duration).sum();
    let _ = writeln!(
        x,
        "<testsuites name=\"p2pnvme\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
        total.total,
        results.iter().filter(|r| !r.met() && r.outcome != Outcome::Unknown).count(),
        results.iter().filter(|r| !r.met() && r.outcome == Outcome::Unknown).count(),
        total.skipped,
        secs(all)
    );
    let mut suites: Vec<&str> = results.iter().map(|r| r.suite.as_str()).collect();
    suites.dedup();
    for suite in suites {
        let rs: Vec<&CaseResult> = results.iter().filter(|r| r.suite == suite).collect();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" time=\"{}\">",
            escape(suite),
            rs.len(),
            secs(rs.iter().map(|r| r.duration).sum())
        );
        for r in rs {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                escape(suite),
                escape(&r.name),
                secs(r.duration)
            );
            let tag = match (r.met(), r.outcome) {
                (_, Outcome::Skipped) => Some("skipped"),
                (true, _) => None,
                (false, Outcome::Unknown) => Some("error"),
                (false, _) => Some("failure"),
            };
            let Some(tag) = tag else {
                x.push_str("/>\n");
                continue;
            };
            let _ = writeln!(x, ">\n      <{tag} message=\"{}\"/>", escape(&r.reason));
            if !r.met() {
                let start = r.log.len().saturating_sub(LOG_TAIL);
                let start = (start..r.log.len())
                    .find(|i| r.log.is_char_boundary(*i))
                    .unwrap_or(0);
                let _ = writeln!(
                    x,
                    "      <system-out>{}</system-out>",
                    escape(&r.log[start..])
                );
            }
            x.push_str("    </testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// KTAP version 1 for `results`: `ok`/`not ok` per case, with `# SKIP`,
/// `# XFAIL` (an expected failure happened) and `# ERROR` (unknown)
/// directives, and the reason of every unmet case as a diagnostic line.
pub fn ktap(results: &[CaseResult]) -> String {
    let mut k = format!("KTAP version 1\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        let name = r.name.replace('#', "_");
        let reason = r.reason.replace('\n', " ");
        let line = match (r.outcome, r.expect, r.met()) {
            (Outcome::Skipped, _, _) => format!("ok {n} {name} # SKIP {reason}"),
            (Outcome::Failed, Expect::Fail, _) => format!("ok {n} {name} # XFAIL {reason}"),
            (_, _, true) => format!("ok {n} {name}"),
            (Outcome::Unknown, _, _) => {
                format!("# {reason}\nnot ok {n} {name} # ERROR verdict unknown")
            }
            _ => format!("# {reason}\nnot ok {n} {name}"),
        };
        k.push_str(&line);
        k.push('\n');
    }
    k
}

/// Text as XML character data or an attribute value; characters XML 1.0
/// cannot carry (most control characters) become U+FFFD.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, expect: Expect, outcome: Outcome) -> CaseResult {
        CaseResult {
            name: name.into(),
            suite: "suite".into(),
            expect,
            outcome,
            reason: format!("{outcome:?} because <x> & \"y\""),
            duration: Duration::from_millis(1500),
            log: "guest\u{1b}[0m log".into(),
        }
    }

    fn sample() -> Vec<CaseResult> {
        vec![
            result("a[t=switch]", Expect::Pass, Outcome::Passed),
            result("b", Expect::Pass, Outcome::Failed),
            result("c", Expect::Fail, Outcome::Failed),
            result("d", Expect::Pass, Outcome::Unknown),
            result("e", Expect::Pass, Outcome::Skipped),
            result("f", Expect::Fail, Outcome::Passed),
        ]
    }

    #[test]
    fn unknown_and_unexpected_outcomes_are_unmet_and_counted() {
        let s = Summary::of(&sample());
        assert_eq!(
            s.line(),
            "6 cases: 2 passed, 2 failed, 1 unknown, 1 skipped; 3 did not meet expectations"
        );
        let met: Vec<bool> = sample().iter().map(|r| r.met()).collect();
        assert_eq!(met, [true, false, true, false, true, false]);
    }

    #[test]
    fn ktap_marks_every_case_with_its_directive() {
        let k = ktap(&sample());
        let lines: Vec<&str> = k.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "KTAP version 1",
                "1..6",
                "ok 1 a[t=switch]",
                "not ok 2 b",
                "ok 3 c # XFAIL Failed because <x> & \"y\"",
                "not ok 4 d # ERROR verdict unknown",
                "ok 5 e # SKIP Skipped because <x> & \"y\"",
                "not ok 6 f"
            ]
        );
    }

    #[test]
    fn junit_escapes_and_attaches_logs_of_unmet_cases_only() {
        let x = junit(&sample());
        assert!(x.contains(
            "<testsuites name=\"p2pnvme\" tests=\"6\" failures=\"2\" errors=\"1\" skipped=\"1\" time=\"9.000\">"
        ));
        assert!(x.contains("<testcase classname=\"suite\" name=\"a[t=switch]\" time=\"1.500\"/>"));
        assert!(x.contains("<failure message=\"Failed because &lt;x&gt; &amp; &quot;y&quot;\"/>"));
        assert!(x.contains("<error message=\"Unknown"));
        assert_eq!(
            x.matches("<system-out>guest\u{fffd}[0m log</system-out>")
                .count(),
            3
        );
    }
}
