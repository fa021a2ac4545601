//! Shared test helpers: a server thread on one end of a socketpair.

#![allow(dead_code)]

use p2pnvme_vfio_user::testing::{Client, FakeBackend};
use p2pnvme_vfio_user::wire::*;
use p2pnvme_vfio_user::{serve_connection, Summary};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

pub struct Pair {
    pub client: Client,
    pub server: JoinHandle<(FakeBackend, Summary)>,
}

pub fn serve(backend: FakeBackend) -> Pair {
    let (a, b) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut be = backend;
        let s = serve_connection(b, &mut be);
        (be, s)
    });
    Pair {
        client: Client::new(a),
        server,
    }
}

pub fn pair() -> Pair {
    serve(FakeBackend::new())
}

impl Pair {
    /// Closes the client end and returns what the server saw.
    pub fn finish(self) -> (FakeBackend, Summary) {
        drop(self.client);
        self.server.join().expect("server thread panicked")
    }
}

fn bytes<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

pub fn dma_map(iova: u64, size: u64, offset: u64, flags: u32) -> Vec<u8> {
    bytes(|v| {
        DmaMapMsg {
            argsz: DmaMapMsg::SIZE as u32,
            flags,
            offset,
            iova,
            size,
        }
        .write(v)
    })
}

pub fn dma_unmap(iova: u64, size: u64, flags: u32) -> Vec<u8> {
    bytes(|v| {
        DmaUnmapMsg {
            argsz: DmaUnmapMsg::SIZE as u32,
            flags,
            iova,
            size,
        }
        .write(v)
    })
}

pub fn region_info(index: u32, argsz: u32) -> Vec<u8> {
    bytes(|v| {
        RegionInfoMsg {
            argsz,
            index,
            ..Default::default()
        }
        .write(v)
    })
}

pub fn irq_set(flags: u32, index: u32, start: u32, count: u32) -> Vec<u8> {
    bytes(|v| {
        IrqSetMsg {
            argsz: IrqSetMsg::SIZE as u32,
            flags,
            index,
            start,
            count,
        }
        .write(v)
    })
}

pub fn region_rw(region: u32, offset: u64, count: u32, data: &[u8]) -> Vec<u8> {
    let mut v = bytes(|v| {
        RegionAccess {
            offset,
            region,
            count,
        }
        .write(v)
    });
    v.extend_from_slice(data);
    v
}

pub fn version(json: &[u8]) -> Vec<u8> {
    let mut v = bytes(|v| Version { major: 0, minor: 0 }.write(v));
    v.extend_from_slice(json);
    v
}

pub fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh fd.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).unwrap();
    f
}

pub fn eventfd() -> OwnedFd {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub fn raw(fds: &[&dyn AsRawFd]) -> Vec<i32> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}
