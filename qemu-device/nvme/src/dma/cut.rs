//! A fault rule's hold on one command's data transfer: `dma-fail` cuts it
//! after K bytes, `dma-stall-ms` holds its resolved memory before it moves.

use crate::dma::route::{Target, TargetClass};
use std::cell::Cell;
use std::time::Duration;

/// A data transfer cut short by a `dma-fail` fault rule (the first `after`
/// bytes to memory of the class, any without one, move, nothing after), or
/// held by a `dma-stall-ms` rule.
pub struct DmaCut {
    class: Option<TargetClass>,
    budget: Cell<u64>,
    tripped: Cell<bool>,
    /// How long the resolved transfer waits before it moves.
    pub(super) stall: Option<Duration>,
}

impl DmaCut {
    /// A cut after `after` bytes to `class`.
    pub fn new(class: Option<TargetClass>, after: u64) -> DmaCut {
        DmaCut {
            class,
            budget: Cell::new(after),
            tripped: Cell::new(false),
            stall: None,
        }
    }

    /// A transfer that moves whole, `ms` milliseconds after its memory was
    /// resolved (the DMA is in flight meanwhile: an unmap can hit it).
    pub fn stall(ms: u64) -> DmaCut {
        DmaCut {
            stall: Some(Duration::from_millis(ms)),
            ..DmaCut::new(None, u64::MAX)
        }
    }

    /// How much of a `len`-byte piece at `t` (None: bit bucket) moves.
    pub(super) fn allow(&self, t: Option<Target>, len: usize) -> usize {
        if self.tripped.get() {
            return 0;
        }
        if !t.is_some_and(|t| self.class.is_none_or(|c| c.holds(t))) {
            return len; // another class, or a bit bucket
        }
        let left = self.budget.get();
        let n = u64::try_from(len).unwrap_or(u64::MAX).min(left);
        self.budget.set(left - n);
        if n < len as u64 {
            self.tripped.set(true);
        }
        n as usize
    }
}
