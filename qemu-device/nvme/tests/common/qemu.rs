//! Playing QEMU's side of the device's requests (DMA_READ/DMA_WRITE),
//! completions and counters, for tests of DMA the device places by asking
//! the client.

use super::{Device, Start};
use p2pnvme_device::testhost::SocketHost;
use p2pnvme_vfio_user::build::ReplyMsg;
use p2pnvme_vfio_user::wire::{cmd, DmaRw};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// One peer group of two controllers: controller 0 ready for I/O, and
/// controller 1's client, which must stay (its CMB is renewed when it
/// leaves), with that CMB's memfd.
pub struct PeerGroup {
    pub d: Device,
    pub h: SocketHost,
    pub peer: SocketHost,
    pub cmb: std::fs::File,
}

impl PeerGroup {
    /// Starts the device as `s` says, both controllers in one group.
    pub fn start(s: Start<'_>) -> PeerGroup {
        let d = Device::start_with(Start {
            one_group: true,
            ..s
        });
        let mut h = SocketHost::connect(&d.sockets[0]).unwrap();
        assert!(h.enable() && h.create_io_queue(), "controller 0 ready");
        let mut peer = SocketHost::connect(&d.sockets[1]).unwrap();
        let cmb = std::fs::File::from(peer.cmb_fd().expect("controller 1's CMB fd"));
        PeerGroup { d, h, peer, cmb }
    }
}

/// The device's counters (stats socket `get`).
pub fn stats(d: &Device) -> serde_json::Value {
    let mut s = std::os::unix::net::UnixStream::connect(&d.stats).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"get\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// Plays QEMU for one request of the device: DMA_WRITE lands in, DMA_READ
/// reads from, `cmb` at `page` (the CMB page the IOVA maps to).
pub fn serve(h: &SocketHost, cmb: &std::fs::File, iova_page: u64, page: u64) -> ReplyMsg {
    let req = h.client.next_request();
    let rw = DmaRw::parse(&req.payload).expect("DmaRw");
    let at = page + (rw.offset - iova_page);
    match req.header.command {
        cmd::DMA_WRITE => {
            cmb.write_all_at(&req.payload[DmaRw::SIZE..], at).unwrap();
            h.client.answer(&req.header, &[]);
        }
        cmd::DMA_READ => {
            let mut data = vec![0u8; rw.count as usize];
            cmb.read_exact_at(&mut data, at).unwrap();
            let mut reply = vec![];
            rw.write(&mut reply);
            reply.extend(data);
            h.client.answer(&req.header, &reply);
        }
        c => panic!("unexpected request {c}"),
    }
    req
}

/// The status of the next I/O completion (waits up to 10 s).
pub fn complete(h: &mut SocketHost, d: &mut Device) -> (u8, u8) {
    complete_within(h, d, Duration::from_secs(10))
}

/// The status of the next I/O completion, which must come within `limit`.
pub fn complete_within(h: &mut SocketHost, d: &mut Device, limit: Duration) -> (u8, u8) {
    let start = Instant::now();
    loop {
        if let Some(c) = h.reap_io().first() {
            return (c.sct, c.sc);
        }
        assert!(
            start.elapsed() < limit,
            "no completion; alive {}: {}",
            d.alive(),
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A write (`slba`, 8 blocks) whose data the client answers a probe of
/// with bytes no CMB of the group holds (not a CMB, or a lying client):
/// not placed, not counted, Data Transfer Error.
pub fn a_write_of_bytes_no_cmb_holds_fails(
    h: &mut SocketHost,
    d: &mut Device,
    slba: u64,
    addr: u64,
) {
    assert!(h.submit_io(&[p2pnvme_device::testhost::rw_command(
        0x01, slba, 8, addr, 0, false
    )]));
    let req = h.client.next_request();
    let rw = DmaRw::parse(&req.payload).unwrap();
    let mut reply = vec![];
    rw.write(&mut reply);
    reply.extend((0..rw.count).map(|i| (i * 13 + 5) as u8));
    h.client.answer(&req.header, &reply);
    assert_eq!(
        complete(h, d),
        (0, 4),
        "content found nowhere: Data Transfer Error"
    );
}
