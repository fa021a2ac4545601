//! The CMB registers, queues and lists in the CMB, peer-to-peer DMA.

use super::*;

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
