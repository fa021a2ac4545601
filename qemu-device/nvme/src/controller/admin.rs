//! Admin commands that operate the controller itself (I/O queue create and
//! delete, Doorbell Buffer Config, Asynchronous Event Request) and the admin
//! dispatch: the others run on the narrow `AdminCtx` in `commands`.

use super::dbbuf::{Bell, DoorbellBuffer};
use super::{dma_over, Controller, MAX_IO_QUEUES};
use crate::commands::table::{self, AdminRun, ControllerOp};
use crate::dma::{Dma, Target};
use crate::nvme::{CmdResult, Sqe, Status};
use std::sync::atomic::Ordering;

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
            ControllerOp::DeleteCq => self.queues.delete_cq(sqe),
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
        for qid in 1..=MAX_IO_QUEUES {
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
        if let Some((tail, _)) = self.queues.pointer(qid, Bell::SqTail) {
            db.set_event(&self.dma(), qid, Bell::SqTail, tail);
        }
        if let Some((head, _)) = self.queues.pointer(qid, Bell::CqHead) {
            let quiet = head.wrapping_sub(1);
            db.set_event(&self.dma(), qid, Bell::CqHead, quiet);
        }
    }

    fn create_cq(&mut self, sqe: &Sqe) -> CmdResult {
        let dma = dma_over!(self);
        let locate = |base, bytes| queue_target(&dma, base, bytes);
        let allowed = self.features.cqs_allowed();
        let qid = self
            .queues
            .create_cq(sqe, allowed, self.irqs.count(), locate)?;
        self.arm_shadow_doorbells(qid);
        Ok(0)
    }

    fn create_sq(&mut self, sqe: &Sqe) -> CmdResult {
        let dma = dma_over!(self);
        let locate = |base, bytes| queue_target(&dma, base, bytes);
        let qid = self
            .queues
            .create_sq(sqe, self.features.sqs_allowed(), locate)?;
        self.arm_shadow_doorbells(qid);
        Ok(0)
    }

    fn delete_sq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = self.queues.delete_sq(sqe)?;
        // Commands complete synchronously, so none are left to abort
        // (but those fault rules hold back go with their queue).
        self.drop_held_of(qid);
        Ok(0)
    }
}

/// Where a queue's memory lives, for the CMB rules on queue creation.
/// An unreachable queue is an invalid field.
fn queue_target(dma: &Dma<'_>, base: u64, bytes: u64) -> Result<Target, Status> {
    dma.classify(base, bytes).map_err(|_| Status::INVALID_FIELD)
}
