//! Doorbells, shadow doorbells, the worker and full completion queues.

use super::*;

#[test]
fn doorbell_abuse_raises_async_events_and_never_panics() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let mut aer = command(admin::ASYNC_EVENT, 0);
    aer.dw[10] = 0;
    assert!(h.submit(0, aer).is_none(), "AER is held");
    // SQ tail beyond the admin queue, and a doorbell of a queue that does not exist.
    h.write32(DOORBELLS, 1000);
    let ev = h.reap(0).expect("async event completes the AER");
    assert!(ev.ok());
    assert_eq!((ev.dw0 >> 8) & 0xff, 0x01, "invalid doorbell write value");
    h.write32(DOORBELLS + 8 * 40, 1);
    assert!(h.reap(0).is_none(), "no AER outstanding: event queued");
    // Arbitrary register writes and reads.
    for off in (0..0x2000).step_by(4) {
        h.write32(off, 0xdead_beef);
        let _ = h.read32(off);
    }
}

#[test]
fn full_completion_queue_pauses_fetching_until_the_host_reaps() {
    full_cq_pauses_fetching_until_the_host_reaps(false);
}

#[test]
fn shadow_completion_heads_resume_a_full_queue() {
    full_cq_pauses_fetching_until_the_host_reaps(true);
}

#[test]
fn doorbells_only_record_work_for_the_worker() {
    use std::sync::atomic::Ordering::Relaxed;
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    h.manual = true;
    let buf = h.alloc(4096);
    let before = h.ctrl.stats.commands.load(Relaxed);
    let mut c = command(io::READ, 1);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    h.submit_no_reap(1, c);
    assert!(h.ctrl.doorbells().pending(), "the doorbell only records");
    assert_eq!(h.ctrl.stats.commands.load(Relaxed), before);
    assert!(h.reap(1).is_none());
    assert_eq!(h.ctrl.step(), crate::controller::Step::Busy);
    assert_ne!(h.ctrl.step(), crate::controller::Step::Busy);
    assert!(h.reap(1).expect("completed by the worker pass").ok());
}

#[test]
fn shadow_doorbells_are_checked_and_spare_register_writes() {
    use std::sync::atomic::Ordering::Relaxed;
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let id = identify_ctrl(&mut h);
    assert_eq!(id[257] & 1, 1, "OACS bit 8 advertises it");
    // Buffers must be page aligned, reachable, and given as PRPs.
    let page = h.alloc(4096);
    for (db, ei, psdt) in [(page + 8, page, 0), (page, 0x10, 0), (page, page, 1)] {
        let mut c = command(admin::DOORBELL_BUFFER_CONFIG, 0);
        c.dw[0] |= psdt << 14;
        c.dw[6] = db as u32;
        c.dw[7] = (db >> 32) as u32;
        c.dw[8] = ei as u32;
        c.dw[9] = (ei >> 32) as u32;
        assert_eq!(status(h.submit(0, c).unwrap()), (0, 0x02, true));
    }
    assert!(!h.ctrl.shadow_doorbells_on());
    assert!(h.enable_shadow_doorbells().ok());
    h.create_io_queue(1, 64, None);
    // Idle device: every submission rings, no completion does.
    let buf = h.alloc(4096);
    let before = h.doorbell_writes;
    for i in 0..50 {
        h.write_mem(buf, &[i as u8; 4096]);
        assert!(h.rw(1, io::WRITE, i * 8, 8, buf, 0).ok());
    }
    assert_eq!(h.doorbell_writes - before, 50, "SQ tail only");
    // A busy device: the second submission sees a stale event index and
    // skips the register write; the worker still finds it in the shadow.
    h.manual = true;
    let mut c = command(io::READ, 1);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    let (writes, done) = (h.doorbell_writes, h.ctrl.stats.commands.load(Relaxed));
    h.submit_no_reap(1, c);
    h.submit_no_reap(1, c);
    assert_eq!(h.doorbell_writes - writes, 1);
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - done, 2);
    assert!(h.reap(1).unwrap().ok() && h.reap(1).unwrap().ok());
    assert_eq!(
        h.shadow_slot(2, true),
        h.shadow_slot(2, false),
        "event index caught up"
    );
    // A shadow tail beyond the queue is a doorbell error, not a fetch.
    h.write_shadow(2, 500);
    h.ctrl.run_pending();
    assert_eq!(
        h.ctrl.queued_events(),
        1,
        "invalid doorbell value queued as an event"
    );
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.queued_events(), 1, "one event of a kind outstanding");
    h.manual = false;
    // A controller reset forgets the buffers (the driver sets them again).
    h.write32(reg::CC, 0);
    assert!(!h.ctrl.shadow_doorbells_on());
}

#[test]
fn a_polling_worker_finds_unrung_entries_then_publishes_event_indices() {
    use crate::controller::Step as Idle;
    use std::sync::atomic::Ordering::Relaxed;
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.enable_shadow_doorbells().ok());
    h.create_io_queue(1, 16, None);
    h.manual = true;
    h.ctrl.set_poll(std::time::Duration::from_secs(3600));
    let buf = h.alloc(4096);
    let mut c = command(io::READ, 1);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    let (rings, done) = (h.doorbell_writes, h.ctrl.stats.commands.load(Relaxed));
    h.submit_no_reap(1, c); // rings: the event index still says 0
    h.ctrl.run_pending();
    assert_eq!(
        h.ctrl.poll_shadows(),
        Idle::Polling,
        "drained, not yet published"
    );
    h.submit_no_reap(1, c); // the stale event index says: do not ring
    assert_eq!(h.doorbell_writes - rings, 1);
    assert_eq!(h.ctrl.poll_shadows(), Idle::Sleep);
    assert!(h.ctrl.has_work(), "polling found the unrung entry");
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - done, 2);
    // A bad shadow value does not keep the worker busy.
    h.write_shadow(2, 999);
    assert_eq!(h.ctrl.poll_shadows(), Idle::Polling);
    assert!(!h.ctrl.has_work());
    h.write_shadow(2, 2);
    // Once the window passes, the tail is published and the driver rings again.
    h.ctrl.set_poll(std::time::Duration::ZERO);
    assert_eq!(h.ctrl.poll_shadows(), Idle::Sleep);
    assert_eq!(h.shadow_slot(2, true), Some(2));
    h.submit_no_reap(1, c);
    assert_eq!(h.doorbell_writes - rings, 2);
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - done, 3);
    assert!(h.reap(1).is_some() && h.reap(1).is_some() && h.reap(1).is_some());
}

#[test]
fn a_large_transfer_ends_the_worker_pass() {
    // The lock is free between passes: a pass may run many small commands
    // but only about one 512 KiB transfer.
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let buf = h.alloc(512 << 10);
    let list = h.prp_list(buf, 512 << 10);
    h.manual = true;
    for lba in [0, 1024] {
        h.submit_no_reap(
            1,
            crate::testhost::rw_command(io::READ, lba, 1024, buf, list, false),
        );
    }
    assert_eq!(h.ctrl.step(), crate::controller::Step::Busy);
    assert!(h.reap(1).expect("the first transfer").ok());
    assert!(h.reap(1).is_none(), "the second waits for the next pass");
    while h.ctrl.step() == crate::controller::Step::Busy {}
    assert!(h.reap(1).expect("the second transfer").ok());
}
