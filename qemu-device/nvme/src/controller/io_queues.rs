//! The queue part: every submission and completion queue (admin and I/O),
//! the round-robin cursor and the per-pass work budget. Creation and
//! deletion carry the NVMe status checks; the worker fetches entries and
//! writes completions through the narrow methods below.

use super::dbbuf::Bell;
use crate::dma::Target;
use crate::limits::{MAX_IO_QUEUES, MQES};
use crate::nvme::{CmdResult, Sqe, Status};
use crate::wire::{Cqe, U16};
use std::collections::VecDeque;

/// Work units per worker pass; the lock is free between passes. A command
/// costs one unit plus one per `PASS_UNIT_BYTES` of data it moves, so a pass
/// runs at most 16 small commands (one interrupt for all of them) and at
/// most about one 512 KiB transfer.
pub(crate) const PASS: usize = 16;
/// Data bytes one pass unit stands for.
pub(super) const PASS_UNIT_BYTES: u64 = 32 << 10;

struct Sq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    cqid: u16,
}

struct Cq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    phase: bool,
    iv: u16,
    ien: bool,
    /// Completions waiting for room in the queue.
    pending: VecDeque<Cqe>,
}

impl Cq {
    fn new(base: u64, size: u16, iv: u16, ien: bool) -> Cq {
        Cq {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            iv,
            ien,
            pending: VecDeque::new(),
        }
    }

    /// Whether moving the head to `v` only releases entries the controller
    /// posted (the head may reach the tail, never pass it).
    fn head_valid(&self, v: u16) -> bool {
        let size = self.size as u32;
        let dist = |from: u16, to: u16| (to as u32 + size - from as u32) % size;
        dist(self.head, v) <= dist(self.head, self.tail)
    }
}

/// A doorbell write the queues refused (the asynchronous event's info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BellError {
    /// No such queue.
    InvalidRegister = 0x00,
    /// A value beyond the queue, or a CQ head past the tail.
    InvalidValue = 0x01,
}

/// What the next fetch from a submission queue found.
pub enum Fetch {
    /// The queue does not exist.
    Gone,
    /// Head reached the tail.
    Empty,
    /// The pass has no budget left.
    Spent,
    /// The queue's completion queue has a backlog: fetching waits.
    CqFull,
    /// One entry to read at `addr` (None: beyond the address space); its
    /// completions go to `cqid`.
    Entry { addr: Option<u64>, cqid: usize },
}

/// What the next write to a completion queue is.
pub enum Drain {
    /// The queue does not exist.
    Gone,
    /// Nothing is waiting.
    Empty,
    /// Waiting entries, no room.
    Full,
    /// Write `entry` (its phase set) at `addr` (None: beyond the address
    /// space).
    Write { addr: Option<u64>, entry: Cqe },
}

/// The controller's queues (index = queue id; 0 is the admin pair).
pub struct Queues {
    sqs: Vec<Option<Sq>>,
    cqs: Vec<Option<Cq>>,
    /// Work units left in this worker pass (the worker drops the lock
    /// between passes, so a pass is short).
    budget: usize,
    /// Where the next pass starts, so every queue gets its turn.
    next_sq: usize,
}

impl Default for Queues {
    fn default() -> Self {
        Queues {
            sqs: (0..=MAX_IO_QUEUES).map(|_| None).collect(),
            cqs: (0..=MAX_IO_QUEUES).map(|_| None).collect(),
            budget: 0,
            next_sq: 0,
        }
    }
}

/// Checks shared by Create I/O SQ and CQ: size within MQES (0's based),
/// physically contiguous, page aligned.
fn check_size(size: u16) -> Result<(), Status> {
    if size == 0 || size > MQES {
        return Err(Status::INVALID_QSIZE);
    }
    Ok(())
}

fn check_contiguous(sqe: &Sqe) -> Result<(), Status> {
    if sqe.cdw(11) & 1 == 0 || sqe.dptr1() & 0xfff != 0 {
        return Err(Status::INVALID_FIELD);
    }
    Ok(())
}

impl Queues {
    /// Every queue goes (controller reset).
    pub fn reset(&mut self) {
        self.sqs.iter_mut().for_each(|q| *q = None);
        self.cqs.iter_mut().for_each(|q| *q = None);
    }

    /// CC.EN: the admin queues from ASQ/ACQ (checked by the caller).
    pub fn create_admin(&mut self, sq: (u64, u16), cq: (u64, u16)) {
        self.cqs[0] = Some(Cq::new(cq.0, cq.1, 0, true));
        self.sqs[0] = Some(Sq {
            base: sq.0,
            size: sq.1,
            head: 0,
            tail: 0,
            cqid: 0,
        });
    }

    /// Create I/O Completion Queue: the new queue's id. `allowed`: queues
    /// granted by Number of Queues; `vectors`: interrupt vectors;
    /// `locate`: where the queue's memory lives.
    pub fn create_cq(
        &mut self,
        sqe: &Sqe,
        allowed: u16,
        vectors: usize,
        locate: impl FnOnce(u64, u64) -> Result<Target, Status>,
    ) -> Result<usize, Status> {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        let size = (sqe.cdw(10) >> 16) as u16;
        let ien = sqe.cdw(11) & 2 != 0;
        let iv = (sqe.cdw(11) >> 16) as u16;
        if qid == 0 || qid > allowed as usize || self.cqs[qid].is_some() {
            return Err(Status::INVALID_QID);
        }
        check_size(size)?;
        if iv as usize >= vectors {
            return Err(Status::INVALID_VECTOR);
        }
        check_contiguous(sqe)?;
        let base = sqe.dptr1();
        // CMBSZ.CQS is clear: completion queues may not live in the CMB.
        match locate(base, (size as u64 + 1) * 16)? {
            Target::GuestRam => {}
            _ => return Err(Status::INVALID_CMB_USE),
        }
        self.cqs[qid] = Some(Cq::new(base, size + 1, iv, ien));
        Ok(qid)
    }

    /// Create I/O Submission Queue: the new queue's id (see `create_cq`).
    pub fn create_sq(
        &mut self,
        sqe: &Sqe,
        allowed: u16,
        locate: impl FnOnce(u64, u64) -> Result<Target, Status>,
    ) -> Result<usize, Status> {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        let size = (sqe.cdw(10) >> 16) as u16;
        let cqid = (sqe.cdw(11) >> 16) as usize;
        if qid == 0 || qid > allowed as usize || self.sqs[qid].is_some() {
            return Err(Status::INVALID_QID);
        }
        if cqid == 0 || cqid > MAX_IO_QUEUES || self.cqs[cqid].is_none() {
            return Err(Status::INVALID_CQ);
        }
        check_size(size)?;
        check_contiguous(sqe)?;
        // Submission queues may live in guest RAM or in our own CMB (SQS).
        match locate(sqe.dptr1(), (size as u64 + 1) * 64)? {
            Target::GuestRam | Target::OwnCmb => {}
            Target::PeerCmb(_) => return Err(Status::INVALID_CMB_USE),
        }
        self.sqs[qid] = Some(Sq {
            base: sqe.dptr1(),
            size: size + 1,
            head: 0,
            tail: 0,
            cqid: cqid as u16,
        });
        Ok(qid)
    }

    /// Delete I/O Submission Queue: the deleted queue's id.
    pub fn delete_sq(&mut self, sqe: &Sqe) -> Result<u16, Status> {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        if qid == 0 || qid > MAX_IO_QUEUES || self.sqs[qid].is_none() {
            return Err(Status::INVALID_QID);
        }
        self.sqs[qid] = None;
        Ok(qid as u16)
    }

    /// Delete I/O Completion Queue (refused while an SQ uses it).
    pub fn delete_cq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        if qid == 0 || qid > MAX_IO_QUEUES || self.cqs[qid].is_none() {
            return Err(Status::INVALID_QID);
        }
        if self.sqs.iter().flatten().any(|sq| sq.cqid as usize == qid) {
            return Err(Status::INVALID_QUEUE_DELETION);
        }
        self.cqs[qid] = None;
        Ok(0)
    }

    /// A doorbell write: `bell` of queue `qid` to `v`. `shadowed`: the
    /// shadow value is newer, so a valid write changes nothing (a full CQ
    /// rereads the shadow head). A CQ head may only pass entries we posted.
    pub fn ring(
        &mut self,
        qid: usize,
        bell: Bell,
        v: u16,
        shadowed: bool,
    ) -> Result<(), BellError> {
        let (size, slot, valid) = match bell {
            Bell::SqTail => {
                let sq = self.sqs.get_mut(qid).and_then(|q| q.as_mut());
                let sq = sq.ok_or(BellError::InvalidRegister)?;
                (sq.size, &mut sq.tail, true)
            }
            Bell::CqHead => {
                let cq = self.cqs.get_mut(qid).and_then(|q| q.as_mut());
                let cq = cq.ok_or(BellError::InvalidRegister)?;
                let valid = v < cq.size && cq.head_valid(v);
                (cq.size, &mut cq.head, valid)
            }
        };
        if v >= size {
            return Err(BellError::InvalidValue);
        }
        if shadowed {
            return Ok(());
        }
        if !valid {
            return Err(BellError::InvalidValue);
        }
        *slot = v;
        Ok(())
    }

    /// Queue `qid`'s pointer behind `bell` (SQ tail, CQ head) and its size,
    /// if the queue exists.
    pub fn pointer(&self, qid: usize, bell: Bell) -> Option<(u16, u16)> {
        match bell {
            Bell::SqTail => self.sqs.get(qid)?.as_ref().map(|q| (q.tail, q.size)),
            Bell::CqHead => self.cqs.get(qid)?.as_ref().map(|q| (q.head, q.size)),
        }
    }

    /// Moves queue `qid`'s pointer behind `bell` (a shadow value checked
    /// against the queue's size).
    pub fn set_pointer(&mut self, qid: usize, bell: Bell, v: u16) {
        let slot = match bell {
            Bell::SqTail => self
                .sqs
                .get_mut(qid)
                .and_then(|q| q.as_mut())
                .map(|q| &mut q.tail),
            Bell::CqHead => self
                .cqs
                .get_mut(qid)
                .and_then(|q| q.as_mut())
                .map(|q| &mut q.head),
        };
        if let Some(slot) = slot {
            *slot = v;
        }
    }

    /// The vector CQ `qid` signals (None: no queue, or interrupts off).
    pub fn cq_vector(&self, qid: usize) -> Option<u16> {
        let cq = self.cqs.get(qid)?.as_ref()?;
        cq.ien.then_some(cq.iv)
    }

    /// Completions of `qid` waiting for room in the queue.
    pub fn backlog(&self, qid: usize) -> usize {
        self.cqs
            .get(qid)
            .and_then(|q| q.as_ref())
            .map_or(0, |q| q.pending.len())
    }

    /// Starts a worker pass: a full budget, and the queue ids in the order
    /// this pass visits them (starting where the last one stopped).
    pub fn start_pass(&mut self) -> impl Iterator<Item = usize> {
        self.budget = PASS;
        let (start, n) = (self.next_sq, self.sqs.len());
        (0..n).map(move |i| (start + i) % n)
    }

    /// After visiting `qid`: true when the budget is spent (the next pass
    /// starts after `qid`).
    pub fn pass_ends_after(&mut self, qid: usize) -> bool {
        if self.budget != 0 {
            return false;
        }
        self.next_sq = (qid + 1) % self.sqs.len();
        true
    }

    /// This pass fetched at least one command.
    pub fn fetched(&self) -> bool {
        self.budget < PASS
    }

    /// Some SQ has entries and room for their completions.
    pub fn runnable(&self) -> bool {
        self.sqs.iter().flatten().any(|sq| {
            sq.head != sq.tail
                && self.cqs[sq.cqid as usize]
                    .as_ref()
                    .is_some_and(|cq| cq.pending.is_empty())
        })
    }

    /// Takes the next entry of SQ `qid` (one budget unit) if the pass and
    /// its completion queue allow.
    pub fn fetch(&mut self, qid: usize) -> Fetch {
        let Some(sq) = self.sqs[qid].as_mut() else {
            return Fetch::Gone;
        };
        if sq.head == sq.tail {
            return Fetch::Empty;
        }
        if self.budget == 0 {
            return Fetch::Spent;
        }
        // A full completion queue stops fetching; the CQ head doorbell
        // resumes it, so a guest that never reaps cannot grow our backlog.
        let cqid = sq.cqid as usize;
        if self.cqs[cqid]
            .as_ref()
            .is_some_and(|cq| !cq.pending.is_empty())
        {
            return Fetch::CqFull;
        }
        self.budget -= 1;
        let addr = sq.base.checked_add(sq.head as u64 * 64);
        sq.head = (sq.head + 1) % sq.size;
        Fetch::Entry { addr, cqid }
    }

    /// Charges `units` more to this pass (a large transfer).
    pub fn charge(&mut self, units: usize) {
        self.budget = self.budget.saturating_sub(units);
    }

    /// Queues `entry` on `cqid` with the SQ head of its queue filled in
    /// (false: no such CQ). Its phase is set when written (`drain`).
    pub fn push_completion(&mut self, cqid: usize, mut entry: Cqe) -> bool {
        let sq_head = self
            .sqs
            .get(entry.sqid.get() as usize)
            .and_then(|q| q.as_ref())
            .map_or(0, |q| q.head);
        let Some(cq) = self.cqs.get_mut(cqid).and_then(|q| q.as_mut()) else {
            return false;
        };
        entry.sq_head = U16::new(sq_head);
        cq.pending.push_back(entry);
        true
    }

    /// The next waiting completion of `cqid` and where to write it, if the
    /// queue has room (the tail and phase move past it).
    pub fn drain(&mut self, cqid: usize) -> Drain {
        let Some(cq) = self.cqs.get_mut(cqid).and_then(|q| q.as_mut()) else {
            return Drain::Gone;
        };
        if cq.pending.is_empty() {
            return Drain::Empty;
        }
        if (cq.tail + 1) % cq.size == cq.head {
            return Drain::Full;
        }
        let Some(mut entry) = cq.pending.pop_front() else {
            return Drain::Empty;
        };
        entry.status_phase = U16::new(entry.status_phase.get() | cq.phase as u16);
        let addr = cq.base.checked_add(cq.tail as u64 * 16);
        cq.tail = (cq.tail + 1) % cq.size;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
        Drain::Write { addr, entry }
    }
}

#[cfg(test)]
#[path = "io_queues_tests.rs"]
mod tests;
