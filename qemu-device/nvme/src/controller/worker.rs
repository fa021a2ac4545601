//! The worker's own state: whether work waits for it (commands or a
//! shutdown, or a command parked to run again), and the timing it works by
//! (shadow-doorbell polling, interrupt moderation, when it last fetched
//! commands).

use super::faults::Hook;
use crate::nvme::Sqe;
use std::time::{Duration, Instant};

/// A fetched command whose DMA gave way to a message waiting for the
/// controller lock (see `dma/give_way.rs`): it runs again, first thing, on
/// the next pass.
pub(crate) struct Parked {
    pub qid: usize,
    pub cqid: usize,
    pub sqe: Sqe,
    /// What fault rules and the trace noted at its fetch (not run twice).
    pub hook: Option<Hook>,
}

/// What the worker keeps between passes.
#[derive(Default)]
pub struct Worker {
    /// Commands or a shutdown wait for the worker (the vfio-user reply to
    /// a doorbell write does not wait for the I/O).
    work: bool,
    /// CC.SHN was set: the worker flushes, then reports SHST complete.
    shutdown_pending: bool,
    /// How long the worker keeps polling shadow SQ tails after the queues
    /// drain before it publishes event indices (and the driver rings
    /// again); the shadow part's pace shortens it while I/O is sparse.
    poll: Duration,
    /// Adaptive interrupt moderation (0: off): while the host has not
    /// set Interrupt Coalescing, an I/O vector's interrupt waits until no
    /// command arrived for this long (see `irq.rs`).
    moderation: Duration,
    /// When the last pass that fetched commands ended.
    last_fetch: Option<Instant>,
    /// The command to run again before anything else.
    parked: Option<Parked>,
}

impl Worker {
    /// Work waits: the next step runs a pass.
    pub fn wake(&mut self) {
        self.work = true;
    }

    /// Whether work waits.
    pub fn has_work(&self) -> bool {
        self.work
    }

    /// A pass starts: what woke the worker is being handled.
    pub fn take_work(&mut self) {
        self.work = false;
    }

    /// A pass ended: `left` says whether another one must run (always,
    /// while a command is parked).
    pub fn set_work(&mut self, left: bool) {
        self.work = left || self.parked.is_some();
    }

    /// Parks a command to run again on the next pass; the pass ends.
    pub(crate) fn park(&mut self, p: Parked) {
        self.parked = Some(p);
        self.work = true;
    }

    /// Whether a command is parked (the pass must end).
    pub fn has_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// The parked command, to run now.
    pub(crate) fn unpark(&mut self) -> Option<Parked> {
        self.parked.take()
    }

    /// CC.SHN set: the worker flushes on its next pass.
    pub fn request_shutdown(&mut self) {
        self.shutdown_pending = true;
        self.work = true;
    }

    /// CC.SHN cleared, or a reset: no shutdown to finish.
    pub fn cancel_shutdown(&mut self) {
        self.shutdown_pending = false;
    }

    /// Whether a shutdown waits (and is now being finished).
    pub fn take_shutdown(&mut self) -> bool {
        std::mem::take(&mut self.shutdown_pending)
    }

    /// The shadow-doorbell poll window.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// Sets the shadow-doorbell poll window (0: no polling).
    pub fn set_poll(&mut self, poll: Duration) {
        self.poll = poll;
    }

    /// The adaptive interrupt moderation time (0: off).
    pub fn moderation(&self) -> Duration {
        self.moderation
    }

    /// Sets the adaptive interrupt moderation time (0: off).
    pub fn set_moderation(&mut self, moderation: Duration) {
        self.moderation = moderation;
    }

    /// Whether polling or moderation needs the time of each fetch.
    pub fn timed(&self) -> bool {
        !(self.moderation.is_zero() && self.poll.is_zero())
    }

    /// A pass fetched commands at `now`.
    pub fn fetched_at(&mut self, now: Instant) {
        self.last_fetch = Some(now);
    }

    /// When the last pass that fetched commands ended.
    pub fn last_fetch(&self) -> Option<Instant> {
        self.last_fetch
    }
}
