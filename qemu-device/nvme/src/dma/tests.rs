//! DMA resolution and counting over guest RAM, fd-less maps and CMB windows.

use super::*;
use std::sync::RwLock;

fn setup() -> (GuestRam, CmbRegistry) {
    let ram = GuestRam::default();
    let f = memfd("ram", 1 << 20).unwrap();
    ram.map(0x10_0000, 1 << 20, Some((f, 0)), Prot::RW).unwrap();
    ram.map(0xfe00_0000, 1 << 20, None, Prot::RW).unwrap(); // a directly mapped BAR, no fd
    let mut v = vec![];
    for (ctrl, base) in [(0usize, 0xfe00_0000u64), (1, 0xfd00_0000)] {
        let f = memfd("cmb", 2 << 20).unwrap();
        v.push(CmbWindow {
            ctrl,
            mem: Arc::new(Mapping::new(&f, 0, 2 << 20).unwrap()),
            base: Some(base),
            unreachable: false,
        });
    }
    (ram, Arc::new(RwLock::new(v)))
}

/// Controller `ctrl`'s DMA engine, bus master on, no fault cut.
fn dma<'a>(ctrl: usize, ram: &'a GuestRam, cmbs: &'a CmbRegistry, stats: &'a Counters) -> Dma<'a> {
    Dma {
        ctrl,
        ram,
        cmbs,
        bus_master: true,
        stats,
        cut: None,
        yields: false,
    }
}

#[test]
fn every_address_class() {
    let (ram, cmbs) = setup();
    let stats = Counters::new(0, "t");
    let d = dma(0, &ram, &cmbs, &stats);
    assert_eq!(d.classify(0x10_0000, 4096), Ok(Target::GuestRam));
    assert_eq!(d.classify(0xfe00_1000, 4096), Ok(Target::OwnCmb));
    assert_eq!(d.classify(0xfd00_1000, 4096), Ok(Target::PeerCmb(1)));
    assert_eq!(d.classify(0x20_0000, 1), Err(DmaFault), "unmapped");
    assert_eq!(d.classify(0x1f_ffff, 2), Err(DmaFault), "leaves RAM");
    assert_eq!(d.classify(0xfe1f_ffff, 2), Err(DmaFault), "leaves the CMB");
    assert_eq!(d.classify(u64::MAX, 2), Err(DmaFault), "wraps");
    // A peer writes into our CMB and we read it back.
    let peer = dma(1, &ram, &cmbs, &stats);
    assert_eq!(
        peer.write(Kind::Data, 0xfe00_2000, b"p2p"),
        Ok(Target::PeerCmb(0))
    );
    let mut b = [0u8; 3];
    assert_eq!(d.read(Kind::Meta, 0xfe00_2000, &mut b), Ok(Target::OwnCmb));
    assert_eq!(&b, b"p2p");
    // Each access counted itself, by kind, direction and target.
    let s = stats.to_json();
    assert_eq!(s["data"]["peer_cmb"]["by_peer"]["0"]["written"], 3);
    assert_eq!(s["meta"]["own_cmb"]["read"], 3);
    // A disabled CMB falls back to whatever else maps the address.
    cmbs.write().unwrap()[0].base = None;
    assert_eq!(d.classify(0xfe00_1000, 4096), Err(DmaFault));
}

/// Under a guest IOMMU every IOMMU page is its own DMA_MAP: a range that
/// is contiguous in IOVA runs through several sections that lie apart in
/// the host's memory, and DMA must follow them piece by piece.
#[test]
fn a_range_through_several_iommu_sections_is_moved_piece_by_piece() {
    let ram = GuestRam::default();
    let f = memfd("ram", 1 << 20).unwrap();
    // IOVA 0x1000_0000.. maps file pages 5, 2, 9, 0 in that order.
    for (i, page) in [5u64, 2, 9, 0].iter().enumerate() {
        let fd = f.try_clone().unwrap();
        ram.map(
            0x1000_0000 + i as u64 * 4096,
            4096,
            Some((fd, page * 4096)),
            Prot::RW,
        )
        .unwrap();
    }
    let cmbs: CmbRegistry = Arc::default();
    let stats = Counters::new(0, "t");
    let d = dma(0, &ram, &cmbs, &stats);
    assert_eq!(d.classify(0x1000_0000, 16384), Ok(Target::GuestRam));
    assert_eq!(
        d.classify(0x1000_0800, 16384),
        Err(DmaFault),
        "runs past the last map"
    );
    let data: Vec<u8> = (0..12288u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        d.write(Kind::Data, 0x1000_0800, &data),
        Ok(Target::GuestRam)
    );
    // The bytes went where each IOMMU page points in the host's memory.
    let mut page = [0u8; 2048];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut page, 2 * 4096).unwrap();
    assert_eq!(&page[..], &data[2048..4096], "IOVA page 1 is file page 2");
    let mut back = vec![0u8; data.len()];
    assert_eq!(
        d.read(Kind::Data, 0x1000_0800, &mut back),
        Ok(Target::GuestRam)
    );
    assert_eq!(back, data);
    // One transfer resolved for a backing file: four pieces, one iovec each.
    let r = d
        .resolve(&[(Some(0x1000_0000), 16384)], Kind::Data, Dir::Written)
        .unwrap();
    assert_eq!(r.targets().count(), 4);
    let s = stats.to_json();
    assert_eq!(s["data"]["guest_ram"]["written"], 12288);
    assert_eq!(s["data"]["guest_ram"]["read"], 12288);
}

#[test]
fn a_range_in_no_section_is_cut_at_each_iommu_page_only_when_probing() {
    let ram = GuestRam::default();
    ram.map(0x2000, 0x1000, None, Prot::RW).unwrap();
    // 0x800..0x3800: unannounced, one section, unannounced again.
    assert_eq!(ram.runs(0x800, 0x3000, None), None);
    assert_eq!(
        ram.runs(0x800, 0x3000, Some(0x1000)),
        Some(vec![
            (0x800, 0x800),
            (0x1000, 0x1000),
            (0x2000, 0x1000),
            (0x3000, 0x800)
        ])
    );
    assert!(ram.unannounced(0x1000, 0x1000) && !ram.unannounced(0x1800, 0x1000));
}
