//! Shadow doorbells on the worker side: rereading shadow tails and heads,
//! publishing event indices, polling after the queues drain.

use super::*;

/// The shadow-doorbell poll window, fitted to the driver's pace: polling
/// pays when the driver's next command comes before the window closes
/// (no doorbell round trip, no wake-up), and is wasted spinning when the
/// driver pauses longer. The window covers 1.5 x the longest gap between
/// the queues draining and the next command over the last 50-100 ms (one
/// late command costs a doorbell round trip, so the longest gap counts,
/// not the mean), at least `poll / 4` and at most the configured `poll`.
/// A gap of twice `poll` or more (sparse I/O, which polling cannot catch)
/// shrinks it to `poll / 4` until a shorter one comes.
#[derive(Default)]
pub struct PollPace {
    /// Longest gap of the current period, and when the period began.
    current: (Duration, Option<Instant>),
    /// Longest gap of the period before.
    previous: Duration,
    /// The last gap was too long for polling to catch.
    sparse: bool,
    /// When the queues drained, until the next command.
    idle_since: Option<Instant>,
}

/// How long a gap counts towards the window: one to two periods.
const PACE_PERIOD: Duration = Duration::from_millis(50);

impl PollPace {
    /// How long to poll after the queues drain, at most `cap`.
    pub fn window(&self, cap: Duration) -> Duration {
        let floor = cap / 4;
        if self.sparse {
            return floor;
        }
        if self.current.1.is_none() {
            return cap; // no gap seen yet
        }
        (self.current.0.max(self.previous) * 3 / 2).clamp(floor, cap)
    }

    /// The driver's next command came `gap` after the queues drained, `now`.
    pub fn observe(&mut self, gap: Duration, cap: Duration, now: Instant) {
        self.sparse = gap >= cap * 2;
        if self.sparse {
            return;
        }
        let (longest, began) = self.current;
        match began.map(|b| now.saturating_duration_since(b)) {
            Some(age) if age < PACE_PERIOD => {
                self.current.0 = longest.max(gap);
                return;
            }
            // The period before is the one that just ended, or nothing.
            Some(age) if age < PACE_PERIOD * 2 => self.previous = longest,
            _ => self.previous = Duration::ZERO,
        }
        self.current = (gap, Some(now));
    }
}

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
            let now = *self.drained_at.get_or_insert_with(Instant::now);
            self.pace.idle_since.get_or_insert(now);
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
        let expired = since.elapsed() >= self.pace.window(self.poll);
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

    /// A pass fetched commands: the end of the gap the poll window adapts to.
    pub(super) fn paced(&mut self, now: Instant) {
        if let Some(since) = self.pace.idle_since.take() {
            self.pace
                .observe(now.saturating_duration_since(since), self.poll, now);
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

#[cfg(test)]
mod tests {
    use super::PollPace;
    use std::time::{Duration, Instant};

    const CAP: Duration = Duration::from_micros(1000);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_poll_window_covers_the_longest_recent_gap_before_the_drivers_next_command() {
        let t = Instant::now();
        let mut p = PollPace::default();
        assert_eq!(p.window(CAP), CAP, "the whole cap until a gap is seen");
        // Queue depth 1 in a slow guest: the next command 250 us after the drain.
        p.observe(us(250), CAP, t);
        assert_eq!(p.window(CAP), us(375));
        // Queue depth 16: many short gaps and one long one (the interrupt's
        // round trip through the guest); the long one still counts.
        p.observe(us(500), CAP, t + us(300));
        for i in 0..100 {
            p.observe(us(20), CAP, t + us(400 + i * 50));
        }
        assert_eq!(p.window(CAP), us(750));
        // A slow guest whose gaps pass the cap: poll the whole cap.
        p.observe(us(1200), CAP, t + us(20_000));
        assert_eq!(p.window(CAP), CAP);
        // Only short gaps for two periods: the window shrinks to the floor.
        for ms in 21..130 {
            p.observe(us(20), CAP, t + Duration::from_millis(ms));
        }
        assert_eq!(p.window(CAP), CAP / 4);
    }

    #[test]
    fn the_poll_window_shrinks_while_the_driver_pauses_longer_than_twice_the_cap() {
        let t = Instant::now();
        let mut p = PollPace::default();
        p.observe(us(400), CAP, t);
        assert_eq!(p.window(CAP), us(600));
        // Sparse I/O: polling could not catch these, only burn a core.
        p.observe(Duration::from_millis(5), CAP, t + us(5_000));
        assert_eq!(p.window(CAP), CAP / 4);
        p.observe(Duration::from_millis(3), CAP, t + us(9_000));
        assert_eq!(p.window(CAP), CAP / 4);
        // The driver speeds up again: the next gap brings polling back.
        p.observe(us(200), CAP, t + us(10_000));
        assert_eq!(p.window(CAP), us(600), "the 400 us gap is still recent");
        assert_eq!(PollPace::default().window(Duration::ZERO), Duration::ZERO);
    }
}
