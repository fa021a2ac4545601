//! BAR0 register reads over the vfio-user socket while the data path is
//! busy: latency percentiles of CSTS/CAP/VS reads while 32 FUA Copy
//! commands of 32 MiB each run, against the device served in this process
//! on a real socket. Usage: p2pnvme-bar0-bench [ROUNDS] (default 1).
//! Register reads take the vfio adapter's lock-free mirror; the copies run
//! on the controller's worker.

use p2pnvme_device::testhost::{command, SocketHost, DATA};
use std::time::{Duration, Instant};

const COPIES: usize = 32;
/// 8 ranges of 1024 blocks of 4 KiB: 32 MiB per Copy.
const RANGES: u64 = 8;
const RANGE_BLOCKS: u64 = 1024;
const LBA: u64 = 4096;
const NS: u64 = 2 * RANGES * RANGE_BLOCKS * LBA;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("usage: p2pnvme-bar0-bench [ROUNDS]"))
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("ns.img");
    // Real data to copy (a sparse source would copy nothing).
    std::fs::write(&ns, vec![0x5a; NS as usize]).unwrap();
    let sock = dir.path().join("c0.sock");
    let mut ns = p2pnvme_device::NamespaceConfig::new(ns, NS);
    ns.lba = LBA as u32;
    let cfg = p2pnvme_device::DeviceConfig::new(vec![p2pnvme_device::ControllerConfig::new(
        sock.clone(),
        vec![ns],
    )]);
    std::thread::spawn(move || p2pnvme_device::run_config(cfg).expect("device"));
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut h = SocketHost::connect(&sock).expect("connect");
    assert!(h.enable() && h.create_io_queue(), "controller setup");
    let mut ranges = vec![0u8; RANGES as usize * 32];
    for (i, r) in ranges.chunks_exact_mut(32).enumerate() {
        r[8..16].copy_from_slice(&(i as u64 * RANGE_BLOCKS).to_le_bytes());
        r[16..18].copy_from_slice(&(RANGE_BLOCKS as u16 - 1).to_le_bytes());
    }
    h.write_mem(DATA, &ranges);
    let mut copy = command(0x19, 1);
    (copy.dw[6], copy.dw[7]) = (DATA as u32, (DATA >> 32) as u32);
    copy.dw[10] = (RANGES * RANGE_BLOCKS) as u32; // SDLBA: the second half
    copy.dw[12] = (RANGES as u32 - 1) | 1 << 30; // format 0, FUA
    let regs = [0x1cu64, 0x0, 0x8]; // CSTS, CAP, VS
    let mut lat = vec![];
    let t = Instant::now();
    for _ in 0..rounds {
        assert!(h.submit_io(&vec![copy; COPIES]));
        let mut done = 0;
        while done < COPIES {
            let off = regs[lat.len() % regs.len()];
            let s = Instant::now();
            h.read32(off).expect("register read");
            lat.push(s.elapsed());
            for c in h.reap_io() {
                assert!(c.ok(), "copy failed: {c:?}");
                done += 1;
            }
        }
    }
    let copies = t.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "BAR0 reads during {} x {COPIES} FUA Copy of 32 MiB ({:.2} s): {} reads, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        rounds,
        copies.as_secs_f64(),
        lat.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(0.999)),
        ms(*lat.last().unwrap())
    );
}
