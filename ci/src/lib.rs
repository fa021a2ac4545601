//! Helpers for end-to-end tests that drive the `p2pnvme` binary.
//!
//! Map: this file runs the launcher (`p2pnvme`, `guest_ok`, `prove`) and
//! keeps the artifacts (`report`); `guest_output` reads what guest scripts
//! print. Data path of a test: tests/*.rs -> `p2pnvme run|demo` (the
//! binary under test) -> a guest script's `key=value` lines
//! ([`GuestOutput`]) and the launcher's JSON documents (p2pnvme_docs) ->
//! assertions.

mod guest_output;

pub use guest_output::GuestOutput;

pub use p2pnvme_docs::report::{DemoReport, ProveReport};
pub use p2pnvme_docs::stats::StatsDoc;
pub use p2pnvme_docs::verdict::Verdict;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The launcher under test: `P2PNVME_BIN`, else the workspace's release build.
pub fn p2pnvme_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("P2PNVME_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("p2pnvme");
        if p.exists() {
            return p;
        }
    }
    panic!("build the launcher first: cargo build --release -p p2pnvme (or set P2PNVME_BIN)");
}

/// Runs `p2pnvme ARGS...` and returns its output.
pub fn p2pnvme(args: &[&str]) -> Output {
    let out = Command::new(p2pnvme_bin())
        .args(args)
        .output()
        .expect("running p2pnvme");
    eprintln!(
        "$ p2pnvme {}\n-- exit {:?}\n-- stdout\n{}-- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts that a `p2pnvme` run exited with `code`; returns its stderr.
pub fn stderr_of_exit(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "p2pnvme's exit status");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Boots a guest with `vm_args`, runs `cmd`, asserts it succeeded, returns stdout.
pub fn guest_ok(vm_args: &[&str], cmd: &str) -> String {
    let mut args = vec!["run"];
    args.extend_from_slice(vm_args);
    args.push("--");
    args.push(cmd);
    let out = p2pnvme(&args);
    assert_eq!(out.status.code(), Some(0), "guest command failed: {cmd}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes whose command line mentions `marker` (leftovers of a run).
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// A marker unique to this test process, to find its QEMU instances.
pub fn unique_marker(name: &str) -> String {
    format!("p2pnvme.test={name}-{}", std::process::id())
}

/// Appends one scenario's result to ci/artifacts/e2e-report.jsonl and a
/// human line to ci/artifacts/e2e-report.txt (kept by CI as artifacts).
pub fn report(name: &str, doc: &DemoReport) {
    use std::io::Write;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let _ = std::fs::create_dir_all(&dir);
    let mut entry = serde_json::to_value(doc).expect("a demo report serializes");
    entry["scenario"] = serde_json::Value::String(name.to_string());
    let open = |f: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(f))
            .expect("opening the report")
    };
    let _ = writeln!(open("e2e-report.jsonl"), "{entry}");
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        open("e2e-report.txt"),
        "{name:<28} {verdict:<7} mode={mode:<7} bytes={bytes:<10} ram_data={ram:<10} cmb={cmb:<10} peer={peer:<10} ram_hits={hits:<6} match={m} {secs:.1}s",
        verdict = doc.verdict.to_string(),
        mode = doc.mode,
        bytes = doc.bytes,
        ram = n(doc.guest_ram_data_bytes),
        cmb = n(doc.cmb_data_bytes),
        peer = n(doc.peer_data_bytes),
        hits = doc.ram_dump_hits,
        m = doc.checksum_match,
        secs = doc.elapsed_s,
    );
}

/// Runs `p2pnvme run ARGS --prove ... --json -- CMD` and returns its exit
/// status and verdict document.
pub fn prove(args: &[&str], cmd: &str) -> (Option<i32>, ProveReport) {
    let mut a = vec!["run", "--json"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--", cmd]);
    let out = p2pnvme(&a);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no prove report on stdout ({e})"));
    (out.status.code(), doc)
}

/// The value of `p2pnvme image info`'s `KEY:` line (after the colon,
/// trimmed).
pub fn image_info(key: &str) -> String {
    let out = p2pnvme(&["image", "info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no '{key}:' line: {text}"))
}

/// The toolchain root filesystem `p2pnvme image info` names.
pub fn image_rootfs() -> PathBuf {
    let rootfs = image_info("rootfs");
    PathBuf::from(rootfs.split_whitespace().next().unwrap())
}

/// Runs the ci/fixtures script `script` with the root filesystem; returns
/// the tree it prints.
pub fn fixture_tree(script: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(script);
    let out = Command::new("bash")
        .arg(path)
        .arg(image_rootfs())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A fresh folder for one test's files (under the system's temp folder).
pub fn tempfile_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2pnvme-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of ci/guest-modules/MODULE in a fresh scratch folder (`tag`
/// keeps tests apart), ready for `p2pnvme module build`.
pub fn guest_module_source(module: &str, tag: &str) -> PathBuf {
    let dir = tempfile_dir(tag).join(module);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guest-modules")
        .join(module);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// ci/guest-modules/MODULE built by `p2pnvme module build` with `args`
/// (e.g. `--guest-kernel debian`); returns MODULE.ko.
pub fn guest_module(module: &str, tag: &str, args: &[&str]) -> PathBuf {
    let dir = guest_module_source(module, tag);
    let mut a = vec!["module", "build", dir.to_str().unwrap()];
    a.extend_from_slice(args);
    assert_eq!(p2pnvme(&a).status.code(), Some(0));
    dir.join(format!("{module}.ko"))
}
