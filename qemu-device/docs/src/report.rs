//! The launcher's verdict documents: `p2pnvme run --prove ... --json`
//! ([`ProveReport`]) and `p2pnvme demo --json` ([`DemoReport`]), read back by
//! ci/ and by users' CI.

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
    /// Distinct 4 KiB blocks of the data found in a dump of guest RAM.
    pub ram_dump_hits: u64,
    /// Blocks of the data (the most `ram_dump_hits` can be).
    pub ram_dump_blocks: u64,
    /// The destination range equals the source (None without `--prove-dst`).
    pub dst_match: Option<bool>,
    /// No data block in guest RAM and no counted data byte through it.
    pub bypassed_system_memory: bool,
    /// The guest command's exit status.
    pub status: i32,
    /// Seconds from launch to verdict.
    pub elapsed_s: f64,
    /// True when every check held.
    pub verdict: bool,
    /// One line per failed check.
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
    /// No data block in guest RAM and no counted data byte through it.
    pub bypassed_system_memory: bool,
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
    /// Distinct 4 KiB data blocks found in guest RAM.
    pub ram_dump_hits: u64,
    /// Blocks of the data.
    pub ram_dump_blocks: u64,
    /// The copy's own time, as the guest tool measured it.
    pub copy_elapsed_s: Option<f64>,
    /// Seconds from launch to verdict.
    pub elapsed_s: f64,
    /// The guest tool's JSON result.
    pub copy: serde_json::Value,
    /// True when the copy behaved as its mode says.
    pub verdict: bool,
    /// One line per failed check.
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

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

impl ProveReport {
    /// The one-line verdict, in the same words as `demo`'s.
    pub fn one_line(&self) -> String {
        format!(
            "{}: {} proved (guest exit {}); bypassed system memory: {}; guest RAM data bytes {}, CMB {}, peer CMB {}; RAM dump hits {}/{}; destination {}; {:.1} s",
            pass(self.verdict),
            human(self.bytes),
            self.status,
            yes(self.bypassed_system_memory),
            num(self.guest_ram_data_bytes),
            num(self.cmb_data_bytes),
            num(self.peer_data_bytes),
            self.ram_dump_hits,
            self.ram_dump_blocks,
            match self.dst_match {
                Some(true) => "match",
                Some(false) => "MISMATCH",
                None => "not checked",
            },
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
            "{}: {} copied in {} mode via {} ({map}); bypassed system memory: {}; guest RAM data bytes {}, CMB {}, peer CMB {}; RAM dump hits {}/{}; checksum {}; {:.1} s",
            pass(self.verdict),
            human(self.bytes),
            self.mode,
            self.provider.as_deref().unwrap_or("system memory"),
            yes(self.bypassed_system_memory),
            num(self.guest_ram_data_bytes),
            num(self.cmb_data_bytes),
            num(self.peer_data_bytes),
            self.ram_dump_hits,
            self.ram_dump_blocks,
            if self.checksum_match { "match" } else { "MISMATCH" },
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
            ram_dump_blocks: 256,
            dst_match: Some(true),
            bypassed_system_memory: true,
            verdict: true,
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
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        let line = r.one_line();
        assert!(line.starts_with("PASS: 1 MiB proved"), "{line}");
        assert!(line.contains("bypassed system memory: yes"), "{line}");
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
            verdict: true,
            bypassed_system_memory: true,
            ..Default::default()
        };
        let l = d.one_line();
        assert!(
            l.starts_with("PASS: 64 MiB copied in p2p mode via 0000:04:00.0 (bus address); bypassed system memory: yes"),
            "{l}"
        );
    }
}
