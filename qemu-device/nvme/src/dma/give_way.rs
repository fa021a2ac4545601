//! A worker's DMA that waits for the client (a probe, see `remote`) gives
//! way to the message thread: while the worker holds its controller's lock
//! and waits for QEMU, QEMU may be waiting for the reply to a message whose
//! handling needs that lock (SET_IRQS, a register write), and the replies
//! the worker waits for come in on the message thread. The message thread
//! says it waits; the probe stops waiting and says it gave way; the worker
//! then parks the command and runs it again after the message.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Threads waiting for the controller lock, and whether a DMA gave way.
#[derive(Default)]
pub struct GiveWay {
    waiting: AtomicUsize,
    gave_way: AtomicBool,
}

/// A thread's wait for the controller lock (ends when dropped).
pub struct Waiting<'a>(&'a GiveWay);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GiveWay {
    /// A thread starts waiting for the lock; it stops when the guard drops.
    pub fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self)
    }

    /// Whether a thread waits for the lock.
    pub fn anyone_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// A DMA stopped waiting for the client for them.
    pub(super) fn gave_way(&self) {
        self.gave_way.store(true, Ordering::Release);
    }

    /// Whether a DMA gave way since the last call (the command that ran
    /// it must run again).
    pub fn take(&self) -> bool {
        self.gave_way.swap(false, Ordering::AcqRel)
    }
}
