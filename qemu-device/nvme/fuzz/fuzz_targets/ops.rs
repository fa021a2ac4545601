//! Structured op stream against two controllers of one peer group (see the
//! crate docs): cargo fuzz run ops (from qemu-device/nvme).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pnvme_device_fuzz::{decode, run, Rig};

fuzz_target!(|data: &[u8]| {
    let ops = decode(data);
    let mut rig = Rig::new();
    run(&mut rig, &ops);
});
