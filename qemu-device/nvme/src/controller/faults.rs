//! The controller's side of fault rules and the trace: what a fired rule
//! does to a fetched command, and completions held back (delayed ones the
//! worker posts when due, never-completed ones a reset drops).

use super::held::Held;
use super::*;
use crate::dma::DmaCut;
use crate::faults::{op_name, Action, AenKind, Class, Fired, Probe, Revoke};
use p2pnvme_docs::control::EventKind;
use p2pnvme_docs::trace::{Segment, SegmentTarget, TraceRecord};

/// Fault and trace state of one fetched command.
pub(crate) struct Hook {
    fired: Option<Fired>,
    /// The command is held or dropped by the rule: it does not run.
    pub swallowed: bool,
    /// A `dma-fail` cut of its data transfer.
    pub cut: Option<DmaCut>,
    trace: Option<Traced>,
}

/// A command being traced: what is known at fetch.
pub(super) struct Traced {
    start: Instant,
    /// Data bytes per target slot before it ran (see `Counters::data_by_target`).
    before: [u64; crate::stats::MAX_CTRLS + 2],
    record: TraceRecord,
}

impl Hook {
    /// The status a `status` rule completes the command with.
    pub fn status(&self) -> Option<Status> {
        match self.fired? {
            Fired {
                action: Action::Status(v),
                dnr,
                ..
            } => Some(Status::new(((v >> 8) & 7) as u8, v as u8, dnr)),
            _ => None,
        }
    }

    /// The command's result after the rule: a `dma-fail` command completes
    /// with Data Transfer Error whatever it moved.
    pub fn result(&self, res: crate::nvme::CmdResult) -> crate::nvme::CmdResult {
        match self.fired {
            Some(Fired {
                action: Action::DmaFail(_),
                dnr,
                ..
            }) => Err(Status::new(0, 0x04, dnr)),
            _ => res,
        }
    }
}

/// Inclusive LBA range of an I/O command that has one.
fn lba_range(sqe: &Sqe) -> Option<(u64, u64)> {
    use crate::nvme::io as op;
    matches!(
        sqe.opcode(),
        op::READ | op::WRITE | op::COMPARE | op::WRITE_ZEROES
    )
    .then(|| (sqe.slba(), sqe.slba().saturating_add(sqe.nlb() - 1)))
}

impl Controller {
    /// Matches a fetched command against the fault rules and starts its
    /// trace record; None when there are no rules and no trace.
    pub(super) fn hook_fetch(&mut self, qid: usize, cqid: usize, sqe: &Sqe) -> Option<Hook> {
        let tracing = self.trace.on();
        if !tracing && self.faults.is_empty() {
            return None;
        }
        let lba = if qid == 0 { None } else { lba_range(sqe) };
        let fired = if self.faults.is_empty() {
            None
        } else {
            let targets = || self.data_targets(sqe, lba);
            self.faults.check(&Probe {
                ctrl: self.id,
                q: qid as u16,
                opcode: sqe.opcode(),
                nsid: sqe.nsid(),
                lba,
                targets: &targets,
            })
        };
        let trace = tracing.then(|| self.trace_start(qid, sqe, lba, fired.map(|f| f.id)));
        let mut hook = Hook {
            fired,
            swallowed: false,
            cut: None,
            trace,
        };
        if let Some(f) = fired {
            self.fire(f, qid, cqid, sqe, &mut hook);
        }
        Some(hook)
    }

    /// Where a command's data segments are: every segment of a Read,
    /// Write, Compare or Write Zeroes (its PRP lists or SGL segments read
    /// with scratch counters, so the match does not count as DMA), else the
    /// first one (PRP1 or the SGL's address).
    fn data_targets(&self, sqe: &Sqe, lba: Option<(u64, u64)>) -> Vec<Target> {
        let first = || self.dma().classify(sqe.dptr1(), 1).into_iter().collect();
        let len = lba
            .zip(self.ns.get((sqe.nsid() as usize).wrapping_sub(1)))
            .and_then(|(_, ns)| sqe.nlb().checked_shl(ns.lba_shift))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= crate::limits::MAX_TRANSFER);
        let Some(len) = len else { return first() };
        let scratch = Counters::new(self.id, "");
        let dma = Dma {
            stats: &scratch,
            ..self.dma()
        };
        match crate::dma::prp::segments(sqe, len, &dma) {
            Ok(segs) => segs
                .iter()
                .filter_map(|&(a, n)| dma.classify(a?, n as u64).ok())
                .collect(),
            Err(_) => first(),
        }
    }

    fn trace_start(
        &self,
        qid: usize,
        sqe: &Sqe,
        lba: Option<(u64, u64)>,
        fault: Option<u64>,
    ) -> Traced {
        let class = if qid == 0 { Class::Admin } else { Class::Io };
        let op = match op_name(class, sqe.opcode()) {
            Some(n) => n.to_string(),
            None if qid == 0 => format!("admin-{:#04x}", sqe.opcode()),
            None => format!("io-{:#04x}", sqe.opcode()),
        };
        Traced {
            start: Instant::now(),
            before: self.stats.data_by_target(),
            record: TraceRecord {
                t_us: 0,
                ctrl: self.id,
                q: qid as u16,
                cid: sqe.cid(),
                op,
                nsid: sqe.nsid(),
                slba: lba.map(|(s, _)| s),
                nlb: lba.map(|_| sqe.nlb()),
                bytes: 0,
                segments: vec![],
                status: 0,
                latency_us: 0,
                fault,
                dropped: false,
            },
        }
    }

    /// What a fired rule does before the command would run.
    fn fire(&mut self, f: Fired, qid: usize, cqid: usize, sqe: &Sqe, hook: &mut Hook) {
        log::debug!(
            "controller {}: fault rule {} fires on SQ {qid} CID {}: {:?}",
            self.id,
            f.id,
            sqe.cid(),
            f.action
        );
        let mut hold = false;
        match f.action {
            Action::Status(_) | Action::DelayMs(_) | Action::NoIrq => {}
            Action::DmaFail(k) => hook.cut = Some(DmaCut::new(f.target, k)),
            Action::DmaStallMs(ms) => hook.cut = Some(DmaCut::stall(ms)),
            Action::Never => hold = true,
            Action::Cfs => {
                self.fatal("fault rule", 0);
                hold = true;
            }
            Action::Aen(kind) => self.raise_event(kind, f.ns.unwrap_or(sqe.nsid())),
            Action::CmbRevoke(how) => self.revoke_cmb(how),
            Action::Remove { replug_ms } => {
                self.stats.removed();
                self.faults
                    .push_event(EventKind::Remove, self.id, f.id, replug_ms);
                hold = true;
            }
        }
        if hold {
            hook.swallowed = true;
            self.held.hold(Held {
                due: None,
                cqid,
                sqid: qid as u16,
                cid: sqe.cid(),
                dw0: 0,
                status: Status::SUCCESS,
                extra: hook.trace.take(),
            });
        }
    }

    /// An `aen` rule: the event, and the log page that reports it.
    fn raise_event(&mut self, kind: AenKind, nsid: u32) {
        let ev = match kind {
            AenKind::Smart => {
                self.events.degrade_reliability();
                0x01 | 0x02 << 16 // SMART/health, info 0, log page 02h
            }
            AenKind::NsChanged => {
                let nsid = if nsid == 0 || nsid as usize > self.ns.len() {
                    1
                } else {
                    nsid
                };
                self.events.namespace_changed(nsid);
                0x02 | 0x04 << 16 // notice: attribute changed, log page 04h
            }
        };
        self.events.queue(ev);
        self.deliver_events();
    }

    /// A `cmb-revoke` rule.
    fn revoke_cmb(&mut self, how: Revoke) {
        match how {
            Revoke::Disable => self.set_cmbmsc(self.bar0.cmbmsc() & !(CMBMSC_CRE | CMBMSC_CMSE)),
            Revoke::Unmap => self.cmb.make_unreachable(),
        }
        self.publish();
    }

    /// Power-on state of what a `cmb-revoke=unmap` rule changed (function
    /// reset, new client): the CMB answers again. (The critical warning and
    /// the changed namespace list are reset with the async events.)
    pub(super) fn clear_fault_state(&mut self) {
        self.cmb.make_reachable();
    }

    /// Posts a command's completion as its rule says (delayed, or without
    /// its interrupt) and traces it.
    pub(super) fn hook_complete(
        &mut self,
        mut hook: Hook,
        cqid: usize,
        sqid: u16,
        cid: u16,
        dw0: u32,
        status: Status,
    ) {
        if let Some(t) = hook.trace.as_mut() {
            self.trace_data(t);
        }
        match hook.fired.map(|f| f.action) {
            Some(Action::DelayMs(ms)) => {
                self.held.hold(Held {
                    due: Some(Instant::now() + Duration::from_millis(ms)),
                    cqid,
                    sqid,
                    cid,
                    dw0,
                    status,
                    extra: hook.trace,
                });
                return;
            }
            Some(Action::NoIrq) => self.queue_completion(cqid, sqid, cid, dw0, status, false),
            _ => self.post(cqid, sqid, cid, dw0, status),
        }
        if let Some(t) = hook.trace {
            self.trace_end(t, status, false);
        }
    }

    /// The data the command moved, by target, from the counters' change.
    fn trace_data(&self, t: &mut Traced) {
        let after = self.stats.data_by_target();
        for (slot, (a, b)) in after.iter().zip(&t.before).enumerate() {
            let bytes = a.saturating_sub(*b);
            if bytes == 0 {
                continue;
            }
            let (target, peer) = match slot {
                0 => (SegmentTarget::Ram, None),
                1 => (SegmentTarget::Cmb, None),
                p => (SegmentTarget::Peer, Some(p - 2)),
            };
            t.record.bytes = t.record.bytes.saturating_add(bytes);
            t.record.segments.push(Segment {
                target,
                peer,
                bytes,
            });
        }
    }

    fn trace_end(&self, mut t: Traced, status: Status, dropped: bool) {
        let r = &mut t.record;
        r.t_us = self.trace.now_us();
        r.latency_us = u64::try_from(t.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        r.status = (status.sct as u16 & 7) << 8 | status.sc as u16;
        r.dropped = dropped;
        self.trace.record(r);
    }

    /// Posts the held completions that are due.
    pub(super) fn post_due(&mut self) {
        for h in self.held.take_due(Instant::now()) {
            self.post(h.cqid, h.sqid, h.cid, h.dw0, h.status);
            if let Some(t) = h.extra {
                self.trace_end(t, h.status, false);
            }
        }
    }

    /// Completions fault rules hold back (delayed or never posted).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// How long until the next held completion is due (the worker sleeps
    /// no longer than this).
    pub fn next_due(&self) -> Option<Duration> {
        let due = self.held.next_due()?;
        Some(due.saturating_duration_since(Instant::now()))
    }

    /// A controller reset: held completions are dropped (traced as such).
    pub(super) fn drop_held(&mut self) {
        for h in self.held.take_all() {
            if let Some(t) = h.extra {
                self.trace_end(t, h.status, true);
            }
        }
    }

    /// SQ `sqid` was deleted: its held completions go with it (a later
    /// queue with the same id must not receive them).
    pub(super) fn drop_held_of(&mut self, sqid: u16) {
        if self.held.is_empty() {
            return;
        }
        for h in self.held.take_of_sq(sqid) {
            if let Some(t) = h.extra {
                self.trace_end(t, h.status, true);
            }
        }
    }
}
