//! Exact DMA accounting per controller: bytes the device read from and wrote
//! to memory, split into data (I/O command payload) and metadata (queue
//! entries, PRP/SGL lists, admin payloads), and by where the memory was.

pub use crate::dma::route::{Dir, Kind, Target};
use crate::wire::{DmaCountersLog, DmaKindCounters, U64};
use p2pnvme_docs::stats::{ControllerHealth, ControllerStats, PeerRoutes, ReadWritten, Routes};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

pub const MAX_CTRLS: usize = 32;

/// Counters of one controller; every field is exact.
pub struct Counters {
    pub ctrl: usize,
    pub serial: String,
    /// [kind][dir][target]: target 0 = guest RAM, 1 = own CMB, 2+p = peer p.
    bytes: Vec<AtomicU64>,
    pub commands: AtomicU64,
    pub errors: AtomicU64,
    /// Doorbell register writes: each one a vfio-user round trip for QEMU.
    pub doorbell_writes: AtomicU64,
    /// Interrupts signalled to the client (MSI-X eventfd writes).
    pub interrupts: AtomicU64,
    /// Times the controller set CSTS.CFS.
    fatal_errors: AtomicU64,
    /// A fault rule asked the launcher to unplug the controller.
    removed: AtomicBool,
}

fn slot(kind: Kind, dir: Dir, t: Target) -> usize {
    let k = (kind == Kind::Meta) as usize;
    let d = (dir == Dir::Written) as usize;
    let t = match t {
        Target::GuestRam => 0,
        Target::OwnCmb => 1,
        Target::PeerCmb(p) => 2 + p.min(MAX_CTRLS - 1),
    };
    (k * 2 + d) * (MAX_CTRLS + 2) + t
}

impl Counters {
    pub fn new(ctrl: usize, serial: &str) -> Counters {
        Counters {
            ctrl,
            serial: serial.into(),
            bytes: (0..4 * (MAX_CTRLS + 2))
                .map(|_| AtomicU64::new(0))
                .collect(),
            commands: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            doorbell_writes: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
            fatal_errors: AtomicU64::new(0),
            removed: AtomicBool::new(false),
        }
    }

    /// The controller set CSTS.CFS (a fatal error).
    pub fn fatal_error(&self) {
        self.fatal_errors.fetch_add(1, Relaxed);
    }

    /// The controller asked to be unplugged (surprise removal).
    pub fn removed(&self) {
        self.removed.store(true, Relaxed);
    }

    /// Fatal errors and removal since the last reset.
    pub fn health(&self) -> ControllerHealth {
        let fatal_errors = self.fatal_errors.load(Relaxed);
        ControllerHealth {
            cfs: fatal_errors > 0,
            removed: self.removed.load(Relaxed),
            fatal_errors,
        }
    }

    pub fn add(&self, kind: Kind, dir: Dir, t: Target, n: u64) {
        self.bytes[slot(kind, dir, t)].fetch_add(n, Relaxed);
    }

    /// Data bytes (both directions) per target: guest RAM, own CMB, then
    /// peer p at 2 + p (the trace diffs these around a command).
    pub fn data_by_target(&self) -> [u64; MAX_CTRLS + 2] {
        let base = |d: Dir| slot(Kind::Data, d, Target::GuestRam);
        let (r, w) = (base(Dir::Read), base(Dir::Written));
        std::array::from_fn(|t| {
            self.bytes[r + t]
                .load(Relaxed)
                .wrapping_add(self.bytes[w + t].load(Relaxed))
        })
    }

    fn get(&self, kind: Kind, dir: Dir, t: Target) -> u64 {
        self.bytes[slot(kind, dir, t)].load(Relaxed)
    }

    pub fn reset(&self) {
        for b in &self.bytes {
            b.store(0, Relaxed);
        }
        self.commands.store(0, Relaxed);
        self.errors.store(0, Relaxed);
        self.doorbell_writes.store(0, Relaxed);
        self.interrupts.store(0, Relaxed);
        self.fatal_errors.store(0, Relaxed);
        self.removed.store(false, Relaxed);
    }

    fn routes(&self, kind: Kind) -> Routes {
        let rw = |t| ReadWritten {
            read: self.get(kind, Dir::Read, t),
            written: self.get(kind, Dir::Written, t),
        };
        let mut peer = PeerRoutes::default();
        for p in 0..MAX_CTRLS {
            let v = rw(Target::PeerCmb(p));
            if v.total() > 0 {
                peer.by_peer.insert(p.to_string(), v);
            }
            peer.read += v.read;
            peer.written += v.written;
        }
        Routes {
            guest_ram: rw(Target::GuestRam),
            own_cmb: rw(Target::OwnCmb),
            peer_cmb: peer,
        }
    }

    /// This controller's entry of the stats document.
    pub fn snapshot(&self) -> ControllerStats {
        ControllerStats {
            id: self.ctrl,
            serial: self.serial.clone(),
            commands: self.commands.load(Relaxed),
            errors: self.errors.load(Relaxed),
            doorbell_writes: self.doorbell_writes.load(Relaxed),
            data: self.routes(Kind::Data),
            meta: self.routes(Kind::Meta),
            faults: vec![],
            health: Some(self.health()),
        }
    }

    /// The snapshot as JSON (for tests that index into it).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_default()
    }

    /// Vendor log page 0xC0 (peer CMBs summed over all peers).
    pub fn log_page(&self) -> DmaCountersLog {
        let kind = |kind| {
            let peers = |d| {
                (0..MAX_CTRLS)
                    .map(|p| self.get(kind, d, Target::PeerCmb(p)))
                    .sum::<u64>()
            };
            DmaKindCounters {
                guest_ram_read: U64::new(self.get(kind, Dir::Read, Target::GuestRam)),
                guest_ram_written: U64::new(self.get(kind, Dir::Written, Target::GuestRam)),
                own_cmb_read: U64::new(self.get(kind, Dir::Read, Target::OwnCmb)),
                own_cmb_written: U64::new(self.get(kind, Dir::Written, Target::OwnCmb)),
                peer_cmb_read: U64::new(peers(Dir::Read)),
                peer_cmb_written: U64::new(peers(Dir::Written)),
            }
        };
        DmaCountersLog {
            commands: U64::new(self.commands.load(Relaxed)),
            errors: U64::new(self.errors.load(Relaxed)),
            data: kind(Kind::Data),
            meta: kind(Kind::Meta),
            doorbell_writes: U64::new(self.doorbell_writes.load(Relaxed)),
            interrupts: U64::new(self.interrupts.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pnvme_docs::stats::StatsDoc;

    #[test]
    fn counters_split_by_kind_direction_and_target() {
        let c = Counters::new(0, "s");
        c.add(Kind::Data, Dir::Written, Target::PeerCmb(1), 4096);
        c.add(Kind::Data, Dir::Read, Target::OwnCmb, 512);
        c.add(Kind::Meta, Dir::Read, Target::GuestRam, 64);
        let j = c.to_json();
        assert_eq!(j["data"]["peer_cmb"]["written"], 4096);
        assert_eq!(j["data"]["peer_cmb"]["by_peer"]["1"]["written"], 4096);
        assert_eq!(j["data"]["own_cmb"]["read"], 512);
        assert_eq!(j["data"]["guest_ram"]["read"], 0);
        assert_eq!(j["meta"]["guest_ram"]["read"], 64);
        let page = c.log_page();
        assert_eq!(page.data.own_cmb_read.get(), 512);
        assert_eq!(page.data.peer_cmb_written.get(), 4096);
        assert_eq!(page.meta.guest_ram_read.get(), 64);
        let bytes = zerocopy::IntoBytes::as_bytes(&page);
        assert_eq!(bytes.len(), 16 * 8);
        assert_eq!(u64::from_le_bytes(bytes[32..40].try_into().unwrap()), 512); // data own read
        c.reset();
        assert_eq!(c.to_json()["data"]["own_cmb"]["read"], 0);
    }

    #[test]
    fn health_reports_fatal_errors_and_removal_until_reset() {
        let c = Counters::new(0, "s");
        let healthy = ControllerHealth::default();
        assert_eq!(c.snapshot().health, Some(healthy));
        c.fatal_error();
        c.fatal_error();
        c.removed();
        let j = c.to_json();
        assert_eq!(j["health"]["cfs"], true);
        assert_eq!(j["health"]["removed"], true);
        assert_eq!(j["health"]["fatal_errors"], 2);
        // The launcher reads it beside the counters.
        let doc = StatsDoc {
            controllers: vec![c.snapshot()],
            trace_dropped: 0,
        };
        let line = serde_json::to_string(&doc).unwrap();
        let view: p2pnvme_docs::stats::HealthView = serde_json::from_str(&line).unwrap();
        let h = view.controllers[0].health.unwrap();
        assert_eq!((h.cfs, h.removed, h.fatal_errors), (true, true, 2));
    }
}
