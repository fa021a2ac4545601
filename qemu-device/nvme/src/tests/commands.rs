//! Commands through the test host: the happy path, bad queue ids, sizes, PRPs, SGLs, LBAs, random entries.

use super::*;

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
fn sgl_descriptors_including_lists_longer_than_the_transfer() {
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
    // A data block longer than the transfer (4 KiB of an 8 KiB block): the
    // first 4 KiB are moved, the rest of the buffer is left alone.
    let big = h.alloc(8192);
    h.write_mem(big, &[0x5a; 8192]);
    let long = desc(big, 8192, 0);
    let mut c8 = command(io::READ, 1);
    c8.dw[0] |= 1 << 14;
    for i in 0..4 {
        c8.dw[6 + i] = u32::from_le_bytes(long[i * 4..i * 4 + 4].try_into().unwrap());
    }
    c8.dw[12] = 7; // 8 blocks = 4 KiB
    assert!(h.submit(1, c8).unwrap().ok());
    let mut two = [0u8; 8192];
    h.read_mem(big, &mut two);
    assert_eq!(two[..4096], [0xab; 4096]);
    assert_eq!(
        two[4096..],
        [0x5a; 4096],
        "past the transfer nothing is written"
    );
    // One shorter than the transfer is still Data SGL Length Invalid.
    let short = desc(big, 2048, 0);
    for i in 0..4 {
        c8.dw[6 + i] = u32::from_le_bytes(short[i * 4..i * 4 + 4].try_into().unwrap());
    }
    assert_eq!(status(h.submit(1, c8).unwrap()), (0, 0x0f, true));
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

#[test]
fn the_effects_log_and_dispatch_come_from_one_table() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let buf = h.alloc(4096);
    let mut c = command(admin::GET_LOG_PAGE, 0);
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
    c.dw[10] = 0x05 | (1024 - 1) << 16;
    assert!(h.submit(0, c).unwrap().ok());
    let mut log = vec![0u8; 4096];
    h.read_mem(buf, &mut log);
    let entry = |set: usize, op: usize| {
        let at = set * 1024 + op * 4;
        u32::from_le_bytes(log[at..at + 4].try_into().unwrap())
    };
    for op in 0..=255u8 {
        let (a, i) = (entry(0, op as usize), entry(1, op as usize));
        assert_eq!(
            a & 1 == 1,
            crate::commands::table::admin(op).is_some(),
            "admin {op:#x}"
        );
        assert_eq!(
            i & 1 == 1,
            crate::commands::table::io(op).is_some(),
            "I/O {op:#x}"
        );
        // What the log does not list is refused as an invalid opcode.
        if i & 1 == 0 {
            let done = h.submit(1, command(op, 1)).unwrap();
            assert_eq!(status(done), (0, 0x01, true), "I/O {op:#x}");
        }
        if a & 1 == 0 {
            let done = h.submit(0, command(op, 0)).unwrap();
            assert_eq!(status(done), (0, 0x01, true), "admin {op:#x}");
        }
    }
}
