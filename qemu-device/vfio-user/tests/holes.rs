//! One regression test per hole of the old server (vfio_user 0.1.7 and the
//! device's wrapper around it), each named after what it guards.

mod common;

use common::*;
use p2pnvme_vfio_user::build::{message, Client};
use p2pnvme_vfio_user::testing::{Call, BAR2_SIZE};
use p2pnvme_vfio_user::wire::*;
use p2pnvme_vfio_user::{End, Server, MAX_DATA_XFER};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

const EINVAL: u32 = libc::EINVAL as u32;

/// The connection still answers a well-formed request correctly.
fn still_in_sync(c: &mut Client) {
    let r = c.call(cmd::REGION_READ, &region_rw(7, 0, 2, &[]), &[]);
    assert_eq!(r.errno(), 0);
    assert_eq!(&r.payload[16..18], &0x1234u16.to_le_bytes());
}

#[test]
fn region_access_past_the_end_is_refused_without_wrapping() {
    let mut p = pair();
    // offset 2^64 - 4096 + 4096 wraps to 0 in unchecked arithmetic.
    let top = 0u64.wrapping_sub(4096);
    for (region, offset, count) in [(2, top, 4096), (2, BAR2_SIZE - 4, 8), (0, u64::MAX, 1)] {
        let r = p.client.call(
            cmd::REGION_READ,
            &region_rw(region, offset, count, &[]),
            &[],
        );
        assert_eq!(r.errno(), EINVAL, "read {region} {offset:#x}+{count}");
        let data = vec![0u8; count as usize];
        let r = p.client.call(
            cmd::REGION_WRITE,
            &region_rw(region, offset, count, &data),
            &[],
        );
        assert_eq!(r.errno(), EINVAL, "write {region} {offset:#x}+{count}");
    }
    still_in_sync(&mut p.client);
    let (be, _) = p.finish();
    assert!(be.calls.iter().all(|c| !matches!(c, Call::Write { .. })));
}

#[test]
fn dma_map_fd_shorter_than_offset_plus_size_is_refused() {
    let mut p = pair();
    let mem = memfd(0x4000);
    let r = p.client.call(
        cmd::DMA_MAP,
        &dma_map(0x100000, 0x4000, 0x1000, dma::READ | dma::WRITE),
        &[mem.as_raw_fd()],
    );
    assert_eq!(r.errno(), EINVAL);
    // A pipe is not memory at all.
    let (rd, _wr) = std::io::pipe().unwrap();
    let r = p.client.call(
        cmd::DMA_MAP,
        &dma_map(0, 0x1000, 0, dma::READ),
        &[rd.as_raw_fd()],
    );
    assert_eq!(r.errno(), EINVAL);
    let (be, _) = p.finish();
    assert_eq!(be.calls, [Call::Disconnected]);
}

#[test]
fn fdless_dma_map_at_top_of_address_space_is_refused() {
    let mut p = pair();
    let top = 0u64.wrapping_sub(0x1000);
    let r = p
        .client
        .call(cmd::DMA_MAP, &dma_map(top, 0x2000, 0, dma::READ), &[]);
    assert_eq!(r.errno(), EINVAL);
    let r = p
        .client
        .call(cmd::DMA_UNMAP, &dma_unmap(top, 0x2000, 0), &[]);
    assert_eq!(r.errno(), EINVAL);
    // Unaligned and empty maps too.
    let r = p
        .client
        .call(cmd::DMA_MAP, &dma_map(0x1001, 0x1000, 0, dma::READ), &[]);
    assert_eq!(r.errno(), EINVAL);
    let r = p
        .client
        .call(cmd::DMA_MAP, &dma_map(0x1000, 0, 0, dma::READ), &[]);
    assert_eq!(r.errno(), EINVAL);
    let (be, _) = p.finish();
    assert_eq!(be.calls, [Call::Disconnected]);
}

#[test]
fn malformed_version_gets_an_error_not_a_panic() {
    let mut p = pair();
    let cases: [&[u8]; 7] = [
        b"",                                 // shorter than major/minor
        &[0, 0],                             // half of it
        &version(b"{\"capabilities\":{}}"),  // no NUL
        &version(b"{\"capabilities\":\0"),   // not JSON
        &version(b"[1,2]\0"),                // not an object
        &version(b"{\"capabilities\":7}\0"), // capabilities not an object
        &version(&[0xff, 0xfe, 0]),          // not UTF-8
    ];
    for c in cases {
        assert_eq!(p.client.call(cmd::VERSION, c, &[]).errno(), EINVAL, "{c:?}");
    }
    let mut v = version(b"{}\0");
    v[0] = 1; // major 1
    assert_eq!(
        p.client.call(cmd::VERSION, &v, &[]).errno(),
        libc::ENOTSUP as u32
    );
    // Deeply nested JSON is refused by the parser's depth limit, no stack overflow.
    let mut deep = vec![b'['; 100_000];
    deep.push(0);
    assert_eq!(
        p.client.call(cmd::VERSION, &version(&deep), &[]).errno(),
        EINVAL
    );
    still_in_sync(&mut p.client);
    p.finish();
}

#[test]
fn unsupported_commands_are_consumed_and_refused() {
    let mut p = pair();
    let junk = vec![0xa5u8; 300];
    let unsupported = [6, 11, 12, 14, 15, 17, 18, 0, 19, 999, 0xffff];
    for command in unsupported {
        let r = p.client.call(command, &junk, &[]);
        assert_eq!(r.errno(), libc::ENOTSUP as u32, "command {command}");
        still_in_sync(&mut p.client);
    }
    let r = p.client.call(cmd::DEVICE_FEATURE, &junk, &[]);
    assert_eq!(r.errno(), libc::ENOTTY as u32);
    still_in_sync(&mut p.client);
    let (_, s) = p.finish();
    assert_eq!(s.refused, unsupported.len() as u64 + 1);
    assert_eq!(s.requests[cmd::DMA_READ as usize], 1);
    assert_eq!(s.requests[0], 4, "unknown numbers count in slot 0");
}

#[test]
fn set_irqs_huge_count_is_refused() {
    let mut p = pair();
    let none = irq::DATA_NONE | irq::ACTION_TRIGGER;
    let ev = irq::DATA_EVENTFD | irq::ACTION_TRIGGER;
    for (flags, start, count) in [
        (none, 0, u32::MAX),
        (ev, 0, u32::MAX),
        (none, u32::MAX, 2), // start + count wraps
        (none, 1, 1),        // past the single INTx vector
        (irq::DATA_NONE | irq::ACTION_MASK, 0, 0),
        (none | irq::ACTION_MASK, 0, 1), // two actions
        (irq::DATA_BOOL | irq::ACTION_TRIGGER, 0, 1),
    ] {
        let r = p
            .client
            .call(cmd::DEVICE_SET_IRQS, &irq_set(flags, 0, start, count), &[]);
        assert_ne!(r.errno(), 0, "flags {flags:#x} {start}+{count}");
    }
    // An index the device does not have (MSI, count 0) or does not know.
    for index in [1, 5, u32::MAX] {
        let r = p
            .client
            .call(cmd::DEVICE_SET_IRQS, &irq_set(none, index, 0, 0), &[]);
        assert_eq!(r.errno(), EINVAL);
    }
    // More fds than the count says.
    let (a, b) = (eventfd(), eventfd());
    let r = p
        .client
        .call(cmd::DEVICE_SET_IRQS, &irq_set(ev, 0, 0, 1), &raw(&[&a, &b]));
    assert_eq!(r.errno(), EINVAL);
    let (be, _) = p.finish();
    assert_eq!(be.calls, [Call::Disconnected]);
}

#[test]
fn pipe_as_interrupt_fd_is_refused() {
    let mut p = pair();
    let (rd, wr) = std::io::pipe().unwrap();
    let ev = irq::DATA_EVENTFD | irq::ACTION_TRIGGER;
    let r = p.client.call(
        cmd::DEVICE_SET_IRQS,
        &irq_set(ev, 0, 0, 1),
        &[wr.as_raw_fd()],
    );
    assert_eq!(r.errno(), EINVAL);
    let mem = memfd(4096);
    let r = p.client.call(
        cmd::DEVICE_SET_IRQS,
        &irq_set(ev, 0, 0, 1),
        &[mem.as_raw_fd()],
    );
    assert_eq!(r.errno(), EINVAL);
    drop(rd);
    let (be, _) = p.finish();
    assert_eq!(be.calls, [Call::Disconnected]);
}

#[test]
fn region_message_larger_than_max_is_refused() {
    let mut p = pair();
    // A read asking for 4 GiB - 1 allocates nothing.
    let r = p
        .client
        .call(cmd::REGION_READ, &region_rw(0, 0, u32::MAX, &[]), &[]);
    assert_eq!(r.errno(), EINVAL);
    let r = p.client.call(
        cmd::REGION_READ,
        &region_rw(0, 0, MAX_DATA_XFER as u32 + 1, &[]),
        &[],
    );
    assert_eq!(r.errno(), EINVAL);
    // A message above the maximum is skipped whole, then refused.
    let big = vec![0u8; MAX_MESSAGE_SIZE + 1];
    let r = p.client.call(cmd::REGION_WRITE, &big, &[]);
    assert_eq!(r.errno(), libc::E2BIG as u32);
    // A write whose count disagrees with its data.
    let r = p
        .client
        .call(cmd::REGION_WRITE, &region_rw(0, 0, 8, &[1, 2]), &[]);
    assert_eq!(r.errno(), EINVAL);
    still_in_sync(&mut p.client);
    p.finish();
}

#[test]
fn too_many_fds_are_refused_and_closed() {
    let mut p = pair();
    // Every fd sent is the write end of one pipe: once the server has closed
    // all its copies and ours is dropped, the read end sees EOF.
    let (mut rd, wr) = std::io::pipe().unwrap();
    let raws = vec![wr.as_raw_fd(); MAX_MSG_FDS + 1];
    let ev = irq::DATA_EVENTFD | irq::ACTION_TRIGGER;
    let r = p.client.call(
        cmd::DEVICE_SET_IRQS,
        &irq_set(ev, 0, 0, raws.len() as u32),
        &raws,
    );
    assert_eq!(r.errno(), EINVAL);
    // fds on a command that takes none are closed and refused.
    let r = p.client.call(cmd::DEVICE_RESET, &[], &raws[..2]);
    assert_eq!(r.errno(), EINVAL);
    still_in_sync(&mut p.client);
    drop(wr);
    let mut buf = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut rd, &mut buf).unwrap(),
        0,
        "the server kept an fd open"
    );
    let (be, _) = p.finish();
    assert_eq!(be.calls.last(), Some(&Call::Disconnected));
}

#[test]
fn truncated_message_then_disconnect_calls_disconnected() {
    let p = pair();
    let msg = message(1, cmd::REGION_WRITE, 0, &region_rw(0, 0, 64, &[7; 64]));
    p.client.send(&msg[..40], &[]);
    let (be, s) = p.finish();
    assert_eq!(be.calls, [Call::Disconnected]);
    assert_eq!(s.end, End::Closed);
    // A header shorter than itself cannot be resynchronised: the server
    // closes, and still tells the backend.
    let p = pair();
    let mut bad = message(2, cmd::DEVICE_RESET, 0, &[]);
    bad[4..8].copy_from_slice(&8u32.to_le_bytes());
    p.client.send(&bad, &[]);
    let (be, s) = p.server.join().unwrap();
    assert_eq!(be.calls, [Call::Disconnected]);
    assert!(matches!(s.end, End::Error(_)));
}

#[test]
fn client_can_reconnect_after_disconnect_and_state_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.sock");
    let (stop, t) = serve_socket(&path);
    for round in 0..2u64 {
        let mut c = Client::new(UnixStream::connect(&path).unwrap());
        let mem = memfd(0x1000);
        let r = c.call(
            cmd::DMA_MAP,
            &dma_map(round << 20, 0x1000, 0, 3),
            &[mem.as_raw_fd()],
        );
        assert_eq!(r.errno(), 0);
        still_in_sync(&mut c);
    }
    // Give the server a moment to see the second client go.
    std::thread::sleep(Duration::from_millis(300));
    stop.stop();
    let be = t.join().unwrap();
    let kinds: Vec<_> = be
        .calls
        .iter()
        .filter(|c| !matches!(c, Call::Read { .. }))
        .cloned()
        .collect();
    assert_eq!(
        kinds,
        [
            Call::DmaMap {
                iova: 0,
                size: 0x1000,
                has_fd: true
            },
            Call::Disconnected,
            Call::DmaMap {
                iova: 1 << 20,
                size: 0x1000,
                has_fd: true
            },
            Call::Disconnected,
        ]
    );
    assert!(!path.exists(), "the socket file goes with the server");
}

#[test]
fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.sock");
    let live = Server::bind(&path).unwrap();
    let err = Server::bind(&path).unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap());
    std::fs::File::create(dir.path().join("x"))
        .unwrap()
        .flush()
        .unwrap();
    let stale = Server::bind(dir.path().join("stale.sock")).unwrap();
    drop((live, stale));
}

#[test]
fn stop_handle_ends_a_connection_blocked_on_a_silent_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.sock");
    let (stop, t) = serve_socket(&path);
    let _silent = UnixStream::connect(&path).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.stop();
    let be = t.join().unwrap();
    assert_eq!(be.calls, [Call::Disconnected]);
}
