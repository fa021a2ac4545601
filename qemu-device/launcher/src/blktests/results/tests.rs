use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn devices() -> BTreeMap<String, Column> {
    [
        ("nvme0n1".to_string(), Column::Qemu),
        ("nvme1n1".to_string(), Column::Ours),
    ]
    .into()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const BOTH: &[Column] = &[Column::Ours, Column::Qemu];

#[test]
fn device_results_go_to_their_column_and_nodev_results_to_every_column() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "nvme1n1/block/003",
        "status\tpass\nruntime\t2.5s\n",
    );
    write(
        d.path(),
        "nvme0n1/block/003",
        "status\tpass\nruntime\t1.0s\n",
    );
    write(
        d.path(),
        "nvme1n1/nvme/046",
        "description\tx\nstatus\tfail\nreason\toutput\n",
    );
    write(
        d.path(),
        "nvme1n1/nvme/046.out.bad",
        "Running nvme/046\nwrong\n",
    );
    write(d.path(), "nvme0n1/nvme/046", "status\tpass\n");
    write(
        d.path(),
        "nodev_nvme_trtype=loop/nvme/006",
        "status\tpass\n",
    );
    let rows = collect(
        &names(&["block/003", "nvme/006", "nvme/046"]),
        BOTH,
        d.path(),
        &devices(),
        "",
    );
    let st = |t: &str, c: Column| rows[t][&c].status;
    assert_eq!(st("block/003", Column::Ours), Status::Pass);
    assert_eq!(
        rows["block/003"][&Column::Ours].runtime,
        Duration::from_millis(2500)
    );
    assert_eq!(st("nvme/006", Column::Qemu), Status::Pass);
    assert_eq!(st("nvme/006", Column::Ours), Status::Pass);
    assert_eq!(st("nvme/046", Column::Ours), Status::Fail);
    assert_eq!(st("nvme/046", Column::Qemu), Status::Pass);
    assert!(rows["nvme/046"][&Column::Ours].log.contains("wrong"));
    let table = table(&rows, BOTH);
    assert_eq!(
        table.lines().collect::<Vec<_>>(),
        [
            "test       ours        QEMU",
            "block/003  pass        pass",
            "nvme/006   pass        pass",
            "nvme/046   FAIL        pass",
        ],
        "{table}"
    );
    let v = verdict(&rows).unwrap();
    assert_eq!(
        v,
        "1 of 3 blktests did not pass on every device: nvme/046 (p2pnvme FAIL, qemu pass)"
    );
}

#[test]
fn not_run_lines_count_for_tests_without_a_result_file_and_missing_is_never_a_pass() {
    let d = tempfile::tempdir().unwrap();
    let stdout = "\
nvme/039 (test error logging)                               [not run]
    kernel option FAULT_INJECTION has not been enabled
block/005 => nvme1n1 (switch schedulers while doing IO)     [not run]
    fio is not installed
zbd/*** => nvme0n1                                          [not run]
    is not a zoned block device
";
    write(d.path(), "nvme1n1/nvme/039", "status\tnot run\n");
    let rows = collect(
        &names(&["nvme/039", "block/005", "zbd/001", "block/004"]),
        BOTH,
        d.path(),
        &devices(),
        stdout,
    );
    let st = |t: &str, c: Column| rows[t][&c].status;
    assert_eq!(st("nvme/039", Column::Ours), Status::NotRun);
    assert_eq!(st("nvme/039", Column::Qemu), Status::NotRun);
    for col in [Column::Ours, Column::Qemu] {
        assert_eq!(
            rows["nvme/039"][&col].reason, "kernel option FAULT_INJECTION has not been enabled",
            "a result file's not run takes check's reasons"
        );
    }
    assert_eq!(st("block/005", Column::Ours), Status::NotRun);
    assert_eq!(st("block/005", Column::Qemu), Status::Missing);
    assert_eq!(st("zbd/001", Column::Qemu), Status::NotRun);
    assert_eq!(st("zbd/001", Column::Ours), Status::Missing);
    assert_eq!(st("block/004", Column::Ours), Status::Missing);
    let v = verdict(&rows).unwrap();
    assert!(v.starts_with("3 of 4 blktests"), "{v}");
    assert!(
        v.contains("block/004 (p2pnvme no result, qemu no result)"),
        "{v}"
    );
    junit_has(
        &rows,
        &[
            "<skipped message=\"not run: kernel option FAULT_INJECTION",
            "<error message=\"blktests wrote no result for it\"/>",
            "errors=\"4\" skipped=\"4\"",
        ],
    );
    let mut rows = rows;
    note_aborts(&mut rows, "block/004 1\nnvme/039 0\n");
    assert_eq!(
        rows["block/004"][&Column::Ours].reason,
        "check exited with 1 before writing a result"
    );
    assert_eq!(rows["block/004"][&Column::Ours].status, Status::Missing);
    junit_has(
        &rows,
        &["<error message=\"check exited with 1 before writing a result\"/>"],
    );
}

#[test]
fn all_passed_or_not_run_alike_is_the_only_success() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "nvme1n1/block/003", "status\tpass\n");
    write(d.path(), "nvme0n1/block/003", "status\tpass\n");
    write(d.path(), "nvme1n1/block/004", "status\tnot run\n");
    write(d.path(), "nvme0n1/block/004", "status\tnot run\n");
    let rows = both_003_004(d.path());
    assert_eq!(verdict(&rows), None);
    junit_has(
        &rows,
        &[
            "tests=\"4\" failures=\"0\" errors=\"0\" skipped=\"2\"",
            "<testsuite name=\"blktests-p2pnvme\"",
        ],
    );
    // Not run on one device but passed on the other is a difference.
    write(d.path(), "nvme0n1/block/004", "status\tpass\n");
    let rows = both_003_004(d.path());
    assert!(verdict(&rows)
        .unwrap()
        .contains("block/004 (p2pnvme not run, qemu pass)"));
    // One column: not run is no failure there.
    write(d.path(), "nvme0n1/block/004", "status\tnot run\n");
    let rows = collect(
        &names(&["block/003", "block/004"]),
        &[Column::Qemu],
        d.path(),
        &devices(),
        "",
    );
    assert_eq!(verdict(&rows), None);
    assert_eq!(
        table(&rows, &[Column::Qemu]).lines().next(),
        Some("test       QEMU")
    );
}

/// The JUnit report of `rows` contains every one of `needles`.
fn junit_has(rows: &Rows, needles: &[&str]) {
    let junit = p2pnvme_testplan::report::junit(&junit_results(rows));
    for n in needles {
        assert!(junit.contains(n), "{n} not in {junit}");
    }
}

/// block/003 and block/004 on both devices, from the result files in `dir`.
fn both_003_004(dir: &Path) -> Rows {
    collect(
        &names(&["block/003", "block/004"]),
        BOTH,
        dir,
        &devices(),
        "",
    )
}
