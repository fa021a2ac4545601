//! DMA to an IOVA no DMA_MAP announced (QEMU's virtio-iommu passes on no
//! MMIO mapping, so a peer CMB page behind it arrives that way), against
//! the real `p2pnvme-device` binary with a raw vfio-user client playing
//! QEMU: with `unannounced-dma=probe` the device asks the client about each
//! IOMMU page on every DMA (DMA_WRITE of a nonce, DMA_READ for a read),
//! moves the data straight into the peer CMB page it is and counts it as
//! that peer's; without it, Data Transfer Error at once, no request sent.

mod common;

use common::qemu::{a_write_of_bytes_no_cmb_holds_fails, complete, serve, stats, PeerGroup};
use common::{Device, Start};
use p2pnvme_device::testhost::{rw_command, SocketHost, DATA};
use p2pnvme_vfio_user::wire::{cmd, DmaRw};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Unannounced IOVAs (never DMA_MAPped), one guest IOMMU page each.
const IOVA: u64 = 0x20_0000_0000;
/// The pages of controller 1's CMB the IOVA pages map to: scattered, as a
/// guest IOMMU maps them.
const PAGE_A: u64 = 7 * 4096;
const PAGE_B: u64 = 3 * 4096;
const PAGE_R: u64 = 11 * 4096;
const DATA_TRANSFER_ERROR: (u8, u8) = (0, 4);

fn pattern(seed: u32, len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Serves the next request, which must be about IOVA page `iova_page`.
fn serve_page(h: &SocketHost, cmb: &std::fs::File, iova_page: u64, page: u64, want: u16) {
    let req = serve(h, cmb, iova_page, page);
    let rw = DmaRw::parse(&req.payload).unwrap();
    assert_eq!(req.header.command, want, "request kind");
    assert_eq!(rw.offset & !0xfff, iova_page, "the device asks per page");
}

#[test]
fn an_unannounced_iova_is_placed_in_the_peer_cmb_per_page_when_probing_is_on() {
    let PeerGroup {
        mut d,
        mut h,
        peer: _peer,
        cmb,
    } = PeerGroup::start(Start {
        ctrl_keys: &["unannounced-dma=probe"],
        ..Default::default()
    });
    let data = pattern(1, 8192);
    h.write_mem(DATA, &data[..4096]);
    h.write_mem(DATA + 4096, &data[4096..]);
    assert!(h.submit_io(&[rw_command(0x01, 0, 16, DATA, DATA + 4096, false)]));
    assert_eq!(complete(&mut h, &mut d), (0, 0), "write of the pattern");

    // A Read into two unannounced IOVA pages that are two scattered CMB
    // pages: one DMA_WRITE probe per page, the data lands in each.
    assert!(h.submit_io(&[rw_command(0x02, 0, 16, IOVA, IOVA + 4096, false)]));
    serve_page(&h, &cmb, IOVA, PAGE_A, cmd::DMA_WRITE);
    serve_page(&h, &cmb, IOVA + 4096, PAGE_B, cmd::DMA_WRITE);
    assert_eq!(complete(&mut h, &mut d), (0, 0), "read into the peer CMB");
    let mut got = vec![0u8; 4096];
    cmb.read_exact_at(&mut got, PAGE_A).unwrap();
    assert!(got == data[..4096], "first page in CMB page A");
    cmb.read_exact_at(&mut got, PAGE_B).unwrap();
    assert!(got == data[4096..], "second page in CMB page B");

    // Nothing tells the device when the guest remaps the IOVA: it asks
    // again on the next DMA, and follows the page to its new place.
    assert!(h.submit_io(&[rw_command(0x02, 0, 8, IOVA, 0, false)]));
    serve_page(&h, &cmb, IOVA, PAGE_R, cmd::DMA_WRITE);
    assert_eq!(complete(&mut h, &mut d), (0, 0), "read after a remap");
    cmb.read_exact_at(&mut got, PAGE_R).unwrap();
    assert!(got == data[..4096], "the page followed the remap");

    // A Write from an unannounced page: one DMA_READ probe of its content.
    let unique = pattern(99, 4096);
    cmb.write_all_at(&unique, PAGE_R).unwrap();
    assert!(h.submit_io(&[rw_command(0x01, 32, 8, IOVA, 0, false)]));
    serve_page(&h, &cmb, IOVA, PAGE_R, cmd::DMA_READ);
    assert_eq!(complete(&mut h, &mut d), (0, 0), "write from the peer CMB");
    h.write_mem(DATA, &[0u8; 4096]);
    assert!(h.submit_io(&[rw_command(0x02, 32, 8, DATA, 0, false)]));
    assert_eq!(complete(&mut h, &mut d), (0, 0));
    h.read_mem(DATA, &mut got);
    assert!(got == unique, "the peer CMB page reached the namespace");

    // Content no CMB of the group holds: not placed, not counted.
    a_write_of_bytes_no_cmb_holds_fails(&mut h, &mut d, 40, IOVA);

    let s = stats(&d);
    let data = &s["controllers"][0]["data"];
    assert_eq!(data["peer_cmb"]["by_peer"]["1"]["written"], 12288, "{data}");
    assert_eq!(data["peer_cmb"]["by_peer"]["1"]["read"], 4096, "{data}");
    assert_eq!(data["guest_ram"]["written"], 4096, "{data}");
    assert!(d.alive(), "{}", d.stderr());
}

#[test]
fn an_unannounced_iova_fails_at_once_with_data_transfer_error_when_probing_is_off() {
    let mut d = Device::start_with(Start {
        one_group: true,
        ..Default::default()
    });
    let mut h = SocketHost::connect(&d.sockets[0]).unwrap();
    assert!(h.enable() && h.create_io_queue(), "controller 0 ready");
    let start = Instant::now();
    assert!(h.submit_io(&[rw_command(0x02, 0, 8, IOVA, 0, false)]));
    // Unanswered, a probe would wait 2 s before failing.
    assert_eq!(complete(&mut h, &mut d), DATA_TRANSFER_ERROR);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "the device waited for a probe: {:?}",
        start.elapsed()
    );
    let s = stats(&d);
    assert_eq!(s["controllers"][0]["data"]["peer_cmb"]["written"], 0, "{s}");
    assert!(d.alive(), "{}", d.stderr());
}
