//! The device's stats document over its stats socket, typed (see
//! qemu-device/nvme/README.md and `p2pnvme_docs::stats`).

use anyhow::{Context, Result};
use p2pnvme_docs::stats::StatsDoc;
use std::path::Path;

/// Every controller's counters.
pub fn get(socket: &Path) -> Result<StatsDoc> {
    let v = p2pnvme_device::stats_query(socket, "get")?;
    serde_json::from_value(v).context("the device's stats document")
}

/// Zeroes every controller's counters.
pub fn reset(socket: &Path) -> Result<()> {
    p2pnvme_device::stats_query(socket, "reset")?;
    Ok(())
}
