//! Get and Set Features, and the values the host can change.

use super::admin::AdminCtx;
use super::state::Features;
use crate::limits::MAX_IO_QUEUES;
use crate::nvme::{fid, CmdResult, Sqe, Status};

/// Get Features: the current, default or supported value (SEL).
pub(super) fn get_features(c: &mut AdminCtx<'_>, sqe: &Sqe) -> CmdResult {
    let id = (sqe.cdw(10) & 0xff) as u8;
    let sel = (sqe.cdw(10) >> 8) & 7;
    let f = &c.features;
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
            | fid::TIMESTAMP => Ok(0x4),
            _ => Err(Status::INVALID_FIELD),
        };
    }
    let d = Features::default();
    let f = if sel == 1 { &d } else { f };
    match id {
        fid::ARBITRATION => Ok(f.arbitration),
        fid::POWER_MANAGEMENT => Ok(f.power_state),
        fid::TEMPERATURE_THRESHOLD => Ok(f.temp_threshold),
        fid::VOLATILE_WRITE_CACHE => Ok(f.vwc as u32),
        fid::NUMBER_OF_QUEUES => Ok(((f.ncqa as u32 - 1) << 16) | (f.nsqa as u32 - 1)),
        fid::INTERRUPT_COALESCING => Ok(f.int_coalescing),
        fid::INTERRUPT_VECTOR_CONFIG => {
            let iv = sqe.cdw(11) & 0xffff;
            if iv as usize >= c.vectors {
                return Err(Status::INVALID_FIELD);
            }
            let cd = (f.no_coalescing >> iv) & 1;
            Ok(iv | cd << 16)
        }
        fid::ERROR_RECOVERY => Ok(f.error_recovery),
        fid::WRITE_ATOMICITY => Ok(f.write_atomicity),
        fid::ASYNC_EVENT_CONFIG => Ok(f.async_config),
        fid::TIMESTAMP => {
            let now = f.timestamp_ms + f.timestamp_at.elapsed().as_millis() as u64;
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(&now.to_le_bytes()[..6]);
            b[6] = 1 << 1; // timestamp set by the host
            c.send_to_host(sqe, &b)
        }
        _ => Err(Status::INVALID_FIELD),
    }
}

/// Set Features (none saveable).
pub(super) fn set_features(c: &mut AdminCtx<'_>, sqe: &Sqe) -> CmdResult {
    let id = (sqe.cdw(10) & 0xff) as u8;
    if sqe.cdw(10) >> 31 != 0 {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    let v = sqe.cdw(11);
    match id {
        fid::ARBITRATION => c.features.arbitration = v,
        fid::POWER_MANAGEMENT => {
            if v & 0x1f != 0 {
                return Err(Status::INVALID_FIELD); // one power state
            }
            c.features.power_state = v;
        }
        fid::TEMPERATURE_THRESHOLD => c.features.temp_threshold = v & 0xffff,
        fid::VOLATILE_WRITE_CACHE => c.features.vwc = v & 1 != 0,
        fid::NUMBER_OF_QUEUES => {
            let (nsqr, ncqr) = (v & 0xffff, v >> 16);
            if nsqr == 0xffff || ncqr == 0xffff {
                return Err(Status::INVALID_FIELD);
            }
            if !c.features.queues_set {
                c.features.nsqa = (nsqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                c.features.ncqa = (ncqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                c.features.queues_set = true;
            }
            let f = &c.features;
            return Ok(((f.ncqa as u32 - 1) << 16) | (f.nsqa as u32 - 1));
        }
        fid::INTERRUPT_COALESCING => c.features.int_coalescing = v & 0xffff,
        fid::INTERRUPT_VECTOR_CONFIG => {
            let iv = v & 0xffff;
            if iv as usize >= c.vectors {
                return Err(Status::INVALID_FIELD);
            }
            if v & (1 << 16) != 0 {
                c.features.no_coalescing |= 1 << iv;
            } else {
                c.features.no_coalescing &= !(1 << iv);
            }
        }
        fid::ERROR_RECOVERY => {
            // DULBE needs deallocated-block errors, which we do not
            // report; TLER is accepted and kept.
            if v & (1 << 16) != 0 {
                return Err(Status::INVALID_FIELD);
            }
            c.features.error_recovery = v & 0xffff;
        }
        fid::WRITE_ATOMICITY => c.features.write_atomicity = v & 1,
        fid::ASYNC_EVENT_CONFIG => c.features.async_config = v,
        fid::TIMESTAMP => {
            let b = c.receive_from_host(sqe, 8)?;
            let mut t = [0u8; 8];
            t[..6].copy_from_slice(&b[..6]);
            c.features.timestamp_ms = u64::from_le_bytes(t);
            c.features.timestamp_at = std::time::Instant::now();
        }
        // Host Memory Buffer: not offered (HMPRE = 0).
        _ => return Err(Status::INVALID_FIELD),
    }
    Ok(0)
}
