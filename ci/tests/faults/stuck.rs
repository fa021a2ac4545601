//! Commands that never complete, or a controller that reports a fatal
//! status: the nvme driver times out, aborts or resets, and I/O resumes.

use super::*;

/// A read the controller never finishes: the driver times out, resets,
/// and I/O and a verify pass afterwards. Returns what the guest printed.
fn stuck_read(k: Kernel, action: &str) -> Run {
    let rule = format!("ctrl=0,op=read,{},nth=1,{action}", lbas(OFF, 4096));
    let run = scenario(
        k,
        std::slice::from_ref(&rule),
        &["--append", IO_TIMEOUT],
        &format!("sh /opt/p2pnvme/ci/fault-timeout.sh {OFF}"),
    );
    let (kv, doc) = (&run.kv, &run.stats);
    assert_eq!(run.code, Some(0), "the guest script ran to its end");
    assert_eq!(kv.num("io_timeout"), 5, "the short timeout took effect");
    assert_eq!(fired(doc, 0, &rule), 1, "the rule fired once");
    // The stuck read comes back: the driver retried it after the reset.
    assert_eq!(kv.num("read_rc"), 0, "{:?}", kv.dmesg);
    assert_eq!(kv.num("second_read_rc"), 0);
    assert_eq!(kv.get("state"), "live");
    assert_eq!(kv.num("verify_rc"), 0, "fio verify after the reset");
    run
}

/// Seconds from the stuck read to `what` in the kernel log.
fn since_start(kv: &GuestOutput, what: &str) -> f64 {
    let t0 = kv.time("p2pnvme-fault: read-start").expect("start mark");
    let t = kv
        .time(what)
        .unwrap_or_else(|| panic!("no '{what}' in the kernel log: {:?}", kv.dmesg));
    t - t0
}

/// Device clock: (injected command fetched, dropped by the reset, first
/// successful I/O completed after that), in seconds from the injection.
fn device_times(trace: &[TraceRecord]) -> (f64, f64) {
    let stuck = trace
        .iter()
        .find(|r| r.fault.is_some())
        .expect("the injected command is in the trace");
    assert!(stuck.dropped, "the reset dropped it: {stuck:?}");
    let fetched = stuck.t_us - stuck.latency_us;
    let good = trace
        .iter()
        .filter(|r| r.q > 0 && r.status == 0 && !r.dropped && r.t_us > stuck.t_us)
        .map(|r| r.t_us)
        .min()
        .expect("a successful I/O after the reset");
    let s = |t: u64| (t - fetched) as f64 / 1e6;
    (s(stuck.t_us), s(good))
}

#[test]
fn a_completion_that_never_comes_times_out_aborts_resets_and_io_resumes() {
    never_completes(Kernel::Debian);
}

/// Also checks that `nvme_core.io_timeout=` reaches a built-in nvme driver.
#[test]
fn minimal_kernel_a_completion_that_never_comes_times_out_aborts_resets_and_io_resumes() {
    never_completes(Kernel::Minimal);
}

fn never_completes(k: Kernel) {
    let run = stuck_read(k, "never");
    let kv = &run.kv;
    let dev = kv.get("dev");
    let ctrl = &dev[..dev.rfind('n').expect("a namespace name")];
    let abort = since_start(kv, "timeout, aborting");
    let reset = since_start(kv, "timeout, reset controller");
    let back = since_start(kv, "p2pnvme-fault: read-done rc=0");
    assert!(
        !kv.log(&[&format!("{ctrl}: "), "timeout, reset controller"])
            .is_empty(),
        "the reset names the controller {ctrl}: {:?}",
        kv.dmesg
    );
    // One timeout to the Abort, a second one (the command is still not
    // back) to the reset.
    assert!(
        abort >= 4.0 && abort < reset && reset <= back,
        "{abort} {reset} {back}"
    );
    assert!(!kv.log(&[&format!("{ctrl}: Abort status")]).is_empty());
    let (dropped, good) = device_times(&run.trace);
    assert!(dropped >= 2.0 * 4.0 && dropped <= good, "{dropped} {good}");
    println!(
        "{k:?} kernel, never-completing read, io_timeout=5: guest clock: timeout and Abort after {abort:.2} s, \
         controller reset after {reset:.2} s, the read back (retried) after {back:.2} s; \
         device clock: command dropped by the reset after {dropped:.2} s, first successful I/O after {good:.2} s"
    );
}

#[test]
fn controller_fatal_status_resets_the_controller_and_io_resumes() {
    let run = stuck_read(Kernel::Debian, "cfs");
    let kv = &run.kv;
    // The timeout handler reads CSTS, sees CFS (bit 1) with RDY, resets at
    // once (no Abort first).
    let reset = since_start(kv, "controller is down; will reset: CSTS=0x3");
    let back = since_start(kv, "p2pnvme-fault: read-done rc=0");
    assert!(reset >= 4.0 && reset <= back, "{reset} {back}");
    assert!(kv.log(&["timeout, aborting"]).is_empty(), "{:?}", kv.dmesg);
    let (dropped, good) = device_times(&run.trace);
    assert!(dropped >= 4.0 && dropped <= good, "{dropped} {good}");
}
