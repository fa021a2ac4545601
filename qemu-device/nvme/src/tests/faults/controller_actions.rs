//! Actions on the whole controller: fatal status, asynchronous events,
//! CMB revocation, surprise removal.

use super::*;

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
        .cmb_unreachable()
        .load(std::sync::atomic::Ordering::Acquire));
    let c = h.rw(1, io::READ, 0, 8, cba, 0);
    assert_eq!(status(c), (0, 0x04, true));
    assert_eq!(h.read64(reg::CMBMSC) & 3, 3, "still configured");
    h.ctrl.device_reset();
    assert!(!h
        .ctrl
        .cmb_unreachable()
        .load(std::sync::atomic::Ordering::Acquire));
}

#[test]
fn cmb_unreachable_reads_all_ones_through_the_transport() {
    use p2pnvme_vfio_user::Backend as _;
    let d = tempfile::tempdir().unwrap();
    let mut be = crate::tests::hostile::backend(&d);
    let flag = be.ctrl.lock().unwrap().cmb_unreachable();
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

/// The controller's health as the launcher reads it from the stats socket.
fn health(h: &TestHost) -> p2pnvme_docs::stats::ControllerHealth {
    let c = crate::control::Control {
        stats: vec![h.ctrl.stats.clone()],
        faults: h.ctrl.faults.clone(),
        trace: Default::default(),
    };
    let view: p2pnvme_docs::stats::HealthView = serde_json::from_str(&c.answer("get")).unwrap();
    view.controllers[0]
        .health
        .expect("the stats document reports health")
}

#[test]
fn stats_report_fatal_status_and_removal_until_the_counters_reset() {
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    assert_eq!(health(&h), Default::default(), "a healthy controller");
    h.fault("op=write,nth=1,cfs");
    let w = crate::testhost::rw_command(io::WRITE, 0, 1, buf, 0, false);
    assert!(h.submit(1, w).is_none());
    let after = health(&h);
    assert!(after.cfs && !after.removed, "{after:?}");
    assert_eq!(after.fatal_errors, 1);
    h.ctrl.stats.reset();
    assert_eq!(health(&h), Default::default(), "reset clears it");
    let d = tempfile::tempdir().unwrap();
    let (mut h, buf, _) = io_host(&d);
    h.fault("op=read,nth=1,remove");
    assert!(read(&mut h, buf, 8).is_none());
    let after = health(&h);
    assert!(after.removed && !after.cfs, "{after:?}");
}
