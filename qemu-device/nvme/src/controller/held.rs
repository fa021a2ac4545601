//! Completions fault rules hold back: delayed ones (posted when due) and
//! `never` ones (dropped by a reset). `T` is what the owner keeps with each
//! (the command's trace record), which this part never looks at.
//!
//! Invariant: an entry leaves only through `take_due`, `take_all` or
//! `take_of_sq`, so the owner ends each one (posts it or traces it as
//! dropped).

use crate::nvme::Status;
use std::time::Instant;

/// One held completion.
pub struct Held<T> {
    /// When to post it (None: never; a reset drops it).
    pub due: Option<Instant>,
    /// Its completion queue.
    pub cqid: usize,
    /// Its submission queue.
    pub sqid: u16,
    /// Its command id.
    pub cid: u16,
    /// Completion dword 0.
    pub dw0: u32,
    /// Completion status.
    pub status: Status,
    /// The owner's payload.
    pub extra: T,
}

/// The held completions of one controller.
pub struct HeldCompletions<T> {
    list: Vec<Held<T>>,
}

impl<T> Default for HeldCompletions<T> {
    fn default() -> Self {
        HeldCompletions { list: vec![] }
    }
}

impl<T> HeldCompletions<T> {
    /// Holds a completion.
    pub fn hold(&mut self, h: Held<T>) {
        self.list.push(h);
    }

    /// How many are held.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The earliest time one is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.list.iter().filter_map(|h| h.due).min()
    }

    /// Removes and returns those due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Held<T>> {
        let (due, kept) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|h| h.due.is_some_and(|d| d <= now));
        self.list = kept;
        due
    }

    /// Removes and returns all of them.
    pub fn take_all(&mut self) -> Vec<Held<T>> {
        std::mem::take(&mut self.list)
    }

    /// Removes and returns those of submission queue `sqid`.
    pub fn take_of_sq(&mut self, sqid: u16) -> Vec<Held<T>> {
        let (gone, kept) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|h| h.sqid == sqid);
        self.list = kept;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn held(sqid: u16, due: Option<Instant>) -> Held<()> {
        Held {
            due,
            cqid: 1,
            sqid,
            cid: 0,
            dw0: 0,
            status: Status::SUCCESS,
            extra: (),
        }
    }

    #[test]
    fn due_entries_leave_and_never_entries_wait_for_a_reset() {
        let now = Instant::now();
        let mut h = HeldCompletions::default();
        h.hold(held(1, Some(now)));
        h.hold(held(1, None));
        h.hold(held(2, Some(now + Duration::from_secs(60))));
        assert_eq!(h.next_due(), Some(now));
        assert_eq!(h.take_due(now).len(), 1);
        assert_eq!(h.take_of_sq(1).len(), 1, "the never entry of SQ 1");
        assert_eq!(h.len(), 1);
        assert_eq!(h.take_all().len(), 1);
        assert!(h.is_empty());
    }
}
