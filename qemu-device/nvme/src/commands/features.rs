//! The features part: the feature values the host can change (Get and Set
//! Features) and the host counters SMART reports. The controller owns one;
//! commands reach it only through these methods.

use crate::limits::MAX_IO_QUEUES;
use crate::nvme::{fid, CmdResult, Status};
use std::time::Instant;

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

/// Feature values the host can change (a controller reset restores them).
struct Values {
    arbitration: u32,
    power_state: u32,
    temp_threshold: u32,
    vwc: bool,
    nsqa: u16,
    ncqa: u16,
    queues_set: bool,
    /// Interrupt Coalescing (08h): THR (bits 7:0), TIME (15:8).
    int_coalescing: u32,
    /// Interrupt Vector Configuration (09h): CD per vector (bit = vector).
    no_coalescing: u32,
    async_config: u32,
    timestamp_ms: u64,
    timestamp_at: Instant,
    /// Error Recovery (05h): TLER and DULBE as the host set them.
    error_recovery: u32,
    /// Write Atomicity Normal (0Ah): DN bit.
    write_atomicity: u32,
}

impl Default for Values {
    fn default() -> Self {
        Values {
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
            timestamp_at: Instant::now(),
            error_recovery: 0,
            write_atomicity: 0,
        }
    }
}

impl Values {
    fn queues(&self) -> u32 {
        ((self.ncqa as u32 - 1) << 16) | (self.nsqa as u32 - 1)
    }
}

/// What Get Features returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Feature {
    /// Completion dword 0.
    Value(u32),
    /// The Timestamp feature's data (sent to the host buffer).
    Timestamp([u8; 8]),
}

/// The feature values and host counters of one controller.
#[derive(Default)]
pub struct Features {
    values: Values,
    host: HostCounters,
}

impl Features {
    /// Controller reset: feature values back to their defaults (the host
    /// counters count on).
    pub fn reset(&mut self) {
        self.values = Values::default();
    }

    /// I/O submission queues granted (Number of Queues).
    pub fn sqs_allowed(&self) -> u16 {
        self.values.nsqa
    }

    /// I/O completion queues granted (Number of Queues).
    pub fn cqs_allowed(&self) -> u16 {
        self.values.ncqa
    }

    /// Interrupt Coalescing (08h): THR (bits 7:0), TIME (15:8).
    pub fn int_coalescing(&self) -> u32 {
        self.values.int_coalescing
    }

    /// Vectors whose coalescing the host disabled (bit = vector).
    pub fn no_coalescing(&self) -> u32 {
        self.values.no_coalescing
    }

    /// SMART's host counters.
    pub fn host(&self) -> &HostCounters {
        &self.host
    }

    /// What an I/O command needs: the write cache setting, and the
    /// counters it adds to.
    pub fn io_view(&mut self) -> (bool, &mut HostCounters) {
        (self.values.vwc, &mut self.host)
    }

    /// Get Features `id` with select `sel`; `cdw11` names the vector for
    /// Interrupt Vector Configuration, of `vectors`.
    pub fn get(&self, id: u8, sel: u32, cdw11: u32, vectors: usize) -> Result<Feature, Status> {
        if sel == 3 {
            // Supported capabilities: changeable, not saveable.
            return match id {
                fid::ARBITRATION
                | fid::POWER_MANAGEMENT
                | fid::TEMPERATURE_THRESHOLD
                | fid::ERROR_RECOVERY
                | fid::VOLATILE_WRITE_CACHE
                | fid::NUMBER_OF_QUEUES
                | fid::INTERRUPT_COALESCING
                | fid::INTERRUPT_VECTOR_CONFIG
                | fid::WRITE_ATOMICITY
                | fid::ASYNC_EVENT_CONFIG
                | fid::TIMESTAMP => Ok(Feature::Value(0x4)),
                _ => Err(Status::INVALID_FIELD),
            };
        }
        let d = Values::default();
        let f = if sel == 1 { &d } else { &self.values };
        let v = match id {
            fid::ARBITRATION => f.arbitration,
            fid::POWER_MANAGEMENT => f.power_state,
            fid::TEMPERATURE_THRESHOLD => f.temp_threshold,
            fid::VOLATILE_WRITE_CACHE => f.vwc as u32,
            fid::NUMBER_OF_QUEUES => f.queues(),
            fid::INTERRUPT_COALESCING => f.int_coalescing,
            fid::INTERRUPT_VECTOR_CONFIG => {
                let iv = cdw11 & 0xffff;
                if iv as usize >= vectors {
                    return Err(Status::INVALID_FIELD);
                }
                iv | ((f.no_coalescing >> iv) & 1) << 16
            }
            fid::ERROR_RECOVERY => f.error_recovery,
            fid::WRITE_ATOMICITY => f.write_atomicity,
            fid::ASYNC_EVENT_CONFIG => f.async_config,
            fid::TIMESTAMP => {
                let now = f.timestamp_ms + f.timestamp_at.elapsed().as_millis() as u64;
                let mut b = [0u8; 8];
                b[..6].copy_from_slice(&now.to_le_bytes()[..6]);
                b[6] = 1 << 1; // timestamp set by the host
                return Ok(Feature::Timestamp(b));
            }
            _ => return Err(Status::INVALID_FIELD),
        };
        Ok(Feature::Value(v))
    }

    /// Set Features `id` to `v` (CDW11), of `vectors` interrupt vectors.
    /// Timestamp takes its data from the host: see `set_timestamp`.
    pub fn set(&mut self, id: u8, v: u32, vectors: usize) -> CmdResult {
        let f = &mut self.values;
        match id {
            fid::ARBITRATION => f.arbitration = v,
            fid::POWER_MANAGEMENT => {
                if v & 0x1f != 0 {
                    return Err(Status::INVALID_FIELD); // one power state
                }
                f.power_state = v;
            }
            fid::TEMPERATURE_THRESHOLD => f.temp_threshold = v & 0xffff,
            fid::VOLATILE_WRITE_CACHE => f.vwc = v & 1 != 0,
            fid::NUMBER_OF_QUEUES => {
                let (nsqr, ncqr) = (v & 0xffff, v >> 16);
                if nsqr == 0xffff || ncqr == 0xffff {
                    return Err(Status::INVALID_FIELD);
                }
                if !f.queues_set {
                    f.nsqa = (nsqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                    f.ncqa = (ncqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                    f.queues_set = true;
                }
                return Ok(f.queues());
            }
            fid::INTERRUPT_COALESCING => f.int_coalescing = v & 0xffff,
            fid::INTERRUPT_VECTOR_CONFIG => {
                let iv = v & 0xffff;
                if iv as usize >= vectors {
                    return Err(Status::INVALID_FIELD);
                }
                if v & (1 << 16) != 0 {
                    f.no_coalescing |= 1 << iv;
                } else {
                    f.no_coalescing &= !(1 << iv);
                }
            }
            fid::ERROR_RECOVERY => {
                // DULBE needs deallocated-block errors, which we do not
                // report; TLER is accepted and kept.
                if v & (1 << 16) != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                f.error_recovery = v & 0xffff;
            }
            fid::WRITE_ATOMICITY => f.write_atomicity = v & 1,
            fid::ASYNC_EVENT_CONFIG => f.async_config = v,
            // Host Memory Buffer: not offered (HMPRE = 0).
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(0)
    }

    /// Set Features Timestamp: the host's 6-byte millisecond count.
    pub fn set_timestamp(&mut self, data: [u8; 6]) {
        let mut t = [0u8; 8];
        t[..6].copy_from_slice(&data);
        self.values.timestamp_ms = u64::from_le_bytes(t);
        self.values.timestamp_at = Instant::now();
    }
}
