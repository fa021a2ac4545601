//! Shadow doorbells (NVMe Doorbell Buffer Config, admin opcode 7Ch). The
//! driver keeps I/O queue tails and heads in a page of its own memory and
//! writes the real doorbell only when the event index we publish asks for
//! it. Every doorbell write is a vfio-user round trip QEMU waits for, so
//! this is the main lever on the cost per I/O. Linux uses it for I/O queues
//! only; the admin queue keeps its MMIO doorbells.

use crate::dma::route::Kind;
use crate::dma::Dma;
use std::sync::atomic::{fence, Ordering};

#[derive(Clone, Copy, Debug)]
pub struct DoorbellBuffer {
    shadow: u64,
    eventidx: u64,
}

/// Which doorbell of a queue pair.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bell {
    SqTail,
    CqHead,
}

impl DoorbellBuffer {
    /// Both buffers are one memory page each (CAP.DSTRD is 0: 4-byte slots).
    pub fn new(shadow: u64, eventidx: u64, dma: &Dma) -> Option<DoorbellBuffer> {
        let page_ok = |a: u64| a != 0 && a & 0xfff == 0 && dma.classify(a, 4096).is_ok();
        (page_ok(shadow) && page_ok(eventidx)).then_some(DoorbellBuffer { shadow, eventidx })
    }

    fn slot(qid: usize, bell: Bell) -> u64 {
        (2 * qid as u64 + (bell == Bell::CqHead) as u64) * 4
    }

    /// The value the driver last wrote to the shadow doorbell.
    pub fn read(&self, dma: &Dma, qid: usize, bell: Bell) -> Option<u16> {
        let mut b = [0u8; 4];
        dma.read(Kind::Meta, self.shadow + Self::slot(qid, bell), &mut b)
            .ok()?;
        Some(u32::from_le_bytes(b) as u16)
    }

    /// Asks for a doorbell write once the driver moves the value past `v`.
    pub fn set_event(&self, dma: &Dma, qid: usize, bell: Bell, v: u16) {
        let at = self.eventidx + Self::slot(qid, bell);
        // A page the driver unmapped: the event index is simply not published.
        let _ = dma.write(Kind::Meta, at, &(v as u32).to_le_bytes());
    }

    /// Publishes `seen` as the event index, then reads the shadow again: a
    /// driver that read the old index and skipped the doorbell wrote its new
    /// value before that read, so the second read here sees it (the fences
    /// on both sides pair up, as with virtio's event index).
    pub fn settle(&self, dma: &Dma, qid: usize, bell: Bell, seen: u16) -> Option<u16> {
        self.set_event(dma, qid, bell, seen);
        fence(Ordering::SeqCst);
        self.read(dma, qid, bell)
    }
}
