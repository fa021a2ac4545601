//! Bad commands: log pages, SGLs, PSDT, fused, durability, features, CMB use, SMART, identify.

use super::*;

#[test]
fn error_log_page_accepts_offsets_inside_the_log() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let (done, page) = log_page(&mut h, 0x01, 64, 64, false);
    assert!(done.ok(), "offset 64 lies inside the 64-entry log");
    assert_eq!(page, vec![0; 64]);
}

#[test]
fn sgl_bit_bucket_in_write_and_compare_is_descriptor_type_invalid() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 32, None);
    let seg = h.alloc(32);
    let a = h.alloc(4096);
    let desc = |addr: u64, len: u32, ty: u8| {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[15] = ty << 4;
        d
    };
    h.write_mem(seg, &[desc(a, 4096, 0), desc(0, 4096, 1)].concat());
    for op in [io::WRITE, io::COMPARE] {
        let mut c = command(op, 1);
        c.dw[0] |= 1 << 14;
        let first = desc(seg, 32, 3);
        for i in 0..4 {
            c.dw[6 + i] = u32::from_le_bytes(first[i * 4..i * 4 + 4].try_into().unwrap());
        }
        c.dw[12] = 15;
        assert_eq!(
            status(h.submit(1, c).unwrap()),
            (0, 0x11, true),
            "opcode {op}"
        );
    }
}

#[test]
fn admin_commands_with_psdt_set_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let buf = h.alloc(4096);
    let mut c = command(admin::IDENTIFY, 0);
    with_buffer(&mut c, buf);
    c.dw[0] |= 1 << 14;
    c.dw[10] = 1;
    assert_eq!(status(h.submit(0, c).unwrap()), (0, 0x02, true));
}

#[test]
fn fused_commands_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let buf = h.alloc(4096);
    for fuse in [1u32, 2] {
        let mut c = command(io::COMPARE, 1);
        with_buffer(&mut c, buf);
        c.dw[0] |= fuse << 8;
        c.dw[12] = 7;
        assert_eq!(status(h.submit(1, c).unwrap()), (0, 0x02, true));
    }
}

#[test]
fn write_zeroes_dsm_and_copy_flush_with_fua_or_without_volatile_cache() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let flushes = |h: &TestHost| h.ctrl.namespace(0).flushes.load(Ordering::Relaxed);
    let mut wz = command(io::WRITE_ZEROES, 1);
    wz.dw[12] = 7 | 1 << 30; // FUA
    let before = flushes(&h);
    assert!(h.submit(1, wz).unwrap().ok());
    assert_eq!(flushes(&h), before + 1, "Write Zeroes with FUA");
    let mut vwc = command(admin::SET_FEATURES, 0);
    vwc.dw[10] = 0x06;
    vwc.dw[11] = 0; // volatile write cache off
    assert!(h.submit(0, vwc).unwrap().ok());
    let ranges = h.alloc(4096);
    let mut r = [0u8; 16];
    r[4..8].copy_from_slice(&8u32.to_le_bytes());
    h.write_mem(ranges, &r);
    let mut dsm = command(io::DSM, 1);
    with_buffer(&mut dsm, ranges);
    dsm.dw[11] = 1 << 2; // deallocate
    let before = flushes(&h);
    assert!(h.submit(1, dsm).unwrap().ok());
    assert_eq!(flushes(&h), before + 1, "DSM without a volatile cache");
    let src = h.alloc(4096);
    let mut s = [0u8; 32];
    s[8..16].copy_from_slice(&0u64.to_le_bytes());
    h.write_mem(src, &s);
    let mut copy = command(io::COPY, 1);
    with_buffer(&mut copy, src);
    copy.dw[10] = 64;
    let before = flushes(&h);
    assert!(h.submit(1, copy).unwrap().ok());
    assert_eq!(flushes(&h), before + 1, "Copy without a volatile cache");
}

#[test]
fn set_features_write_atomicity_and_error_recovery_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    for (fid, v) in [(0x0au32, 1u32), (0x05, 30)] {
        let mut set = command(admin::SET_FEATURES, 0);
        set.dw[10] = fid;
        set.dw[11] = v;
        assert!(h.submit(0, set).unwrap().ok(), "set {fid:#x}");
        let mut get = command(admin::GET_FEATURES, 0);
        get.dw[10] = fid;
        let got = h.submit(0, get).unwrap();
        assert!(got.ok());
        assert_eq!(got.dw0, v, "get {fid:#x}");
    }
}

#[test]
fn io_sq_in_a_peer_cmb_is_invalid_use_of_cmb() {
    let d = tempfile::tempdir().unwrap();
    let r = TestHost::registry();
    let mut a = TestHost::new(d.path(), 0, r.clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, r, 16, 16, NS);
    a.enable();
    b.enable();
    b.write64(reg::CMBMSC, CMB | 3);
    let (cq, sq) = a.create_io_queue(1, 16, Some(CMB));
    assert!(cq.ok());
    assert_eq!(status(sq), (0, 0x12, true));
}

#[test]
fn smart_data_units_come_from_exact_byte_totals() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let buf = h.alloc(4096);
    for i in 0..64 {
        assert!(h.rw(1, io::READ, i * 8, 8, buf, 0).ok());
    }
    let (_, smart) = log_page(&mut h, 0x02, 512, 0, false);
    let units = u128::from_le_bytes(smart[32..48].try_into().unwrap());
    assert_eq!(
        units, 1,
        "256 KiB read = 512 units of 512 bytes = 1 thousand, rounded up"
    );
}

#[test]
fn admin_error_log_entries_leave_the_lba_field_zero() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let mut bad = command(admin::GET_FEATURES, 0);
    bad.dw[10] = 0xff; // unknown feature: an error
    bad.dw[11] = 0x1234_5678;
    assert!(!h.submit(0, bad).unwrap().ok());
    let (_, log) = log_page(&mut h, 0x01, 64, 0, false);
    assert_eq!(u64::from_le_bytes(log[0..8].try_into().unwrap()), 1);
    assert_eq!(
        u64::from_le_bytes(log[16..24].try_into().unwrap()),
        0,
        "LBA"
    );
}

#[test]
fn compare_counts_as_a_host_read_command() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let buf = h.alloc(4096);
    assert!(h.rw(1, io::COMPARE, 0, 8, buf, 0).ok(), "zeros match zeros");
    let (_, smart) = log_page(&mut h, 0x02, 512, 0, false);
    assert_eq!(u128::from_le_bytes(smart[64..80].try_into().unwrap()), 1);
}

#[test]
fn identify_io_command_set_structures_answer_as_nvme_2_0() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert_eq!(h.read32(reg::VS), 0x0002_0000);
    let buf = h.alloc(4096);
    for (cns, nsid) in [(0x05u32, 1u32), (0x06, 0), (0x1c, 0)] {
        let mut c = command(admin::IDENTIFY, nsid);
        with_buffer(&mut c, buf);
        c.dw[10] = cns;
        assert!(h.submit(0, c).unwrap().ok(), "CNS {cns:#x}");
    }
    let mut set = [0u8; 8];
    h.read_mem(buf, &mut set);
    assert_eq!(u64::from_le_bytes(set), 1, "NVM command set only");
    let (_, log) = log_page(&mut h, 0x01, 64, 0, false);
    assert_eq!(log, vec![0; 64], "no error-log entries");
}

/// Issue 13's module circle: commands reach the controller only through
/// their narrow contexts (`IoCtx`, `AdminCtx`), never by importing it.
#[test]
fn commands_do_not_import_the_controller() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        files += 1;
        for bad in ["crate::controller", "super::super::controller"] {
            assert!(!text.contains(bad), "{} mentions {bad}", path.display());
        }
    }
    assert!(files >= 6, "read the command modules ({files})");
}
