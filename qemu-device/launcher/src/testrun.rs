//! `p2pnvme test`: runs the cases of test files, one guest per case (a
//! `p2pnvme run` child), up to `--jobs` at once, and reports them as a
//! summary line, JUnit and KTAP.

use anyhow::{bail, Context, Result};
use clap::ArgAction;
use p2pnvme_testplan::report::{junit, ktap};
use p2pnvme_testplan::select::{select, Filter, Shard};
use p2pnvme_testplan::{Case, CaseResult, OptionKind, Outcome, Summary};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// `p2pnvme test` options.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Test files: a `[defaults]` table and `[[case]]` tables whose keys are
    /// `name`, `command`, `expect` ("pass" or "fail"), `matrix`, and
    /// `p2pnvme run` options by flag name.
    #[arg(required = true, value_name = "FILE.toml")]
    pub files: Vec<PathBuf>,
    /// Guests at once; each takes its `mem` (default 1 GiB) of host RAM
    /// and a host thread per vCPU.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Run only this runner's part of the cases: every Nth from the Ith.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Run only the cases whose name matches this shell glob.
    #[arg(long, value_name = "GLOB")]
    pub filter: Option<Filter>,
    /// Write JUnit XML here (one testcase per case, logs of unmet cases attached).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print KTAP on stdout (progress and the summary go to stderr).
    #[arg(long)]
    pub ktap: bool,
    /// Keep each case's output in this directory (`<case>.log`).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    /// List the selected cases with their `p2pnvme run` arguments and exit.
    #[arg(long)]
    pub list: bool,
}

/// A command exits 4 (kselftest's KSFT_SKIP) to say it cannot run here.
const SKIP_STATUS: i32 = 4;

/// How `p2pnvme run` (the clap command `run`) takes each flag.
fn option_kind(run: &clap::Command, name: &str) -> Option<OptionKind> {
    let arg = run
        .get_arguments()
        .find(|a| a.get_long() == Some(name) && !a.is_hide_set())?;
    Some(match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => OptionKind::Switch,
        ArgAction::Append => OptionKind::Repeated,
        _ => OptionKind::Value,
    })
}

/// The cases of every file, selected; each checked the way `run` parses it.
fn cases(args: &TestArgs, run: &clap::Command) -> Result<Vec<Case>> {
    let mut all: Vec<Case> = vec![];
    for f in &args.files {
        let kind = |name: &str| option_kind(run, name);
        for c in p2pnvme_testplan::load(f, &kind)? {
            if let Some(twin) = all.iter().find(|a| a.name == c.name) {
                bail!(
                    "case '{}' is in {} and {}: names must be unique across files",
                    c.name,
                    twin.file.display(),
                    f.display()
                );
            }
            all.push(c);
        }
    }
    let selected = select(all, args.filter.as_ref(), args.shard);
    for c in &selected {
        run.clone()
            .no_binary_name(true)
            .try_get_matches_from(argv(c))
            .map_err(|e| {
                let first = e.to_string();
                let first = first
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                anyhow::anyhow!("{}: case '{}': {first}", c.file.display(), c.name)
            })?;
    }
    if selected.is_empty() {
        bail!("no case selected: check the files, --filter and --shard");
    }
    Ok(selected)
}

/// `p2pnvme run`'s arguments for a case.
fn argv(c: &Case) -> Vec<String> {
    let mut v = c.args();
    v.push("--".into());
    v.push(c.command.clone());
    v
}

/// What a `p2pnvme run` child's exit status and output mean.
fn outcome(c: &Case, status: Option<i32>, log: &str) -> (Outcome, String) {
    let proving = c.options.iter().any(|(k, _)| k == "prove");
    let verdict = log.lines().rev().find(|l| {
        ["PASS:", "FAIL:", "UNKNOWN:", "p2pnvme: error:"]
            .iter()
            .any(|p| l.starts_with(p))
    });
    // Without a verdict line, the exit status and the output's last line.
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let said = |status: String| {
        verdict.map(str::to_string).unwrap_or(match last {
            "" => status,
            l => format!("{status}: {l}"),
        })
    };
    match status {
        Some(0) => (Outcome::Passed, said("exit status 0".into())),
        Some(2) if proving && verdict.is_some_and(|v| v.starts_with("UNKNOWN:")) => {
            (Outcome::Unknown, said(String::new()))
        }
        Some(SKIP_STATUS) if !proving => (Outcome::Skipped, "the command exited 4 (skip)".into()),
        Some(s) => (Outcome::Failed, said(format!("exit status {s}"))),
        None => (Outcome::Failed, "killed by a signal".into()),
    }
}

/// A file name for a case's log.
fn log_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.log")
}

/// Runs one case to the end.
fn run_case(exe: &Path, c: &Case, logs: &Path) -> Result<CaseResult> {
    let path = logs.join(log_name(&c.name));
    let out =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let start = Instant::now();
    let status = Command::new(exe)
        .arg("run")
        .args(argv(c))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    let log = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
    let (outcome, reason) = outcome(c, status.code(), &log);
    Ok(CaseResult::new(c, outcome, reason, start.elapsed(), log))
}

/// Runs `p2pnvme test`; the exit status is 0 only when every case met its
/// expectation.
pub fn run(args: TestArgs, run_cmd: &clap::Command) -> Result<i32> {
    let selected = cases(&args, run_cmd)?;
    if args.list {
        for c in &selected {
            println!("{}\t{}", c.name, shell_words(&argv(c)));
        }
        return Ok(0);
    }
    let exe = std::env::current_exe().context("locating the p2pnvme binary")?;
    let tmp;
    let logs = match &args.logs {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    log::info!(
        "{} cases, {} at once; logs in {}",
        selected.len(),
        args.jobs,
        logs.display()
    );
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; selected.len()]);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..args.jobs.min(selected.len() as u16) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = selected.get(i) else { break };
                if crate::procs::signalled().is_some() {
                    break;
                }
                match run_case(&exe, c, &logs) {
                    Ok(r) => {
                        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                        log::info!(
                            "[{n}/{}] {} {} ({:.1} s){}",
                            selected.len(),
                            if r.met() { "ok" } else { "NOT OK" },
                            r.name,
                            r.duration.as_secs_f64(),
                            if r.met() {
                                String::new()
                            } else {
                                format!(": {}", r.reason)
                            }
                        );
                        results.lock().unwrap()[i] = Some(r);
                    }
                    Err(e) => {
                        failed.lock().unwrap().get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    let results: Vec<CaseResult> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    if results.len() < selected.len() {
        bail!(
            "interrupted after {} of {} cases",
            results.len(),
            selected.len()
        );
    }
    if let Some(f) = &args.junit {
        std::fs::write(f, junit(&results)).with_context(|| format!("writing {}", f.display()))?;
    }
    if args.ktap {
        print!("{}", ktap(&results));
    }
    let summary = Summary::of(&results);
    if args.ktap {
        log::info!("{}", summary.line());
    } else {
        println!("{}", summary.line());
    }
    Ok(i32::from(summary.unmet > 0))
}

/// Arguments as a shell would read them back.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pnvme_testplan::Expect;

    fn case(options: Vec<(&str, p2pnvme_testplan::OptionValue)>) -> Case {
        Case {
            name: "c".into(),
            file: "f.toml".into(),
            command: "true".into(),
            expect: Expect::Pass,
            options: options
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    #[test]
    fn exit_statuses_become_outcomes_and_unknown_needs_an_unknown_verdict() {
        let plain = case(vec![]);
        let proving = case(vec![(
            "prove",
            p2pnvme_testplan::OptionValue::Values(vec!["p2p0n1:1M".into()]),
        )]);
        assert_eq!(outcome(&plain, Some(0), "").0, Outcome::Passed);
        assert_eq!(outcome(&plain, Some(4), "").0, Outcome::Skipped);
        assert_eq!(outcome(&plain, Some(2), "UNKNOWN: x").0, Outcome::Failed);
        assert_eq!(outcome(&plain, None, "").0, Outcome::Failed);
        let (o, why) = outcome(&proving, Some(2), "boot\nUNKNOWN: no counters\n");
        assert_eq!(
            (o, why.as_str()),
            (Outcome::Unknown, "UNKNOWN: no counters")
        );
        let (o, why) = outcome(
            &proving,
            Some(2),
            "p2pnvme: error: --accel kvm: no /dev/kvm\n",
        );
        assert_eq!(o, Outcome::Failed);
        assert!(why.starts_with("p2pnvme: error:"));
        assert_eq!(outcome(&proving, Some(4), "").0, Outcome::Failed);
    }
}
