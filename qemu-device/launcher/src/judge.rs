//! The rules of a bypass claim ("this data did not pass through guest
//! RAM"), shared by `run --prove` and `demo`. It holds only with: at least
//! one data byte moved by the devices under test, DMA counters from every
//! controller involved, every controller healthy at the end, no data byte
//! counted through guest RAM and no data sector in the RAM dump. Missing
//! evidence makes the claim UNKNOWN, never PASS.

use crate::faults;
use crate::health::GuestReport;
use crate::names::{controller_name, Kind};
use p2pnvme_docs::stats::{DataTotals, HealthView, StatsDoc};
use p2pnvme_docs::verdict::{ControllerId, KernelHealth, RamRange, Timings, Verdict};
use std::time::Instant;

/// Where the data went, as the host saw it after the command.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Bytes of source data.
    pub bytes: u64,
    /// Distinct 512-byte data sectors found in the RAM dump.
    pub ram_dump_hits: u64,
    /// Sectors of the data.
    pub sectors: u64,
    /// Guest RAM ranges dumped and scanned.
    pub ram_ranges: Vec<RamRange>,
    /// RAM sectors compared.
    pub ram_sectors_scanned: u64,
    /// Data bytes by route, all of the project's controllers summed (None:
    /// a controller involved has no counters, or none reported).
    pub counters: Option<DataTotals>,
    /// Involved controllers that do not count their DMA (QEMU's nvme).
    pub uncounted: Vec<String>,
    /// The destination equals the source (None: not checked).
    pub dst_match: Option<bool>,
    /// Every controller of the run, with why it is unhealthy.
    pub controllers: Vec<ControllerId>,
    /// The command's and the scan's times (boot and total: `timings_since`).
    pub timings: Timings,
    /// When the command started (host clock).
    pub command_started: Option<Instant>,
}

impl Evidence {
    /// The timings of a run launched at `launched`, up to now.
    pub fn timings_since(&self, launched: Instant) -> Timings {
        Timings {
            boot_s: self
                .command_started
                .map(|c| c.saturating_duration_since(launched).as_secs_f64()),
            total_s: launched.elapsed().as_secs_f64(),
            ..self.timings
        }
    }

    /// Why the claim fails, and what it lacks.
    pub fn bypass_checks(&self) -> (Vec<String>, Vec<String>) {
        let (mut failed, mut missing) = (vec![], vec![]);
        if let Some(c) = self.counters {
            if c.guest_ram != 0 {
                failed.push(format!("{} data bytes went through guest RAM", c.guest_ram));
            }
        }
        if self.ram_dump_hits != 0 {
            failed.push(format!(
                "{} of {} data sectors found in guest RAM",
                self.ram_dump_hits, self.sectors
            ));
        }
        for c in &self.controllers {
            for f in &c.failures {
                failed.push(format!("controller {} ({}) failed: {f}", c.name, c.serial));
            }
        }
        for name in &self.uncounted {
            missing.push(format!(
                "no counters: {name} (QEMU's nvme) does not count its DMA, so a bypass cannot be shown"
            ));
        }
        match self.counters {
            Some(c) if c.guest_ram + c.own_cmb + c.peer_cmb == 0 => missing.push(
                "no data moved: the devices under test moved 0 data bytes during the command"
                    .into(),
            ),
            None if self.uncounted.is_empty() => {
                missing.push("no counters: the device reported no DMA counters".into())
            }
            _ => {}
        }
        (failed, missing)
    }

    /// No data through RAM by any evidence, and the evidence is complete.
    pub fn bypassed(&self) -> Option<bool> {
        let (failed, missing) = self.bypass_checks();
        let through_ram =
            self.ram_dump_hits != 0 || self.counters.is_some_and(|c| c.guest_ram != 0);
        match (through_ram, failed.is_empty() && missing.is_empty()) {
            (true, _) => Some(false),
            (false, true) => Some(true),
            (false, false) => None,
        }
    }
}

/// `run --prove`'s verdict on the bypass claim: the evidence, the
/// destination, the command's exit status and the kernel's health.
pub fn prove(ev: &Evidence, status: i32, kernel: &KernelHealth) -> (Verdict, Vec<String>) {
    let (mut failed, missing) = ev.bypass_checks();
    if ev.dst_match == Some(false) {
        failed.push("destination differs from the source data".into());
    }
    if status != 0 {
        failed.push(format!("the guest command exited {status}"));
    }
    failed.extend(kernel_reasons(kernel));
    let v = Verdict::from_checks(!failed.is_empty(), !missing.is_empty());
    (v, failed.into_iter().chain(missing).collect())
}

/// The kernel's reports that fail a run, as verdict reasons.
pub fn kernel_reasons(k: &KernelHealth) -> Vec<String> {
    let mut v: Vec<String> = k.errors.iter().map(|e| format!("kernel: {e}")).collect();
    if !k.allow_warn {
        v.extend(
            k.warnings
                .iter()
                .map(|w| format!("kernel: {w} (--allow-warn lets it pass)")),
        );
    }
    v
}

/// Every controller of the run by identity: host-side name, serial, the
/// guest's PCI address, and why it is not healthy at the end.
pub fn controllers(
    qemu: usize,
    ours: usize,
    guest: &GuestReport,
    stats: Option<(&StatsDoc, &HealthView)>,
) -> Vec<ControllerId> {
    let mut v = vec![];
    let all = (0..qemu)
        .map(|c| (Kind::Qemu, c))
        .chain((0..ours).map(|c| (Kind::P2p, c)));
    for (kind, c) in all {
        let serial = match kind {
            Kind::Qemu => format!("qemu-nvme-{c}"),
            Kind::P2p => crate::device::nvme_serial(c),
        };
        let seen = guest.controllers.iter().find(|g| g.serial == serial);
        let mut failures = vec![];
        match seen {
            None => failures
                .push("not in the guest when the command ended (removed, or it failed)".into()),
            Some(g) => {
                if g.state != "live" {
                    failures.push(format!("the guest driver's state is '{}'", g.state));
                }
                let prefix = format!("nvme {}: ", g.guest_name);
                for line in &guest.kmsg {
                    let failed = [
                        "controller is down",
                        "Removing after probe failure",
                        "Disabling device",
                    ]
                    .iter()
                    .any(|m| line.contains(m));
                    if line.contains(&prefix) && failed {
                        failures.push(format!("the guest driver saw it fail: {}", line.trim()));
                    }
                }
            }
        }
        if let (Kind::P2p, Some((doc, health))) = (kind, stats) {
            failures.extend(device_failures(doc, health, c));
        }
        v.push(ControllerId {
            name: controller_name(kind, c),
            serial,
            pci: seen.map(|g| g.pci.clone()),
            counters: kind == Kind::P2p,
            failures,
        });
    }
    v
}

/// What the device process says went wrong with controller `c`: its own
/// health report (when it gives one) and fault rules that broke it.
fn device_failures(doc: &StatsDoc, health: &HealthView, c: usize) -> Vec<String> {
    let mut v = vec![];
    if let Some(h) = health
        .controllers
        .iter()
        .find(|h| h.id == c)
        .and_then(|h| h.health)
    {
        if h.cfs {
            v.push("CSTS.CFS set (fatal controller status)".into());
        }
        if h.removed {
            v.push("removed during the run".into());
        }
        if h.fatal_errors != 0 {
            v.push(format!("{} fatal errors logged", h.fatal_errors));
        }
    }
    for s in doc.controllers.iter().filter(|s| s.id == c) {
        for f in s.faults.iter().filter(|f| f.fired > 0) {
            if faults::breaks_controller(&f.rule) {
                v.push(format!("fault rule '{}' fired {} time(s)", f.rule, f.fired));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pnvme_docs::stats::{ControllerHealth, ControllerStats, FaultCounts, HealthEntry};

    const MB: u64 = 1 << 20;

    fn ev(counters: Option<(u64, u64, u64)>, hits: u64) -> Evidence {
        Evidence {
            bytes: MB,
            sectors: MB / 512,
            ram_dump_hits: hits,
            counters: counters.map(|(r, o, p)| DataTotals {
                guest_ram: r,
                own_cmb: o,
                peer_cmb: p,
            }),
            dst_match: Some(true),
            ..Default::default()
        }
    }

    fn healthy() -> KernelHealth {
        KernelHealth::default()
    }

    #[test]
    fn a_bypass_with_full_evidence_passes() {
        let (v, r) = prove(&ev(Some((0, MB, MB)), 0), 0, &healthy());
        assert_eq!((v, r.len()), (Verdict::Pass, 0), "{r:?}");
        assert_eq!(ev(Some((0, MB, MB)), 0).bypassed(), Some(true));
    }

    #[test]
    fn nothing_moved_is_unknown_not_pass() {
        let e = ev(Some((0, 0, 0)), 0);
        let (v, r) = prove(&e, 0, &healthy());
        assert_eq!(v, Verdict::Unknown);
        assert!(r[0].starts_with("no data moved"), "{r:?}");
        assert_eq!(e.bypassed(), None);
    }

    #[test]
    fn a_controller_without_counters_is_unknown_unless_the_dump_shows_ram() {
        let mut e = ev(None, 0);
        e.uncounted = vec!["qemu0".into()];
        let (v, r) = prove(&e, 0, &healthy());
        assert_eq!(v, Verdict::Unknown);
        assert!(r[0].starts_with("no counters: qemu0"), "{r:?}");
        e.ram_dump_hits = 3;
        assert_eq!(prove(&e, 0, &healthy()).0, Verdict::Fail);
        assert_eq!(e.bypassed(), Some(false));
        // No stats document at all is missing evidence too.
        assert_eq!(prove(&ev(None, 0), 0, &healthy()).0, Verdict::Unknown);
    }

    #[test]
    fn ram_traffic_mismatch_exit_status_failed_controller_or_kernel_fail() {
        assert_eq!(
            prove(&ev(Some((4096, MB, MB)), 0), 0, &healthy()).0,
            Verdict::Fail
        );
        assert_eq!(
            prove(&ev(Some((0, MB, MB)), 1), 0, &healthy()).0,
            Verdict::Fail
        );
        assert_eq!(
            prove(&ev(Some((0, MB, MB)), 0), 1, &healthy()).0,
            Verdict::Fail
        );
        let mut e = ev(Some((0, MB, MB)), 0);
        e.dst_match = Some(false);
        assert_eq!(prove(&e, 0, &healthy()).0, Verdict::Fail);
        let mut e = ev(Some((0, MB, MB)), 0);
        e.controllers = vec![ControllerId {
            name: "p2p1".into(),
            serial: "p2pnvme-1".into(),
            failures: vec!["CSTS.CFS set (fatal controller status)".into()],
            ..Default::default()
        }];
        let (v, r) = prove(&e, 0, &healthy());
        assert_eq!(v, Verdict::Fail);
        assert!(
            r[0].contains("controller p2p1 (p2pnvme-1) failed: CSTS.CFS"),
            "{r:?}"
        );
        let k = KernelHealth {
            warnings: vec!["WARNING: CPU: 0".into()],
            ..Default::default()
        };
        assert_eq!(prove(&ev(Some((0, MB, MB)), 0), 0, &k).0, Verdict::Fail);
        let k = KernelHealth {
            allow_warn: true,
            ..k
        };
        assert_eq!(prove(&ev(Some((0, MB, MB)), 0), 0, &k).0, Verdict::Pass);
    }

    #[test]
    fn controllers_are_named_by_identity_and_judged_at_the_end() {
        let text = "tainted-before 0\ntainted-after 0\n\
                    ctrl qemu-nvme-0 0000:02:00.0 live nvme0\n\
                    ctrl p2pnvme-0 0000:03:00.0 live nvme1\n\
                    kmsg [ 9.0] nvme nvme1: controller is down; will reset: CSTS=0x3\n\
                    status 0\n";
        let g = GuestReport::parse(text).unwrap();
        let doc = StatsDoc {
            controllers: vec![
                ControllerStats {
                    id: 0,
                    ..Default::default()
                },
                ControllerStats {
                    id: 1,
                    faults: vec![FaultCounts {
                        id: 1,
                        rule: "ctrl=1,op=read,nth=1,remove".into(),
                        matched: 1,
                        fired: 1,
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let health = HealthView {
            controllers: vec![HealthEntry {
                id: 0,
                health: Some(ControllerHealth {
                    cfs: true,
                    ..Default::default()
                }),
            }],
        };
        let c = controllers(1, 2, &g, Some((&doc, &health)));
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["qemu0", "p2p0", "p2p1"]);
        assert_eq!(c[0].pci.as_deref(), Some("0000:02:00.0"));
        assert!(c[0].failures.is_empty() && !c[0].counters);
        assert_eq!(
            c[1].pci.as_deref(),
            Some("0000:03:00.0"),
            "p2p0 is the guest's nvme1"
        );
        assert!(
            c[1].failures[0].contains("controller is down"),
            "{:?}",
            c[1]
        );
        assert!(c[1].failures[1].contains("CSTS.CFS"), "{:?}", c[1]);
        assert_eq!(c[2].pci, None);
        assert!(
            c[2].failures[0].starts_with("not in the guest"),
            "{:?}",
            c[2]
        );
        assert!(c[2].failures[1].contains("fault rule"), "{:?}", c[2]);
    }
}
