//! What the commands keep between commands and share among themselves:
//! the feature values the host can change, SMART's host counters and the
//! transfer limit. A leaf below every command module.

use crate::limits::MAX_IO_QUEUES;

/// Maximum data transfer size: 2^7 4 KiB pages = 512 KiB.
pub const MDTS: u8 = 7;
/// Largest data transfer of one command, in bytes.
pub const MAX_TRANSFER: usize = 4096 << MDTS;

/// The host read and write counters SMART reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCounters {
    /// Read (and Compare) commands completed.
    pub reads: u64,
    /// Write commands completed.
    pub writes: u64,
    /// Exact data bytes read (SMART derives its rounded units from these).
    pub bytes_read: u64,
    /// Exact data bytes written.
    pub bytes_written: u64,
}

/// Feature values the host can change.
pub struct Features {
    pub arbitration: u32,
    pub power_state: u32,
    pub temp_threshold: u32,
    pub vwc: bool,
    pub nsqa: u16,
    pub ncqa: u16,
    pub queues_set: bool,
    /// Interrupt Coalescing (08h): THR (bits 7:0), TIME (15:8).
    pub int_coalescing: u32,
    /// Interrupt Vector Configuration (09h): CD per vector (bit = vector).
    pub no_coalescing: u32,
    pub async_config: u32,
    pub timestamp_ms: u64,
    pub timestamp_at: std::time::Instant,
    /// Error Recovery (05h): TLER and DULBE as the host set them.
    pub error_recovery: u32,
    /// Write Atomicity Normal (0Ah): DN bit.
    pub write_atomicity: u32,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            arbitration: 0,
            power_state: 0,
            temp_threshold: 343,
            vwc: true,
            nsqa: MAX_IO_QUEUES as u16,
            ncqa: MAX_IO_QUEUES as u16,
            queues_set: false,
            int_coalescing: 0,
            no_coalescing: 0,
            async_config: 0,
            timestamp_ms: 0,
            timestamp_at: std::time::Instant::now(),
            error_recovery: 0,
            write_atomicity: 0,
        }
    }
}
