//! Shared test helpers: a server thread on one end of a socketpair.

#![allow(dead_code)]

pub use p2pnvme_vfio_user::build::*;
use p2pnvme_vfio_user::testing::FakeBackend;
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

/// A socket at `path` served on a thread by a fresh fake backend, which the
/// thread returns once the returned handle stops the server.
pub fn serve_socket(
    path: &std::path::Path,
) -> (p2pnvme_vfio_user::StopHandle, JoinHandle<FakeBackend>) {
    let server = p2pnvme_vfio_user::Server::bind(path).unwrap();
    let stop = server.stop_handle();
    let t = std::thread::spawn(move || {
        let mut be = FakeBackend::new();
        server.serve(&mut be).unwrap();
        be
    });
    (stop, t)
}
