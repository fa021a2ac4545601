//! Shadow doorbells on the worker side: rereading shadow tails and heads,
//! publishing event indices, polling after the queues drain.

use super::*;

impl Controller {
    /// A drained I/O SQ with shadow doorbells: rereads the shadow tail and,
    /// unless the worker polls for a while first, publishes the tail we
    /// reached as the event index. True when the driver added entries.
    pub(super) fn refresh_sq_tail(&mut self, qid: usize) -> bool {
        let (Some(db), true) = (self.dbbuf, qid != 0) else {
            return false;
        };
        let Some((tail, size)) = self.sqs[qid].as_ref().map(|q| (q.tail, q.size)) else {
            return false;
        };
        let seen = if !self.poll.is_zero() {
            self.drained_at.get_or_insert_with(Instant::now);
            db.read(&self.dma(), qid, Bell::SqTail)
        } else {
            db.settle(&self.dma(), qid, Bell::SqTail, tail)
        };
        let Some(t) = self.shadow_moved(seen, tail, size) else {
            return false;
        };
        self.sqs[qid].as_mut().unwrap().tail = t;
        true
    }

    /// A shadow doorbell value checked against its queue: the new value when
    /// it moved within the queue; a value beyond it is a doorbell error.
    pub(super) fn shadow_moved(
        &mut self,
        seen: Option<u16>,
        current: u16,
        size: u16,
    ) -> Option<u16> {
        match seen {
            Some(v) if v >= size => {
                self.doorbell_error(0x01);
                None
            }
            Some(v) if v != current => Some(v),
            _ => None,
        }
    }

    /// The worker's idle step: looks for entries the driver added without
    /// ringing; once `poll` has passed with none, publishes every I/O SQ's
    /// tail as its event index (rereading after, so nothing is missed).
    pub fn poll_shadows(&mut self) -> Step {
        let Some(since) = self.drained_at else {
            return Step::Sleep;
        };
        let expired = since.elapsed() >= self.poll;
        let db = self.dbbuf.expect("polling only with shadow doorbells");
        for qid in 1..self.sqs.len() {
            let Some((tail, size)) = self.sqs[qid].as_ref().map(|q| (q.tail, q.size)) else {
                continue;
            };
            let seen = if expired {
                db.settle(&self.dma(), qid, Bell::SqTail, tail)
            } else {
                db.read(&self.dma(), qid, Bell::SqTail)
            };
            // A value beyond the queue is reported by the next real pass;
            // here it must not keep the worker spinning.
            if seen.is_some_and(|t| t != tail && t < size) {
                self.work = true;
            }
        }
        if expired || self.work {
            self.drained_at = None;
        }
        if self.drained_at.is_some() {
            Step::Polling
        } else {
            Step::Sleep
        }
    }

    /// A full I/O CQ with shadow doorbells: rereads the head the driver
    /// published. Until it moves, asks for a real head doorbell; otherwise
    /// keeps the driver from ringing at all. True when there is room now.
    pub(super) fn refresh_cq_head(&mut self, cqid: usize) -> bool {
        let (Some(db), true) = (self.dbbuf, cqid != 0) else {
            return false;
        };
        let Some((head, size)) = self.cqs[cqid].as_ref().map(|q| (q.head, q.size)) else {
            return false;
        };
        let dma = self.dma();
        let mut now = db.read(&dma, cqid, Bell::CqHead);
        if now == Some(head) {
            now = db.settle(&dma, cqid, Bell::CqHead, head);
        }
        let Some(h) = self.shadow_moved(now, head, size) else {
            return false;
        };
        // Behind the driver's head: its next update rings nothing.
        db.set_event(&self.dma(), cqid, Bell::CqHead, h.wrapping_sub(1));
        self.cqs[cqid].as_mut().unwrap().head = h;
        true
    }
}
