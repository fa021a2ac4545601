//! DMA_UNMAP with I/O in flight, against the real `p2pnvme-device` binary
//! and a raw vfio-user client: as the vfio-user specification says, the
//! commands using the range fail (Data Transfer Error, error-log entry) and
//! nothing touches the memory once the unmap is answered; the answer does
//! not wait for the transfer.

mod common;

use common::qemu::complete_within;
use common::Device;
use p2pnvme_device::testhost::{rw_command, SocketHost, DATA};
use p2pnvme_vfio_user::build;
use p2pnvme_vfio_user::wire::{cmd, dma};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// The read's buffer: its own memfd, at an IOVA of its own.
const BUF: u64 = 0x1_0000_0000;
const LEN: u64 = 512 << 10;
/// How long the rule holds the read's resolved memory before it moves.
const STALL_MS: u64 = 3000;
/// Data Transfer Error (generic status 04h).
const DATA_TRANSFER_ERROR: (u8, u8) = (0, 4);
const FILL: u8 = 0xaa;

fn map_buffer(h: &mut SocketHost, buf: &std::fs::File) {
    let r = h.client.call(
        cmd::DMA_MAP,
        &build::dma_map(BUF, LEN, 0, dma::READ | dma::WRITE),
        &[buf.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0, "DMA_MAP of the buffer");
}

fn contents(buf: &std::fs::File) -> Vec<u8> {
    let mut v = vec![0u8; LEN as usize];
    buf.read_exact_at(&mut v, 0).unwrap();
    v
}

/// Submits a 512 KiB Read into BUF (PRP list at DATA); its completion.
fn read_into_buffer(
    h: &mut SocketHost,
    d: &mut Device,
    during: impl FnOnce(&mut SocketHost),
) -> (u8, u8) {
    let list: Vec<u8> = (1..LEN / 4096)
        .flat_map(|i| (BUF + i * 4096).to_le_bytes())
        .collect();
    h.write_mem(DATA, &list);
    assert!(h.submit_io(&[rw_command(0x02, 0, (LEN / 512) as u32, BUF, DATA, false)]));
    during(h);
    complete_within(h, d, Duration::from_secs(15))
}

#[test]
fn an_unmap_during_a_transfer_is_answered_at_once_and_fails_that_command_without_touching_the_memory(
) {
    let rule = format!("op=read,first=1,dma-stall-ms={STALL_MS}");
    let mut d = Device::start(&["--fault", &rule]);
    let mut h = SocketHost::connect(&d.sockets[0]).expect("connect");
    assert!(h.enable() && h.create_io_queue(), "controller ready");
    let buf = tempfile::tempfile().unwrap();
    buf.set_len(LEN).unwrap();
    buf.write_all_at(&vec![FILL; LEN as usize], 0).unwrap();
    map_buffer(&mut h, &buf);

    let mut answered = None;
    let mut after_reply = vec![];
    let status = read_into_buffer(&mut h, &mut d, |h| {
        // The worker has fetched the read and holds its memory (stalled).
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let r = h
            .client
            .call(cmd::DMA_UNMAP, &build::dma_unmap(BUF, LEN, 0), &[]);
        answered = Some(start.elapsed());
        assert_eq!(r.errno(), 0, "DMA_UNMAP");
        after_reply = contents(&buf);
    });
    let answered = answered.unwrap();
    assert!(
        answered < Duration::from_millis(STALL_MS / 3),
        "the unmap waited {answered:?} for the transfer in flight"
    );
    assert_eq!(status, DATA_TRANSFER_ERROR, "the cut read's status");
    assert!(
        contents(&buf) == after_reply,
        "the buffer changed after the unmap was answered"
    );
    assert!(
        after_reply.iter().all(|b| *b == FILL),
        "nothing reached the buffer"
    );

    // Error log (page 01h, newest entry first): SQ 1, Data Transfer Error.
    let log = DATA + 0x1000;
    let mut glp = p2pnvme_device::testhost::command(0x02, 0xffff_ffff);
    (glp.dw[6], glp.dw[7]) = (log as u32, (log >> 32) as u32);
    glp.dw[10] = 0x01 | (64 / 4 - 1) << 16;
    let c = h.admin(glp).expect("Get Log Page");
    assert!(c.ok(), "{c:?}");
    let mut e = [0u8; 64];
    h.read_mem(log, &mut e);
    let count = u64::from_le_bytes(e[0..8].try_into().unwrap());
    let sqid = u16::from_le_bytes(e[8..10].try_into().unwrap());
    let sf = u16::from_le_bytes(e[12..14].try_into().unwrap()) >> 1;
    assert!(count >= 1, "an error-log entry");
    assert_eq!((sqid, (sf >> 8 & 7) as u8, sf as u8), (1, 0, 4), "{e:?}");

    // The IOVA can be mapped again, and a read (no rule now) fills it.
    map_buffer(&mut h, &buf);
    assert_eq!(read_into_buffer(&mut h, &mut d, |_| {}), (0, 0));
    assert!(
        contents(&buf).iter().all(|b| *b == 0),
        "the namespace's zeros"
    );
    assert!(d.alive(), "{}", d.stderr());
}
