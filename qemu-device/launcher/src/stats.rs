//! The device's stats document over its stats socket, typed (see
//! qemu-device/nvme/README.md and `p2pnvme_docs::stats`).

use anyhow::Result;
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
