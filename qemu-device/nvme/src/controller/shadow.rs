//! Shadow doorbells on the worker side: rereading shadow tails and heads,
//! publishing event indices, polling after the queues drain.

use super::*;

/// The shadow-doorbell poll window: the whole `poll` while the driver keeps
/// coming back within twice that, `poll / 4` once it paused longer (sparse
/// I/O, which no window catches: polling would only burn a core) until it
/// comes back sooner. Measured in one guest, a shorter window loses far
/// more than it saves: a command that arrives after the window closes costs
/// a doorbell round trip through QEMU and a worker wake-up, and at queue
/// depth the gap that matters is the long one through the guest's interrupt
/// handler, not the mean (see the device README).
#[derive(Default)]
pub struct PollPace {
    /// The last gap was too long for polling to catch.
    sparse: bool,
    /// When the queues drained, until the next command.
    idle_since: Option<Instant>,
}

impl PollPace {
    /// How long to poll after the queues drain, at most `cap`.
    pub fn window(&self, cap: Duration) -> Duration {
        if self.sparse {
            cap / 4
        } else {
            cap
        }
    }

    /// The driver's next command came `gap` after the queues drained.
    pub fn observe(&mut self, gap: Duration, cap: Duration) {
        self.sparse = gap >= cap * 2;
    }
}

/// The controller's shadow-doorbell state: the buffers the driver
/// configured, when the queues drained, and the poll pace.
///
/// Invariant: `drained_at` is set only while shadow doorbells are
/// configured (polling needs the buffers).
#[derive(Default)]
pub struct Shadow {
    buffer: Option<DoorbellBuffer>,
    /// When the queues drained with event indices left unpublished.
    drained_at: Option<Instant>,
    pace: PollPace,
}

impl Shadow {
    /// The buffers, once the driver configured them.
    pub fn buffer(&self) -> Option<DoorbellBuffer> {
        self.buffer
    }

    /// Doorbell Buffer Config.
    pub fn configure(&mut self, db: DoorbellBuffer) {
        self.buffer = Some(db);
    }

    /// A controller reset: the driver configures the buffers again.
    pub fn reset(&mut self) {
        *self = Shadow::default();
    }

    /// The queues drained: polling starts now (or goes on since then).
    fn drained(&mut self) {
        let now = *self.drained_at.get_or_insert_with(Instant::now);
        self.pace.idle_since.get_or_insert(now);
    }

    /// Whether the poll window that started when the queues drained has
    /// passed (None: not polling).
    fn window_expired(&self, poll: Duration) -> Option<bool> {
        let since = self.drained_at?;
        Some(since.elapsed() >= self.pace.window(poll))
    }

    fn stop_polling(&mut self) {
        self.drained_at = None;
    }

    fn polling(&self) -> bool {
        self.drained_at.is_some()
    }

    /// A pass fetched commands at `now`: the end of the gap the poll
    /// window adapts to.
    fn fetched(&mut self, now: Instant, poll: Duration) {
        if let Some(since) = self.pace.idle_since.take() {
            self.pace
                .observe(now.saturating_duration_since(since), poll);
        }
    }
}

impl Controller {
    /// A drained I/O SQ with shadow doorbells: rereads the shadow tail and,
    /// unless the worker polls for a while first, publishes the tail we
    /// reached as the event index. True when the driver added entries.
    pub(super) fn refresh_sq_tail(&mut self, qid: usize) -> bool {
        let (Some(db), true) = (self.shadow.buffer(), qid != 0) else {
            return false;
        };
        let Some((tail, size)) = self.queues.pointer(qid, Bell::SqTail) else {
            return false;
        };
        let seen = if !self.worker.poll().is_zero() {
            self.shadow.drained();
            db.read(&self.dma(), qid, Bell::SqTail)
        } else {
            db.settle(&self.dma(), qid, Bell::SqTail, tail)
        };
        let Some(t) = self.shadow_moved(seen, tail, size) else {
            return false;
        };
        self.queues.set_pointer(qid, Bell::SqTail, t);
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
        let Some(expired) = self.shadow.window_expired(self.worker.poll()) else {
            return Step::Sleep;
        };
        let Some(db) = self.shadow.buffer() else {
            self.shadow.stop_polling(); // polling only with shadow doorbells
            return Step::Sleep;
        };
        for qid in 1..=MAX_IO_QUEUES {
            let Some((tail, size)) = self.queues.pointer(qid, Bell::SqTail) else {
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
                self.worker.wake();
            }
        }
        if expired || self.worker.has_work() {
            self.shadow.stop_polling();
        }
        if self.shadow.polling() {
            Step::Polling
        } else {
            Step::Sleep
        }
    }

    /// A pass fetched commands: the end of the gap the poll window adapts to.
    pub(super) fn paced(&mut self, now: Instant) {
        self.shadow.fetched(now, self.worker.poll());
    }

    /// A full I/O CQ with shadow doorbells: rereads the head the driver
    /// published. Until it moves, asks for a real head doorbell; otherwise
    /// keeps the driver from ringing at all. True when there is room now.
    pub(super) fn refresh_cq_head(&mut self, cqid: usize) -> bool {
        let (Some(db), true) = (self.shadow.buffer(), cqid != 0) else {
            return false;
        };
        let Some((head, size)) = self.queues.pointer(cqid, Bell::CqHead) else {
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
        self.queues.set_pointer(cqid, Bell::CqHead, h);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::PollPace;
    use std::time::Duration;

    const CAP: Duration = Duration::from_micros(1000);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_poll_window_stays_whole_while_the_driver_comes_back_within_twice_the_cap() {
        let mut p = PollPace::default();
        assert_eq!(p.window(CAP), CAP);
        // A slow guest at queue depth 1: gaps around and past the cap.
        for gap in [250, 900, 1200, 1900, 20] {
            p.observe(us(gap), CAP);
            assert_eq!(p.window(CAP), CAP, "after a {gap} us gap");
        }
    }

    #[test]
    fn the_poll_window_shrinks_while_the_driver_pauses_longer_than_twice_the_cap() {
        let mut p = PollPace::default();
        // Sparse I/O: polling could not catch these, only burn a core.
        p.observe(Duration::from_millis(5), CAP);
        assert_eq!(p.window(CAP), CAP / 4);
        p.observe(us(2000), CAP);
        assert_eq!(p.window(CAP), CAP / 4);
        // The driver speeds up again: the next gap brings polling back.
        p.observe(us(300), CAP);
        assert_eq!(p.window(CAP), CAP);
        assert_eq!(PollPace::default().window(Duration::ZERO), Duration::ZERO);
    }
}
