//! The device's stats document over its stats socket, typed (see
//! qemu-device/nvme/README.md and `p2pnvme_docs::stats`).

use anyhow::{bail, Result};
use p2pnvme_docs::control::{EventKind, Reply, Request};
use p2pnvme_docs::stats::StatsDoc;
use std::path::Path;

/// Every controller's counters.
pub fn get(socket: &Path) -> Result<StatsDoc> {
    Ok(p2pnvme_device::stats_query(socket, "get")?)
}

/// Zeroes every controller's counters.
pub fn reset(socket: &Path) -> Result<()> {
    p2pnvme_device::stats_query(socket, "reset")?;
    Ok(())
}

/// The device's pending events (each returned once): the removals it asks
/// for, as (controller, replug delay in ms).
pub fn events(socket: &Path) -> Result<Vec<(usize, Option<u64>)>> {
    let reply = control(socket, &Request::Events)?;
    Ok(reply
        .events
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind == EventKind::Remove)
        .map(|e| (e.ctrl, e.replug_ms))
        .collect())
}

/// One control request; a refusal is an error with the device's reason.
fn control(socket: &Path, req: &Request) -> Result<Reply> {
    let reply = p2pnvme_device::control_request(socket, req)?;
    if !reply.ok {
        bail!(
            "the device refused {}: {}",
            serde_json::to_string(req)?,
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(reply)
}
