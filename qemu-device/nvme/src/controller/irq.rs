//! Interrupt batching and Interrupt Coalescing (Features 08h and 09h).
//!
//! A completion queue that got new entries is marked, and the worker
//! signals each marked queue's vector once, when its pass ends: one eventfd
//! write (one injected interrupt, whose handler reaps every new entry)
//! covers all completions of the pass. When the host set an aggregation
//! threshold and time (Feature 08h) and did not disable coalescing on the
//! vector (Feature 09h, CD), an I/O queue's vector is signalled only once
//! THR + 1 entries accumulated or TIME x 100 us passed since the first one;
//! the admin queue's entries are never held. Without a host setting, the
//! device's adaptive moderation (`--irq-moderation-us`, 50 µs by default)
//! holds I/O vectors' entries until no command arrived for that long: a
//! driver that keeps submitting gets one interrupt per burst. The holds
//! from the first until the last is signalled form a round, counted over
//! all vectors (a process that moves between CPUs submits to the queues of
//! each). A round that gathered a single entry bought nothing (the
//! driver was waiting for each completion, as at queue depth 1, or its
//! next command came later than the moderation time): the next
//! `MODERATION_PROBE` signals then go out at once, and only then is a hold
//! tried again. A round that started after the driver went quiet and ended
//! when it went quiet again measured what the driver keeps in flight (its
//! queue depth as the device sees it): later rounds signal as soon as they
//! gathered that many, without waiting for the quiet time, and after
//! `MODERATION_PROBE` rounds one measures again (a driver that went
//! shallower meanwhile costs a quiet wait per round until then).

use super::*;

/// Moderation signals a vector at once when this many entries are held.
const MODERATION_ENTRIES: u32 = 32;
/// Moderation holds an entry at most this many moderation periods.
const MODERATION_CAP: u32 = 10;
/// After a round that gathered a single entry, this many signals go out
/// unheld before moderation tries again; and after this many rounds the
/// driver's depth is measured again.
const MODERATION_PROBE: u32 = 16;

/// A vector's entries held back from an interrupt.
#[derive(Clone, Copy, Default)]
struct Hold {
    /// Entries held.
    entries: u32,
    /// When the first was held (None: nothing held).
    since: Option<Instant>,
    /// Held by moderation (not by the host's coalescing).
    moderated: bool,
}

/// Moderation's holds on all vectors, from the first until the last is
/// signalled.
#[derive(Clone, Copy, Default)]
struct Round {
    /// Held entries on all vectors at which all are signalled (0: no
    /// round runs).
    limit: u32,
    /// Entries the round gathered.
    entries: u32,
}

/// What moderation learned about the driver.
#[derive(Clone, Copy, Default)]
struct Learned {
    /// Entries a round that waited for quiet gathered (0: unknown).
    depth: u32,
    /// Rounds left before one ignores `depth` and measures it again.
    trusted: u32,
    /// The current round measures: it waits for quiet whatever it holds.
    measuring: bool,
    /// The last round ended in quiet: the driver had nothing in flight, so
    /// the next round sees all it submits.
    synced: bool,
}

impl Learned {
    /// The entries at which a new round signals at once.
    fn limit(&mut self) -> u32 {
        // Measure only from a quiet start: a round that starts while the
        // driver still has commands in flight would see a part of them.
        self.measuring = self.depth < 2 || (self.trusted == 0 && self.synced);
        if self.measuring {
            self.trusted = MODERATION_PROBE;
            return MODERATION_ENTRIES;
        }
        self.trusted = self.trusted.saturating_sub(1);
        self.depth.min(MODERATION_ENTRIES)
    }

    /// A round with `limit` ended with `entries`. One that ended in quiet
    /// before its limit measured the driver's depth; any other only shows
    /// that it is at least that deep (the rest of a depth that was cut
    /// short also ends in quiet, and must not pass for the depth).
    fn released(&mut self, entries: u32, limit: u32) {
        self.synced = entries < limit;
        if self.synced {
            self.depth = match self.measuring {
                true => entries,
                false => self.depth.max(entries),
            };
        }
    }
}

/// What the worker remembers about unsignalled completions.
pub struct IrqState {
    /// Completion queues (bit = CQ id) with entries not yet signalled.
    due: u128,
    /// Per CQ: entries posted since its vector was last signalled.
    fresh: Vec<u32>,
    /// Per vector: entries held by coalescing or moderation.
    held: Vec<Hold>,
    /// Some vector holds entries.
    holding: bool,
    /// Signals left that moderation lets out unheld.
    unheld: u32,
    /// Moderation's current round of holds.
    round: Round,
    /// The driver's depth moderation learned.
    learned: Learned,
}

impl Default for IrqState {
    fn default() -> Self {
        IrqState {
            due: 0,
            fresh: vec![0; MAX_IO_QUEUES + 1],
            held: vec![Hold::default(); crate::limits::MSIX_VECTORS],
            holding: false,
            unheld: 0,
            round: Round::default(),
            learned: Learned::default(),
        }
    }
}

/// The host's aggregation setting: (threshold in entries, time), when
/// coalescing is on (both fields non-zero; a zero time allows no delay and
/// a 0's based threshold of 0 is one entry).
fn aggregation(int_coalescing: u32) -> Option<(u32, Duration)> {
    let thr = (int_coalescing & 0xff) + 1;
    let time = (int_coalescing >> 8) & 0xff;
    (thr > 1 && time > 0).then(|| (thr, Duration::from_micros(time as u64 * 100)))
}

impl Controller {
    /// `n` new entries on `cqid`: its vector is signalled when the pass ends.
    pub(super) fn mark_irq(&mut self, cqid: usize, n: u32) {
        if let Some(f) = self.irq.fresh.get_mut(cqid) {
            *f = f.saturating_add(n);
            self.irq.due |= 1u128 << cqid;
        }
    }

    /// Signals the vectors of the completion queues marked since the last
    /// call (each vector once), holding I/O queues' entries while the
    /// host's coalescing setting allows; signals held vectors whose time
    /// is up (or whose coalescing the host turned off).
    pub(super) fn signal_marked(&mut self) {
        if self.irq.due == 0 && !self.irq.holding {
            return;
        }
        let agg = aggregation(self.features.int_coalescing());
        // The host's own setting wins over the device's moderation.
        let moderate = agg.is_none() && !self.worker.moderation().is_zero();
        let now = (agg.is_some() || moderate).then(Instant::now);
        let no_coalescing = self.features.no_coalescing();
        let mut due = std::mem::take(&mut self.irq.due);
        let mut signal = 0u64; // bit = vector
        while due != 0 {
            let cqid = due.trailing_zeros() as usize;
            due &= due - 1;
            let n = std::mem::take(&mut self.irq.fresh[cqid]);
            let Some(iv) = self.queues.cq_vector(cqid).map(usize::from) else {
                continue;
            };
            if iv >= self.irq.held.len() {
                continue;
            }
            let coalesce = cqid != 0 && no_coalescing & (1 << iv) == 0;
            // How many entries a held vector collects before it signals:
            // the host's threshold, or the device's moderation limit.
            let limit = match (agg, coalesce) {
                (Some((thr, _)), true) => Some(thr),
                (None, true) if moderate && self.irq.unheld == 0 => Some(MODERATION_ENTRIES),
                (None, true) if moderate => {
                    self.irq.unheld -= 1;
                    None
                }
                _ => None,
            };
            match (limit, now) {
                (Some(limit), Some(now)) => {
                    let held = &mut self.irq.held[iv];
                    if held.since.is_none() {
                        *held = Hold {
                            entries: 0,
                            since: Some(now),
                            moderated: moderate,
                        };
                    }
                    held.entries = held.entries.saturating_add(n);
                    self.irq.holding = true;
                    if held.entries >= limit {
                        signal |= 1 << iv;
                    }
                    if moderate {
                        let round = &mut self.irq.round;
                        if round.limit == 0 {
                            *round = Round {
                                limit: self.irq.learned.limit(),
                                entries: 0,
                            };
                        }
                        round.entries = round.entries.saturating_add(n);
                    }
                }
                _ => signal |= 1 << iv,
            }
        }
        // The driver's depth completed: it has nothing left to submit.
        let round = self.irq.round;
        let depth_done = round.limit > 0 && round.entries >= round.limit;
        if self.irq.holding {
            for (iv, held) in self.irq.held.iter().enumerate() {
                let Some(since) = held.since else { continue };
                // No clock: neither coalescing nor moderation holds now.
                let release = (held.moderated && depth_done)
                    || now.is_none_or(|now| {
                        no_coalescing & (1 << iv) != 0
                            || self.hold_due(agg, since).is_some_and(|due| due <= now)
                    });
                if release {
                    signal |= 1 << iv;
                }
            }
        }
        while signal != 0 {
            let iv = signal.trailing_zeros() as usize;
            signal &= signal - 1;
            self.irq.held[iv] = Hold::default();
            self.interrupt(iv as u16);
        }
        self.irq.holding = self.irq.held.iter().any(|h| h.since.is_some());
        if round.limit > 0 && !self.irq.held.iter().any(|h| h.moderated) {
            // The round's last hold was signalled; one that gathered a
            // single entry only added latency (a driver waiting for each).
            let round = std::mem::take(&mut self.irq.round);
            if moderate && round.entries <= 1 {
                self.irq.unheld = MODERATION_PROBE;
            }
            self.irq.learned.released(round.entries, round.limit);
        }
    }

    /// When the earliest vector held by coalescing must be signalled (the
    /// worker sleeps no longer than that).
    pub fn irq_deadline(&self) -> Option<Instant> {
        if !self.irq.holding {
            return None;
        }
        let since = self.irq.held.iter().filter_map(|h| h.since).min()?;
        self.hold_due(aggregation(self.features.int_coalescing()), since)
    }

    /// When entries held since `since` are signalled: after the host's
    /// aggregation time, or (no host setting) when moderation says.
    fn hold_due(&self, agg: Option<(u32, Duration)>, since: Instant) -> Option<Instant> {
        match agg {
            Some((_, time)) => since.checked_add(time),
            None => Some(self.moderation_due(since)),
        }
    }

    /// When entries held by moderation since `since` are signalled: once
    /// no command arrived for `moderation` (the host stopped submitting
    /// and waits), and no later than `MODERATION_CAP` times that.
    fn moderation_due(&self, since: Instant) -> Instant {
        let moderation = self.worker.moderation();
        let cap = since + moderation * MODERATION_CAP;
        match self.worker.last_fetch() {
            Some(t) => (t + moderation).min(cap),
            None => since,
        }
    }

    /// Forgets unsignalled completions (the queues are gone).
    pub(super) fn reset_irqs(&mut self) {
        self.irq = IrqState::default();
    }
}
