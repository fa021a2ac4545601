//! Interrupt delivery: how many interrupts a batch of completions costs.

use super::*;
use std::sync::atomic::Ordering::Relaxed;

/// Four reads on I/O queue 1, written to the SQ with one doorbell write,
/// then the worker's pass over them.
fn run_four_reads(h: &mut TestHost) {
    run_reads(h, 4);
}

/// `n` reads on I/O queue 1, as `run_four_reads`.
fn run_reads(h: &mut TestHost, n: u32) {
    run_reads_on(h, 1, n);
}

/// `n` reads on I/O queue `qid`, as `run_four_reads`.
fn run_reads_on(h: &mut TestHost, qid: usize, n: u32) {
    let buf = h.alloc(4096);
    h.manual = true;
    for lba in 0..n {
        let mut c = command(io::READ, 1);
        c.dw[6] = buf as u32;
        c.dw[7] = (buf >> 32) as u32;
        c.dw[10] = lba * 8;
        h.submit_no_reap(qid, c);
    }
    while h.ctrl.step() == crate::controller::Step::Busy {}
}

/// A host with I/O queue pair 1 (16 entries), set up by `setup`, with
/// the interrupts so far taken.
fn quiet_host(d: &tempfile::TempDir, setup: impl FnOnce(&mut TestHost)) -> TestHost {
    let mut h = host(d);
    h.create_io_queue(1, 16, None);
    setup(&mut h);
    h.take_interrupts();
    h
}

/// Sleeps until the held interrupts are due, then runs one worker step.
fn step_when_due(h: &mut TestHost) {
    let due = h.ctrl.irq_deadline().expect("held");
    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    let _ = h.ctrl.step();
}

#[test]
fn completions_of_one_pass_share_one_interrupt() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |_| {});
    let signalled = h.ctrl.stats.interrupts.load(Relaxed);
    run_four_reads(&mut h);
    for _ in 0..4 {
        assert!(h.reap(1).expect("completed").ok());
    }
    assert_eq!(h.take_interrupts(), 1, "one interrupt for the pass");
    assert_eq!(h.ctrl.stats.interrupts.load(Relaxed) - signalled, 1);
}

#[test]
fn no_interrupt_is_lost_when_the_pass_ends_with_a_full_queue() {
    // A 2-entry CQ holds one completion: the rest wait for the head
    // doorbell, and each resumption signals again.
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 2, None);
    h.take_interrupts();
    let buf = h.alloc(4096);
    h.manual = true;
    let mut c = command(io::READ, 1);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    h.submit_no_reap(1, c);
    while h.ctrl.step() == crate::controller::Step::Busy {}
    assert_eq!(h.take_interrupts(), 1);
    assert!(h.reap(1).expect("first").ok());
    h.submit_no_reap(1, c);
    while h.ctrl.step() == crate::controller::Step::Busy {}
    assert_eq!(h.take_interrupts(), 1, "the second completion signals too");
    assert!(h.reap(1).expect("second").ok());
}

/// Sets Interrupt Coalescing (08h) to `thr` (0's based) and `time`.
fn set_coalescing(h: &mut TestHost, thr: u32, time: u32) {
    let mut c = command(admin::SET_FEATURES, 0);
    c.dw[10] = 0x08;
    c.dw[11] = time << 8 | thr;
    assert!(h.submit(0, c).unwrap().ok());
}

/// Reads `n` completions of queue 1, whatever the interrupts.
fn reap_all(h: &mut TestHost, n: usize) {
    for _ in 0..n {
        assert!(h.reap(1).expect("completed").ok());
    }
}

#[test]
fn interrupt_coalescing_holds_io_completions_until_the_threshold() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    // 8 entries per interrupt, at most 25.5 ms apart (never reached here).
    set_coalescing(&mut h, 7, 255);
    h.take_interrupts();
    run_four_reads(&mut h);
    reap_all(&mut h, 4);
    assert_eq!(h.take_interrupts(), 0, "4 entries are below the threshold");
    assert!(h.ctrl.irq_deadline().is_some(), "the worker wakes for them");
    run_four_reads(&mut h);
    reap_all(&mut h, 4);
    assert_eq!(h.take_interrupts(), 1, "the 8th entry signals");
    assert!(h.ctrl.irq_deadline().is_none());
}

#[test]
fn interrupt_coalescing_signals_when_the_aggregation_time_is_up() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        set_coalescing(h, 7, 1); // 100 us
    });
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 0);
    step_when_due(&mut h);
    assert_eq!(h.take_interrupts(), 1, "time is up");
    reap_all(&mut h, 4);
}

#[test]
fn coalescing_disable_and_admin_completions_are_never_held() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    set_coalescing(&mut h, 7, 255);
    // Admin completions signal at once (coalescing is for I/O queues).
    h.take_interrupts();
    set_coalescing(&mut h, 7, 255);
    assert_eq!(h.take_interrupts(), 1, "admin completion signalled");
    // CD on I/O queue 1's vector: its completions signal at once too.
    let iv = 1; // the test host routes I/O completion queues to vector 1
    let mut c = command(admin::SET_FEATURES, 0);
    c.dw[10] = 0x09;
    c.dw[11] = 1 << 16 | iv;
    assert!(h.submit(0, c).unwrap().ok());
    let mut g = command(admin::GET_FEATURES, 0);
    g.dw[10] = 0x09;
    g.dw[11] = iv;
    assert_eq!(h.submit(0, g).unwrap().dw0, 1 << 16 | iv, "CD reported");
    h.take_interrupts();
    run_four_reads(&mut h);
    reap_all(&mut h, 4);
    assert_eq!(h.take_interrupts(), 1);
}

#[test]
fn turning_coalescing_off_releases_held_interrupts() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| set_coalescing(h, 7, 255));
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 0);
    h.manual = false;
    set_coalescing(&mut h, 0, 0);
    assert_eq!(
        h.take_interrupts(),
        2,
        "the admin completion and the held vector"
    );
    reap_all(&mut h, 4);
}

#[test]
fn moderation_holds_io_interrupts_until_the_host_stops_submitting() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        h.ctrl.set_moderation(std::time::Duration::from_millis(20))
    });
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 0, "commands just arrived: held");
    let due = h.ctrl.irq_deadline().expect("the worker wakes for them");
    // More commands before that: still held, and due later.
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 0);
    assert!(h.ctrl.irq_deadline().expect("held") >= due);
    // Quiet for the moderation time: one interrupt for all eight.
    step_when_due(&mut h);
    assert_eq!(h.take_interrupts(), 1);
    reap_all(&mut h, 8);
    assert!(h.ctrl.irq_deadline().is_none());
}

#[test]
fn the_hosts_coalescing_setting_and_admin_completions_bypass_moderation() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        h.ctrl.set_moderation(std::time::Duration::from_secs(10))
    });
    // Admin completions are never held.
    set_coalescing(&mut h, 0, 0);
    assert_eq!(h.take_interrupts(), 1, "admin completion signalled");
    // With the host's threshold of 4 entries, the 4th signals at once.
    set_coalescing(&mut h, 3, 255);
    h.take_interrupts();
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 1, "the host's setting wins");
    reap_all(&mut h, 4);
}

#[test]
fn moderation_signals_a_host_that_never_stops_submitting_at_the_cap() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        h.ctrl.set_moderation(std::time::Duration::from_millis(5))
    });
    let start = std::time::Instant::now();
    // A command every 2 ms, each within the moderation time of the last.
    let mut signalled = None;
    for i in 0..40 {
        run_four_reads(&mut h);
        reap_all(&mut h, 4);
        if h.take_interrupts() > 0 {
            signalled = Some((i, start.elapsed()));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let (i, after) = signalled.expect("signalled while the host kept submitting");
    assert!(i > 0, "held at first");
    // 32 held entries (8 bursts) or 10 x 5 ms, whichever first.
    assert!(
        i <= 12 && after < std::time::Duration::from_millis(200),
        "{i} {after:?}"
    );
}

#[test]
fn moderation_stops_holding_for_a_driver_that_waits_for_each_completion() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        h.ctrl.set_moderation(std::time::Duration::from_millis(5))
    });
    let buf = h.alloc(4096);
    let one_read = |h: &mut TestHost| {
        h.manual = true;
        h.submit_no_reap(
            1,
            crate::testhost::rw_command(io::READ, 0, 1, buf, 0, false),
        );
        while h.ctrl.step() == crate::controller::Step::Busy {}
    };
    // Queue depth 1: the first completion is held, and no command arrives
    // while it waits, so the hold only added latency.
    one_read(&mut h);
    assert_eq!(h.take_interrupts(), 0, "held at first");
    step_when_due(&mut h);
    assert_eq!(h.take_interrupts(), 1);
    reap_all(&mut h, 1);
    // So the next completions go out at once...
    for i in 0..16 {
        one_read(&mut h);
        assert_eq!(h.take_interrupts(), 1, "completion {i} not held");
        reap_all(&mut h, 1);
    }
    // ...and then moderation tries a hold again.
    one_read(&mut h);
    assert_eq!(h.take_interrupts(), 0, "a new hold");
    assert!(h.ctrl.irq_deadline().is_some());
}

#[test]
fn moderation_signals_once_the_depth_the_driver_keeps_in_flight_completed() {
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        h.ctrl.set_moderation(std::time::Duration::from_millis(20))
    });
    // A driver that keeps 8 commands in flight: the first hold waits for
    // quiet and so learns the depth.
    run_four_reads(&mut h);
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 0, "held at first");
    step_when_due(&mut h);
    assert_eq!(h.take_interrupts(), 1);
    reap_all(&mut h, 8);
    // The next 8 signal as soon as the 8th completed, without the wait.
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 0, "4 of 8 completed");
    run_four_reads(&mut h);
    assert_eq!(h.take_interrupts(), 1, "all 8 completed: signalled at once");
    assert!(h.ctrl.irq_deadline().is_none(), "nothing held");
    reap_all(&mut h, 8);
    // The driver drops to 4 (two passes of 2): its rounds wait for quiet
    // until the device measures again, then signal at once.
    let mut quiet_rounds = 0;
    loop {
        run_reads(&mut h, 2);
        assert_eq!(h.take_interrupts(), 0, "2 of 4 completed");
        run_reads(&mut h, 2);
        if h.take_interrupts() == 1 {
            break;
        }
        step_when_due(&mut h);
        assert_eq!(h.take_interrupts(), 1);
        reap_all(&mut h, 4);
        quiet_rounds += 1;
        assert!(quiet_rounds <= 17, "the depth is measured again");
    }
    reap_all(&mut h, 4);
    assert!(
        quiet_rounds >= 2,
        "the deeper depth was trusted for a while"
    );
    assert!(h.ctrl.irq_deadline().is_none(), "nothing held");
}

#[test]
fn moderation_counts_the_drivers_depth_over_all_its_queues() {
    // A process that moves between CPUs submits to the queues of both.
    let d = tempfile::tempdir().unwrap();
    let mut h = quiet_host(&d, |h| {
        h.ctrl.set_moderation(std::time::Duration::from_millis(20));
        h.io_vector = 2;
        h.create_io_queue(2, 16, None);
    });
    let reap_both = |h: &mut TestHost| {
        for qid in [1, 2] {
            for _ in 0..4 {
                assert!(h.reap(qid).expect("completed").ok());
            }
        }
    };
    // 4 on each queue, then quiet: both vectors at once, depth 8 learned.
    run_reads_on(&mut h, 1, 4);
    run_reads_on(&mut h, 2, 4);
    assert_eq!(h.take_interrupts(), 0, "held at first");
    step_when_due(&mut h);
    assert_eq!(h.take_interrupts(), 2, "both vectors");
    reap_both(&mut h);
    // The next 8, split the same way, signal both without the wait.
    run_reads_on(&mut h, 1, 4);
    assert_eq!(h.take_interrupts(), 0, "4 of 8 completed");
    run_reads_on(&mut h, 2, 4);
    assert_eq!(h.take_interrupts(), 2, "all 8 completed: both signalled");
    assert!(h.ctrl.irq_deadline().is_none(), "nothing held");
    reap_both(&mut h);
}
