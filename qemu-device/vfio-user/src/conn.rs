//! One client connection: reading whole messages with their file
//! descriptors (SCM_RIGHTS) and writing replies. Nothing here trusts the
//! header: sizes are checked before anything is allocated, and a message
//! the server refuses is still read to its end so the stream stays in sync.

use crate::wire::{Header, HEADER_SIZE, MAX_MESSAGE_SIZE, MAX_MSG_FDS};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How often a blocked read looks at the stop flag.
const POLL_MS: i32 = 100;
/// Control buffer room: twice the advertised fds, so "a few too many" is
/// seen and refused rather than silently cut by the kernel.
const CMSG_FDS: usize = 2 * MAX_MSG_FDS;
/// Chunk used to skip the payload of an oversized message.
const DISCARD_CHUNK: usize = 64 * 1024;

/// Why a received message cannot be handled although the stream is in sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Defect {
    /// `message_size` above [`MAX_MESSAGE_SIZE`]; the payload was skipped.
    TooLarge,
    /// More fds than [`MAX_MSG_FDS`] (or the kernel cut them); all closed.
    TooManyFds,
}

/// One whole message.
pub(crate) struct Message {
    pub header: Header,
    /// The bytes after the header (empty when `defect` is `TooLarge`).
    pub payload: Vec<u8>,
    /// The fds that came with it, closed when dropped.
    pub fds: Vec<OwnedFd>,
    pub defect: Option<Defect>,
}

/// What reading the next message gave.
pub(crate) enum Received {
    Message(Message),
    /// The client closed the connection (possibly in the middle of a
    /// message: the partial message is dropped).
    Closed,
    /// The stop flag was raised.
    Stopped,
}

/// Errors that end a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error(
        "header message_size {0} is smaller than the header; the stream cannot be resynchronised"
    )]
    SizeBelowHeader(u32),
}

/// Outcome of filling a buffer.
enum Fill {
    Done,
    Eof,
    Stopped,
}

pub(crate) struct Conn<'a> {
    stream: UnixStream,
    stop: &'a AtomicBool,
    writer: Arc<Writer>,
}

/// The sending half of a connection, shared by the message thread (replies)
/// and the backend's threads (requests to the client): one whole message
/// at a time.
pub(crate) struct Writer {
    stream: UnixStream,
    lock: Mutex<()>,
}

impl Writer {
    /// Ends the connection for everyone holding this half (a backend may
    /// keep its request handle past the connection): the client sees EOF.
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Writes one message (header + payload) with optional fds.
    pub fn send(&self, header: &Header, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut bytes = header.to_bytes();
        bytes.extend_from_slice(payload);
        let _whole = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent = 0;
        while sent < bytes.len() {
            let with_fds = if sent == 0 { fds } else { &[] };
            match send_with_fds(self.stream.as_raw_fd(), &bytes[sent..], with_fds) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<'a> Conn<'a> {
    pub fn new(stream: UnixStream, stop: &'a AtomicBool) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        let writer = Arc::new(Writer {
            stream: stream.try_clone()?,
            lock: Mutex::new(()),
        });
        Ok(Conn {
            stream,
            stop,
            writer,
        })
    }

    /// The sending half, for requests to the client.
    pub fn writer(&self) -> Arc<Writer> {
        self.writer.clone()
    }

    /// Reads the next whole message.
    pub fn receive(&mut self) -> Result<Received, ConnError> {
        let mut fds = Vec::new();
        let mut cut = false;
        let mut hdr = [0u8; HEADER_SIZE];
        match self.fill(&mut hdr, &mut fds, &mut cut)? {
            Fill::Done => {}
            Fill::Eof => return Ok(Received::Closed),
            Fill::Stopped => return Ok(Received::Stopped),
        }
        let header = Header::parse(&hdr).expect("buffer is HEADER_SIZE long");
        let size = header.message_size as usize;
        if size < HEADER_SIZE {
            return Err(ConnError::SizeBelowHeader(header.message_size));
        }
        let mut defect = None;
        let mut payload = Vec::new();
        let left = size - HEADER_SIZE;
        if size > MAX_MESSAGE_SIZE {
            defect = Some(Defect::TooLarge);
            let mut chunk = vec![0u8; DISCARD_CHUNK];
            let mut rest = left;
            while rest > 0 {
                let n = rest.min(DISCARD_CHUNK);
                match self.fill(&mut chunk[..n], &mut fds, &mut cut)? {
                    Fill::Done => rest -= n,
                    Fill::Eof => return Ok(Received::Closed),
                    Fill::Stopped => return Ok(Received::Stopped),
                }
            }
        } else {
            payload = vec![0u8; left];
            match self.fill(&mut payload, &mut fds, &mut cut)? {
                Fill::Done => {}
                Fill::Eof => return Ok(Received::Closed),
                Fill::Stopped => return Ok(Received::Stopped),
            }
        }
        if cut || fds.len() > MAX_MSG_FDS {
            fds.clear();
            defect = defect.or(Some(Defect::TooManyFds));
        }
        Ok(Received::Message(Message {
            header,
            payload,
            fds,
            defect,
        }))
    }

    /// Writes one message (header + payload) with optional fds.
    pub fn send(&mut self, header: &Header, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
        self.writer.send(header, payload, fds)
    }

    /// Fills `buf` from the socket, collecting fds; waits in short polls so
    /// a raised stop flag is noticed.
    fn fill(
        &mut self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        cut: &mut bool,
    ) -> Result<Fill, ConnError> {
        let mut got = 0;
        while got < buf.len() {
            if !self.wait_readable()? {
                return Ok(Fill::Stopped);
            }
            match recv_with_fds(self.stream.as_raw_fd(), &mut buf[got..], fds, cut) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Fill::Eof),
                Err(e) => return Err(e.into()),
            }
            if fds.len() > CMSG_FDS {
                // Never hold more than a bounded number of fds open.
                fds.truncate(CMSG_FDS);
                *cut = true;
            }
        }
        Ok(Fill::Done)
    }

    /// Waits until the socket is readable; false if the stop flag rose.
    fn wait_readable(&self) -> io::Result<bool> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let mut p = libc::pollfd {
                fd: self.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r > 0 {
                // POLLHUP/POLLERR too: the read then reports EOF or the error.
                return Ok(true);
            }
        }
    }
}

/// Control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; cmsg_space(CMSG_FDS)]);

const fn cmsg_space(nfds: usize) -> usize {
    // CMSG_SPACE is not const in libc; 16-byte cmsghdr + data rounded to 8.
    16 + (nfds * 4).div_ceil(8) * 8
}

fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    cut: &mut bool,
) -> io::Result<usize> {
    let mut cmsg = CmsgBuf([0; cmsg_space(CMSG_FDS)]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr is a valid "no name, no control" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    // SAFETY: msg points at live buffers of the stated lengths.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        *cut = true;
    }
    // SAFETY: walking the control buffer the kernel filled, with the libc
    // macros; every SCM_RIGHTS entry holds fds now owned by this process.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const i32;
                let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / 4 {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n as usize)
}

fn send_with_fds(sock: RawFd, buf: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut cmsg = CmsgBuf([0; cmsg_space(CMSG_FDS)]);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr is valid; fields set below point at live data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let fds = &fds[..fds.len().min(CMSG_FDS)];
    if !fds.is_empty() {
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations; the
        // buffer is large enough for CMSG_FDS fds.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            let data = libc::CMSG_DATA(c) as *mut i32;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
    }
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends raw bytes with fds on a socket: for tests and the fuzz target,
/// which play the client.
#[cfg(any(test, feature = "test-utils"))]
pub(crate) fn send_raw(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        let with_fds = if sent == 0 { fds } else { &[] };
        match send_with_fds(sock.as_raw_fd(), &bytes[sent..], with_fds) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives whatever is there (up to `buf.len()` bytes) with its fds: the
/// client side of tests.
#[cfg(any(test, feature = "test-utils"))]
pub(crate) fn recv_raw(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut cut = false;
    let n = recv_with_fds(sock.as_raw_fd(), buf, &mut fds, &mut cut)?;
    Ok((n, fds))
}
