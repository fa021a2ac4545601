//! Get Log Page: error information, SMART, firmware slot, commands
//! supported and effects, and the vendor DMA counters (0xC0).

use super::admin::AdminCtx;
use crate::limits::ERROR_LOG_ENTRIES;
use crate::limits::MAX_TRANSFER;
use crate::nvme::{CmdResult, Sqe, Status};
use crate::wire::{
    ascii, lid, CommandsEffectsLog, FirmwareSlotLog, FromZeros, IntoBytes, SmartLog, U128, U16,
};

/// Get Log Page: the page LID names, from the dword offset in CDW12/13
/// (`effects`: the Commands Supported and Effects page, which the command
/// table builds).
pub(super) fn get_log_page(
    c: &mut AdminCtx<'_>,
    sqe: &Sqe,
    effects: &CommandsEffectsLog,
) -> CmdResult {
    let lid = (sqe.cdw(10) & 0xff) as u8;
    let numd = ((sqe.cdw(11) & 0xffff) << 16 | sqe.cdw(10) >> 16) as usize + 1;
    let offset = sqe.cdw(12) as u64 | (sqe.cdw(13) as u64) << 32;
    let len = numd * 4;
    if len > MAX_TRANSFER {
        return Err(Status::INVALID_FIELD);
    }
    let page: Vec<u8> = match lid {
        // The full log: ELPE + 1 entries, unused ones zero.
        lid::ERROR => {
            let mut b: Vec<u8> = c
                .errlog
                .iter()
                .flat_map(|e| e.as_bytes())
                .copied()
                .collect();
            b.resize(ERROR_LOG_ENTRIES * 64, 0);
            b
        }
        lid::SMART => smart_log(c).as_bytes().to_vec(),
        lid::FIRMWARE_SLOT => {
            let mut f = FirmwareSlotLog::new_zeroed();
            f.afi = 1; // slot 1 active
            f.frs[0] = ascii(env!("CARGO_PKG_VERSION"));
            f.as_bytes().to_vec()
        }
        lid::COMMANDS_EFFECTS => effects.as_bytes().to_vec(),
        // Up to 1024 NSIDs, zero-filled (cleared when read without RAE).
        lid::CHANGED_NS => {
            let mut b = vec![0u8; 4096];
            for (i, ns) in c.changed_ns.iter().take(1024).enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&ns.to_le_bytes());
            }
            b
        }
        lid::VENDOR_DMA_COUNTERS => c.stats.log_page().as_bytes().to_vec(),
        _ => return Err(Status::INVALID_LOG_PAGE),
    };
    if !offset.is_multiple_of(4) || offset > page.len() as u64 {
        return Err(Status::INVALID_FIELD);
    }
    let mut out = vec![0u8; len];
    let avail = &page[offset as usize..];
    let n = avail.len().min(len);
    out[..n].copy_from_slice(&avail[..n]);
    c.send_to_host(sqe, &out)?;
    // Retain Asynchronous Event clear: the host consumed the event.
    if sqe.cdw(10) & (1 << 15) == 0 {
        unmask_events(c, lid);
    }
    Ok(0)
}

fn smart_log(c: &AdminCtx<'_>) -> SmartLog {
    let mut s = SmartLog::new_zeroed();
    s.critical_warning = c.critical_warning;
    s.temperature = U16::new(300); // K
    s.available_spare = 100;
    s.spare_threshold = 10;
    // Data units: thousands of 512-byte units, rounded up, from the exact
    // byte totals.
    let units = |bytes: u64| U128::new((bytes as u128).div_ceil(512_000));
    let host = c.features.host();
    s.data_units_read = units(host.bytes_read);
    s.data_units_written = units(host.bytes_written);
    s.host_reads = U128::new(host.reads as u128);
    s.host_writes = U128::new(host.writes as u128);
    s.error_log_entries = U128::new(c.error_count as u128);
    s
}

/// The host read log page `lid` without RAE: the event types it reports
/// are unmasked (the controller then delivers them again).
fn unmask_events(c: &mut AdminCtx<'_>, lid: u8) {
    // Error information (01h) clears the error type (0); SMART (02h) the
    // SMART/health type (1).
    match lid {
        lid::ERROR => *c.masked_events &= !1,
        lid::SMART => *c.masked_events &= !2,
        // Changed namespace list (04h): the notice type (2); the list restarts.
        lid::CHANGED_NS => {
            *c.masked_events &= !4;
            c.changed_ns.clear();
        }
        _ => {}
    }
}
