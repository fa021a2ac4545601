//! Fault rules on the device: each action's observable effect (status,
//! error log, timing, counters, interrupts, registers, events) and the
//! match keys that depend on the command (queue, NSID, LBA, target).

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

#[test]
fn status_rule_completes_with_status_dnr_and_error_log_entry() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.fault("op=read,ns=1,nth=2,status=0x281");
    h.fault("op=write,status=0x280,dnr=0");
    assert!(read(&mut h, buf, 8).unwrap().ok());
    h.write_mem(buf, &[0xaa; 4096]);
    let c = read(&mut h, buf, 8).unwrap();
    assert_eq!(status(c), (2, 0x81, true), "Unrecovered Read Error, DNR");
    let mut b = [0xaa_u8; 4096];
    h.read_mem(buf, &mut b);
    assert!(b.iter().all(|x| *x == 0xaa), "the command did not run");
    // Error log entry 0 (newest): SQ 1, this CID, the status field.
    let e = log_page(&mut h, 0x01, 64);
    assert_eq!(u16::from_le_bytes([e[8], e[9]]), 1);
    assert_eq!(u16::from_le_bytes([e[10], e[11]]), c.cid);
    assert_eq!(u16::from_le_bytes([e[12], e[13]]), 0x8000 | 0x281 << 1);
    assert!(read(&mut h, buf, 8).unwrap().ok(), "nth=2 fires once");
    let w = h.rw(1, io::WRITE, 0, 1, buf, 0);
    assert_eq!(status(w), (2, 0x80, false), "Write Fault without DNR");
    assert_eq!(counts(&h), [(3, 1), (1, 1)]);
}

#[test]
fn delay_ms_rule_posts_the_completion_after_the_delay_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, pattern) = io_host(&d);
    h.create_io_queue(2, 32, None);
    h.fault("q=1,op=read,first=1,delay-ms=150");
    let t = Instant::now();
    let l = h.prp_list(buf, 4096);
    h.submit_no_reap(
        1,
        crate::testhost::rw_command(io::READ, 0, 8, buf, l, false),
    );
    assert!(h.reap(1).is_none(), "not yet");
    // The data moved (the command ran), another queue goes on meanwhile.
    let mut b = vec![0u8; 4096];
    h.read_mem(buf, &mut b);
    assert_eq!(b, pattern[..4096]);
    let other = h.alloc(4096);
    assert!(h.rw(2, io::READ, 0, 8, other, 0).ok());
    assert!(h.ctrl.next_due().unwrap() <= Duration::from_millis(150));
    while t.elapsed() < Duration::from_millis(150) {
        h.run_worker();
        if let Some(c) = h.reap(1) {
            panic!("completion {c:?} before the delay");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    h.run_worker();
    assert!(h.reap(1).unwrap().ok());
    assert_eq!(h.ctrl.held(), 0);
}

#[test]
fn delayed_completion_wakes_the_production_worker() {
    let d = tempfile::tempdir().unwrap();
    let (h, buf, _) = io_host(&d);
    h.fault("op=read,delay-ms=80");
    let mut r = h.into_remote(1);
    let t = Instant::now();
    r.submit(&[crate::testhost::rw_command(io::READ, 0, 8, buf, 0, false)]);
    let done = r.wait_all(); // the worker sleeps until due, then posts
    assert!(done[0].ok());
    assert!(t.elapsed() >= Duration::from_millis(80));
}

#[test]
fn never_rule_holds_the_completion_until_a_reset_drops_it() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.fault("op=read,nth=1,never");
    assert!(read(&mut h, buf, 8).is_none());
    assert_eq!(h.ctrl.held(), 1);
    assert_eq!(h.ctrl.next_due(), None, "never due");
    assert!(
        read(&mut h, buf, 8).unwrap().ok(),
        "later commands complete"
    );
    // Reset (CC.EN 1 -> 0): the held command is gone; nothing stale
    // appears in the recreated queue.
    let (asq, acq) = (h.alloc(32 * 64), h.alloc(32 * 16));
    assert!(h.enable_at(asq, acq));
    assert_eq!(h.ctrl.held(), 0);
    h.create_io_queue(1, 32, None);
    let c = read(&mut h, buf, 8).unwrap();
    assert!(c.ok());
    assert!(h.reap(1).is_none());
}

#[test]
fn dma_fail_moves_exactly_k_bytes_then_data_transfer_error() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, pattern) = io_host(&d);
    h.fault("op=read,first=1,dma-fail=6144");
    h.ctrl.stats.reset();
    let c = read(&mut h, buf, 32).unwrap(); // 16 KiB over 4 pages
    assert_eq!(status(c), (0, 0x04, true));
    assert_eq!(stats(&h)["data"]["guest_ram"]["written"], 6144);
    let mut b = vec![0u8; 16384];
    h.read_mem(buf, &mut b);
    assert_eq!(b[..6144], pattern[..6144]);
    assert!(b[6144..].iter().all(|x| *x == 0xaa), "nothing after K");
    assert_eq!(
        log_page(&mut h, 0x01, 64)[12..14],
        (0x8000u16 | 0x04 << 1).to_le_bytes()
    );
    assert!(read(&mut h, buf, 32).unwrap().ok(), "first=1");
}

#[test]
fn dma_fail_on_the_peer_target_only() {
    let d = tempfile::tempdir().unwrap();
    let reg_ = TestHost::registry();
    let mut a = TestHost::new(d.path(), 0, reg_.clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, reg_, 16, 16, NS);
    a.enable();
    b.enable();
    a.create_io_queue(1, 16, None);
    let cba_b = 0xfd00_0000u64;
    b.write64(reg::CMBMSC, cba_b | 3);
    a.fault("target=peer,op=read,first=1,dma-fail=4096");
    let ram = a.alloc(8192);
    assert!(
        a.rw(1, io::READ, 0, 16, ram, ram + 4096).ok(),
        "RAM: no match"
    );
    a.ctrl.stats.reset();
    let c = a.rw(1, io::READ, 0, 16, cba_b, cba_b + 4096);
    assert_eq!(status(c), (0, 0x04, true));
    let s = stats(&a);
    assert_eq!(s["data"]["peer_cmb"]["by_peer"]["1"]["written"], 4096);
    assert_eq!(counts(&a), [(1, 1)], "the RAM read did not match");
}

#[test]
fn no_irq_rule_posts_the_completion_without_its_interrupt() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.fault("op=read,nth=1,no-irq");
    h.take_interrupts();
    let c = read(&mut h, buf, 8).unwrap();
    assert!(c.ok(), "the CQE is there for a polling driver");
    assert_eq!(h.take_interrupts(), 0);
    assert!(read(&mut h, buf, 8).unwrap().ok());
    assert!(h.take_interrupts() > 0, "the next one interrupts");
}

#[test]
fn cfs_rule_sets_controller_fatal_until_reset() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.fault("op=write,nth=1,cfs");
    assert!(h
        .submit(
            1,
            crate::testhost::rw_command(io::WRITE, 0, 1, buf, 0, false)
        )
        .is_none());
    assert_eq!(h.read32(reg::CSTS) & 2, 2, "CSTS.CFS");
    assert!(read(&mut h, buf, 8).is_none(), "no more commands");
    h.write32(reg::CC, 0);
    assert_eq!(
        h.read32(reg::CSTS) & 3,
        0,
        "CFS and RDY clear after CC.EN 0"
    );
    let (asq, acq) = (h.alloc(32 * 64), h.alloc(32 * 16));
    assert!(h.enable_at(asq, acq));
    h.create_io_queue(1, 32, None);
    assert!(read(&mut h, buf, 8).unwrap().ok());
}

#[test]
fn aen_smart_completes_an_aer_and_the_smart_log_shows_it() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.submit_no_reap(0, command(admin::ASYNC_EVENT, 0));
    assert!(h.reap(0).is_none(), "AER held");
    h.fault("op=read,nth=1,aen=smart");
    assert!(
        read(&mut h, buf, 8).unwrap().ok(),
        "the command runs normally"
    );
    let aer = h.reap(0).unwrap();
    assert_eq!(aer.dw0, 0x02 << 16 | 0x01, "SMART/health, log page 02h");
    assert_eq!(log_page(&mut h, 0x02, 512)[0], 1 << 2, "critical warning");
    h.write32(reg::CC, 0);
    let (asq, acq) = (h.alloc(32 * 64), h.alloc(32 * 16));
    assert!(h.enable_at(asq, acq));
    assert_eq!(
        log_page(&mut h, 0x02, 512)[0],
        1 << 2,
        "kept across CC.EN resets"
    );
    h.ctrl.device_reset();
    let (asq, acq) = (h.alloc(32 * 64), h.alloc(32 * 16));
    assert!(h.enable_at(asq, acq));
    assert_eq!(
        log_page(&mut h, 0x02, 512)[0],
        0,
        "cleared by a function reset"
    );
}

#[test]
fn aen_ns_changed_completes_an_aer_and_log_page_04h_lists_it() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.submit_no_reap(0, command(admin::ASYNC_EVENT, 0));
    h.fault("op=read,nth=1,aen=ns-changed");
    assert!(read(&mut h, buf, 8).unwrap().ok());
    let aer = h.reap(0).unwrap();
    assert_eq!(aer.dw0, 0x04 << 16 | 0x02, "notice, log page 04h");
    let oaes = u32::from_le_bytes(identify_ctrl(&mut h)[92..96].try_into().unwrap());
    assert_eq!(oaes & 1 << 8, 1 << 8, "OAES: namespace attribute notices");
    let page = log_page(&mut h, 0x04, 4096);
    assert_eq!(page[..8], [1, 0, 0, 0, 0, 0, 0, 0], "NSID 1, then the end");
    assert!(
        log_page(&mut h, 0x04, 4096).iter().all(|b| *b == 0),
        "cleared when read"
    );
}

#[test]
fn cmb_revoke_disable_clears_the_cmb_as_the_host_would() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, _, _) = io_host(&d);
    let cba = 0xfe00_0000u64;
    h.write64(reg::CMBMSC, cba | 3);
    assert!(h.rw(1, io::READ, 0, 8, cba, 0).ok(), "CMB data before");
    h.fault("op=read,nth=1,cmb-revoke=disable");
    let c = h.rw(1, io::READ, 0, 8, cba, 0);
    assert_eq!(
        status(c),
        (0, 0x04, true),
        "its data address answers no more"
    );
    assert_eq!(h.read64(reg::CMBMSC) & 3, 0, "CRE and CMSE clear");
    assert_eq!(h.read32(reg::CMBSZ), 0);
}

#[test]
fn cmb_revoke_unmap_makes_the_window_unreachable_until_function_reset() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    let cba = 0xfe00_0000u64;
    h.write64(reg::CMBMSC, cba | 3);
    h.fault("op=read,nth=1,cmb-revoke=unmap");
    assert!(
        read(&mut h, buf, 8).unwrap().ok(),
        "a RAM command still runs"
    );
    assert!(h
        .ctrl
        .cmb_unreachable
        .load(std::sync::atomic::Ordering::Acquire));
    let c = h.rw(1, io::READ, 0, 8, cba, 0);
    assert_eq!(status(c), (0, 0x04, true));
    assert_eq!(h.read64(reg::CMBMSC) & 3, 3, "still configured");
    h.ctrl.device_reset();
    assert!(!h
        .ctrl
        .cmb_unreachable
        .load(std::sync::atomic::Ordering::Acquire));
}

#[test]
fn cmb_unreachable_reads_all_ones_through_the_transport() {
    use p2pnvme_vfio_user::Backend as _;
    let d = tempfile::tempdir().unwrap();
    let mut be = crate::regressions::backend(&d);
    let flag = be.ctrl.lock().unwrap().cmb_unreachable.clone();
    let mut b = [0u8; 8];
    be.region_read(2, 0, &mut b).unwrap();
    assert_eq!(b, [0; 8]);
    flag.store(true, std::sync::atomic::Ordering::Release);
    be.region_read(2, 0, &mut b).unwrap();
    assert_eq!(b, [0xff; 8]);
}

#[test]
fn remove_rule_queues_an_event_and_holds_the_command() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    let id = h.fault("op=read,nth=1,remove,replug-ms=2000");
    assert!(read(&mut h, buf, 8).is_none());
    assert_eq!(h.ctrl.held(), 1);
    let ev = h.ctrl.faults.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].kind, ev[0].ctrl, ev[0].rule, ev[0].replug_ms),
        (p2pnvme_docs::control::EventKind::Remove, 0, id, Some(2000))
    );
    assert!(h.ctrl.faults.take_events().is_empty(), "returned once");
}

#[test]
fn keys_match_queue_ns_lba_class_and_target_on_the_device() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.create_io_queue(2, 32, None);
    h.fault("q=2,status=0x281");
    h.fault("ns=2,status=0x282");
    h.fault("lba=100-200,status=0x283");
    h.fault("class=admin,op=0x06,status=0x284");
    h.fault("target=cmb,status=0x285");
    assert!(
        read(&mut h, buf, 8).unwrap().ok(),
        "q 1, ns 1, LBA 0-7, RAM: none"
    );
    assert_eq!(status(h.rw(2, io::READ, 0, 8, buf, 0)).1, 0x81);
    assert_eq!(status(h.submit(1, command(io::FLUSH, 2)).unwrap()).1, 0x82);
    assert_eq!(
        status(h.rw(1, io::READ, 96, 8, buf, 0)).1,
        0x83,
        "LBA 96-103 overlaps"
    );
    assert!(h.rw(1, io::READ, 88, 8, buf, 0).ok(), "LBA 88-95 does not");
    let mut id = command(admin::IDENTIFY, 0);
    id.dw[6] = buf as u32;
    id.dw[7] = (buf >> 32) as u32;
    id.dw[10] = 1;
    assert_eq!(status(h.submit(0, id).unwrap()).1, 0x84);
    let cba = 0xfe00_0000u64;
    h.write64(reg::CMBMSC, cba | 3);
    assert_eq!(status(h.rw(1, io::READ, 0, 8, cba, 0)).1, 0x85);
}

#[test]
fn ctrl_key_matches_only_its_controller() {
    let d = tempfile::tempdir().unwrap();
    let reg_ = TestHost::registry();
    let mut a = TestHost::new(d.path(), 0, reg_.clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, reg_, 16, 16, NS);
    let table = Arc::new(FaultTable::new(2));
    a.ctrl.faults = table.clone();
    b.ctrl.faults = table.clone();
    table.add("ctrl=1,op=read,status=0x281").unwrap();
    for h in [&mut a, &mut b] {
        h.enable();
        h.create_io_queue(1, 16, None);
    }
    let (ba, bb) = (a.alloc(4096), b.alloc(4096));
    assert!(a.rw(1, io::READ, 0, 8, ba, 0).ok());
    assert_eq!(status(b.rw(1, io::READ, 0, 8, bb, 0)).1, 0x81);
    let doc = crate::control::Control {
        stats: vec![a.ctrl.stats.clone(), b.ctrl.stats.clone()],
        faults: table.clone(),
        trace: Default::default(),
    }
    .answer("get");
    let doc: p2pnvme_docs::stats::StatsDoc = serde_json::from_str(&doc).unwrap();
    assert!(doc.controllers[0].faults.is_empty());
    assert_eq!(
        (
            doc.controllers[1].faults[0].matched,
            doc.controllers[1].faults[0].fired
        ),
        (1, 1)
    );
}

#[test]
fn prob_with_a_seed_fires_on_the_same_commands() {
    let d = tempfile::tempdir().unwrap();
    let run = |seed: u64| {
        let (mut h, buf, _) = io_host(&d);
        h.fault(&format!("op=read,prob=0.5,seed={seed},status=0x281"));
        (0..40)
            .map(|_| !read(&mut h, buf, 1).unwrap().ok())
            .collect::<Vec<bool>>()
    };
    let a = run(9);
    assert_eq!(a, run(9));
    assert_ne!(a, run(10));
    assert!(a.contains(&true) && a.contains(&false));
}

#[test]
fn empty_table_costs_one_load_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    let id = h.fault("op=read,status=0x281");
    assert!(!read(&mut h, buf, 8).unwrap().ok());
    assert!(h.ctrl.faults.remove(id));
    assert!(h.ctrl.faults.is_empty());
    assert!(read(&mut h, buf, 8).unwrap().ok());
}

#[test]
fn deleted_queue_takes_its_held_completions_along() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.fault("op=read,first=1,delay-ms=1");
    h.submit_no_reap(
        1,
        crate::testhost::rw_command(io::READ, 0, 8, buf, 0, false),
    );
    assert_eq!(h.ctrl.held(), 1);
    let mut ds = command(admin::DELETE_SQ, 0);
    ds.dw[10] = 1;
    assert!(h.submit(0, ds).unwrap().ok());
    assert_eq!(h.ctrl.held(), 0);
}

#[test]
fn start_up_refuses_bad_rules_naming_the_key() {
    let args = |rule: &str| crate::config::DeviceArgs {
        controller: vec!["socket=/nonexistent/a,ns=/nonexistent/a.img:1M".into()],
        fault: vec![rule.into()],
        ..Default::default()
    };
    let e = crate::run(args("ctrl=1,op=read,never"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ctrl=1: no such controller"), "{e}");
    let e = crate::run(args("op=read,foo=2,never"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key 'foo'"), "{e}");
}

#[test]
fn rule_added_over_the_control_endpoint_hits_a_running_controller() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    let table = Arc::new(FaultTable::new(1));
    h.ctrl.faults = table.clone();
    let stats = h.ctrl.stats.clone();
    let control = crate::control::Control {
        stats: vec![stats],
        faults: table,
        trace: h.ctrl.trace.clone(),
    };
    let mut r = h.into_remote(1);
    let rd = crate::testhost::rw_command(io::READ, 0, 8, buf, 0, false);
    r.submit(&[rd]);
    assert!(r.wait_all()[0].ok());
    let reply = control.answer(r#"{"op":"fault-add","rule":"op=read,status=0x281"}"#);
    assert_eq!(reply, r#"{"ok":true,"id":1}"#);
    r.submit(&[rd]);
    let c = r.wait_all()[0];
    assert_eq!(status(c), (2, 0x81, true));
    let list: p2pnvme_docs::control::Reply =
        serde_json::from_str(&control.answer(r#"{"op":"fault-list"}"#)).unwrap();
    let rule = &list.rules.unwrap()[0];
    assert_eq!((rule.matched, rule.fired), (1, 1));
}

#[test]
fn target_matches_any_data_segment_not_only_the_first() {
    let d = tempfile::tempdir().unwrap();
    let reg_ = TestHost::registry();
    let mut a = TestHost::new(d.path(), 0, reg_.clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, reg_, 16, 16, NS);
    a.enable();
    b.enable();
    a.create_io_queue(1, 16, None);
    let cba_b = 0xfd00_0000u64;
    b.write64(reg::CMBMSC, cba_b | 3);
    a.fault("target=peer,status=0x281");
    let ram = a.alloc(4096);
    // 8 KiB: the first page in RAM, the second (PRP2) in the peer's CMB.
    assert_eq!(status(a.rw(1, io::READ, 0, 16, ram, cba_b)).1, 0x81);
    // The status rule ran nothing: no data moved.
    assert_eq!(stats(&a)["data"]["peer_cmb"]["written"], 0);
    // A PRP list in RAM whose entries point into the peer's CMB.
    let list = a.alloc(4096);
    a.write_mem(
        list,
        &[(cba_b + 4096).to_le_bytes(), (cba_b + 8192).to_le_bytes()].concat(),
    );
    let meta_before = stats(&a)["meta"]["guest_ram"]["read"].as_u64().unwrap();
    assert_eq!(status(a.rw(1, io::READ, 0, 24, ram, list)).1, 0x81);
    let meta_after = stats(&a)["meta"]["guest_ram"]["read"].as_u64().unwrap();
    assert_eq!(
        meta_after - meta_before,
        64,
        "the SQ entry only: the list read to match is not counted"
    );
    let ram2 = a.alloc(8192);
    assert!(
        a.rw(1, io::READ, 0, 16, ram2, ram2 + 4096).ok(),
        "all in RAM: no match"
    );
}
