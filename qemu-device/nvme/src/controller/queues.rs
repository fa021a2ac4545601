//! The worker: doorbells applied, submission queues run in short passes,
//! completions posted; queue faults are fatal (CSTS.CFS).

use super::faults::Hook;
use super::*;
use crate::nvme::cqe;
use crate::wire::IntoBytes;

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
        if self.worker.has_work() {
            self.run_pending();
            return Step::Busy;
        }
        let idle = self.poll_shadows();
        // Polling may have found entries the driver did not ring for.
        if self.worker.has_work() {
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
        let bell = if idx.is_multiple_of(2) {
            Bell::SqTail
        } else {
            Bell::CqHead
        };
        match self.queues.ring(qid, bell, v, shadowed) {
            Ok(()) => self.worker.wake(),
            Err(e) => self.doorbell_error(e as u32),
        }
    }

    /// Processes what doorbells recorded: completions waiting for CQ space
    /// first, then submission queues with new entries.
    /// One short pass (at most PASS work units): the worker drops the lock
    /// between passes, so the message thread never waits for a backlog.
    pub fn run_pending(&mut self) {
        self.worker.take_work();
        if self.worker.take_shutdown() {
            self.finish_shutdown();
        }
        for qid in 0..=MAX_IO_QUEUES {
            if self.queues.backlog(qid) != 0 {
                self.drain_pending(qid, true);
            }
        }
        let parked = self.worker.unpark();
        let ran = parked.is_none_or(|p| self.run_command(p.qid, p.cqid, p.sqe, p.hook));
        for qid in self.queues.start_pass().filter(|_| ran) {
            self.process_sq(qid);
            if self.queues.pass_ends_after(qid) || self.worker.has_parked() {
                break;
            }
        }
        // Entries left over by the per-pass budget need another pass. A
        // pass that fetched nothing visited every queue and none could
        // move (e.g. after a fatal error): another one would spin.
        let fetched = self.queues.fetched();
        if fetched && self.worker.timed() {
            let now = Instant::now();
            self.worker.fetched_at(now);
            self.paced(now);
        }
        let left = fetched && !self.bar0.fatal() && self.queues.runnable();
        self.worker.set_work(left);
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
            let (addr, cqid) = match self.queues.fetch(qid) {
                io_queues::Fetch::Entry { addr, cqid } => (addr, cqid),
                io_queues::Fetch::Empty if self.refresh_sq_tail(qid) => continue,
                // Spent: entries left, run_pending keeps `work` set.
                _ => return,
            };
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
            if !self.run_command(qid, cqid, sqe, hook) {
                return; // parked: the pass ends, the lock goes to the message
            }
        }
    }

    /// Runs a fetched command and completes it; false when a DMA of it
    /// gave way to a message waiting for this controller's lock: then it is
    /// parked, to run again first thing on the next pass.
    fn run_command(&mut self, qid: usize, cqid: usize, sqe: Sqe, hook: Option<Hook>) -> bool {
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
        if self.ram.give_way().take() {
            let p = worker::Parked {
                qid,
                cqid,
                sqe,
                hook,
            };
            self.worker.park(p);
            return false;
        }
        if qid != 0 {
            let extra = self.data_units(&sqe);
            self.queues.charge(extra);
        }
        let Some(res) = res else { return true }; // held (AER)
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
        true
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
        // The queue part fills in the SQ head; phase is set when written.
        let entry = cqe(dw0, 0, sqid, cid, status.field(), false);
        if self.queues.push_completion(cqid, entry) {
            self.drain_pending(cqid, irq);
        }
    }

    /// Writes queued entries of `cqid` while it has room; `irq`: mark the
    /// queue's interrupt for what was written.
    pub(super) fn drain_pending(&mut self, cqid: usize, irq: bool) {
        let mut wrote = 0;
        loop {
            let (addr, e) = match self.queues.drain(cqid) {
                io_queues::Drain::Write { addr, entry } => (addr, entry),
                io_queues::Drain::Full if self.refresh_cq_head(cqid) => continue,
                io_queues::Drain::Gone => return,
                io_queues::Drain::Empty | io_queues::Drain::Full => break,
            };
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
}
