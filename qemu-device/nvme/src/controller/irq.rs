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
//! device's adaptive moderation (`--irq-moderation-us`, off by default)
//! holds an I/O vector's entries until no command arrived for that long: a
//! driver that keeps submitting gets one interrupt per burst. A hold that
//! gathered no entry beyond those it started with bought nothing (the
//! driver was waiting for exactly those, as at queue depth 1, or its next
//! command came later than the moderation time): the vector's next
//! `MODERATION_PROBE` signals then go out at once, and only then is a hold
//! tried again.

use super::*;

/// Moderation signals a vector at once when this many entries are held.
const MODERATION_ENTRIES: u32 = 32;
/// Moderation holds an entry at most this many moderation periods.
const MODERATION_CAP: u32 = 10;
/// After a hold that gathered no new entry, this many signals of the
/// vector go out unheld before moderation tries again.
const MODERATION_PROBE: u32 = 16;

/// A vector's entries held back from an interrupt.
#[derive(Clone, Copy, Default)]
struct Hold {
    /// Entries held.
    entries: u32,
    /// When the first was held (None: nothing held).
    since: Option<Instant>,
    /// Entries the hold started with.
    first: u32,
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
    /// Per vector: signals left that moderation lets out unheld.
    unheld: Vec<u32>,
}

impl Default for IrqState {
    fn default() -> Self {
        IrqState {
            due: 0,
            fresh: vec![0; MAX_IO_QUEUES + 1],
            held: vec![Hold::default(); crate::limits::MSIX_VECTORS],
            holding: false,
            unheld: vec![0; crate::limits::MSIX_VECTORS],
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
                (None, true) if moderate && self.irq.unheld[iv] == 0 => Some(MODERATION_ENTRIES),
                (None, true) if moderate => {
                    self.irq.unheld[iv] -= 1;
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
                            first: n,
                        };
                    }
                    held.entries = held.entries.saturating_add(n);
                    self.irq.holding = true;
                    if held.entries >= limit {
                        signal |= 1 << iv;
                    }
                }
                _ => signal |= 1 << iv,
            }
        }
        if self.irq.holding {
            for (iv, held) in self.irq.held.iter().enumerate() {
                let Some(since) = held.since else { continue };
                // No clock: neither coalescing nor moderation holds now.
                let release = now.is_none_or(|now| {
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
            let held = std::mem::take(&mut self.irq.held[iv]);
            if moderate && held.since.is_some() && held.entries <= held.first {
                self.irq.unheld[iv] = MODERATION_PROBE;
            }
            self.interrupt(iv as u16);
        }
        self.irq.holding = self.irq.held.iter().any(|h| h.since.is_some());
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
