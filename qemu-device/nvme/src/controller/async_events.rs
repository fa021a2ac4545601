//! Asynchronous events: the host's outstanding Asynchronous Event Requests,
//! the events waiting for one, the event types masked until their log page
//! is read, and the state those log pages report (SMART critical warning,
//! Changed Namespace List).
//!
//! Invariants: at most `AER_LIMIT` requests outstanding; at most one queued
//! event of each kind (a misbehaving guest cannot grow the queue); a
//! delivered event's type stays masked until the host reads its log page
//! without Retain Asynchronous Event (see `commands::log_pages`).

use std::collections::VecDeque;

/// Asynchronous Event Requests a host may leave outstanding (AERL + 1).
pub const AER_LIMIT: usize = 4;

/// A controller's asynchronous event state.
#[derive(Default)]
pub struct AsyncEvents {
    /// CIDs of outstanding requests, oldest first.
    requests: Vec<u16>,
    /// Completion dword 0 of each queued event, oldest first.
    queued: VecDeque<u32>,
    /// Event types (bit = type) masked until their log page is read.
    masked: u8,
    /// SMART critical warning bits.
    critical_warning: u8,
    /// Changed Namespace List (log page 04h) since it was last read.
    changed_ns: Vec<u32>,
}

/// An event delivered to a request: complete `cid` with `dw0`.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The request's command id.
    pub cid: u16,
    /// Completion dword 0 (type, info, log page).
    pub dw0: u32,
}

impl AsyncEvents {
    /// Holds a request; false when `AER_LIMIT` are already outstanding.
    pub fn request(&mut self, cid: u16) -> bool {
        if self.requests.len() >= AER_LIMIT {
            return false;
        }
        self.requests.push(cid);
        true
    }

    /// Queues an event (completion dword 0) unless one like it waits.
    pub fn queue(&mut self, dw0: u32) {
        if !self.queued.contains(&dw0) {
            self.queued.push_back(dw0);
        }
    }

    /// The next event to complete a request with, its type then masked;
    /// None when no request waits or every queued type is masked.
    pub fn next_delivery(&mut self) -> Option<Delivery> {
        if self.requests.is_empty() {
            return None;
        }
        let i = self
            .queued
            .iter()
            .position(|ev| self.masked & (1 << (ev & 7)) == 0)?;
        let dw0 = self.queued.remove(i)?;
        self.masked |= 1 << (dw0 & 7);
        Some(Delivery {
            cid: self.requests.remove(0),
            dw0,
        })
    }

    /// Events waiting for a request.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// SMART reports reliability degraded (critical warning bit 2).
    pub fn degrade_reliability(&mut self) {
        self.critical_warning |= 1 << 2;
    }

    /// Adds `nsid` to the Changed Namespace List.
    pub fn namespace_changed(&mut self, nsid: u32) {
        if !self.changed_ns.contains(&nsid) {
            self.changed_ns.push(nsid);
        }
    }

    /// What the log pages read and change: the masked types, the critical
    /// warning and the Changed Namespace List.
    pub fn log_view(&mut self) -> (&mut u8, u8, &mut Vec<u32>) {
        (
            &mut self.masked,
            self.critical_warning,
            &mut self.changed_ns,
        )
    }

    /// Controller reset: requests and queued events go; masks and the log
    /// pages' state stay.
    pub fn reset(&mut self) {
        self.requests.clear();
        self.queued.clear();
    }

    /// Function reset or a new client: power-on state.
    pub fn power_on(&mut self) {
        *self = AsyncEvents::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_of_a_kind_and_its_type_masked_after_delivery() {
        let mut e = AsyncEvents::default();
        e.queue(0x01 << 16 | 1);
        e.queue(0x01 << 16 | 1);
        e.queue(0x04 << 16 | 1 << 8 | 1);
        assert_eq!(e.queued(), 2);
        assert_eq!(e.next_delivery(), None, "no request");
        assert!(e.request(7));
        assert_eq!(e.next_delivery().map(|d| d.cid), Some(7));
        assert!(e.request(8));
        assert_eq!(e.next_delivery(), None, "type 1 is masked now");
        *e.log_view().0 = 0;
        assert_eq!(e.next_delivery().map(|d| d.cid), Some(8));
        for cid in 0..AER_LIMIT as u16 {
            assert!(e.request(cid));
        }
        assert!(!e.request(99), "AER limit");
    }
}
