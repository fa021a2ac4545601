//! The fuzz harness (run by fuzz/ and by the crate's tests): an input
//! format that carries raw message bytes plus a few file descriptors, one
//! run of [`serve_connection`](crate::serve_connection) against the
//! contract-checking [`FakeBackend`](crate::testing::FakeBackend), and seed
//! inputs with a valid message of every command.
//!
//! Input: `[eventfds & 7][memfds & 3][pages per memfd...][pipe & 1]` then
//! records `[fd spec][len: u16 le][len bytes]`, at most [`MAX_RECORDS`].
//! A record's bytes are written to the socket in one `sendmsg` with
//! `spec & 15` fds from the pool, starting at pool entry `spec >> 4`.
//! Record boundaries need not match message boundaries.

use crate::build::{self, message};
use crate::conn::send_raw;
use crate::testing::FakeBackend;
use crate::wire::{cmd, dma, flags, irq, HEADER_SIZE};
use crate::{serve_connection, Summary};
use std::fs::File;
use std::io::Read;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most records taken from one input.
pub const MAX_RECORDS: usize = 64;

/// A decoded fuzz input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// Eventfds in the pool (0..=7).
    pub eventfds: u8,
    /// Memfds in the pool, each this many pages long (0..=3 of them).
    pub memfd_pages: Vec<u8>,
    /// Whether the write end of a pipe joins the pool.
    pub pipe: bool,
    /// (fd spec, bytes) written one `sendmsg` each.
    pub records: Vec<(u8, Vec<u8>)>,
}

impl Input {
    /// Parses fuzz bytes; never fails (missing bytes read as zero, a short
    /// last record takes what is there).
    pub fn decode(data: &[u8]) -> Input {
        let mut it = data.iter().copied();
        let mut next = || it.next().unwrap_or(0);
        let eventfds = next() & 7;
        let n_mem = next() & 3;
        let memfd_pages = (0..n_mem).map(|_| next()).collect();
        let pipe = next() & 1 == 1;
        let head = 3 + usize::from(n_mem);
        let mut rest = data.get(head..).unwrap_or(&[]);
        let mut records = Vec::new();
        while rest.len() >= 3 && records.len() < MAX_RECORDS {
            let spec = rest[0];
            let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
            let body = &rest[3..];
            let take = len.min(body.len());
            records.push((spec, body[..take].to_vec()));
            rest = &body[take..];
        }
        Input {
            eventfds,
            memfd_pages,
            pipe,
            records,
        }
    }

    /// The bytes [`Input::decode`] turns back into this input (records
    /// longer than 65535 bytes are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.eventfds & 7, (self.memfd_pages.len() & 3) as u8];
        v.extend(self.memfd_pages.iter().take(3));
        v.push(u8::from(self.pipe));
        for (spec, bytes) in self.records.iter().take(MAX_RECORDS) {
            let len = bytes.len().min(usize::from(u16::MAX));
            v.push(*spec);
            v.extend_from_slice(&(len as u16).to_le_bytes());
            v.extend_from_slice(&bytes[..len]);
        }
        v
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    assert!(
        fd >= 0,
        "fd creation failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd from the call that returned it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn pool(input: &Input) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    for _ in 0..input.eventfds {
        // SAFETY: plain eventfd creation.
        fds.push(owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }));
    }
    for &pages in &input.memfd_pages {
        // SAFETY: memfd_create with a static name.
        let fd = owned(unsafe { libc::memfd_create(c"fuzz-mem".as_ptr(), libc::MFD_CLOEXEC) });
        let f = File::from(fd);
        f.set_len(u64::from(pages) * 4096).expect("memfd size");
        fds.push(f.into());
    }
    if input.pipe {
        let (rd, wr) = std::io::pipe().expect("pipe");
        drop(rd);
        fds.push(wr.into());
    }
    fds
}

/// One run: writes the records (with their fds) from a client thread that
/// then drains replies, serves the other end until EOF, and returns what
/// the server saw. The fake backend panics on any contract breach.
pub fn run(data: &[u8]) -> (FakeBackend, Summary) {
    let input = Input::decode(data);
    let fds = pool(&input);
    let (client, server) = UnixStream::pair().expect("socketpair");
    let writer = std::thread::spawn(move || {
        for (spec, bytes) in &input.records {
            let n = usize::from(spec & 15).min(fds.len());
            let first = usize::from(spec >> 4);
            let chosen: Vec<RawFd> = (0..n)
                .map(|i| fds[(first + i) % fds.len()].as_raw_fd())
                .collect();
            if send_raw(&client, bytes, &chosen).is_err() {
                break; // the server closed: a fatal header
            }
        }
        let _ = client.shutdown(Shutdown::Write);
        let mut sink = Vec::new();
        let _ = (&client).read_to_end(&mut sink);
    });
    let mut backend = FakeBackend::new();
    let summary = serve_connection(server, &mut backend);
    writer.join().expect("client thread");
    (backend, summary)
}

/// Named seed inputs: one valid message of every command, with the fds it
/// needs, plus a QEMU-like start-up sequence.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ev = irq::DATA_EVENTFD | irq::ACTION_TRIGGER;
    let none = irq::DATA_NONE;
    let caps = b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,\"max_dma_maps\":65535,\"migration\":{\"pgsize\":4096,\"max_bitmap_size\":268435456},\"write_multiple\":true}}\0";
    // (name, command, flags, payload, fd spec): eventfds sit at pool entries
    // 0..2, the memfd (16 pages) at 2, the pipe at 3.
    let msgs: Vec<(&str, u16, u32, Vec<u8>, u8)> = vec![
        ("version", cmd::VERSION, 0, build::version(caps), 0),
        (
            "dma_map_fd",
            cmd::DMA_MAP,
            0,
            build::dma_map(0x10000, 0x8000, 0x4000, dma::READ | dma::WRITE),
            0x21,
        ),
        (
            "dma_map_nofd",
            cmd::DMA_MAP,
            0,
            build::dma_map(0xfe000000, 0x1000, 0, dma::READ),
            0,
        ),
        (
            "dma_unmap",
            cmd::DMA_UNMAP,
            0,
            build::dma_unmap(0x10000, 0x8000, 0),
            0,
        ),
        (
            "dma_unmap_all",
            cmd::DMA_UNMAP,
            0,
            build::dma_unmap(0, 0, dma::UNMAP_ALL),
            0,
        ),
        ("get_info", cmd::DEVICE_GET_INFO, 0, build::device_info(), 0),
        (
            "region_info_bar2",
            cmd::DEVICE_GET_REGION_INFO,
            0,
            build::region_info(2, 64),
            0,
        ),
        (
            "region_info_short",
            cmd::DEVICE_GET_REGION_INFO,
            0,
            build::region_info(7, 32),
            0,
        ),
        ("io_fds", cmd::DEVICE_GET_REGION_IO_FDS, 0, vec![0; 16], 0),
        (
            "irq_info",
            cmd::DEVICE_GET_IRQ_INFO,
            0,
            build::irq_info(0),
            0,
        ),
        (
            "set_irqs_eventfd",
            cmd::DEVICE_SET_IRQS,
            0,
            build::irq_set(ev, 0, 0, 1),
            0x01,
        ),
        (
            "set_irqs_pipe",
            cmd::DEVICE_SET_IRQS,
            0,
            build::irq_set(ev, 0, 0, 1),
            0x31,
        ),
        (
            "set_irqs_deassign",
            cmd::DEVICE_SET_IRQS,
            0,
            build::irq_set(ev, 0, 0, 1),
            0,
        ),
        (
            "set_irqs_disable",
            cmd::DEVICE_SET_IRQS,
            0,
            build::irq_set(none | irq::ACTION_TRIGGER, 0, 0, 0),
            0,
        ),
        (
            "set_irqs_unmask",
            cmd::DEVICE_SET_IRQS,
            0,
            build::irq_set(none | irq::ACTION_UNMASK, 0, 0, 1),
            0,
        ),
        (
            "region_read",
            cmd::REGION_READ,
            0,
            build::region_rw(7, 0, 64, &[]),
            0,
        ),
        (
            "region_write",
            cmd::REGION_WRITE,
            0,
            build::region_rw(0, 8, 4, &[1, 2, 3, 4]),
            0,
        ),
        (
            "region_write_posted",
            cmd::REGION_WRITE,
            flags::NO_REPLY,
            build::region_rw(2, 0, 8, &[5; 8]),
            0,
        ),
        ("dma_read", cmd::DMA_READ, 0, vec![0; 16], 0),
        ("dma_write", cmd::DMA_WRITE, 0, vec![0; 24], 0),
        ("reset", cmd::DEVICE_RESET, 0, vec![], 0),
        ("dirty_pages", cmd::DIRTY_PAGES, 0, vec![0; 16], 0),
        (
            "write_multi",
            cmd::REGION_WRITE_MULTI,
            flags::NO_REPLY,
            vec![0; 32],
            0,
        ),
        ("device_feature", cmd::DEVICE_FEATURE, 0, vec![0; 8], 0),
    ];
    let input = |records: Vec<(u8, Vec<u8>)>| {
        Input {
            eventfds: 2,
            memfd_pages: vec![16],
            pipe: true,
            records,
        }
        .encode()
    };
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut session = Vec::new();
    for (i, (name, command, fl, payload, spec)) in msgs.into_iter().enumerate() {
        let m = message(i as u16, command, fl, &payload);
        session.push((spec, m.clone()));
        out.push((name, input(vec![(spec, m)])));
    }
    out.push(("session", input(session.clone())));
    // The same session cut into pieces that straddle message boundaries.
    let bytes: Vec<u8> = session.iter().flat_map(|(_, m)| m.clone()).collect();
    let piece = bytes.len().div_ceil(MAX_RECORDS).max(HEADER_SIZE + 1);
    let pieces = bytes.chunks(piece).map(|c| (0, c.to_vec())).collect();
    out.push(("session_split", input(pieces)));
    out
}
