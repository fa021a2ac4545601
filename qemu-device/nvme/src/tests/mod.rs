//! Controller behaviour through the in-process test host: the driver's
//! happy path, every class of bad guest input (status, DNR, error log), the
//! CMB, peer-to-peer DMA and the counters.

mod cmb;
mod commands;
mod doorbells;
mod faults;
pub(crate) mod hostile;
mod interrupts;
mod msi;
mod register_reads;
mod trace;

use crate::controller::{reg, DOORBELLS};
use crate::nvme::{admin, io};
use crate::testhost::{command, Completion, TestHost};
use serde_json::Value;

pub(super) const NS: u64 = 64 << 20;

pub(super) fn host(dir: &tempfile::TempDir) -> TestHost {
    let mut h = TestHost::new(dir.path(), 0, TestHost::registry(), 16, 64, NS);
    h.enable();
    h
}

/// Where [`peer_pair`] puts the second controller's CMB.
pub(super) const PEER_CMB: u64 = 0xfd00_0000;

/// Two enabled controllers of one peer group: the first with I/O queue
/// pair 1, the second with its CMB enabled at [`PEER_CMB`].
pub(super) fn peer_pair(d: &tempfile::TempDir) -> (TestHost, TestHost) {
    let group = TestHost::registry();
    let mut a = TestHost::new(d.path(), 0, group.clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, group, 16, 16, NS);
    a.enable();
    b.enable();
    a.create_io_queue(1, 16, None);
    b.write64(reg::CMBMSC, PEER_CMB | 3);
    (a, b)
}

pub(super) fn status(c: Completion) -> (u8, u8, bool) {
    (c.sct, c.sc, c.dnr)
}

pub(super) fn error_count(h: &mut TestHost) -> u64 {
    let buf = h.alloc(4096);
    let mut c = command(admin::GET_LOG_PAGE, 0xffff_ffff);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    c.dw[10] = 0x02 | (128 - 1) << 16; // SMART, 512 bytes
    assert!(h.submit(0, c).unwrap().ok());
    let mut b = [0u8; 512];
    h.read_mem(buf, &mut b);
    u64::from_le_bytes(b[176..184].try_into().unwrap())
}

/// Identify Controller data.
pub(super) fn identify_ctrl(h: &mut TestHost) -> Vec<u8> {
    let buf = h.alloc(4096);
    let mut c = command(admin::IDENTIFY, 0);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    c.dw[10] = 1;
    assert!(h.submit(0, c).unwrap().ok());
    let mut id = vec![0u8; 4096];
    h.read_mem(buf, &mut id);
    id
}

pub(super) fn stats(h: &TestHost) -> Value {
    h.ctrl.stats.to_json()
}

/// Ten reads into a CQ that holds three, then reaping; with or without
/// shadow doorbells.
pub(super) fn full_cq_pauses_fetching_until_the_host_reaps(shadow: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    if shadow {
        assert!(h.enable_shadow_doorbells().ok());
    }
    h.create_io_queue_sized(1, 16, 4, None); // the CQ holds 3 completions
    let buf = h.alloc(4096);
    let before = h.ctrl.stats.commands.load(Relaxed);
    let mut c = command(io::READ, 1);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    c.dw[12] = 7;
    for _ in 0..10 {
        h.submit_no_reap(1, c);
    }
    // Three completions are in the CQ, one waits; the rest stay unfetched.
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - before, 4);
    assert_eq!(h.ctrl.cq_backlog(1), 1);
    if shadow {
        // Stalled: the device asks for the head doorbell at the head it saw.
        assert_eq!(h.shadow_slot(3, true), Some(0));
    }
    // Reaping frees slots and resumes fetching until every command completes.
    let mut n = 0;
    while h.reap(1).is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - before, 10);
}
