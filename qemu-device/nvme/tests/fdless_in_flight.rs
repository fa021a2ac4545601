//! Messages meeting a DMA through a map without fd (QEMU: a peer's CMB
//! behind a guest IOMMU) in flight, against the real `p2pnvme-device`
//! binary with a raw vfio-user client playing QEMU:
//! - a DMA_UNMAP of that map is answered at once, fails the command (Data
//!   Transfer Error) and nothing reaches the CMB page through it after the
//!   reply, as for guest RAM;
//! - a message that needs the controller while the worker waits for the
//!   client's answer to a probe is answered at once (QEMU may be waiting
//!   for it before it can answer the probe), and the command runs again.

mod common;

use common::qemu::{complete_within, serve, PeerGroup};
use common::Start;
use p2pnvme_device::testhost::{rw_command, DATA};
use p2pnvme_vfio_user::build;
use p2pnvme_vfio_user::wire::{cmd, dma};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// The fd-less map (one guest IOMMU page) and the page of controller 1's
/// CMB it is.
const IOVA: u64 = 0x10_0000_0000;
const PAGE: u64 = 7 * 4096;
/// How long the rule holds the read's resolved memory before it moves.
const STALL_MS: u64 = 3000;
/// Data Transfer Error (generic status 04h).
const DATA_TRANSFER_ERROR: (u8, u8) = (0, 4);

/// The fd-less map at IOVA in a peer group, and LBA 0..8 holding a
/// pattern (returned).
fn setup(args: &[&str]) -> (PeerGroup, Vec<u8>) {
    let mut s = PeerGroup::start(Start {
        args,
        ..Default::default()
    });
    let map = build::dma_map(IOVA, 4096, 0, dma::READ | dma::WRITE);
    assert_eq!(s.h.client.call(cmd::DMA_MAP, &map, &[]).errno(), 0);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 251) as u8).collect();
    s.h.write_mem(DATA, &pattern);
    assert!(s.h.submit_io(&[rw_command(0x01, 0, 8, DATA, 0, false)]));
    assert_eq!(
        complete_within(&mut s.h, &mut s.d, Duration::from_secs(10)),
        (0, 0)
    );
    (s, pattern)
}

fn page(cmb: &File) -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    cmb.read_exact_at(&mut v, PAGE).unwrap();
    v
}

#[test]
fn an_unmap_of_a_placed_map_without_fd_fails_the_transfer_and_leaves_the_peer_cmb_alone() {
    let rule = format!("op=read,first=1,dma-stall-ms={STALL_MS}");
    let (mut s, pattern) = setup(&["--fault", &rule]);
    // The read into the map: placed by its probe, then held by the rule.
    assert!(s.h.submit_io(&[rw_command(0x02, 0, 8, IOVA, 0, false)]));
    serve(&s.h, &s.cmb, IOVA, PAGE);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let r =
        s.h.client
            .call(cmd::DMA_UNMAP, &build::dma_unmap(IOVA, 4096, 0), &[]);
    let answered = start.elapsed();
    assert_eq!(r.errno(), 0, "DMA_UNMAP");
    let after_reply = page(&s.cmb);
    assert!(
        answered < Duration::from_millis(STALL_MS / 3),
        "the unmap waited {answered:?} for the transfer in flight"
    );
    let status = complete_within(&mut s.h, &mut s.d, Duration::from_secs(15));
    assert_eq!(status, DATA_TRANSFER_ERROR, "the cut read's status");
    assert!(
        page(&s.cmb) == after_reply,
        "the peer's CMB page changed after the unmap was answered"
    );
    assert!(after_reply != pattern, "the read's data reached the page");
    assert!(s.d.alive(), "{}", s.d.stderr());
}

#[test]
fn a_probe_gives_way_to_a_message_that_needs_the_controller_and_its_command_runs_again() {
    let (mut s, pattern) = setup(&[]);
    assert!(s.h.submit_io(&[rw_command(0x02, 0, 8, IOVA, 0, false)]));
    // The probe comes; QEMU, busy with a vCPU's register write that
    // waits for its reply, does not answer it yet.
    let probe = s.h.client.next_request();
    assert_eq!(probe.header.command, cmd::DMA_WRITE, "a write probe");
    let intms = build::region_rw(0, 0x0c, 4, &0u32.to_le_bytes());
    let start = Instant::now();
    let r = s.h.client.call(cmd::REGION_WRITE, &intms, &[]);
    let answered = start.elapsed();
    assert_eq!(r.errno(), 0, "register write");
    assert!(
        answered < Duration::from_millis(500),
        "the register write waited {answered:?} for the probe's timeout"
    );
    // QEMU answers the old probe late (dropped), then the new one.
    s.h.client.answer(&probe.header, &[]);
    serve(&s.h, &s.cmb, IOVA, PAGE);
    let status = complete_within(&mut s.h, &mut s.d, Duration::from_secs(10));
    assert_eq!(
        status,
        (0, 0),
        "the read ran again and completed: {}",
        s.d.stderr()
    );
    assert!(
        page(&s.cmb) == pattern,
        "the data is in the peer's CMB page"
    );
    assert!(s.d.alive(), "{}", s.d.stderr());
}
