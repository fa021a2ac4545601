//! Feeds arbitrary submission entries and PRP list contents through the
//! in-process test host: cargo fuzz run commands (from qemu-device/nvme).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pnvme_device::testhost::{command, TestHost};

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut h = TestHost::new(dir.path(), 0, TestHost::registry(), 16, 4, 1 << 20);
    h.enable();
    h.create_io_queue(1, 16, None);
    // The tail of the input becomes guest RAM that lists may point into.
    let ram = h.alloc(64 << 10);
    let tail = &data[data.len().min(64)..];
    h.write_mem(ram, &tail[..tail.len().min(64 << 10)]);
    for chunk in data.chunks_exact(64).take(64) {
        let mut s = command(
            chunk[0],
            u32::from_le_bytes(chunk[4..8].try_into().unwrap()),
        );
        for dw in 1..16 {
            s.dw[dw] = u32::from_le_bytes(chunk[dw * 4..dw * 4 + 4].try_into().unwrap());
        }
        s.dw[0] = u32::from_le_bytes(chunk[0..4].try_into().unwrap()) & 0xffff;
        let qid = (chunk[1] & 1) as usize;
        let _ = h.submit(qid, s);
    }
});
