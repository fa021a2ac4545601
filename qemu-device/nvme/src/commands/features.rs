//! Get and Set Features, and the values the host can change.

use crate::controller::{Controller, MAX_IO_QUEUES, MSIX_VECTORS};
use crate::nvme::{CmdResult, Sqe, Status};

/// Feature values the host can change.
pub struct Features {
    pub arbitration: u32,
    pub power_state: u32,
    pub temp_threshold: u32,
    pub vwc: bool,
    pub nsqa: u16,
    pub ncqa: u16,
    pub queues_set: bool,
    pub int_coalescing: u32,
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
            async_config: 0,
            timestamp_ms: 0,
            timestamp_at: std::time::Instant::now(),
            error_recovery: 0,
            write_atomicity: 0,
        }
    }
}

impl Controller {
    pub(super) fn get_features(&mut self, sqe: &Sqe) -> CmdResult {
        let fid = sqe.cdw(10) & 0xff;
        let sel = (sqe.cdw(10) >> 8) & 7;
        let f = &self.features;
        if sel == 3 {
            // Supported capabilities: changeable, not saveable.
            return match fid {
                0x01 | 0x02 | 0x04 | 0x05 | 0x06 | 0x07 | 0x08 | 0x09 | 0x0a | 0x0b | 0x0e => {
                    Ok(0x4)
                }
                _ => Err(Status::INVALID_FIELD),
            };
        }
        let d = Features::default();
        let f = if sel == 1 { &d } else { f };
        match fid {
            0x01 => Ok(f.arbitration),
            0x02 => Ok(f.power_state),
            0x04 => Ok(f.temp_threshold),
            0x06 => Ok(f.vwc as u32),
            0x07 => Ok(((f.ncqa as u32 - 1) << 16) | (f.nsqa as u32 - 1)),
            0x08 => Ok(f.int_coalescing),
            0x09 => {
                let iv = sqe.cdw(11) & 0xffff;
                if iv as usize >= MSIX_VECTORS {
                    return Err(Status::INVALID_FIELD);
                }
                Ok(iv)
            }
            0x05 => Ok(f.error_recovery),
            0x0a => Ok(f.write_atomicity),
            0x0b => Ok(f.async_config),
            0x0e => {
                let now = f.timestamp_ms + f.timestamp_at.elapsed().as_millis() as u64;
                let mut b = [0u8; 8];
                b[..6].copy_from_slice(&now.to_le_bytes()[..6]);
                b[6] = 1 << 1; // timestamp set by the host
                self.send_to_host(sqe, &b)
            }
            _ => Err(Status::INVALID_FIELD),
        }
    }

    pub(super) fn set_features(&mut self, sqe: &Sqe) -> CmdResult {
        let fid = sqe.cdw(10) & 0xff;
        if sqe.cdw(10) >> 31 != 0 {
            return Err(Status::FEATURE_NOT_SAVEABLE);
        }
        let v = sqe.cdw(11);
        match fid {
            0x01 => self.features.arbitration = v,
            0x02 => {
                if v & 0x1f != 0 {
                    return Err(Status::INVALID_FIELD); // one power state
                }
                self.features.power_state = v;
            }
            0x04 => self.features.temp_threshold = v & 0xffff,
            0x06 => self.features.vwc = v & 1 != 0,
            0x07 => {
                let (nsqr, ncqr) = (v & 0xffff, v >> 16);
                if nsqr == 0xffff || ncqr == 0xffff {
                    return Err(Status::INVALID_FIELD);
                }
                if !self.features.queues_set {
                    self.features.nsqa = (nsqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                    self.features.ncqa = (ncqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                    self.features.queues_set = true;
                }
                let f = &self.features;
                return Ok(((f.ncqa as u32 - 1) << 16) | (f.nsqa as u32 - 1));
            }
            0x08 => self.features.int_coalescing = v & 0xffff,
            0x09 => {
                if (v & 0xffff) as usize >= MSIX_VECTORS {
                    return Err(Status::INVALID_FIELD);
                }
            }
            0x05 => {
                // DULBE needs deallocated-block errors, which we do not
                // report; TLER is accepted and kept.
                if v & (1 << 16) != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                self.features.error_recovery = v & 0xffff;
            }
            0x0a => self.features.write_atomicity = v & 1,
            0x0b => self.features.async_config = v,
            0x0e => {
                let b = self.receive_from_host(sqe, 8)?;
                let mut t = [0u8; 8];
                t[..6].copy_from_slice(&b[..6]);
                self.features.timestamp_ms = u64::from_le_bytes(t);
                self.features.timestamp_at = std::time::Instant::now();
            }
            // Host Memory Buffer: not offered (HMPRE = 0).
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(0)
    }
}
