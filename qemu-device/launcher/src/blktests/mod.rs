//! `p2pnvme blktests --src DIR`: runs a user's blktests checkout (never
//! shipped with the project) in a full-userland guest against the project's
//! namespaces and/or QEMU's nvme, prints one table (test, ours, QEMU) and
//! writes JUnit.
//!
//! Promises: the checkout's helpers are built in place with the root
//! filesystem's toolchain (chroot; a helper that does not build makes its
//! tests "not run", never a pass); the checkout's own `config` and
//! `results/` are not touched (check runs with `-c` and `-o` in a run
//! directory, or `--output`); exit status 0 only when every selected test
//! passed, or was not run on every device alike; otherwise 1 with one line
//! naming the tests. Both devices share one guest; each namespace's column
//! is told by its controller's model (`/sys/block/*/device/model`).

mod results;

use crate::exit;
use crate::image;
use crate::kbuild::{self, Mount};
use crate::options::VmOptions;
use crate::session::{Output, Session};
use crate::vm::{Root, Share};
use anyhow::{bail, Context, Result};
use clap::Args;
use results::Column;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `p2pnvme blktests`.
#[derive(Args)]
pub struct BlktestsArgs {
    /// The blktests checkout (git clone of linux-blktests/blktests).
    #[arg(long, value_name = "DIR")]
    pub src: PathBuf,
    /// Which NVMe controllers the tests run against.
    #[arg(long, value_enum, default_value = "both")]
    pub device: DeviceChoice,
    /// Write JUnit XML here (one suite per device; not run is skipped).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Keep blktests' result files here (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Fail if the guest has not finished after this many seconds (exit 124).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    #[command(flatten)]
    pub vm: VmOptions,
    /// Tests or groups (`block/003`, `nvme`); default: every test.
    #[arg(value_name = "TEST")]
    pub tests: Vec<String>,
}

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The project's vfio-user controllers.
    P2pnvme,
    /// QEMU's built-in nvme.
    Qemu,
    /// Both, in one guest (a column each).
    Both,
}

impl DeviceChoice {
    fn columns(self) -> Vec<Column> {
        match self {
            DeviceChoice::P2pnvme => vec![Column::Ours],
            DeviceChoice::Qemu => vec![Column::Qemu],
            DeviceChoice::Both => vec![Column::Ours, Column::Qemu],
        }
    }
}

/// Where the guest sees the checkout and the run directory.
const GUEST_SRC: &str = "/mnt/blktests";
const GUEST_OUT: &str = "/mnt/blktests-run";

/// Runs the command; the exit status follows the module's promise.
pub fn run(mut args: BlktestsArgs) -> Result<i32> {
    let src = fs::canonicalize(&args.src).map_err(|e| {
        exit::with(
            exit::REFUSED,
            format!(
                "--src {}: {e}: give a blktests checkout (git clone https://github.com/linux-blktests/blktests)",
                args.src.display()
            ),
        )
    })?;
    if !src.join("check").is_file() || !src.join("tests").is_dir() {
        return Err(exit::with(
            exit::REFUSED,
            format!(
                "--src {}: no check script and tests/ folder there: give a blktests checkout",
                src.display()
            ),
        ));
    }
    let tests = expand(&src, &args.tests)?;
    let columns = args.device.columns();
    let tmp;
    let out_dir = match &args.output {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("creating --output {}", d.display()))?;
            fs::canonicalize(d)?
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("p2pnvme-blktests-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let results_dir = out_dir.join("results");
    let _ = fs::remove_dir_all(&results_dir);
    let img = image::ensure(false)?;
    build_helpers(&img.rootfs, &src)?;
    fs::write(out_dir.join("run.sh"), guest_script(&tests, &columns))?;

    let vm = &mut args.vm;
    if vm.root == Root::Busybox {
        vm.root = Root::Full; // check needs bash and the full userland
    }
    if columns.contains(&Column::Ours) {
        vm.nvme = vm.nvme.max(1);
    }
    if columns.contains(&Column::Qemu) {
        vm.qemu_nvme = vm.qemu_nvme.max(1);
    }
    for (host, guest) in [(&src, GUEST_SRC), (&out_dir, GUEST_OUT)] {
        vm.shares.push(Share {
            host: host.clone(),
            guest: guest.to_string(),
        });
    }
    crate::procs::catch_signals();
    let mut s = Session::prepare(args.vm)?;
    let r = s.run(
        &format!("bash {GUEST_OUT}/run.sh"),
        Duration::from_secs(args.timeout),
        Output::Stream,
    )?;
    s.stop_helpers();
    let health = r.guest.kernel_health(s.opts.allow_warn);
    let devices = match device_columns(&out_dir.join("devices")) {
        Ok(d) => d,
        Err(e) => {
            crate::health::enforce(&r.guest, &health)?;
            bail!(
                "blktests did not start in the guest (its script exited with {}): {e:#}",
                r.status
            );
        }
    };
    let stdout = String::from_utf8_lossy(&r.stdout);
    let mut rows = results::collect(&tests, &columns, &results_dir, &devices, &stdout);
    results::note_aborts(
        &mut rows,
        &fs::read_to_string(out_dir.join("exits")).unwrap_or_default(),
    );
    println!("{}", results::table(&rows, &columns).trim_end());
    if let Some(f) = &args.junit {
        let junit = p2pnvme_testplan::report::junit(&results::junit_results(&rows));
        fs::write(f, junit).with_context(|| format!("writing --junit {}", f.display()))?;
    }
    crate::health::enforce(&r.guest, &health)?;
    if r.status != 0 {
        bail!(
            "blktests' check did not finish (the guest script exited with {}); see its output above",
            r.status
        );
    }
    match results::verdict(&rows) {
        None => Ok(0),
        Some(line) => {
            log::error!("{line}");
            Ok(1)
        }
    }
}

/// The selected tests: each TEST as given, each group as its tests; none:
/// every test. An unknown one is refused before anything boots.
fn expand(src: &Path, args: &[String]) -> Result<Vec<String>> {
    let tests_dir = src.join("tests");
    let group_tests = |g: &str| -> Result<Vec<String>> {
        let mut v: Vec<String> = fs::read_dir(tests_dir.join(g))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
            .map(|n| format!("{g}/{n}"))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = vec![];
    let groups: Vec<String> = if args.is_empty() {
        let mut g: Vec<String> = fs::read_dir(&tests_dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        g.sort();
        g
    } else {
        vec![]
    };
    for a in args.iter().chain(groups.iter()) {
        let a = a.trim_end_matches('/');
        if tests_dir.join(a).is_file() && a.contains('/') {
            out.push(a.to_string());
        } else if tests_dir.join(a).is_dir() {
            out.extend(group_tests(a)?);
        } else {
            return Err(exit::with(
                exit::REFUSED,
                format!(
                    "blktests has no test or group '{a}' (no {}): name tests like block/003 or groups like nvme",
                    tests_dir.join(a).display()
                ),
            ));
        }
    }
    out.dedup();
    Ok(out)
}

/// `make` in the checkout with the root filesystem's compilers. It has no
/// C++ compiler and no liburing: helpers that need them are left out (make
/// -k), and blktests reports their tests as not run.
fn build_helpers(rootfs: &Path, src: &Path) -> Result<()> {
    log::info!("building blktests' helpers in {}", src.display());
    let m = Mount::new(src, "blktests", rootfs);
    let script = format!("make -k -C '{}' 2>&1", m.inside);
    let out = kbuild::run(rootfs, &[m], &script)?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let failed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("*** [Makefile:").nth(1)?.split(": ").nth(1))
            .filter_map(|l| l.split(']').next())
            .filter(|t| *t != "all")
            .collect();
        let what = if failed.is_empty() {
            text.lines().last().unwrap_or("make failed").to_string()
        } else {
            failed.join(" ")
        };
        log::warn!("blktests helpers not built (their tests will not run): {what}");
    }
    Ok(())
}

/// The guest side: find the NVMe namespaces of the `columns` asked for (each
/// one's column told by its controller's model), write check's config and
/// run check once per test.
fn guest_script(tests: &[String], columns: &[Column]) -> String {
    format!(
        r#"set -u
out={GUEST_OUT}
: >"$out/devices"
devs=()
for b in /sys/block/nvme*n*; do
	[ -e "$b/device/model" ] || continue
	case "$(cat "$b/device/model")" in
	*p2pnvme*) col=ours ;;
	*QEMU*) col=qemu ;;
	*) continue ;;
	esac
	case " {wanted} " in *" $col "*) ;; *) continue ;; esac
	echo "${{b##*/}} $col" >>"$out/devices"
	devs+=("/dev/${{b##*/}}")
done
echo "TEST_DEVS=(${{devs[*]}})" >"$out/config"
# Tests of unprivileged access (nvme/046) run as this user (su needs a
# login shell, which nobody lacks; the root's overlay takes the new line).
id blktests >/dev/null 2>&1 ||
	echo "blktests:x:64999:64999:blktests:/tmp:/bin/sh" >>/etc/passwd
echo "NORMAL_USER=blktests" >>"$out/config"
cd {GUEST_SRC}
# The tests' `udevadm settle` would print "Running in chroot, ignoring
# request." into their output (the root is a chroot; no udevd runs).
export SYSTEMD_IGNORE_CHROOT=1
# One check per test: a test that makes check itself abort (a bash error in
# blktests' helpers) costs that test only.
: >"$out/exits"
for t in {tests}; do
	./check -c "$out/config" -o "$out/results" "$t"
	echo "$t $?" >>"$out/exits"
done
"#,
        tests = tests.join(" "),
        wanted = columns
            .iter()
            .map(|c| if *c == Column::Ours { "ours" } else { "qemu" })
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The `devices` file the guest script wrote: `nvme0n1 ours` lines.
fn device_columns(path: &Path) -> Result<BTreeMap<String, Column>> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "the guest wrote no {} (it did not get to the tests)",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (dev, col) = l.split_once(' ')?;
            let col = match col.trim() {
                "ours" => Column::Ours,
                "qemu" => Column::Qemu,
                _ => return None,
            };
            Some((dev.to_string(), col))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for t in [
            "block/001",
            "block/002",
            "block/rc",
            "nvme/046",
            "nvme/046.out",
        ] {
            let p = d.path().join("tests").join(t);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "").unwrap();
        }
        d
    }

    #[test]
    fn groups_expand_to_their_tests_and_an_unknown_test_is_refused_in_one_line() {
        let d = checkout();
        let names = |a: &[&str]| {
            expand(
                d.path(),
                &a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(names(&["block"]).unwrap(), ["block/001", "block/002"]);
        assert_eq!(names(&["nvme/046"]).unwrap(), ["nvme/046"]);
        assert_eq!(names(&[]).unwrap(), ["block/001", "block/002", "nvme/046"]);
        let e = names(&["block/999"]).unwrap_err().to_string();
        assert!(e.contains("no test or group 'block/999'"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn the_devices_file_maps_namespaces_to_columns() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("devices");
        fs::write(&f, "nvme0n1 qemu\nnvme1n1 ours\nbogus\n").unwrap();
        let m = device_columns(&f).unwrap();
        assert_eq!(m.get("nvme0n1"), Some(&Column::Qemu));
        assert_eq!(m.get("nvme1n1"), Some(&Column::Ours));
        assert_eq!(m.len(), 2);
        let script = guest_script(&["block/001".into()], &[Column::Qemu]);
        assert!(script.contains("case \" qemu \" in"), "{script}");
    }
}
