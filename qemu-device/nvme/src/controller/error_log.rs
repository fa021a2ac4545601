//! The error log (log page 01h): the newest `ERROR_LOG_ENTRIES` entries
//! and the count of every error since power-on.
//!
//! Invariants: at most `ERROR_LOG_ENTRIES` entries, newest first; each
//! entry's `error_count` is the count when it was added, so counts in the
//! log only grow.

use crate::limits::ERROR_LOG_ENTRIES;
use crate::nvme::Status;
use crate::wire::{ErrorLogEntry, FromZeros, U16, U32, U64};
use std::collections::VecDeque;

/// A controller's error log.
#[derive(Default)]
pub struct ErrorLog {
    entries: VecDeque<ErrorLogEntry>,
    count: u64,
}

impl ErrorLog {
    /// Adds an entry for a command that failed with `s` (`lba`: the
    /// command's LBA; 0 for commands without one).
    pub fn record(&mut self, sqid: u16, cid: u16, s: Status, nsid: u32, lba: u64) {
        self.count += 1;
        let mut e = ErrorLogEntry::new_zeroed();
        e.error_count = U64::new(self.count);
        e.sqid = U16::new(sqid);
        e.cid = U16::new(cid);
        e.status = U16::new(s.field());
        e.param_error_location = U16::new(0xffff); // not specific to a field
        e.lba = U64::new(lba);
        e.nsid = U32::new(nsid);
        self.entries.push_front(e);
        self.entries.truncate(ERROR_LOG_ENTRIES);
    }

    /// The entries, newest first.
    pub fn entries(&self) -> &VecDeque<ErrorLogEntry> {
        &self.entries
    }

    /// Errors since power-on (SMART's error log entries).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Power-on state: no entries, count 0.
    pub fn clear(&mut self) {
        *self = ErrorLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_and_counts_all() {
        let mut log = ErrorLog::default();
        for cid in 0..(ERROR_LOG_ENTRIES as u16 + 3) {
            log.record(1, cid, Status::INVALID_FIELD, 1, 0);
        }
        assert_eq!(log.entries().len(), ERROR_LOG_ENTRIES);
        assert_eq!(log.count(), ERROR_LOG_ENTRIES as u64 + 3);
        assert_eq!(log.entries()[0].error_count.get(), log.count());
        log.clear();
        assert_eq!((log.entries().len(), log.count()), (0, 0));
    }
}
