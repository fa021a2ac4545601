//! One regression test per hole of issue 13, named after what it guards.

use crate::controller::{reg, DOORBELLS};
use crate::nvme::{admin, io};
use crate::testhost::{command, Completion, TestHost, RAM_BASE};
use p2pnvme_vfio_user::Backend as _;
use std::sync::atomic::Ordering;

const NS: u64 = 64 << 20;
const CMB: u64 = 0xfe00_0000;

fn host(dir: &tempfile::TempDir) -> TestHost {
    let mut h = TestHost::new(dir.path(), 0, TestHost::registry(), 16, 64, NS);
    h.enable();
    h
}

fn status(c: Completion) -> (u8, u8, bool) {
    (c.sct, c.sc, c.dnr)
}

fn with_buffer(c: &mut crate::nvme::Sqe, buf: u64) {
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
}

/// Get Log Page `lid` of `bytes` at `offset`; the completion and the data.
fn log_page(
    h: &mut TestHost,
    lid: u32,
    bytes: u32,
    offset: u64,
    rae: bool,
) -> (Completion, Vec<u8>) {
    let buf = h.alloc(4096);
    let mut c = command(admin::GET_LOG_PAGE, 0xffff_ffff);
    with_buffer(&mut c, buf);
    c.dw[10] = lid | (rae as u32) << 15 | (bytes / 4 - 1) << 16;
    c.dw[12] = offset as u32;
    c.dw[13] = (offset >> 32) as u32;
    let done = h.submit(0, c).unwrap();
    let mut b = vec![0u8; bytes as usize];
    h.read_mem(buf, &mut b);
    (done, b)
}

/// A transport backend over a fresh, enabled controller with its CMB at CMB.
fn backend(dir: &tempfile::TempDir) -> crate::vfio::Backend {
    let mut h = host(dir);
    h.write64(reg::CMBMSC, CMB | 3);
    let TestHost { ctrl, .. } = h;
    let bme = ctrl.bus_master.clone();
    let pci = crate::vfio::pci::PciConfig::new(ctrl.cmb_bytes(), 32, bme);
    crate::vfio::Backend::new(ctrl, pci)
}

#[test]
fn cmb_region_access_at_a_wrapping_offset_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut b = backend(&d);
    let wrap = 0u64.wrapping_sub(4096);
    let mut got = [0u8; 4096];
    b.region_read(2, wrap, &mut got).unwrap();
    assert_eq!(got, [0xff; 4096], "no bytes from below the mapping");
    b.region_write(2, wrap, &[0x5a; 4096]).unwrap();
    let c = b.ctrl.lock().unwrap();
    let (m, _) = c.cmb.as_ref().unwrap();
    let mut all = vec![0u8; m.len()];
    assert!(m.read(0, &mut all));
    assert!(all.iter().all(|&x| x == 0), "the write landed nowhere");
}

#[test]
fn cmb_memfd_is_sealed_against_resizing() {
    use std::os::unix::io::AsRawFd;
    let d = tempfile::tempdir().unwrap();
    let h = host(&d);
    let (_, f) = h.ctrl.cmb.as_ref().unwrap();
    // SAFETY: fcntl on an fd the controller keeps open.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want);
    assert!(f.set_len(4096).is_err(), "a client cannot shrink it");
}

#[test]
fn cmb_of_another_peer_group_never_captures_dma() {
    let args = crate::config::DeviceArgs {
        socket: None,
        cmb_mib: 16,
        namespace: vec![],
        controller: vec![
            "socket=/tmp/a,group=vm-a,ns=/tmp/a.img:1M".into(),
            "socket=/tmp/b,group=vm-b,ns=/tmp/b.img:1M".into(),
            "socket=/tmp/c,group=vm-a,ns=/tmp/c.img:1M".into(),
        ],
        stats_socket: None,
        poll_us: 0,
    };
    let specs = args.controllers().unwrap();
    let r = crate::peer_groups(&specs);
    assert!(
        std::sync::Arc::ptr_eq(&r[0], &r[2]),
        "one group, one registry"
    );
    assert!(
        !std::sync::Arc::ptr_eq(&r[0], &r[1]),
        "two VMs, two registries"
    );
    // Controller B of another group puts its CMB window over A's RAM: A's
    // DMA still reaches A's RAM.
    let d = tempfile::tempdir().unwrap();
    let mut a = TestHost::new(d.path(), 0, r[0].clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, r[1].clone(), 16, 16, NS);
    a.enable();
    b.enable();
    b.write64(reg::CMBMSC, RAM_BASE | 3);
    a.create_io_queue(1, 16, None);
    let buf = a.alloc(4096);
    a.write_mem(buf, &[0x77; 4096]);
    assert!(a.rw(1, io::WRITE, 0, 8, buf, 0).ok());
    a.write_mem(buf, &[0; 4096]);
    assert!(a.rw(1, io::READ, 0, 8, buf, 0).ok());
    let mut got = [0u8; 4096];
    a.read_mem(buf, &mut got);
    assert_eq!(got, [0x77; 4096]);
    assert_eq!(a.ctrl.stats.to_json()["data"]["peer_cmb"]["written"], 0);
}

#[test]
fn enable_with_admin_queues_wrapping_the_address_space_sets_cfs() {
    let d = tempfile::tempdir().unwrap();
    let mut h = TestHost::new(d.path(), 0, TestHost::registry(), 16, 64, NS);
    h.write32(reg::AQA, 31 << 16 | 0xfff); // 4096 entries: 256 KiB
    h.write64(reg::ASQ, 0xffff_ffff_ffff_f000);
    h.write64(reg::ACQ, RAM_BASE);
    h.write32(reg::CC, 1 | 6 << 16 | 4 << 20);
    assert_eq!(h.read32(reg::CSTS) & 3, 2, "CFS, not ready");
    h.write32(DOORBELLS, 31); // must not panic or fetch from IOVA 0
}

#[test]
fn admin_cq_in_the_cmb_is_refused_at_enable() {
    let d = tempfile::tempdir().unwrap();
    let mut h = TestHost::new(d.path(), 0, TestHost::registry(), 16, 64, NS);
    h.write64(reg::CMBMSC, CMB | 3);
    h.write32(reg::AQA, 31 << 16 | 31);
    h.write64(reg::ASQ, RAM_BASE);
    h.write64(reg::ACQ, CMB);
    h.write32(reg::CC, 1 | 6 << 16 | 4 << 20);
    assert_eq!(h.read32(reg::CSTS) & 3, 2, "CMBSZ.CQS is 0: CFS");
}

#[test]
fn device_reset_clears_cmb_window_admin_queue_registers_intms_and_shst() {
    let d = tempfile::tempdir().unwrap();
    let mut b = backend(&d);
    {
        let mut c = b.ctrl.lock().unwrap();
        c.reg_write(reg::INTMS, &1u32.to_le_bytes());
        let cc = 1u32 | 6 << 16 | 4 << 20 | 1 << 14; // normal shutdown
        c.reg_write(reg::CC, &cc.to_le_bytes());
    }
    b.region_write(7, 4, &[0x06]).unwrap(); // PCI command: memory, bus master
    b.reset().unwrap();
    let c = b.ctrl.lock().unwrap();
    for (r, name) in [
        (reg::CMBMSC, "CMBMSC"),
        (reg::ASQ, "ASQ"),
        (reg::ACQ, "ACQ"),
        (reg::AQA, "AQA"),
        (reg::INTMS, "INTMS"),
        (reg::CSTS, "CSTS (SHST)"),
    ] {
        let mut v = [0u8; 8];
        c.reg_read(r, &mut v);
        let v = if r == reg::CMBMSC || r == reg::ASQ || r == reg::ACQ {
            u64::from_le_bytes(v)
        } else {
            u32::from_le_bytes(v[..4].try_into().unwrap()) as u64
        };
        assert_eq!(v, 0, "{name} after DEVICE_RESET");
    }
    assert!(c.dma().classify(CMB, 4096).is_err(), "no CMB window");
    drop(c);
    let mut cmd = [0u8; 2];
    b.region_read(7, 4, &mut cmd).unwrap();
    assert_eq!(cmd, [0, 0], "PCI command register reset");
}

#[test]
fn disconnect_zeroes_the_cmb_and_resets_pci_state() {
    let d = tempfile::tempdir().unwrap();
    let mut b = backend(&d);
    b.region_write(2, 4096, b"secret of the previous client")
        .unwrap();
    b.region_write(7, 4, &[0x06]).unwrap();
    b.disconnected();
    let mut got = [0u8; 29];
    b.region_read(2, 4096, &mut got).unwrap();
    assert_eq!(got, [0; 29]);
    let mut cmd = [0u8; 2];
    b.region_read(7, 4, &mut cmd).unwrap();
    assert_eq!(cmd, [0, 0]);
    assert!(!b.ctrl.lock().unwrap().bus_master.load(Ordering::Acquire));
}

#[test]
fn dma_fails_while_bus_master_is_disabled() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.ctrl.bus_master.store(false, Ordering::Release);
    let buf = h.alloc(4096);
    let mut c = command(admin::IDENTIFY, 0);
    with_buffer(&mut c, buf);
    c.dw[10] = 1;
    assert!(h.submit(0, c).is_none(), "no fetch, no completion");
    let mut id = [0u8; 64];
    h.read_mem(buf, &mut id);
    assert_eq!(id, [0; 64], "nothing written");
    assert_eq!(h.read32(reg::CSTS) & 2, 2, "the fetch fault is fatal");
}

#[test]
fn sq_fetch_fault_sets_controller_fatal_status() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    h.ctrl.ram.clear(); // DMA_UNMAP of all guest RAM
    h.write32(DOORBELLS + 8, 1);
    assert_eq!(h.read32(reg::CSTS) & 2, 2, "CSTS.CFS");
}

#[test]
fn cq_head_doorbell_beyond_the_tail_is_an_invalid_doorbell_write_value() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.submit(0, command(admin::ASYNC_EVENT, 0)).is_none());
    // Nothing posted yet on the admin CQ: a head of 5 passes the tail.
    h.write32(DOORBELLS + 4, 5);
    let ev = h.reap(0).expect("the AER completes");
    assert_eq!((ev.dw0 >> 8) & 0xff, 0x01, "Invalid Doorbell Write Value");
}

#[test]
fn error_log_page_accepts_offsets_inside_the_log() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    let (done, page) = log_page(&mut h, 0x01, 64, 64, false);
    assert!(done.ok(), "offset 64 lies inside the 64-entry log");
    assert_eq!(page, vec![0; 64]);
}

#[test]
fn error_events_stay_masked_until_the_log_is_read_without_rae() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.submit(0, command(admin::ASYNC_EVENT, 0)).is_none());
    assert!(h.submit(0, command(admin::ASYNC_EVENT, 0)).is_none());
    h.write32(DOORBELLS + 8 * 40, 1); // invalid doorbell register
    assert!(h.reap(0).is_some(), "first event delivered");
    h.write32(DOORBELLS, 1000); // invalid write value
    assert!(h.reap(0).is_none(), "error events masked");
    let (done, _) = log_page(&mut h, 0x01, 64, 0, true);
    assert!(done.ok());
    assert!(h.reap(0).is_none(), "RAE keeps them masked");
    // The read completes, and the AER it unmasked completes before it.
    let (first, _) = log_page(&mut h, 0x01, 64, 0, false);
    let second = h.reap(0).expect("two completions");
    assert!(first.ok() && second.ok());
    assert_eq!(first.dw0, 0x01 << 16 | 0x01 << 8, "the unmasked event");
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
    let flushes = |h: &TestHost| h.ctrl.ns[0].flushes.load(Ordering::Relaxed);
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
fn intx_is_not_advertised() {
    let info = crate::vfio::irqs();
    assert_eq!(info[0].count, 0, "irq index 0 (INTx)");
    let pci = crate::vfio::pci::PciConfig::new(16 << 20, 32, Default::default());
    let mut pin = [0u8; 1];
    pci.read(0x3d, &mut pin);
    assert_eq!(pin, [0], "interrupt pin");
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

#[test]
fn a_queue_drained_by_a_full_pass_publishes_its_event_index() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.enable_shadow_doorbells().ok());
    h.create_io_queue(1, 16, None);
    let buf = h.alloc(4096);
    let mut c = command(io::READ, 1);
    with_buffer(&mut c, buf);
    // Exactly one worker pass worth of commands, the driver ringing once.
    h.manual = true;
    for _ in 0..4 {
        h.submit_no_reap(1, c);
    }
    h.manual = false;
    h.run_worker();
    for _ in 0..4 {
        assert!(h.reap(1).expect("completed").ok());
    }
    // The driver decides from the event index whether to ring: it must
    // have been published when the pass drained the queue.
    let done = h.submit(1, c).expect("the fifth command is not lost");
    assert!(done.ok());
}

#[test]
fn entries_found_by_shadow_polling_keep_the_worker_running() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    assert!(h.enable_shadow_doorbells().ok());
    h.create_io_queue(1, 16, None);
    h.ctrl.poll = std::time::Duration::from_secs(3600);
    let buf = h.alloc(4096);
    let mut c = command(io::READ, 1);
    with_buffer(&mut c, buf);
    // Rings (the event index says so); the worker drains and keeps polling.
    assert!(h.submit(1, c).expect("first read").ok());
    // The event index is not published while polling: no doorbell.
    let rings = h.doorbell_writes;
    h.submit_no_reap(1, c);
    assert_eq!(h.doorbell_writes, rings, "the driver did not ring");
    // The worker's next look finds it, and must then run it, not sleep.
    h.run_worker();
    assert!(h.reap(1).expect("found by polling and run").ok());
}
