//! Controller behaviour through the in-process test host: the driver's
//! happy path, every class of bad guest input (status, DNR, error log), the
//! CMB, peer-to-peer DMA and the counters.

use crate::controller::{reg, DOORBELLS};
use crate::nvme::{admin, io};
use crate::testhost::{command, Completion, TestHost};
use serde_json::Value;

const NS: u64 = 64 << 20;

fn host(dir: &tempfile::TempDir) -> TestHost {
    let mut h = TestHost::new(dir.path(), 0, TestHost::registry(), 16, 64, NS);
    h.enable();
    h
}

fn status(c: Completion) -> (u8, u8, bool) {
    (c.sct, c.sc, c.dnr)
}

fn error_count(h: &mut TestHost) -> u64 {
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
fn identify_ctrl(h: &mut TestHost) -> Vec<u8> {
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

fn stats(h: &TestHost) -> Value {
    h.ctrl.stats.to_json()
}

#[test]
fn identify_and_io_roundtrip() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let id = identify_ctrl(&mut h);
    assert_eq!(&id[4..13], b"test-0   ");
    assert_eq!(u32::from_le_bytes(id[80..84].try_into().unwrap()), 0x2_0000);
    let (cq, sq) = h.create_io_queue(1, 64, None);
    assert!(cq.ok() && sq.ok());
    // 128 KiB write through a PRP list, read back into another buffer.
    let (src, dst) = (h.alloc(128 << 10), h.alloc(128 << 10));
    let data: Vec<u8> = (0..128 << 10).map(|i| (i * 7 % 251) as u8).collect();
    h.write_mem(src, &data);
    let l1 = h.prp_list(src, 128 << 10);
    assert!(h.rw(1, io::WRITE, 8, 256, src, l1).ok());
    let l2 = h.prp_list(dst, 128 << 10);
    assert!(h.rw(1, io::READ, 8, 256, dst, l2).ok());
    let mut back = vec![0u8; 128 << 10];
    h.read_mem(dst, &mut back);
    assert_eq!(back, data);
    assert!(h.take_interrupts() > 0);
    let s = stats(&h);
    assert_eq!(s["data"]["guest_ram"]["read"], 128 << 10);
    assert_eq!(s["data"]["guest_ram"]["written"], 128 << 10);
    assert_eq!(s["data"]["own_cmb"]["read"], 0);
    // PRP lists and queue entries are metadata, not data.
    assert!(s["meta"]["guest_ram"]["read"].as_u64().unwrap() >= 2 * 31 * 8);
}

#[test]
fn bad_queue_ids_sizes_and_deletion_order() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let before = error_count(&mut h);
    // Queue id 0 and beyond the maximum.
    let mut c = command(admin::CREATE_CQ, 0);
    c.dw[6] = h.alloc(4096) as u32;
    c.dw[10] = 15 << 16;
    c.dw[11] = 1;
    assert_eq!(status(h.submit(0, c).unwrap()), (1, 0x01, true));
    c.dw[10] = 15 << 16 | 200;
    assert_eq!(status(h.submit(0, c).unwrap()), (1, 0x01, true));
    // Size beyond MQES.
    c.dw[10] = 0xffff << 16 | 1;
    assert_eq!(status(h.submit(0, c).unwrap()), (1, 0x02, true));
    // SQ on a CQ that does not exist.
    let mut s = command(admin::CREATE_SQ, 0);
    s.dw[6] = h.alloc(4096) as u32;
    s.dw[10] = 15 << 16 | 1;
    s.dw[11] = 7 << 16 | 1;
    assert_eq!(status(h.submit(0, s).unwrap()), (1, 0x00, true));
    // Deleting a CQ that still has an SQ is refused; SQ first works.
    let (cq, sq) = h.create_io_queue(1, 16, None);
    assert!(cq.ok() && sq.ok());
    let mut dc = command(admin::DELETE_CQ, 0);
    dc.dw[10] = 1;
    assert_eq!(status(h.submit(0, dc).unwrap()), (1, 0x0c, true));
    let mut ds = command(admin::DELETE_SQ, 0);
    ds.dw[10] = 1;
    assert!(h.submit(0, ds).unwrap().ok());
    assert!(h.submit(0, dc).unwrap().ok());
    assert_eq!(status(h.submit(0, ds).unwrap()), (1, 0x01, true));
    assert_eq!(
        status(h.submit(0, command(0x7f, 0)).unwrap()),
        (0, 0x01, true)
    );
    assert_eq!(
        error_count(&mut h),
        before + 7,
        "one error log entry per failure"
    );
}

#[test]
fn bad_prps_lbas_and_transfer_sizes() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 32, None);
    let buf = h.alloc(8192);
    // Out of range LBA, and a range that wraps.
    assert_eq!(
        status(h.rw(1, io::READ, NS / 512, 1, buf, 0)),
        (0, 0x80, true)
    );
    assert_eq!(
        status(h.rw(1, io::READ, u64::MAX, 2, buf, 0)),
        (0, 0x80, true)
    );
    // PRP2 with an offset for a two-page transfer.
    assert_eq!(
        status(h.rw(1, io::READ, 0, 16, buf, buf + 4096 + 8)),
        (0, 0x13, true)
    );
    // Data pointer into memory nobody mapped.
    assert_eq!(status(h.rw(1, io::READ, 0, 8, 0x10, 0)), (0, 0x04, true));
    // A PRP list in unmapped memory.
    assert_eq!(
        status(h.rw(1, io::READ, 0, 24, buf, 0x2000_0000)),
        (0, 0x04, true)
    );
    // A list whose only slot in its page would be a chain pointer.
    let list = h.ram_end() - 8;
    assert_eq!(status(h.rw(1, io::READ, 0, 24, buf, list)), (0, 0x13, true));
    // A list entry pointing at unmapped memory.
    let l = h.alloc(4096);
    h.write_mem(l, &0x1_0000_0000u64.to_le_bytes());
    h.write_mem(l + 8, &0x1_0000_1000u64.to_le_bytes());
    assert_eq!(status(h.rw(1, io::READ, 0, 24, buf, l)), (0, 0x04, true));
    // Over MDTS (512 KiB).
    assert_eq!(status(h.rw(1, io::READ, 0, 2048, buf, l)), (0, 0x02, true));
    // Wrong namespace.
    let mut c = command(io::READ, 9);
    c.dw[6] = buf as u32;
    assert_eq!(status(h.submit(1, c).unwrap()), (0, 0x0b, true));
    // Nothing reached guest RAM from the failed reads.
    assert_eq!(stats(&h)["data"]["guest_ram"]["written"], 0);
}

#[test]
fn sgl_descriptors() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 32, None);
    let (a, b) = (h.alloc(4096), h.alloc(4096));
    h.write_mem(a, &[0xab; 4096]);
    assert!(h.rw(1, io::WRITE, 0, 8, a, 0).ok());
    // Read 8 KiB as a last segment of two data blocks (4 KiB each).
    let seg = h.alloc(32);
    let desc = |addr: u64, len: u32, ty: u8| {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[15] = ty << 4;
        d
    };
    h.write_mem(seg, &[desc(b, 4096, 0), desc(a, 4096, 1)].concat()); // data, bit bucket
    let mut c = command(io::READ, 1);
    c.dw[0] |= 1 << 14; // PSDT: SGL
    let first = desc(seg, 32, 3);
    for i in 0..4 {
        c.dw[6 + i] = u32::from_le_bytes(first[i * 4..i * 4 + 4].try_into().unwrap());
    }
    c.dw[12] = 15; // 16 blocks = 8 KiB
    assert!(h.submit(1, c).unwrap().ok());
    let mut got = [0u8; 4096];
    h.read_mem(b, &mut got);
    assert_eq!(got, [0xab; 4096]);
    // The bit bucket's bytes (zeros on the media) went nowhere.
    h.read_mem(a, &mut got);
    assert_eq!(got, [0xab; 4096], "a bit bucket's address is not written");
    // A segment claiming 4 GiB of descriptors is refused before any allocation.
    let huge = desc(seg, 0xffff_fff0, 2);
    for i in 0..4 {
        c.dw[6 + i] = u32::from_le_bytes(huge[i * 4..i * 4 + 4].try_into().unwrap());
    }
    assert_eq!(status(h.submit(1, c).unwrap()), (0, 0x0d, true));
    // Unknown descriptor type.
    let bad = desc(seg, 32, 0xe);
    for i in 0..4 {
        c.dw[6 + i] = u32::from_le_bytes(bad[i * 4..i * 4 + 4].try_into().unwrap());
    }
    assert_eq!(status(h.submit(1, c).unwrap()), (0, 0x11, true));
}

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
fn cmb_registers_follow_nvme_1_4_and_survive_reset() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert_eq!(h.read64(reg::CAP) >> 57 & 1, 1, "CAP.CMBS");
    assert_eq!(h.read32(reg::CMBSZ), 0, "zero until CMBMSC.CRE");
    h.write64(reg::CMBMSC, 1);
    let sz = h.read32(reg::CMBSZ);
    assert_eq!(sz & 0x1f, 0x1d, "SQS LISTS RDS WDS");
    assert_eq!((sz >> 8) & 0xf, 2, "MiB units");
    assert_eq!(sz >> 12, 16);
    assert_eq!(h.read32(reg::CMBLOC), 2, "BAR 2, offset 0");
    h.write32(reg::CMBMSC + 4, 0);
    h.write32(reg::CMBMSC, 0xfe00_0000 | 3);
    // Controller reset (CC.EN 1 -> 0 -> 1) keeps the CMB configuration.
    h.write32(reg::CC, 0);
    assert_eq!(h.read32(reg::CSTS) & 1, 0);
    h.enable();
    assert_eq!(h.read64(reg::CMBMSC), 0xfe00_0003);
    assert!(h.ctrl.dma().classify(0xfe00_1000, 4096).is_ok());
}

#[test]
fn sq_and_prp_list_in_cmb_and_cmb_data_never_touch_ram() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let cba = 0xfe00_0000u64;
    h.write64(reg::CMBMSC, cba | 3);
    let (cq, sq) = h.create_io_queue(1, 32, Some(cba));
    assert!(cq.ok() && sq.ok(), "SQ in the CMB");
    // 16 KiB written from the CMB with the PRP list in the CMB too.
    let data = cba + 0x10000;
    let list = cba + 0x8000;
    let pattern: Vec<u8> = (0..16384).map(|i| (i % 253) as u8).collect();
    h.ctrl.dma().cpu_write(data, &pattern).unwrap();
    let entries: Vec<u8> = (1..4u64)
        .flat_map(|i| (data + i * 4096).to_le_bytes())
        .collect();
    h.ctrl.dma().cpu_write(list, &entries).unwrap();
    h.ctrl.stats.reset();
    assert!(h.rw(1, io::WRITE, 0, 32, data, list).ok());
    // Read it back into another part of the CMB.
    let back = cba + 0x20000;
    assert!(h.rw(1, io::READ, 0, 8, back, 0).ok());
    let s = stats(&h);
    assert_eq!(s["data"]["own_cmb"]["read"], 16384);
    assert_eq!(s["data"]["own_cmb"]["written"], 4096);
    assert_eq!(s["data"]["guest_ram"]["read"], 0);
    assert_eq!(s["data"]["guest_ram"]["written"], 0);
    assert_eq!(
        s["meta"]["own_cmb"]["read"],
        2 * 64 + 24,
        "two SQ entries and the list"
    );
    // Mixing CMB and RAM in one command is refused.
    let ram = h.alloc(4096);
    assert_eq!(status(h.rw(1, io::READ, 0, 16, back, ram)), (0, 0x12, true));
    // Completion queues may not live in the CMB (CMBSZ.CQS = 0).
    let mut c = command(admin::CREATE_CQ, 0);
    c.dw[6] = (cba + 0x40000) as u32;
    c.dw[10] = 15 << 16 | 2;
    c.dw[11] = 1;
    assert_eq!(status(h.submit(0, c).unwrap()), (0, 0x12, true));
}

#[test]
fn peer_to_peer_between_controllers_of_one_process() {
    let d = tempfile::tempdir().unwrap();
    let reg_ = TestHost::registry();
    let mut a = TestHost::new(d.path(), 0, reg_.clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, reg_.clone(), 16, 16, NS);
    a.enable();
    b.enable();
    a.create_io_queue(1, 16, None);
    b.create_io_queue(1, 16, None);
    let cba_b = 0xfd00_0000u64;
    b.write64(reg::CMBMSC, cba_b | 3);
    // A writes a pattern to its namespace, reads it into B's CMB, B writes it out.
    let buf = a.alloc(65536);
    let pattern: Vec<u8> = (0..65536).map(|i| (i * 13 % 241) as u8).collect();
    a.write_mem(buf, &pattern);
    let l = a.prp_list(buf, 65536);
    assert!(a.rw(1, io::WRITE, 0, 128, buf, l).ok());
    a.ctrl.stats.reset();
    let entries: Vec<u8> = (1..16u64)
        .flat_map(|i| (cba_b + i * 4096).to_le_bytes())
        .collect();
    let list = a.alloc(4096);
    a.write_mem(list, &entries);
    assert!(a.rw(1, io::READ, 0, 128, cba_b, list).ok());
    let blist = cba_b + 0x100000;
    b.ctrl.dma().cpu_write(blist, &entries).unwrap();
    assert!(b.rw(1, io::WRITE, 64, 128, cba_b, blist).ok());
    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!(sa["data"]["peer_cmb"]["written"], 65536);
    assert_eq!(sa["data"]["peer_cmb"]["by_peer"]["1"]["written"], 65536);
    assert_eq!(sa["data"]["guest_ram"]["written"], 0);
    assert_eq!(sb["data"]["own_cmb"]["read"], 65536);
    assert_eq!(sb["data"]["guest_ram"]["read"], 0);
    let mut got = vec![0u8; 65536];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(d.path().join("ns1.img"))
        .unwrap()
        .read_exact_at(&mut got, 64 * 512)
        .unwrap();
    assert_eq!(got, pattern);
}

/// Arbitrary submission entries and PRP lists (a deterministic cousin of the
/// fuzz target): every command completes, nothing panics, no DMA lands
/// outside guest RAM, and the controller keeps working afterwards.
#[test]
fn random_commands_never_wedge_the_controller() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 256, None);
    let bufs = h.alloc(1 << 20);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Random junk in guest RAM for PRP lists and SGL segments to point into.
    let junk: Vec<u8> = (0..1 << 20).map(|_| rnd() as u8).collect();
    h.write_mem(bufs, &junk);
    for i in 0..20_000u32 {
        let qid = if i % 4 == 0 { 0 } else { 1 };
        let mut s = command(rnd() as u8, (rnd() % 4) as u32);
        for dw in 2..16 {
            s.dw[dw] = rnd() as u32;
        }
        // Keep some pointers plausible so deeper paths are reached.
        if rnd() % 2 == 0 {
            let p = (bufs + rnd() % (1 << 20)) & !7;
            s.dw[6] = p as u32;
            s.dw[7] = (p >> 32) as u32;
            s.dw[8] = (p + 4096) as u32 & !0xfff;
            s.dw[9] = ((p + 4096) >> 32) as u32;
        }
        // Queue creation/deletion with random ids would tear down queue 1.
        if qid == 0 && matches!(s.opcode(), 0x00 | 0x01 | 0x04 | 0x05) {
            continue;
        }
        s.dw[0] |= (rnd() as u32 & 0x3) << 14; // PRP, SGL or reserved
        if let Some(c) = h.submit(qid, s) {
            // Every failure is a proper status; success only for real commands.
            assert!(c.sct <= 2, "{c:?}");
        }
    }
    // Still healthy: a normal read works and the error log counted failures.
    let b = h.alloc(4096);
    assert!(h.rw(1, io::READ, 0, 8, b, 0).ok());
    assert!(
        h.ctrl
            .stats
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 1000
    );
}

#[test]
fn compare_write_zeroes_deallocate_and_copy() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 32, None);
    let buf = h.alloc(4096);
    h.write_mem(buf, &[0x5a; 4096]);
    assert!(h.rw(1, io::WRITE, 0, 8, buf, 0).ok());
    assert!(h.rw(1, io::COMPARE, 0, 8, buf, 0).ok());
    h.write_mem(buf, &[0x5b; 4096]);
    assert_eq!(status(h.rw(1, io::COMPARE, 0, 8, buf, 0)), (2, 0x85, true));
    // Copy LBAs 0-7 to 100-107 with one format-0 source range.
    let ranges = h.alloc(4096);
    let mut r = [0u8; 32];
    r[8..16].copy_from_slice(&0u64.to_le_bytes());
    r[16..18].copy_from_slice(&7u16.to_le_bytes());
    h.write_mem(ranges, &r);
    let mut c = command(io::COPY, 1);
    c.dw[6] = ranges as u32;
    c.dw[7] = (ranges >> 32) as u32;
    c.dw[10] = 100;
    assert!(h.submit(1, c).unwrap().ok());
    assert!(h.rw(1, io::READ, 100, 8, buf, 0).ok());
    let mut got = [0u8; 4096];
    h.read_mem(buf, &mut got);
    assert_eq!(got, [0x5a; 4096]);
    // Copy to a destination past the end is refused.
    c.dw[10] = (NS / 512 - 4) as u32;
    assert_eq!(status(h.submit(1, c).unwrap()), (0, 0x80, true));
    // Write Zeroes, then Dataset Management deallocate: both read back zeros.
    let mut wz = command(io::WRITE_ZEROES, 1);
    wz.dw[10] = 100;
    wz.dw[12] = 7;
    assert!(h.submit(1, wz).unwrap().ok());
    assert!(h.rw(1, io::READ, 100, 8, buf, 0).ok());
    h.read_mem(buf, &mut got);
    assert_eq!(got, [0u8; 4096]);
    let mut dr = [0u8; 16];
    dr[4..8].copy_from_slice(&8u32.to_le_bytes());
    h.write_mem(ranges, &dr);
    let mut dsm = command(io::DSM, 1);
    dsm.dw[6] = ranges as u32;
    dsm.dw[7] = (ranges >> 32) as u32;
    dsm.dw[11] = 1 << 2;
    assert!(h.submit(1, dsm).unwrap().ok());
    assert!(h.rw(1, io::READ, 0, 8, buf, 0).ok());
    h.read_mem(buf, &mut got);
    assert_eq!(got, [0u8; 4096]);
    // Flush of all namespaces.
    assert!(h.submit(1, command(io::FLUSH, 0xffff_ffff)).unwrap().ok());
}

#[test]
fn busy_sockets_are_refused_and_stale_ones_replaced() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.sock");
    let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
    let e = crate::claim_socket(&p).unwrap_err().to_string();
    assert!(e.contains("busy"), "{e}");
    drop(l);
    crate::claim_socket(&p).unwrap();
    assert!(!p.exists());
}

/// Ten reads into a CQ that holds three, then reaping; with or without
/// shadow doorbells.
fn full_cq_pauses_fetching_until_the_host_reaps(shadow: bool) {
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
    assert_eq!(h.ctrl.cqs[1].as_ref().unwrap().pending.len(), 1);
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
    assert!(h.ctrl.bells.pending(), "the doorbell only records");
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
    assert!(h.ctrl.dbbuf.is_none());
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
        h.ctrl.events.len(),
        1,
        "invalid doorbell value queued as an event"
    );
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.events.len(), 1, "one event of a kind outstanding");
    h.manual = false;
    // A controller reset forgets the buffers (the driver sets them again).
    h.write32(reg::CC, 0);
    assert!(h.ctrl.dbbuf.is_none());
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
    h.ctrl.poll = std::time::Duration::from_secs(3600);
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
    assert!(h.ctrl.work, "polling found the unrung entry");
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - done, 2);
    // A bad shadow value does not keep the worker busy.
    h.write_shadow(2, 999);
    assert_eq!(h.ctrl.poll_shadows(), Idle::Polling);
    assert!(!h.ctrl.work);
    h.write_shadow(2, 2);
    // Once the window passes, the tail is published and the driver rings again.
    h.ctrl.poll = std::time::Duration::ZERO;
    assert_eq!(h.ctrl.poll_shadows(), Idle::Sleep);
    assert_eq!(h.shadow_slot(2, true), Some(2));
    h.submit_no_reap(1, c);
    assert_eq!(h.doorbell_writes - rings, 2);
    h.ctrl.run_pending();
    assert_eq!(h.ctrl.stats.commands.load(Relaxed) - done, 3);
    assert!(h.reap(1).is_some() && h.reap(1).is_some() && h.reap(1).is_some());
}
