//! The device's command trace (`--trace FILE`): one JSON line per completed
//! (or dropped) command.

use serde::{Deserialize, Serialize};

/// Where a data segment was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentTarget {
    /// Guest RAM.
    Ram,
    /// The controller's own CMB.
    Cmb,
    /// A peer controller's CMB.
    Peer,
}

/// The data a command moved to or from one place (bytes summed per place).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Where.
    pub target: SegmentTarget,
    /// The peer controller, for `peer`.
    pub peer: Option<usize>,
    /// Bytes moved there.
    pub bytes: u64,
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// When it completed, µs since the device started.
    pub t_us: u64,
    /// Controller index.
    pub ctrl: usize,
    /// Submission queue (0: admin).
    pub q: u16,
    /// Command identifier.
    pub cid: u16,
    /// Opcode name (`read`, `identify`, ...; `admin-0xNN`/`io-0xNN` when unknown).
    pub op: String,
    /// Namespace identifier.
    pub nsid: u32,
    /// Starting LBA (commands with an LBA range only).
    pub slba: Option<u64>,
    /// Number of blocks, 1-based (commands with an LBA range only).
    pub nlb: Option<u64>,
    /// Data bytes moved (all segments).
    pub bytes: u64,
    /// Data bytes per place.
    pub segments: Vec<Segment>,
    /// Status: SCT << 8 | SC (0 = success).
    pub status: u16,
    /// From fetch to completion, µs.
    pub latency_us: u64,
    /// The fault rule that fired on it.
    pub fault: Option<u64>,
    /// Never completed: dropped by a controller reset.
    #[serde(default)]
    pub dropped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_in_the_documented_shape() {
        let line = r#"{"t_us":12,"ctrl":0,"q":1,"cid":7,"op":"read","nsid":1,"slba":0,"nlb":8,"bytes":4096,"segments":[{"target":"peer","peer":1,"bytes":4096}],"status":641,"latency_us":30,"fault":3}"#;
        let r: TraceRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.segments[0].target, SegmentTarget::Peer);
        assert_eq!(r.status, 0x281);
        assert!(!r.dropped);
        let back: TraceRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
