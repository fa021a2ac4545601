//! `p2pnvme device ctl`: one request to a running device's control endpoint.

use anyhow::{Context, Result};
use clap::Subcommand;
use p2pnvme_docs::control::{Reply, Request};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DeviceOp {
    /// Send one JSON request to a device's stats socket and print the reply
    /// (exit 1 when it says "ok": false), e.g.
    /// '{"op":"fault-add","rule":"op=read,nth=10,status=0x281"}'.
    Ctl {
        /// The device's --stats-socket.
        #[arg(long)]
        socket: PathBuf,
        /// The request (JSON, see the device README), or get / reset.
        request: String,
    },
}

pub fn run(op: DeviceOp) -> Result<i32> {
    let DeviceOp::Ctl { socket, request } = op;
    let request = request.trim();
    if matches!(request, "get" | "reset") {
        let reply = p2pnvme_device::socket_line(&socket, request)?;
        print!("{reply}");
        return Ok(0);
    }
    // Checked here, so a typo gets its one-line answer without a device.
    let req: Request = serde_json::from_str(request).map_err(|e| {
        anyhow::anyhow!("bad request '{request}': {e} (e.g. '{{\"op\":\"fault-list\"}}')")
    })?;
    let reply: Reply = p2pnvme_device::control_request(&socket, &req)
        .with_context(|| format!("device control endpoint {}", socket.display()))?;
    println!("{}", serde_json::to_string(&reply)?);
    Ok(if reply.ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(request: &str) -> Result<i32> {
        run(DeviceOp::Ctl {
            socket: "/nonexistent/stats.sock".into(),
            request: request.into(),
        })
    }

    #[test]
    fn malformed_request_refused_before_connecting() {
        let e = ctl("{\"op\":\"fault-add\"").unwrap_err().to_string();
        assert!(e.starts_with("bad request"), "{e}");
        let e = ctl("{\"op\":\"bogus\"}").unwrap_err().to_string();
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn missing_socket_named() {
        let e = format!("{:#}", ctl("{\"op\":\"fault-list\"}").unwrap_err());
        assert!(e.contains("/nonexistent/stats.sock"), "{e}");
    }
}
