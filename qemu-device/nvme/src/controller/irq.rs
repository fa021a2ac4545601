//! Interrupt batching: a completion queue that got new entries is marked,
//! and the worker signals each marked queue's vector once, when its pass
//! ends. One eventfd write (one injected interrupt for the guest, whose
//! handler reaps every new entry) then covers all completions of the pass.

use super::*;

impl Controller {
    /// `cqid` got new entries: its vector is signalled when the pass ends.
    pub(super) fn mark_irq(&mut self, cqid: usize) {
        self.irq_due |= 1u128.checked_shl(cqid as u32).unwrap_or(0);
    }

    /// Signals the vector of every completion queue marked since the last
    /// call (interrupts enabled on the queue), each vector once.
    pub(super) fn signal_marked(&mut self) {
        let mut due = std::mem::take(&mut self.irq_due);
        let mut signalled = 0u64;
        while due != 0 {
            let cqid = due.trailing_zeros() as usize;
            due &= due - 1;
            let Some(cq) = self.cqs.get(cqid).and_then(|q| q.as_ref()) else {
                continue;
            };
            let bit = 1u64.checked_shl(cq.iv as u32).unwrap_or(0);
            if cq.ien && signalled & bit == 0 {
                signalled |= bit;
                let iv = cq.iv;
                self.interrupt(iv);
            }
        }
    }
}
