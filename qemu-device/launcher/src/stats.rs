//! The device's stats document over its stats socket, typed (see
//! qemu-device/nvme/README.md and `p2pnvme_docs::stats`).

use anyhow::{bail, Context, Result};
use p2pnvme_docs::control::{EventKind, Reply, Request};
use p2pnvme_docs::stats::StatsDoc;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

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
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the device socket {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{}\n", serde_json::to_string(req)?).as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let reply: Reply = serde_json::from_str(&line)
        .with_context(|| format!("bad control reply from the device: {}", line.trim()))?;
    if !reply.ok {
        bail!(
            "the device refused {}: {}",
            serde_json::to_string(req)?,
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(reply)
}
