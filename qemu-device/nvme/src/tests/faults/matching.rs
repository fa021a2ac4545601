//! Which commands a rule matches (queue, NSID, LBA, class, target,
//! controller, probability) and how rules are installed.

use super::*;

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
    let (mut a, _b) = peer_pair(&d);
    let cba_b = PEER_CMB;
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
