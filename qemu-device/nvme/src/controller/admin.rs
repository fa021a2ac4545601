//! Admin commands that operate the controller itself (I/O queue create and
//! delete, Doorbell Buffer Config, Asynchronous Event Request) and the admin
//! dispatch: the others run on the narrow `AdminCtx` in `commands`.

use super::dbbuf::{Bell, DoorbellBuffer};
use super::{Controller, Cq, Sq, MAX_IO_QUEUES, MQES};
use crate::commands::table::{self, AdminRun, ControllerOp};
use crate::dma::Target;
use crate::nvme::{CmdResult, Sqe, Status};
use std::collections::VecDeque;

impl Controller {
    /// Runs one admin command through the command table; `None` holds it
    /// (Asynchronous Event Request).
    pub fn admin(&mut self, sqe: &Sqe) -> Option<CmdResult> {
        let Some(cmd) = table::admin(sqe.opcode()) else {
            return Some(Err(Status::INVALID_OPCODE));
        };
        match cmd.run {
            AdminRun::Ctx(run) => {
                let r = run(&mut self.admin_ctx(), sqe);
                // A log page read may have unmasked an event type.
                self.deliver_events();
                Some(r)
            }
            AdminRun::Controller(op) => self.controller_op(op, sqe),
        }
    }

    fn controller_op(&mut self, op: ControllerOp, sqe: &Sqe) -> Option<CmdResult> {
        Some(match op {
            ControllerOp::CreateSq => self.create_sq(sqe),
            ControllerOp::DeleteSq => self.delete_sq(sqe),
            ControllerOp::CreateCq => self.create_cq(sqe),
            ControllerOp::DeleteCq => self.delete_cq(sqe),
            ControllerOp::DoorbellBufferConfig => self.doorbell_buffer_config(sqe),
            ControllerOp::AsyncEvent => return self.async_event(sqe),
        })
    }

    /// Asynchronous Event Request: held until an event completes it.
    fn async_event(&mut self, sqe: &Sqe) -> Option<CmdResult> {
        if !self.events.request(sqe.cid()) {
            return Some(Err(Status::AER_LIMIT));
        }
        self.deliver_events();
        None
    }

    /// PRP1: shadow doorbell page, PRP2: event index page (both page
    /// aligned, in memory we can reach). Queues created later use them too.
    fn doorbell_buffer_config(&mut self, sqe: &Sqe) -> CmdResult {
        if sqe.psdt() != 0 {
            return Err(Status::INVALID_FIELD);
        }
        let db = DoorbellBuffer::new(sqe.dptr1(), sqe.dptr2(), &self.dma())
            .ok_or(Status::INVALID_FIELD)?;
        self.shadow.configure(db);
        for qid in 1..self.sqs.len() {
            self.arm_shadow_doorbells(qid);
        }
        Ok(0)
    }

    /// Event indices for a new I/O queue: the first submission rings, head
    /// updates stay silent until the completion queue fills.
    fn arm_shadow_doorbells(&mut self, qid: usize) {
        let Some(db) = self.shadow.buffer() else {
            return;
        };
        if let Some(sq) = &self.sqs[qid] {
            db.set_event(&self.dma(), qid, Bell::SqTail, sq.tail);
        }
        if let Some(cq) = &self.cqs[qid] {
            let quiet = cq.head.wrapping_sub(1);
            db.set_event(&self.dma(), qid, Bell::CqHead, quiet);
        }
    }

    fn create_cq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        let size = (sqe.cdw(10) >> 16) as u16;
        let pc = sqe.cdw(11) & 1 != 0;
        let ien = sqe.cdw(11) & 2 != 0;
        let iv = (sqe.cdw(11) >> 16) as u16;
        if qid == 0 || qid > self.features.ncqa as usize || self.cqs[qid].is_some() {
            return Err(Status::INVALID_QID);
        }
        if size == 0 || size > MQES {
            return Err(Status::INVALID_QSIZE);
        }
        if iv as usize >= self.vectors() {
            return Err(Status::INVALID_VECTOR);
        }
        if !pc || sqe.dptr1() & 0xfff != 0 {
            return Err(Status::INVALID_FIELD);
        }
        let base = sqe.dptr1();
        // CMBSZ.CQS is clear: completion queues may not live in the CMB.
        match self.queue_target(base, (size as u64 + 1) * 16)? {
            Target::GuestRam => {}
            _ => return Err(Status::INVALID_CMB_USE),
        }
        self.cqs[qid] = Some(Cq {
            base,
            size: size + 1,
            head: 0,
            tail: 0,
            phase: true,
            iv,
            ien,
            pending: VecDeque::new(),
        });
        self.arm_shadow_doorbells(qid);
        Ok(0)
    }

    fn create_sq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        let size = (sqe.cdw(10) >> 16) as u16;
        let pc = sqe.cdw(11) & 1 != 0;
        let cqid = (sqe.cdw(11) >> 16) as usize;
        if qid == 0 || qid > self.features.nsqa as usize || self.sqs[qid].is_some() {
            return Err(Status::INVALID_QID);
        }
        if cqid == 0 || cqid > MAX_IO_QUEUES || self.cqs[cqid].is_none() {
            return Err(Status::INVALID_CQ);
        }
        if size == 0 || size > MQES {
            return Err(Status::INVALID_QSIZE);
        }
        if !pc || sqe.dptr1() & 0xfff != 0 {
            return Err(Status::INVALID_FIELD);
        }
        // Submission queues may live in guest RAM or in our own CMB (SQS).
        match self.queue_target(sqe.dptr1(), (size as u64 + 1) * 64)? {
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
        self.arm_shadow_doorbells(qid);
        Ok(0)
    }

    fn delete_sq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        if qid == 0 || qid > MAX_IO_QUEUES || self.sqs[qid].is_none() {
            return Err(Status::INVALID_QID);
        }
        // Commands complete synchronously, so none are left to abort
        // (but those fault rules hold back go with their queue).
        self.sqs[qid] = None;
        self.drop_held_of(qid as u16);
        Ok(0)
    }

    fn delete_cq(&mut self, sqe: &Sqe) -> CmdResult {
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
}
