//! Bad controller use: admin queue checks, fatal status, doorbells, events, the worker.

use super::*;

#[test]
fn enable_with_admin_queues_wrapping_the_address_space_sets_cfs() {
    let d = tempfile::tempdir().unwrap();
    let mut h = TestHost::new(d.path(), 0, TestHost::registry(), 16, 64, NS);
    h.write32(reg::AQA, 31 << 16 | 0xfff); // 4096 entries: 256 KiB
    h.write64(reg::ASQ, 0xffff_ffff_ffff_f000);
    h.write64(reg::ACQ, RAM_BASE);
    h.write32(reg::CC, 1 | 6 << 16 | 4 << 20);
    assert_eq!(h.read32(reg::CSTS) & 3, 2, "CFS, not ready");
    h.write32(DOORBELLS, 31); // must not panic or fetch from IOVA 0
}

#[test]
fn admin_cq_in_the_cmb_is_refused_at_enable() {
    let d = tempfile::tempdir().unwrap();
    let mut h = TestHost::new(d.path(), 0, TestHost::registry(), 16, 64, NS);
    h.write64(reg::CMBMSC, CMB | 3);
    h.write32(reg::AQA, 31 << 16 | 31);
    h.write64(reg::ASQ, RAM_BASE);
    h.write64(reg::ACQ, CMB);
    h.write32(reg::CC, 1 | 6 << 16 | 4 << 20);
    assert_eq!(h.read32(reg::CSTS) & 3, 2, "CMBSZ.CQS is 0: CFS");
}

#[test]
fn sq_fetch_fault_sets_controller_fatal_status() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    h.ctrl.ram.clear(); // DMA_UNMAP of all guest RAM
    h.write32(DOORBELLS + 8, 1);
    assert_eq!(h.read32(reg::CSTS) & 2, 2, "CSTS.CFS");
}

#[test]
fn cq_head_doorbell_beyond_the_tail_is_an_invalid_doorbell_write_value() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.submit(0, command(admin::ASYNC_EVENT, 0)).is_none());
    // Nothing posted yet on the admin CQ: a head of 5 passes the tail.
    h.write32(DOORBELLS + 4, 5);
    let ev = h.reap(0).expect("the AER completes");
    assert_eq!((ev.dw0 >> 8) & 0xff, 0x01, "Invalid Doorbell Write Value");
}

#[test]
fn error_events_stay_masked_until_the_log_is_read_without_rae() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.submit(0, command(admin::ASYNC_EVENT, 0)).is_none());
    assert!(h.submit(0, command(admin::ASYNC_EVENT, 0)).is_none());
    h.write32(DOORBELLS + 8 * 40, 1); // invalid doorbell register
    assert!(h.reap(0).is_some(), "first event delivered");
    h.write32(DOORBELLS, 1000); // invalid write value
    assert!(h.reap(0).is_none(), "error events masked");
    let (done, _) = log_page(&mut h, 0x01, 64, 0, true);
    assert!(done.ok());
    assert!(h.reap(0).is_none(), "RAE keeps them masked");
    // The read completes, and the AER it unmasked completes before it.
    let (first, _) = log_page(&mut h, 0x01, 64, 0, false);
    let second = h.reap(0).expect("two completions");
    assert!(first.ok() && second.ok());
    assert_eq!(first.dw0, 0x01 << 16 | 0x01 << 8, "the unmasked event");
}

#[test]
fn a_queue_drained_by_a_full_pass_publishes_its_event_index() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.enable_shadow_doorbells().ok());
    h.create_io_queue(1, 64, None);
    let buf = h.alloc(4096);
    let mut c = command(io::READ, 1);
    with_buffer(&mut c, buf);
    // Exactly one worker pass worth of commands, the driver ringing once.
    h.manual = true;
    for _ in 0..crate::controller::PASS {
        h.submit_no_reap(1, c);
    }
    h.manual = false;
    h.run_worker();
    for _ in 0..crate::controller::PASS {
        assert!(h.reap(1).expect("completed").ok());
    }
    // The driver decides from the event index whether to ring: it must
    // have been published when the pass drained the queue.
    let done = h.submit(1, c).expect("the fifth command is not lost");
    assert!(done.ok());
}

/// A host with shadow doorbells on I/O queue 1 and a controller that keeps
/// polling them; a read command for that queue.
fn polling_host(d: &tempfile::TempDir) -> (TestHost, crate::nvme::Sqe) {
    let mut h = host(d);
    assert!(h.enable_shadow_doorbells().ok());
    h.create_io_queue(1, 16, None);
    h.ctrl.set_poll(std::time::Duration::from_secs(3600));
    let buf = h.alloc(4096);
    let mut c = command(io::READ, 1);
    with_buffer(&mut c, buf);
    (h, c)
}

#[test]
fn entries_found_by_shadow_polling_keep_the_worker_running() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, c) = polling_host(&d);
    // Rings (the event index says so); the worker drains and keeps polling.
    assert!(h.submit(1, c).expect("first read").ok());
    // The event index is not published while polling: no doorbell.
    let rings = h.doorbell_writes;
    h.submit_no_reap(1, c);
    assert_eq!(h.doorbell_writes, rings, "the driver did not ring");
    // The worker's next look finds it, and must then run it, not sleep.
    h.run_worker();
    assert!(h.reap(1).expect("found by polling and run").ok());
}

#[test]
fn a_fatal_error_with_entries_left_does_not_keep_the_worker_spinning() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    h.ctrl.ram.clear(); // the next fetch faults: CSTS.CFS
    h.manual = true;
    h.write32(DOORBELLS + 8, 3); // three entries the controller cannot fetch
    let mut busy = 0;
    while h.ctrl.step() == crate::controller::Step::Busy {
        busy += 1;
        assert!(busy < 10, "the worker keeps spinning after CFS");
    }
    assert_eq!(h.read32(reg::CSTS) & 2, 2, "CSTS.CFS");
}

#[test]
fn a_late_sq_doorbell_write_does_not_move_a_shadowed_tail_back() {
    // The guest rang for entry 1, then added entry 2 to the shadow only;
    // the worker found it by polling before the register write reached it.
    // Applying the late value (1) with the head at 2 read 15 stale entries
    // of a 16-entry queue (duplicate completions crashed a Linux guest).
    let d = tempfile::tempdir().unwrap();
    let (mut h, c) = polling_host(&d);
    assert!(h.submit(1, c).expect("first read").ok());
    let rings = h.doorbell_writes;
    h.submit_no_reap(1, c);
    assert_eq!(h.doorbell_writes, rings, "found by polling, not rung");
    h.run_worker();
    assert!(h.reap(1).expect("second read").ok());
    let commands = h
        .ctrl
        .stats
        .commands
        .load(std::sync::atomic::Ordering::Relaxed);
    h.write32(DOORBELLS + 8, 1); // the late register write
    assert!(h.reap(1).is_none(), "no stale entry was run");
    assert_eq!(
        h.ctrl
            .stats
            .commands
            .load(std::sync::atomic::Ordering::Relaxed),
        commands
    );
    h.submit_no_reap(1, c);
    h.run_worker();
    assert!(h.reap(1).expect("the queue still works").ok());
}
