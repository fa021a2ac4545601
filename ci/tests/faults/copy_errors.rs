//! A copy that a fault breaks part-way (a media error on a read, a failed
//! DMA into the peer's CMB): p2pcopy fails with EIO after whole waves,
//! names the failing device, and gives every P2P page back.

use super::*;

/// A p2p copy that `rule` breaks part-way: the copy fails with EIO after
/// some whole waves, P2P memory comes back, the control copy and the same
/// copy again succeed, and the module unloads.
fn broken_copy(k: Kernel, rule: &str, status: u16) -> Run {
    let rules = vec![rule.to_string()];
    let run = scenario(
        k,
        &rules,
        &[],
        &format!("sh /opt/p2pnvme/ci/fault-copy.sh {OFF} {CONTROL} {LEN}"),
    );
    let (kv, doc) = (&run.kv, &run.stats);
    assert_eq!(run.code, Some(0), "the guest script ran to its end");
    // The control: the same copy elsewhere, and the same range once the
    // rule has fired, succeed in full.
    assert_eq!(kv.num("control_rc"), 0);
    assert_eq!(kv.json("control_json")["bytes_done"], LEN);
    assert_eq!(kv.num("again_rc"), 0, "the copy works after the fault");
    assert_eq!(kv.json("again_json")["bytes_done"], LEN);
    // The faulted copy: EIO, some but not all bytes, whole waves only.
    assert_ne!(kv.num("fault_rc"), 0);
    let f = kv.json("fault_json");
    assert_eq!(f["errno"], EIO, "{f}");
    let done = f["bytes_done"].as_u64().unwrap();
    assert!(done > 0 && done < LEN, "bytes done {done} of {LEN}");
    assert_eq!(done % WAVE, 0, "bytes done count whole waves: {done}");
    // P2P memory: every byte is back after the failure.
    assert_eq!(kv.num("avail_after_fault"), kv.num("avail_before"));
    assert_eq!(kv.num("avail_after"), kv.num("avail_before"));
    assert_eq!(kv.num("rmmod_rc"), 0, "the module unloads");
    assert_eq!(kv.num("loaded"), 0);
    assert_eq!(fired(doc, 0, rule), 1, "the rule fired once");
    // The kernel log names the device whose read failed.
    let src = kv.get("src");
    let line = kv.log(&["p2pcopy: ", &format!("read of {src} failed")]);
    assert_eq!(
        line.len(),
        1,
        "one p2pcopy line naming {src}: {:?}",
        kv.dmesg
    );
    assert!(line[0].contains(kv.get("provider")), "{}", line[0]);
    assert!(
        line[0].contains(&format!("after {done} bytes")),
        "{}",
        line[0]
    );
    // The device's trace: one faulted command, a read with that status.
    let hit: Vec<_> = run.trace.iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(hit.len(), 1, "{hit:?}");
    assert_eq!(
        (hit[0].op.as_str(), hit[0].status),
        ("read", status),
        "{hit:?}"
    );
    run
}

#[test]
fn media_error_mid_copy_fails_with_eio_and_frees_p2p_memory() {
    let rule = format!("ctrl=0,op=read,{},nth=10,status=0x281", lbas(OFF, LEN));
    let run = broken_copy(Kernel::Debian, &rule, 0x281);
    let kv = &run.kv;
    // The nvme driver reports the media error (SCT 2h SC 81h, no retry:
    // DNR) on the source's read (opcode 2); the block layer calls it
    // ENODATA, p2pcopy returns EIO (its ABI; the errno check above guards it).
    let src = kv.get("src");
    assert!(
        !kv.log(&[&format!("{src}: I/O Cmd(0x2)"), "sct 0x2 / sc 0x81", "DNR"])
            .is_empty(),
        "{:?}",
        kv.dmesg
    );
}

fn peer_dma_fault(k: Kernel) {
    let rule = format!(
        "ctrl=0,target=peer,op=read,{},nth=10,dma-fail=65536",
        lbas(OFF, LEN)
    );
    let run = broken_copy(k, &rule, 0x004);
    let kv = &run.kv;
    let (src, dst) = (kv.get("src"), kv.get("dst"));
    // The failed read's data was going to the peer's CMB (controller 1).
    let hit = run.trace.iter().find(|r| r.fault.is_some()).unwrap();
    assert!(
        hit.segments
            .iter()
            .any(|s| s.target == SegmentTarget::Peer && s.peer == Some(1)),
        "{hit:?}"
    );
    // The driver's line names the source controller's namespace and the
    // Data Transfer Error; nothing blames the destination.
    assert!(
        !kv.log(&[&format!("{src}: I/O Cmd(0x2)"), "sct 0x0 / sc 0x4)", "DNR"])
            .is_empty(),
        "{:?}",
        kv.dmesg
    );
    assert!(kv.log(&[&format!("of {dst} failed")]).is_empty());
}

#[test]
fn peer_cmb_dma_fault_mid_copy_names_the_failing_device() {
    peer_dma_fault(Kernel::Debian);
}

#[test]
fn minimal_kernel_peer_cmb_dma_fault_mid_copy_names_the_failing_device() {
    peer_dma_fault(Kernel::Minimal);
}
