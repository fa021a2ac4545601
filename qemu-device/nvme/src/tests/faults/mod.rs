//! Fault rules on the device: each action's observable effect (status,
//! error log, timing, counters, interrupts, registers, events) and the
//! match keys that depend on the command (queue, NSID, LBA, target).

mod command_actions;
mod controller_actions;
mod matching;

use super::*;
use crate::faults::FaultTable;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A host with I/O queue pair 1, a 64 KiB buffer of 0xaa, and the first
/// 128 blocks of the namespace written with a pattern.
fn io_host(d: &tempfile::TempDir) -> (TestHost, u64, Vec<u8>) {
    let mut h = host(d);
    h.create_io_queue(1, 32, None);
    let buf = h.alloc(65536);
    let pattern: Vec<u8> = (0..65536).map(|i| (i * 31 % 253) as u8).collect();
    h.write_mem(buf, &pattern);
    let l = h.prp_list(buf, 65536);
    assert!(h.rw(1, io::WRITE, 0, 128, buf, l).ok());
    h.write_mem(buf, &[0xaa; 65536]);
    (h, buf, pattern)
}

fn read(h: &mut TestHost, buf: u64, blocks: u32) -> Option<Completion> {
    let l = h.prp_list(buf, blocks as u64 * 512);
    h.submit(
        1,
        crate::testhost::rw_command(io::READ, 0, blocks, buf, l, false),
    )
}

/// Log page `lid` (`bytes` long) as the host reads it.
fn log_page(h: &mut TestHost, lid: u32, bytes: u32) -> Vec<u8> {
    let buf = h.alloc(4096);
    let mut c = command(admin::GET_LOG_PAGE, 0xffff_ffff);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    c.dw[10] = lid | (bytes / 4 - 1) << 16;
    assert!(h.submit(0, c).unwrap().ok());
    let mut b = vec![0u8; bytes as usize];
    h.read_mem(buf, &mut b);
    b
}

fn counts(h: &TestHost) -> Vec<(u64, u64)> {
    h.ctrl
        .faults
        .counts_of(h.ctrl.stats.ctrl)
        .iter()
        .map(|f| (f.matched, f.fired))
        .collect()
}
