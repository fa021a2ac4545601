//! The worker: doorbells applied, submission queues run in short passes,
//! completions posted; queue faults are fatal (CSTS.CFS).

use super::*;
use crate::wire::{IntoBytes, U16};

impl Controller {
    /// One step of the worker, the only place commands run (production
    /// worker thread and the in-process test host alike): applies recorded
    /// doorbells, then runs a short pass or polls the shadow doorbells.
    pub fn step(&mut self) -> Step {
        self.apply_doorbells();
        if self.ram.lost() && self.bar0.ready() && !self.bar0.fatal() {
            // The client shrank a DMA_MAP file under a copy (its command
            // failed with Data Transfer Error): its memory is not trusted.
            self.fatal("guest RAM lost (a DMA_MAP file shrank)", 0);
        }
        if !self.held.is_empty() {
            self.post_due(); // fault rules' delayed completions
        }
        // A doorbell error may have completed an AER.
        self.signal_marked();
        if self.work {
            self.run_pending();
            return Step::Busy;
        }
        let idle = self.poll_shadows();
        // Polling may have found entries the driver did not ring for.
        if self.work {
            Step::Busy
        } else {
            idle
        }
    }

    /// Applies the doorbell writes the message thread recorded (the
    /// worker's first step of every pass).
    pub(super) fn apply_doorbells(&mut self) {
        if !self.bells.pending() {
            return;
        }
        let (writes, bad) = self.bells.take();
        for (slot, v) in writes {
            self.doorbell(DOORBELLS + slot as u64 * 4, v);
        }
        if bad && self.bar0.ready() {
            self.doorbell_error(0x00);
        }
    }

    pub(super) fn doorbell(&mut self, off: u64, v: u32) {
        let idx = (off - DOORBELLS) / 4;
        let qid = (idx / 2) as usize;
        if !self.bar0.ready() {
            return;
        }
        let v = v as u16;
        // With shadow doorbells the shadow value is the newest one (the
        // driver writes it before the register), and the worker may have
        // moved past this register value while the write was on its way:
        // taking it would move the queue back, and an SQ tail behind its
        // head reads as a whole queue of stale entries. The write then
        // only wakes the worker, which rereads the shadow.
        let shadowed = qid != 0 && self.shadow.buffer().is_some();
        if idx.is_multiple_of(2) {
            match self.sqs.get_mut(qid).and_then(|q| q.as_mut()) {
                Some(sq) if v < sq.size && shadowed => {}
                Some(sq) if v < sq.size => sq.tail = v,
                Some(_) => return self.doorbell_error(0x01), // invalid write value
                None => return self.doorbell_error(0x00),    // invalid doorbell register
            }
            self.work = true;
        } else {
            match self.cqs.get_mut(qid).and_then(|q| q.as_mut()) {
                // A full queue rereads the shadow head (refresh_cq_head).
                Some(cq) if v < cq.size && shadowed => {}
                // The new head may only pass entries we posted: it lies
                // between the old head and the tail (modulo the size).
                Some(cq) if v < cq.size && cq_head_valid(cq, v) => cq.head = v,
                Some(_) => return self.doorbell_error(0x01),
                None => return self.doorbell_error(0x00),
            }
            self.work = true;
        }
    }

    /// Processes what doorbells recorded: completions waiting for CQ space
    /// first, then submission queues with new entries.
    /// One short pass (at most PASS work units): the worker drops the lock
    /// between passes, so the message thread never waits for a backlog.
    pub fn run_pending(&mut self) {
        self.work = false;
        if self.shutdown_pending {
            self.finish_shutdown();
        }
        for qid in 0..self.cqs.len() {
            if self.cqs[qid]
                .as_ref()
                .is_some_and(|cq| !cq.pending.is_empty())
            {
                self.drain_pending(qid, true);
            }
        }
        self.budget = PASS;
        let n = self.sqs.len();
        for i in 0..n {
            let qid = (self.next_sq + i) % n;
            self.process_sq(qid);
            if self.budget == 0 {
                self.next_sq = (qid + 1) % n;
                break;
            }
        }
        // Entries left over by the per-pass budget need another pass. A
        // pass that fetched nothing visited every queue and none could
        // move (e.g. after a fatal error): another one would spin.
        let fetched = self.budget < PASS;
        if fetched && !(self.moderation.is_zero() && self.poll.is_zero()) {
            let now = Instant::now();
            self.last_fetch = Some(now);
            self.paced(now);
        }
        self.work = fetched
            && !self.bar0.fatal()
            && self.sqs.iter().flatten().any(|sq| {
                sq.head != sq.tail
                    && self.cqs[sq.cqid as usize]
                        .as_ref()
                        .is_some_and(|cq| cq.pending.is_empty())
            });
        self.signal_marked();
    }

    /// The controller hit a fatal error (a queue it cannot reach): CSTS.CFS,
    /// and no more commands until a reset, as QEMU's nvme does.
    pub(super) fn fatal(&mut self, what: &str, addr: u64) {
        log::debug!("controller {}: fatal: {what} at {addr:#x}", self.id);
        self.bar0.set_fatal();
        self.stats.fatal_error();
        self.stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish();
    }

    pub(super) fn process_sq(&mut self, qid: usize) {
        // The budget counts fetched commands only. A queue is only ever
        // left drained after its shadow tail was looked at (and the event
        // index published): otherwise a driver that skipped the doorbell
        // would wait forever.
        loop {
            if self.bar0.fatal() {
                return;
            }
            let Some(sq) = self.sqs[qid].as_mut() else {
                return;
            };
            if sq.head == sq.tail {
                if self.refresh_sq_tail(qid) {
                    continue;
                }
                return;
            }
            if self.budget == 0 {
                return; // entries left: run_pending keeps `work` set
            }
            // A full completion queue stops fetching; the CQ head doorbell
            // resumes it, so a guest that never reaps cannot grow our backlog.
            let cq_full = self.cqs[sq.cqid as usize]
                .as_ref()
                .is_some_and(|cq| !cq.pending.is_empty());
            if cq_full {
                return;
            }
            self.budget -= 1;
            let addr = sq.base.checked_add(sq.head as u64 * 64);
            sq.head = (sq.head + 1) % sq.size;
            let cqid = sq.cqid as usize;
            let mut raw = [0u8; 64];
            match addr.map(|a| (a, self.dma().read(Kind::Meta, a, &mut raw))) {
                Some((_, Ok(_))) => {}
                Some((a, Err(_))) => return self.fatal("SQ entry fetch fault", a),
                None => return self.fatal("SQ entry beyond the address space", u64::MAX),
            }
            let sqe = Sqe::from_bytes(&raw);
            // Fault rules and the trace: None (no cost) when both are off.
            let hook = self.hook_fetch(qid, cqid, &sqe);
            if hook.as_ref().is_some_and(|h| h.swallowed) {
                continue; // held or dropped by a fault rule
            }
            let cut = hook.as_ref().and_then(|h| h.cut.as_ref());
            let res = if let Some(s) = hook.as_ref().and_then(|h| h.status()) {
                Some(Err(s))
            } else if sqe.dw[0] & 0x300 != 0 {
                // Fused operations (FUSE bits) are not supported (ONCS bit 0
                // of FUSES is clear): refuse both halves.
                Some(Err(Status::INVALID_FIELD))
            } else if qid == 0 && sqe.psdt() != 0 {
                // Admin commands use PRPs only.
                Some(Err(Status::INVALID_FIELD))
            } else if qid == 0 {
                self.admin(&sqe)
            } else {
                let mut ctx = self.io_ctx();
                ctx.dma.cut = cut;
                Some(crate::commands::table::execute_io(&mut ctx, &sqe))
            };
            if qid != 0 {
                let extra = self.data_units(&sqe);
                self.budget = self.budget.saturating_sub(extra);
            }
            let Some(res) = res else { continue }; // held (AER)
            let res = match &hook {
                Some(h) => h.result(res),
                None => res,
            };
            let (dw0, status) = match res {
                Ok(v) => (v, Status::SUCCESS),
                Err(s) => {
                    // Only I/O commands carry an LBA in CDW10/11.
                    let lba = if qid == 0 { 0 } else { sqe.slba() };
                    self.log_error(qid as u16, sqe.cid(), s, sqe.nsid(), lba);
                    (0, s)
                }
            };
            self.stats
                .commands
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match hook {
                Some(h) => self.hook_complete(h, cqid, qid as u16, sqe.cid(), dw0, status),
                None => self.post(cqid, qid as u16, sqe.cid(), dw0, status),
            }
        }
    }

    /// Pass units an I/O command costs beyond its first: one per
    /// `PASS_UNIT_BYTES` it asked to move (Read, Write, Compare).
    fn data_units(&self, sqe: &Sqe) -> usize {
        use crate::nvme::io;
        if !matches!(sqe.opcode(), io::READ | io::WRITE | io::COMPARE) {
            return 0;
        }
        let shift = (sqe.nsid() as usize)
            .checked_sub(1)
            .and_then(|i| self.ns.get(i))
            .map_or(9, |ns| ns.lba_shift);
        let bytes = ((sqe.cdw(12) & 0xffff) as u64 + 1) << shift;
        (bytes / PASS_UNIT_BYTES) as usize
    }

    /// Queues a completion on `cqid`; its interrupt is raised when the
    /// pass ends (`signal_marked`).
    pub fn post(&mut self, cqid: usize, sqid: u16, cid: u16, dw0: u32, status: Status) {
        self.queue_completion(cqid, sqid, cid, dw0, status, true);
    }

    /// [`Controller::post`]; `irq` false: no interrupt is marked for this
    /// entry (a `no-irq` fault rule).
    pub(super) fn queue_completion(
        &mut self,
        cqid: usize,
        sqid: u16,
        cid: u16,
        dw0: u32,
        status: Status,
        irq: bool,
    ) {
        let sq_head = self
            .sqs
            .get(sqid as usize)
            .and_then(|q| q.as_ref())
            .map(|q| q.head)
            .unwrap_or(0);
        let Some(cq) = self.cqs.get_mut(cqid).and_then(|q| q.as_mut()) else {
            return;
        };
        // Phase is filled in when the entry is written.
        cq.pending
            .push_back(cqe(dw0, sq_head, sqid, cid, status.field(), false));
        self.drain_pending(cqid, irq);
    }

    /// Writes queued entries of `cqid` while it has room; `irq`: mark the
    /// queue's interrupt for what was written.
    pub(super) fn drain_pending(&mut self, cqid: usize, irq: bool) {
        let mut wrote = 0;
        loop {
            let Some(cq) = self.cqs.get_mut(cqid).and_then(|q| q.as_mut()) else {
                return;
            };
            if cq.pending.is_empty() {
                break;
            }
            if (cq.tail + 1) % cq.size == cq.head {
                if self.refresh_cq_head(cqid) {
                    continue;
                }
                break;
            }
            let Some(mut e) = cq.pending.pop_front() else {
                break;
            };
            e.status_phase = U16::new(e.status_phase.get() | cq.phase as u16);
            let addr = cq.base.checked_add(cq.tail as u64 * 16);
            cq.tail = (cq.tail + 1) % cq.size;
            if cq.tail == 0 {
                cq.phase = !cq.phase;
            }
            match addr.map(|a| (a, self.dma().write(Kind::Meta, a, e.as_bytes()))) {
                Some((_, Ok(_))) => {}
                Some((a, Err(_))) => return self.fatal("CQ entry write fault", a),
                None => return self.fatal("CQ entry beyond the address space", u64::MAX),
            }
            wrote += 1;
        }
        if wrote > 0 && irq {
            self.mark_irq(cqid, wrote);
        }
    }

    /// Where a queue's memory lives, for the CMB rules on queue creation.
    /// An unreachable queue is an invalid field.
    pub fn queue_target(&self, base: u64, bytes: u64) -> Result<Target, Status> {
        self.dma()
            .classify(base, bytes)
            .map_err(|_| Status::INVALID_FIELD)
    }
}

/// Whether moving a CQ head to `v` only releases entries the controller
/// posted (the head may reach the tail, never pass it).
fn cq_head_valid(cq: &Cq, v: u16) -> bool {
    let size = cq.size as u32;
    let dist = |from: u16, to: u16| (to as u32 + size - from as u32) % size;
    dist(cq.head, v) <= dist(cq.head, cq.tail)
}
