//! The launcher's verdict documents: `p2pnvme run --prove ... --json`
//! ([`ProveReport`]) and `p2pnvme demo --json` ([`DemoReport`]), read back by
//! ci/ and by users' CI.

use crate::verdict::{ControllerId, KernelHealth, RamRange, Timings, Verdict};
use crate::witness::WitnessReport;
use serde::{Deserialize, Serialize};

/// Where the data of a proved command went, and whether it bypassed guest
/// system memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProveReport {
    /// Bytes of random data the host wrote into the source range.
    pub bytes: u64,
    /// Data bytes the project's controllers moved through guest RAM while the
    /// command ran (None: no counting device, e.g. QEMU's nvme).
    pub guest_ram_data_bytes: Option<u64>,
    /// Data bytes through each controller's own CMB.
    pub cmb_data_bytes: Option<u64>,
    /// Data bytes through a peer controller's CMB.
    pub peer_data_bytes: Option<u64>,
    /// Distinct 512-byte sectors of the data found in a dump of guest RAM
    /// (at any 512-byte offset).
    pub ram_dump_hits: u64,
    /// Sectors of the data (the most `ram_dump_hits` can be).
    pub ram_dump_sectors: u64,
    /// The guest RAM ranges the dump covered.
    pub ram_ranges: Vec<RamRange>,
    /// 512-byte sectors of guest RAM compared with the data.
    pub ram_sectors_scanned: u64,
    /// The destination range equals the source (None without `--prove-dst`).
    pub dst_match: Option<bool>,
    /// No data sector in guest RAM and no counted data byte through it
    /// (None: the evidence for the claim is missing).
    pub bypassed_system_memory: Option<bool>,
    /// The guest command's exit status.
    pub status: i32,
    /// The accelerator the guest ran on (`tcg` or `kvm`).
    pub accel: String,
    /// The guest's IOMMU (`none`, `intel`, `amd`, `virtio`).
    #[serde(default)]
    pub iommu: String,
    /// Every NVMe controller of the run.
    pub controllers: Vec<ControllerId>,
    /// What the guest kernel reported while the command ran.
    pub kernel: KernelHealth,
    /// Seconds from launch to verdict.
    pub elapsed_s: f64,
    /// Where the time went.
    #[serde(flatten)]
    pub timings: Timings,
    /// pass, fail or unknown.
    pub verdict: Verdict,
    /// One line per failed check or missing piece of evidence.
    pub reasons: Vec<String>,
    /// What the guest CPU touched (with `--witness FILE`; the same report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessReport>,
}

/// The result of `p2pnvme demo`: one verified copy with the guest module.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    /// Bytes copied.
    pub bytes: u64,
    /// No data sector in guest RAM and no counted data byte through it
    /// (None: the evidence for the claim is missing).
    pub bypassed_system_memory: Option<bool>,
    /// The P2P memory pool was as full after the copy as before.
    pub p2pmem_returned: bool,
    /// Mode the copy used (`p2p` or `bounce`).
    pub mode: String,
    /// Mode asked for (`p2p`, `bounce`, `auto`).
    pub requested_mode: String,
    /// `p2pnvme` or `qemu`.
    pub device: String,
    /// `switch` or `root-ports`.
    pub topology: String,
    /// `intel` or `amd`.
    pub cpu: String,
    /// PCI address of the P2P memory provider, if any.
    pub provider: Option<String>,
    /// How the guest kernel mapped P2P memory for the devices.
    pub map_type: Option<serde_json::Value>,
    /// Data bytes through guest RAM (None without counters).
    pub guest_ram_data_bytes: Option<u64>,
    /// Data bytes through each controller's own CMB.
    pub cmb_data_bytes: Option<u64>,
    /// Data bytes through a peer's CMB.
    pub peer_data_bytes: Option<u64>,
    /// The destination equals the source.
    pub checksum_match: bool,
    /// Distinct 512-byte data sectors found in guest RAM.
    pub ram_dump_hits: u64,
    /// Sectors of the data.
    pub ram_dump_sectors: u64,
    /// The guest RAM ranges the dump covered.
    pub ram_ranges: Vec<RamRange>,
    /// 512-byte sectors of guest RAM compared with the data.
    pub ram_sectors_scanned: u64,
    /// The accelerator the guest ran on (`tcg` or `kvm`).
    pub accel: String,
    /// The guest's IOMMU (`none`, `intel`, `amd`, `virtio`).
    #[serde(default)]
    pub iommu: String,
    /// Every NVMe controller of the run.
    pub controllers: Vec<ControllerId>,
    /// What the guest kernel reported while the copy ran.
    pub kernel: KernelHealth,
    /// The copy's own time, as the guest tool measured it.
    pub copy_elapsed_s: Option<f64>,
    /// Seconds from launch to verdict.
    pub elapsed_s: f64,
    /// Where the time went.
    #[serde(flatten)]
    pub timings: Timings,
    /// The guest tool's JSON result.
    pub copy: serde_json::Value,
    /// pass (the copy behaved as its mode says), fail or unknown.
    pub verdict: Verdict,
    /// One line per failed check or missing piece of evidence.
    pub reasons: Vec<String>,
    /// What the guest CPU touched (with `--witness FILE`; the same report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessReport>,
}

/// A byte count in the largest binary unit that divides it (`64 MiB`).
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn num(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "n/a".into())
}

/// The accelerator, and the IOMMU when there is one (`tcg, iommu intel`).
fn with_iommu(accel: &str, iommu: &str) -> String {
    match iommu {
        "" | "none" => accel.to_string(),
        i => format!("{accel}, iommu {i}"),
    }
}

fn yes(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "unknown",
    }
}

/// `p2p0 (p2pnvme-0 at 0000:03:00.0), qemu0 (...)`.
fn controllers(c: &[ControllerId]) -> String {
    if c.is_empty() {
        return "none".into();
    }
    let one = |c: &ControllerId| {
        format!(
            "{} ({} at {})",
            c.name,
            c.serial,
            c.pci.as_deref().unwrap_or("no PCI address")
        )
    };
    c.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// `RAM dump hits H/S sectors (N scanned in R ranges)`.
fn ram(hits: u64, sectors: u64, scanned: u64, ranges: &[RamRange]) -> String {
    let r: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
    format!(
        "RAM dump hits {hits}/{sectors} sectors ({scanned} scanned in {})",
        if r.is_empty() {
            "no ranges".into()
        } else {
            r.join(" ")
        }
    )
}

impl ProveReport {
    /// The one-line verdict, in the same words as `demo`'s.
    pub fn one_line(&self) -> String {
        format!(
            "{}: {} proved (guest exit {}); bypassed system memory: {}; guest RAM data bytes {}, CMB {}, peer CMB {}; {}; destination {}; controllers {}; {}; {:.1} s",
            self.verdict,
            human(self.bytes),
            self.status,
            yes(self.bypassed_system_memory),
            num(self.guest_ram_data_bytes),
            num(self.cmb_data_bytes),
            num(self.peer_data_bytes),
            ram(self.ram_dump_hits, self.ram_dump_sectors, self.ram_sectors_scanned, &self.ram_ranges),
            match self.dst_match {
                Some(true) => "match",
                Some(false) => "MISMATCH",
                None => "not checked",
            },
            controllers(&self.controllers),
            with_iommu(&self.accel, &self.iommu),
            self.elapsed_s
        )
    }
}

impl DemoReport {
    /// The one-line verdict `demo` prints.
    pub fn one_line(&self) -> String {
        let map = match &self.map_type {
            None | Some(serde_json::Value::Null) => "no P2P mapping".to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        format!(
            "{}: {} copied in {} mode via {} ({map}); bypassed system memory: {}; guest RAM data bytes {}, CMB {}, peer CMB {}; {}; checksum {}; controllers {}; {}; {:.1} s",
            self.verdict,
            human(self.bytes),
            self.mode,
            self.provider.as_deref().unwrap_or("system memory"),
            yes(self.bypassed_system_memory),
            num(self.guest_ram_data_bytes),
            num(self.cmb_data_bytes),
            num(self.peer_data_bytes),
            ram(self.ram_dump_hits, self.ram_dump_sectors, self.ram_sectors_scanned, &self.ram_ranges),
            if self.checksum_match { "match" } else { "MISMATCH" },
            controllers(&self.controllers),
            with_iommu(&self.accel, &self.iommu),
            self.elapsed_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prove_report_keys_and_line() {
        let r = ProveReport {
            bytes: 1 << 20,
            guest_ram_data_bytes: Some(0),
            cmb_data_bytes: Some(1 << 20),
            peer_data_bytes: Some(0),
            ram_dump_sectors: 2048,
            dst_match: Some(true),
            bypassed_system_memory: Some(true),
            verdict: Verdict::Pass,
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "bytes",
            "guest_ram_data_bytes",
            "cmb_data_bytes",
            "peer_data_bytes",
            "ram_dump_hits",
            "dst_match",
            "verdict",
            "reasons",
            "ram_ranges",
            "controllers",
            "accel",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        let line = r.one_line();
        assert!(line.starts_with("PASS: 1 MiB proved"), "{line}");
        assert!(line.contains("bypassed system memory: yes"), "{line}");
        assert_eq!(v["verdict"], "pass");
        let back: ProveReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_witness_object_is_there_only_with_a_witness() {
        let mut r = ProveReport::default();
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("witness").is_none(), "{v}");
        r.witness = Some(WitnessReport {
            plugin: "libp2pnvme_witness.so".into(),
            api_version: crate::witness::QEMU_PLUGIN_API,
            windows: vec![],
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["witness"]["api_version"], crate::witness::QEMU_PLUGIN_API);
        assert_eq!(serde_json::from_value::<ProveReport>(v).unwrap(), r);
        let d = DemoReport {
            witness: r.witness.clone(),
            ..Default::default()
        };
        let back: DemoReport = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back.witness, r.witness);
    }

    #[test]
    fn demo_line_keeps_its_words() {
        let d = DemoReport {
            bytes: 64 << 20,
            mode: "p2p".into(),
            provider: Some("0000:04:00.0".into()),
            map_type: Some("bus address".into()),
            checksum_match: true,
            verdict: Verdict::Pass,
            bypassed_system_memory: Some(true),
            ..Default::default()
        };
        let l = d.one_line();
        assert!(
            l.starts_with("PASS: 64 MiB copied in p2p mode via 0000:04:00.0 (bus address); bypassed system memory: yes"),
            "{l}"
        );
    }

    #[test]
    fn unknown_is_printed_as_unknown_never_as_pass() {
        let r = ProveReport {
            bytes: 4096,
            verdict: Verdict::Unknown,
            bypassed_system_memory: None,
            controllers: vec![ControllerId {
                name: "qemu0".into(),
                serial: "qemu-nvme-0".into(),
                pci: Some("0000:02:00.0".into()),
                ..Default::default()
            }],
            ram_ranges: vec![RamRange {
                start: 0,
                len: 1 << 30,
            }],
            ..Default::default()
        };
        let l = r.one_line();
        assert!(l.starts_with("UNKNOWN: 4 KiB proved"), "{l}");
        assert!(l.contains("bypassed system memory: unknown"), "{l}");
        assert!(l.contains("qemu0 (qemu-nvme-0 at 0000:02:00.0)"), "{l}");
        assert!(l.contains("0x0-0x40000000"), "{l}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "unknown");
    }
}
