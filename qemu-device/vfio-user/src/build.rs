//! The client side, for tests and the fuzz harness: request payloads built
//! from the wire structs, whole messages, and a minimal blocking client.

use crate::conn::{recv_raw, send_raw};
use crate::wire::*;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

fn bytes<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

/// DMA_MAP payload.
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

/// DMA_UNMAP payload.
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

/// DEVICE_GET_REGION_INFO payload.
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

/// DEVICE_SET_IRQS payload.
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

/// REGION_READ/REGION_WRITE payload (`data` empty for a read).
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

/// VERSION payload: major/minor 0 and the given capability bytes.
pub fn version(json: &[u8]) -> Vec<u8> {
    let mut v = bytes(|v| Version { major: 0, minor: 0 }.write(v));
    v.extend_from_slice(json);
    v
}

/// DEVICE_GET_INFO payload.
pub fn device_info() -> Vec<u8> {
    bytes(|v| {
        DeviceInfo {
            argsz: DeviceInfo::SIZE as u32,
            ..Default::default()
        }
        .write(v)
    })
}

/// DEVICE_GET_IRQ_INFO payload.
pub fn irq_info(index: u32) -> Vec<u8> {
    bytes(|v| {
        IrqInfoMsg {
            argsz: IrqInfoMsg::SIZE as u32,
            index,
            ..Default::default()
        }
        .write(v)
    })
}

/// A whole message: header (size filled in) and payload.
pub fn message(msg_id: u16, command: u16, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Header {
        msg_id,
        command,
        message_size: (HEADER_SIZE + payload.len()) as u32,
        flags,
        error_no: 0,
    }
    .to_bytes();
    v.extend_from_slice(payload);
    v
}

/// The client end of a connection, for tests.
pub struct Client {
    /// The socket.
    pub sock: UnixStream,
    next_id: u16,
    /// Requests of the server read while waiting for a reply.
    requests: std::cell::RefCell<std::collections::VecDeque<ReplyMsg>>,
}

/// A reply as the client sees it.
#[derive(Debug)]
pub struct ReplyMsg {
    /// Its header.
    pub header: Header,
    /// Bytes after the header.
    pub payload: Vec<u8>,
    /// Fds that came with it.
    pub fds: Vec<OwnedFd>,
}

impl ReplyMsg {
    /// The errno of an error reply, 0 for success.
    pub fn errno(&self) -> u32 {
        if self.header.flags & crate::wire::flags::ERROR != 0 {
            self.header.error_no
        } else {
            0
        }
    }
}

impl Client {
    /// Wraps a connected socket.
    pub fn new(sock: UnixStream) -> Self {
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        Client {
            sock,
            next_id: 1,
            requests: Default::default(),
        }
    }

    /// Sends raw bytes with fds.
    pub fn send(&self, bytes: &[u8], fds: &[RawFd]) {
        self.try_send(bytes, fds).expect("send");
    }

    /// Sends raw bytes with fds; the error if the socket refused them (the
    /// server closed the connection).
    pub fn try_send(&self, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        send_raw(&self.sock, bytes, fds)
    }

    /// Sends a request and reads its reply.
    pub fn call(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> ReplyMsg {
        self.next_id = self.next_id.wrapping_add(1);
        self.send(&message(self.next_id, command, 0, payload), fds);
        let r = self.read_reply();
        assert_eq!(r.header.msg_id, self.next_id, "reply id");
        assert_eq!(r.header.command, command, "reply command");
        r
    }

    /// Reads the next reply from the server; requests of the server that
    /// come first are kept for [`Client::next_request`].
    pub fn read_reply(&self) -> ReplyMsg {
        use crate::wire::flags;
        loop {
            let r = self.read_message();
            if r.header.flags & flags::TYPE_MASK == flags::REQUEST {
                self.requests.borrow_mut().push_back(r);
                continue;
            }
            assert!(r.header.flags & flags::REPLY != 0, "not a reply");
            return r;
        }
    }

    /// The server's next request (DMA_READ/DMA_WRITE): one kept by
    /// [`Client::read_reply`], or the next message, which must be one.
    pub fn next_request(&self) -> ReplyMsg {
        if let Some(r) = self.requests.borrow_mut().pop_front() {
            return r;
        }
        let r = self.read_message();
        assert_eq!(
            r.header.flags & crate::wire::flags::TYPE_MASK,
            crate::wire::flags::REQUEST,
            "not a request of the server"
        );
        r
    }

    /// Answers the server's request `req` with `payload`.
    pub fn answer(&self, req: &Header, payload: &[u8]) {
        let mut bytes = Header::reply_to(req, payload.len()).to_bytes();
        bytes.extend_from_slice(payload);
        self.send(&bytes, &[]);
    }

    /// Reads one whole message from the server, a reply or a request of its
    /// own (DMA_READ/DMA_WRITE).
    pub fn read_message(&self) -> ReplyMsg {
        let mut fds = Vec::new();
        let mut hdr = [0u8; HEADER_SIZE];
        self.fill(&mut hdr, &mut fds);
        let header = Header::parse(&hdr).expect("header");
        let mut payload = vec![0u8; header.message_size as usize - HEADER_SIZE];
        self.fill(&mut payload, &mut fds);
        ReplyMsg {
            header,
            payload,
            fds,
        }
    }

    fn fill(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) {
        let mut got = 0;
        while got < buf.len() {
            let (n, more) = match recv_raw(&self.sock, &mut buf[got..]) {
                // A signal of the harness (libFuzzer's timers): read on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.expect("recv"),
            };
            assert!(n > 0, "server closed the connection");
            got += n;
            fds.extend(more);
        }
    }
}
