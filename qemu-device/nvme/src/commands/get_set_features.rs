//! Get and Set Features: the commands over the controller's features part.

use super::admin::AdminCtx;
use super::features::Feature;
use crate::nvme::{fid, CmdResult, Sqe, Status};

/// Get Features: the current, default or supported value (SEL).
pub(super) fn get_features(c: &mut AdminCtx<'_>, sqe: &Sqe) -> CmdResult {
    let id = (sqe.cdw(10) & 0xff) as u8;
    let sel = (sqe.cdw(10) >> 8) & 7;
    match c.features.get(id, sel, sqe.cdw(11), c.vectors)? {
        Feature::Value(v) => Ok(v),
        Feature::Timestamp(b) => c.send_to_host(sqe, &b),
    }
}

/// Set Features (none saveable).
pub(super) fn set_features(c: &mut AdminCtx<'_>, sqe: &Sqe) -> CmdResult {
    let id = (sqe.cdw(10) & 0xff) as u8;
    if sqe.cdw(10) >> 31 != 0 {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    if id == fid::TIMESTAMP {
        let b = c.receive_from_host(sqe, 8)?;
        let mut t = [0u8; 6];
        t.copy_from_slice(&b[..6]);
        c.features.set_timestamp(t);
        return Ok(0);
    }
    c.features.set(id, sqe.cdw(11), c.vectors)
}
