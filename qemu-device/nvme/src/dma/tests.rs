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

#[test]
fn every_address_class() {
    let (ram, cmbs) = setup();
    let stats = Counters::new(0, "t");
    let d = Dma {
        ctrl: 0,
        ram: &ram,
        cmbs: &cmbs,
        bus_master: true,
        stats: &stats,
        cut: None,
    };
    assert_eq!(d.classify(0x10_0000, 4096), Ok(Target::GuestRam));
    assert_eq!(d.classify(0xfe00_1000, 4096), Ok(Target::OwnCmb));
    assert_eq!(d.classify(0xfd00_1000, 4096), Ok(Target::PeerCmb(1)));
    assert_eq!(d.classify(0x20_0000, 1), Err(DmaFault), "unmapped");
    assert_eq!(d.classify(0x1f_ffff, 2), Err(DmaFault), "leaves RAM");
    assert_eq!(d.classify(0xfe1f_ffff, 2), Err(DmaFault), "leaves the CMB");
    assert_eq!(d.classify(u64::MAX, 2), Err(DmaFault), "wraps");
    // A peer writes into our CMB and we read it back.
    let peer = Dma {
        ctrl: 1,
        ram: &ram,
        cmbs: &cmbs,
        bus_master: true,
        stats: &stats,
        cut: None,
    };
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
