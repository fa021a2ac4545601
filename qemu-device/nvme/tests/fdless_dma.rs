//! DMA into memory the client mapped without a file descriptor (QEMU: a
//! peer controller's CMB behind a guest IOMMU), against the real
//! `p2pnvme-device` binary with a raw vfio-user client playing QEMU: the
//! device asks the client once (DMA_WRITE of a nonce into a writable map,
//! DMA_READ of a read-only one), finds which CMB page of its group the map
//! is, moves the data straight there and counts it as that peer's bytes;
//! content it cannot place in one peer's CMB fails the command (Data
//! Transfer Error), never counted as a CMB it may not be.

mod common;

use common::qemu::{a_write_of_bytes_no_cmb_holds_fails, complete, serve, stats, PeerGroup};
use common::Start;
use p2pnvme_device::testhost::{rw_command, DATA};
use p2pnvme_vfio_user::build;
use p2pnvme_vfio_user::wire::{cmd, dma};
use std::os::unix::fs::FileExt;

/// The IOVAs of the fd-less maps (one guest IOMMU page each).
const WRITABLE: u64 = 0x10_0000_0000;
const READ_ONLY: u64 = 0x10_0000_1000;
const ZEROS: u64 = 0x10_0000_2000;
/// The pages of controller 1's CMB they are.
const PAGE_W: u64 = 5 * 4096;
const PAGE_R: u64 = 9 * 4096;
const PAGE_Z: u64 = 12 * 4096;

#[test]
fn dma_through_a_map_without_fd_reaches_the_peer_cmb_it_is_and_counts_as_that_peer() {
    let PeerGroup {
        mut d,
        mut h,
        peer: _peer,
        cmb,
    } = PeerGroup::start(Start::default());
    let rw = dma::READ | dma::WRITE;
    for (iova, flags) in [(WRITABLE, rw), (READ_ONLY, dma::READ), (ZEROS, dma::READ)] {
        let r = h
            .client
            .call(cmd::DMA_MAP, &build::dma_map(iova, 4096, 0, flags), &[]);
        assert_eq!(r.errno(), 0, "fd-less DMA_MAP at {iova:#x}");
    }
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 251) as u8).collect();
    h.write_mem(DATA, &pattern);
    assert!(h.submit_io(&[rw_command(0x01, 0, 8, DATA, 0, false)])); // LBA 0..8
    assert_eq!(complete(&mut h, &mut d), (0, 0), "write of the pattern");

    // A Read into the writable map: one DMA_WRITE probe, then the data.
    assert!(h.submit_io(&[rw_command(0x02, 0, 8, WRITABLE, 0, false)]));
    let probe = serve(&h, &cmb, WRITABLE, PAGE_W);
    assert_eq!(
        probe.header.command,
        cmd::DMA_WRITE,
        "a writable map is probed by writing"
    );
    assert_eq!(complete(&mut h, &mut d), (0, 0), "read into the peer CMB");
    let mut got = vec![0u8; 4096];
    cmb.read_exact_at(&mut got, PAGE_W).unwrap();
    assert!(got == pattern, "the data is in the peer's CMB page");
    // Found once: the next DMA there needs no message.
    assert!(h.submit_io(&[rw_command(0x02, 8, 8, WRITABLE, 0, false)]));
    assert_eq!(complete(&mut h, &mut d), (0, 0), "second read, no probe");

    // A Write from the read-only map: one DMA_READ probe of its content.
    let unique: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    cmb.write_all_at(&unique, PAGE_R).unwrap();
    assert!(h.submit_io(&[rw_command(0x01, 16, 8, READ_ONLY, 0, false)]));
    let probe = serve(&h, &cmb, READ_ONLY, PAGE_R);
    assert_eq!(
        probe.header.command,
        cmd::DMA_READ,
        "a read-only map is probed by reading"
    );
    assert_eq!(complete(&mut h, &mut d), (0, 0), "write from the peer CMB");
    h.write_mem(DATA, &[0u8; 4096]);
    assert!(h.submit_io(&[rw_command(0x02, 16, 8, DATA, 0, false)]));
    assert_eq!(complete(&mut h, &mut d), (0, 0));
    h.read_mem(DATA, &mut got);
    assert!(got == unique, "the peer CMB page reached the namespace");

    // A page of zeros is in many places, all of controller 1's CMB: the
    // same bytes wherever it is, read and counted as controller 1's.
    assert!(h.submit_io(&[rw_command(0x01, 24, 8, ZEROS, 0, false)]));
    serve(&h, &cmb, ZEROS, PAGE_Z);
    assert_eq!(complete(&mut h, &mut d), (0, 0), "zeros of the peer's CMB");
    // Not placed for good: the next DMA there asks again.
    assert!(h.submit_io(&[rw_command(0x01, 24, 8, ZEROS, 0, false)]));
    serve(&h, &cmb, ZEROS, PAGE_Z);
    assert_eq!(complete(&mut h, &mut d), (0, 0));

    // Content the client answers that no CMB of the group holds (not a
    // CMB, or a lying client): not placed, not counted.
    a_write_of_bytes_no_cmb_holds_fails(&mut h, &mut d, 32, ZEROS);

    let s = stats(&d);
    let data = &s["controllers"][0]["data"];
    assert_eq!(data["peer_cmb"]["by_peer"]["1"]["written"], 8192, "{data}");
    assert_eq!(data["peer_cmb"]["by_peer"]["1"]["read"], 3 * 4096, "{data}");
    assert!(d.alive(), "{}", d.stderr());
}
