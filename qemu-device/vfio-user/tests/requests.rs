//! Requests from the server to the client (DMA_READ, DMA_WRITE): a backend
//! thread sends them while the message thread goes on serving the client,
//! and each reply reaches the thread waiting for it; no answer, an error
//! answer or a client gone fail the request, never the connection.

mod common;

use common::*;
use p2pnvme_vfio_user::wire::*;
use p2pnvme_vfio_user::{ClientRequests, RequestError};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(5);

/// The handle the server gave the backend when the client connected.
fn handle(
    p: &Pair,
    be: &std::sync::Arc<std::sync::Mutex<Option<ClientRequests>>>,
) -> ClientRequests {
    let start = Instant::now();
    loop {
        if let Some(r) = be.lock().unwrap().clone() {
            return r;
        }
        assert!(start.elapsed() < PATIENCE, "no connected() call");
        assert!(!p.server.is_finished());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn started() -> (Pair, ClientRequests) {
    let be = p2pnvme_vfio_user::testing::FakeBackend::new();
    let slot = be.requests.clone();
    let p = serve(be);
    let r = handle(&p, &slot);
    (p, r)
}

/// Answers the server's request `req` with `payload` (or an errno).
fn answer(c: &Client, req: &Header, payload: &[u8], errno: Option<u32>) {
    let mut h = Header {
        msg_id: req.msg_id,
        command: req.command,
        message_size: (HEADER_SIZE + payload.len()) as u32,
        flags: flags::REPLY,
        error_no: 0,
    };
    if let Some(e) = errno {
        h.flags |= flags::ERROR;
        h.error_no = e;
        h.message_size = HEADER_SIZE as u32;
    }
    let mut bytes = h.to_bytes();
    if errno.is_none() {
        bytes.extend_from_slice(payload);
    }
    c.send(&bytes, &[]);
}

fn still_in_sync(c: &mut Client) {
    let r = c.call(cmd::REGION_READ, &region_rw(7, 0, 2, &[]), &[]);
    assert_eq!(r.errno(), 0);
}

#[test]
fn dma_read_and_write_go_to_the_client_while_it_is_served_and_replies_reach_the_waiting_thread() {
    let (mut p, r) = started();
    let worker = {
        let r = r.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            r.dma_read(0x1000, &mut buf, PATIENCE).map(|()| buf)
        })
    };
    let req = p.client.read_message();
    assert_eq!(req.header.command, cmd::DMA_READ);
    assert_eq!(req.header.flags & flags::TYPE_MASK, flags::REQUEST);
    let rw = DmaRw::parse(&req.payload).unwrap();
    assert_eq!((rw.offset, rw.count), (0x1000, 16));
    // The message thread serves the client while the worker waits.
    still_in_sync(&mut p.client);
    let mut reply = vec![];
    rw.write(&mut reply);
    reply.extend(0..16u8);
    answer(&p.client, &req.header, &reply, None);
    let got = worker.join().unwrap().expect("dma_read");
    assert_eq!(got.to_vec(), (0..16u8).collect::<Vec<_>>());

    let worker = {
        let r = r.clone();
        std::thread::spawn(move || r.dma_write(0x2000, b"peer-cmb", PATIENCE))
    };
    let req = p.client.read_message();
    assert_eq!(req.header.command, cmd::DMA_WRITE);
    let rw = DmaRw::parse(&req.payload).unwrap();
    assert_eq!((rw.offset, rw.count), (0x2000, 8));
    assert_eq!(&req.payload[DmaRw::SIZE..], b"peer-cmb");
    answer(&p.client, &req.header, &[], None);
    worker.join().unwrap().expect("dma_write");
    still_in_sync(&mut p.client);
}

#[test]
fn an_unanswered_request_times_out_and_its_late_reply_is_dropped() {
    let (mut p, r) = started();
    let mut buf = [0u8; 8];
    let start = Instant::now();
    let e = r
        .dma_read(0x1000, &mut buf, Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(e, RequestError::Timeout(_)), "{e}");
    assert!(start.elapsed() < PATIENCE);
    let req = p.client.read_message();
    let mut late = vec![];
    DmaRw::parse(&req.payload).unwrap().write(&mut late);
    late.extend([0u8; 8]);
    answer(&p.client, &req.header, &late, None);
    still_in_sync(&mut p.client);
}

#[test]
fn a_request_stops_waiting_once_its_caller_gives_up_and_its_late_reply_is_dropped() {
    let (mut p, r) = started();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let worker = std::thread::spawn(move || {
        let give_up = || flag.load(std::sync::atomic::Ordering::Acquire);
        r.dma_write_unless(0x4000, &[2; 4], PATIENCE, &give_up)
    });
    let req = p.client.read_message();
    let start = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let e = worker.join().unwrap().unwrap_err();
    assert!(matches!(e, RequestError::GaveUp), "{e}");
    assert!(start.elapsed() < PATIENCE / 10, "{:?}", start.elapsed());
    answer(&p.client, &req.header, &[], None);
    still_in_sync(&mut p.client);
}

#[test]
fn an_error_reply_fails_the_request_with_its_errno() {
    let (p, r) = started();
    let worker = std::thread::spawn(move || r.dma_write(0x3000, &[1; 4], PATIENCE));
    let req = p.client.read_message();
    answer(&p.client, &req.header, &[], Some(libc::EFAULT as u32));
    let e = worker.join().unwrap().unwrap_err();
    assert!(
        matches!(e, RequestError::Refused(n) if n == libc::EFAULT as u32),
        "{e}"
    );
}

#[test]
fn a_client_gone_fails_the_waiting_request_at_once_and_later_ones_too() {
    let (p, r) = started();
    let worker = {
        let r = r.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut buf = [0u8; 8];
            (
                r.dma_read(0x1000, &mut buf, Duration::from_secs(30)),
                start.elapsed(),
            )
        })
    };
    let _req = p.client.read_message();
    p.finish();
    let (res, took) = worker.join().unwrap();
    assert!(matches!(res, Err(RequestError::Closed)), "{res:?}");
    assert!(took < PATIENCE, "waited {took:?}");
    let mut buf = [0u8; 8];
    assert!(matches!(
        r.dma_read(0, &mut buf, PATIENCE),
        Err(RequestError::Closed)
    ));
}
