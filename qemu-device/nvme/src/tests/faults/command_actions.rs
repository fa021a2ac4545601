//! Actions on the command a rule fires on: status, delay, never, partial
//! DMA, a completion without its interrupt.

use super::*;

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
    let (mut a, _b) = peer_pair(&d);
    let cba_b = PEER_CMB;
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
