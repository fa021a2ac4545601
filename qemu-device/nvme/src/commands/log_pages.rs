//! Get Log Page: error information, SMART, firmware slot, commands
//! supported and effects, and the vendor DMA counters (0xC0).

use super::{ascii, put};
use crate::controller::Controller;
use crate::nvme::{CmdResult, Sqe, Status};

/// Vendor log page of the DMA counters.
pub const VENDOR_LOG_STATS: u8 = 0xc0;

impl Controller {
    pub(super) fn get_log_page(&mut self, sqe: &Sqe) -> CmdResult {
        let lid = (sqe.cdw(10) & 0xff) as u8;
        let numd = ((sqe.cdw(11) & 0xffff) << 16 | sqe.cdw(10) >> 16) as usize + 1;
        let offset = sqe.cdw(12) as u64 | (sqe.cdw(13) as u64) << 32;
        let len = numd * 4;
        if len > crate::controller::MAX_TRANSFER {
            return Err(Status::INVALID_FIELD);
        }
        let page: Vec<u8> = match lid {
            // The full log: ELPE + 1 entries, unused ones zero.
            0x01 => {
                let mut b: Vec<u8> = self.errlog.iter().flatten().copied().collect();
                b.resize(crate::controller::ERROR_LOG_ENTRIES * 64, 0);
                b
            }
            0x02 => self.smart_log(),
            0x03 => {
                let mut b = vec![0u8; 512];
                b[0] = 1; // slot 1 active
                ascii(&mut b, 8, 8, env!("CARGO_PKG_VERSION"));
                b
            }
            0x05 => self.effects_log(),
            VENDOR_LOG_STATS => self.stats.log_page(),
            _ => return Err(Status::INVALID_LOG_PAGE),
        };
        if !offset.is_multiple_of(4) || offset > page.len() as u64 {
            return Err(Status::INVALID_FIELD);
        }
        let mut out = vec![0u8; len];
        let avail = &page[offset as usize..];
        let n = avail.len().min(len);
        out[..n].copy_from_slice(&avail[..n]);
        self.send_to_host(sqe, &out)?;
        // Retain Asynchronous Event clear: the host consumed the event.
        if sqe.cdw(10) & (1 << 15) == 0 {
            self.unmask_events(lid);
        }
        Ok(0)
    }

    pub(super) fn smart_log(&self) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        put(&mut b, 1, &300u16.to_le_bytes()); // composite temperature, K
        b[3] = 100; // available spare
        b[4] = 10; // threshold
                   // Data units: thousands of 512-byte units, rounded up, from the
                   // exact byte totals.
        let units = |bytes: u64| (bytes as u128).div_ceil(512_000);
        put(&mut b, 32, &units(self.bytes_read).to_le_bytes());
        put(&mut b, 48, &units(self.bytes_written).to_le_bytes());
        put(&mut b, 64, &(self.reads as u128).to_le_bytes());
        put(&mut b, 80, &(self.writes as u128).to_le_bytes());
        put(&mut b, 176, &(self.error_count as u128).to_le_bytes());
        b
    }

    /// Commands Supported and Effects, straight from the command table.
    pub(super) fn effects_log(&self) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        for c in super::table::ADMIN {
            put(&mut b, c.opcode as usize * 4, &c.effects.to_le_bytes());
        }
        for c in super::table::IO {
            put(
                &mut b,
                1024 + c.opcode as usize * 4,
                &c.effects.to_le_bytes(),
            );
        }
        b
    }
}
