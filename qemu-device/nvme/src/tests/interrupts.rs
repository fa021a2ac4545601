//! Interrupt delivery: how many interrupts a batch of completions costs.

use super::*;
use std::sync::atomic::Ordering::Relaxed;

/// Four reads on I/O queue 1, written to the SQ with one doorbell write.
fn submit_four_reads(h: &mut TestHost) {
    let buf = h.alloc(4096);
    h.manual = true;
    for lba in 0..4u32 {
        let mut c = command(io::READ, 1);
        c.dw[6] = buf as u32;
        c.dw[7] = (buf >> 32) as u32;
        c.dw[10] = lba * 8;
        h.submit_no_reap(1, c);
    }
}

#[test]
fn completions_of_one_pass_share_one_interrupt() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    h.take_interrupts();
    let signalled = h.ctrl.stats.interrupts.load(Relaxed);
    submit_four_reads(&mut h);
    while h.ctrl.step() == crate::controller::Step::Busy {}
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
