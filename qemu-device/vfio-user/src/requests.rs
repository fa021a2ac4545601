//! Requests from the server to the client: DMA_READ and DMA_WRITE, for
//! memory the client mapped without a file descriptor (QEMU: a BAR of
//! another device, reached only through QEMU). Any thread of the backend
//! sends them on the connection's socket; the message thread hands each
//! reply to the thread waiting for it and never waits itself. A request
//! the client does not answer within its timeout fails, as does every
//! request once the client is gone.

use crate::conn::Writer;
use crate::wire::{cmd, flags, DmaRw, Header, HEADER_SIZE};
use crate::MAX_DATA_XFER;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a waiting request asks its caller whether to give up.
const GIVE_UP_LOOK: Duration = Duration::from_millis(1);

/// Why a request to the client failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No reply within the timeout.
    #[error("the client did not answer within {0:?}")]
    Timeout(Duration),
    /// The client answered with an error.
    #[error("the client refused the request: errno {0}")]
    Refused(u32),
    /// The connection is gone (or going).
    #[error("the client is gone")]
    Closed,
    /// A reply that does not fit its request.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The request could not be sent.
    #[error("sending the request: {0}")]
    Send(std::io::Error),
    /// The caller stopped waiting (its `give_up` said so); a late reply
    /// is dropped.
    #[error("gave up waiting for the client")]
    GaveUp,
}

/// A reply, as the message thread received it.
struct Answer {
    header: Header,
    payload: Vec<u8>,
}

struct Shared {
    writer: Arc<Writer>,
    pending: Mutex<HashMap<u16, Sender<Answer>>>,
    next_id: AtomicU16,
    closed: AtomicBool,
}

/// The handle a backend keeps to send requests to its current client
/// (see [`crate::Backend::connected`]); cheap to clone.
#[derive(Clone)]
pub struct ClientRequests(Arc<Shared>);

impl std::fmt::Debug for ClientRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRequests")
            .field("closed", &self.0.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl ClientRequests {
    pub(crate) fn new(writer: Arc<Writer>) -> ClientRequests {
        ClientRequests(Arc::new(Shared {
            writer,
            pending: Mutex::default(),
            next_id: AtomicU16::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    /// Reads `buf.len()` bytes of client memory at `iova` (DMA_READ, in
    /// pieces of at most [`MAX_DATA_XFER`] bytes).
    pub fn dma_read(
        &self,
        iova: u64,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<(), RequestError> {
        self.dma_read_unless(iova, buf, timeout, &|| false)
    }

    /// [`ClientRequests::dma_read`] that stops waiting as soon as
    /// `give_up` returns true (asked about every millisecond).
    pub fn dma_read_unless(
        &self,
        iova: u64,
        buf: &mut [u8],
        timeout: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<(), RequestError> {
        let mut at = iova;
        for chunk in buf.chunks_mut(MAX_DATA_XFER) {
            let count = chunk.len() as u64;
            let mut p = Vec::with_capacity(DmaRw::SIZE);
            DmaRw { offset: at, count }.write(&mut p);
            let reply = self.call(cmd::DMA_READ, &p, timeout, give_up)?;
            let head = DmaRw::parse(&reply)
                .ok_or_else(|| RequestError::Malformed("DMA_READ reply too short".into()))?;
            let data = &reply[DmaRw::SIZE..];
            if head.offset != at || head.count != count || data.len() != chunk.len() {
                return Err(RequestError::Malformed(format!(
                    "DMA_READ reply for {:#x}+{} bytes, asked {at:#x}+{count}",
                    head.offset,
                    data.len()
                )));
            }
            chunk.copy_from_slice(data);
            at = at.checked_add(count).ok_or(RequestError::Closed)?;
        }
        Ok(())
    }

    /// Writes `data` into client memory at `iova` (DMA_WRITE, in pieces of
    /// at most [`MAX_DATA_XFER`] bytes), waiting for each reply.
    pub fn dma_write(&self, iova: u64, data: &[u8], timeout: Duration) -> Result<(), RequestError> {
        self.dma_write_unless(iova, data, timeout, &|| false)
    }

    /// [`ClientRequests::dma_write`] that stops waiting as soon as
    /// `give_up` returns true (asked about every millisecond).
    pub fn dma_write_unless(
        &self,
        iova: u64,
        data: &[u8],
        timeout: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<(), RequestError> {
        let mut at = iova;
        for chunk in data.chunks(MAX_DATA_XFER) {
            let count = chunk.len() as u64;
            let mut p = Vec::with_capacity(DmaRw::SIZE + chunk.len());
            DmaRw { offset: at, count }.write(&mut p);
            p.extend_from_slice(chunk);
            self.call(cmd::DMA_WRITE, &p, timeout, give_up)?;
            at = at.checked_add(count).ok_or(RequestError::Closed)?;
        }
        Ok(())
    }

    /// Sends one request and waits for its reply's payload.
    fn call(
        &self,
        command: u16,
        payload: &[u8],
        timeout: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, RequestError> {
        let (tx, rx) = channel();
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.lock();
            // Checked under the lock `close` empties: no request is left
            // waiting for a connection that is gone.
            if self.0.closed.load(Ordering::Acquire) {
                return Err(RequestError::Closed);
            }
            pending.insert(id, tx);
        }
        let header = Header {
            msg_id: id,
            command,
            message_size: u32::try_from(HEADER_SIZE + payload.len()).unwrap_or(u32::MAX),
            flags: flags::REQUEST,
            error_no: 0,
        };
        if let Err(e) = self.0.writer.send(&header, payload, &[]) {
            self.lock().remove(&id);
            return Err(RequestError::Send(e));
        }
        let deadline = Instant::now() + timeout;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(GIVE_UP_LOOK)) {
                Ok(a) => break a,
                Err(RecvTimeoutError::Disconnected) => return Err(RequestError::Closed),
                Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                    self.lock().remove(&id);
                    return Err(RequestError::Timeout(timeout));
                }
                Err(RecvTimeoutError::Timeout) if give_up() => {
                    self.lock().remove(&id);
                    return Err(RequestError::GaveUp);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        };
        if answer.header.flags & flags::ERROR != 0 {
            return Err(RequestError::Refused(answer.header.error_no));
        }
        if answer.header.command != command {
            return Err(RequestError::Malformed(format!(
                "reply {id} is for command {}, not {command}",
                answer.header.command
            )));
        }
        Ok(answer.payload)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Sender<Answer>>> {
        self.0.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a reply to the thread waiting for it (message thread; never
    /// blocks); false when no request waits for that id (late or unasked).
    pub(crate) fn answer(&self, header: Header, payload: Vec<u8>) -> bool {
        match self.lock().remove(&header.msg_id) {
            Some(tx) => tx.send(Answer { header, payload }).is_ok(),
            None => false,
        }
    }

    /// The connection ended: the waiting requests fail now, later ones at
    /// once.
    pub(crate) fn close(&self) {
        let mut pending = self.lock();
        self.0.closed.store(true, Ordering::Release);
        pending.clear();
        self.0.writer.close();
    }
}
