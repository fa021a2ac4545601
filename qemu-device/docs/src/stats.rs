//! The device's stats document: what the stats socket answers to `get` and
//! `reset`, and what `p2pnvme run --stats-json` writes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every controller the device process serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsDoc {
    /// One entry per controller, in the order they were configured.
    pub controllers: Vec<ControllerStats>,
    /// Trace records dropped because the trace's consumer did not keep up
    /// (the device never waits for it).
    #[serde(default)]
    pub trace_dropped: u64,
}

/// Exact counters of one controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStats {
    /// Controller index in the device process (0-based).
    pub id: usize,
    /// Serial number reported by Identify Controller.
    pub serial: String,
    /// Commands completed (admin and I/O).
    pub commands: u64,
    /// Commands completed with an error status.
    pub errors: u64,
    /// Doorbell register writes (each one a vfio-user message QEMU waits on).
    pub doorbell_writes: u64,
    /// I/O command payload, by where the memory was.
    pub data: Routes,
    /// Queue entries, PRP/SGL lists, admin and DSM/Copy payloads.
    pub meta: Routes,
    /// Fault rules that can match this controller, with their counts on it.
    #[serde(default)]
    pub faults: Vec<FaultCounts>,
    /// Fatal errors and removal since the counters were last reset (None:
    /// a device that does not report them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ControllerHealth>,
}

/// One fault rule and how often it matched and fired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Rule id.
    pub id: u64,
    /// The rule as given.
    pub rule: String,
    /// Commands that matched its keys.
    pub matched: u64,
    /// Commands its action hit.
    pub fired: u64,
}

/// Bytes by where the memory was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// Guest system memory (the DMA_MAP regions).
    pub guest_ram: ReadWritten,
    /// This controller's own CMB.
    pub own_cmb: ReadWritten,
    /// Other controllers' CMBs (peer-to-peer), summed and per peer.
    pub peer_cmb: PeerRoutes,
}

/// Bytes the device read from memory (e.g. a Write's payload) and wrote to
/// memory (e.g. a Read's payload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadWritten {
    /// The device read this memory.
    pub read: u64,
    /// The device wrote this memory.
    pub written: u64,
}

impl ReadWritten {
    /// Both directions.
    pub fn total(&self) -> u64 {
        self.read + self.written
    }
}

/// Peer CMB traffic: the sum and each peer with any traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRoutes {
    /// Bytes the device read from peers' CMBs.
    pub read: u64,
    /// Bytes the device wrote to peers' CMBs.
    pub written: u64,
    /// Per peer controller id (as a decimal string key).
    #[serde(default)]
    pub by_peer: BTreeMap<String, ReadWritten>,
}

impl PeerRoutes {
    /// Both directions, all peers.
    pub fn total(&self) -> u64 {
        self.read + self.written
    }
}

/// Data bytes of all controllers summed, by where the memory was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTotals {
    /// Through guest RAM.
    pub guest_ram: u64,
    /// Through each controller's own CMB.
    pub own_cmb: u64,
    /// Through peers' CMBs.
    pub peer_cmb: u64,
}

impl StatsDoc {
    /// Data bytes of every controller, both directions.
    pub fn data_totals(&self) -> DataTotals {
        let mut t = DataTotals::default();
        for c in &self.controllers {
            t.guest_ram += c.data.guest_ram.total();
            t.own_cmb += c.data.own_cmb.total();
            t.peer_cmb += c.data.peer_cmb.total();
        }
        t
    }
}

/// A controller's health at the end of a run: what a bypass claim needs
/// besides the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerHealth {
    /// CSTS.CFS was set (a fatal controller error) at any time since the
    /// counters were last reset.
    pub cfs: bool,
    /// The controller was unplugged (surprise removal) since then.
    pub removed: bool,
    /// Error-log entries of fatal errors since then.
    pub fatal_errors: u64,
}

/// The health part of the stats document: each controller's optional
/// `health` object (read beside [`StatsDoc`] from the same JSON, so a device
/// that does not report health still gives a valid document).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// One entry per controller, in the stats document's order.
    pub controllers: Vec<HealthEntry>,
}

/// One controller of [`HealthView`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEntry {
    /// Controller index in the device process.
    pub id: usize,
    /// Its health (None: the device does not report it).
    #[serde(default)]
    pub health: Option<ControllerHealth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape_and_sums_data() {
        let line = r#"{"controllers": [{
          "id": 0, "serial": "p2pnvme-0", "commands": 123, "errors": 2, "doorbell_writes": 130,
          "data": {"guest_ram": {"read": 1, "written": 2},
                   "own_cmb":   {"read": 0, "written": 16},
                   "peer_cmb":  {"read": 0, "written": 4, "by_peer": {"1": {"read": 0, "written": 4}}}},
          "meta": {"guest_ram": {"read": 64, "written": 16},
                   "own_cmb":   {"read": 0, "written": 0},
                   "peer_cmb":  {"read": 0, "written": 0, "by_peer": {}}}}]}"#;
        let doc: StatsDoc = serde_json::from_str(line).unwrap();
        assert_eq!(
            doc.data_totals(),
            DataTotals {
                guest_ram: 3,
                own_cmb: 16,
                peer_cmb: 4
            }
        );
        assert_eq!(doc.controllers[0].data.peer_cmb.by_peer["1"].written, 4);
        let back: StatsDoc = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
        assert!(serde_json::from_str::<StatsDoc>("{}").is_err());
        let h: HealthView = serde_json::from_str(line).unwrap();
        assert_eq!(h.controllers[0].health, None, "no health reported");
    }

    #[test]
    fn health_is_read_beside_the_counters() {
        let line = r#"{"controllers": [{"id": 1, "serial": "p2pnvme-1", "health": {"cfs": true, "removed": false, "fatal_errors": 1}}]}"#;
        let h: HealthView = serde_json::from_str(line).unwrap();
        assert_eq!(
            h.controllers[0].health,
            Some(ControllerHealth {
                cfs: true,
                removed: false,
                fatal_errors: 1
            })
        );
    }
}
