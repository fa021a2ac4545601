//! End-to-end copy offload scenarios: every scenario boots a guest,
//! copies host-written random data with the guest module and checks the data
//! on the host, the device's DMA counters and a QMP dump of guest RAM.
//! Each result is appended to the report in ci/artifacts/.

use p2pnvme_ci::*;

const SIZE: &str = "16M";
const BYTES: u64 = 16 << 20;

fn demo(name: &str, args: &[&str]) -> DemoReport {
    let mut a = vec!["demo", "--json", "--size", SIZE];
    a.extend_from_slice(args);
    let out = p2pnvme(&a);
    let doc: DemoReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: no JSON result ({e})"));
    report(name, &doc);
    assert!(doc.p2pmem_returned, "P2P memory returned: {doc:?}");
    assert_eq!(
        out.status.code(),
        Some(i32::from(doc.verdict.exit_code())),
        "exit status follows the verdict"
    );
    doc
}

fn assert_p2p(doc: &DemoReport) {
    assert_eq!(doc.mode, "p2p", "{doc:?}");
    assert_eq!(doc.bypassed_system_memory, Some(true), "{doc:?}");
    assert!(doc.checksum_match, "{doc:?}");
    assert_eq!(doc.ram_dump_hits, 0, "{doc:?}");
    assert_eq!(doc.verdict, Verdict::Pass, "{doc:?}");
}

/// The guest kernel a scenario boots (`--guest-kernel`); the same
/// scenario and the same checks run on each.
#[derive(Clone, Copy)]
enum Kernel {
    /// The image's Debian kernel (`--guest-kernel debian`; the default is
    /// minimal once built).
    Debian,
    /// images/kernel: everything built in.
    Minimal,
}

impl Kernel {
    /// The launcher arguments that pick this kernel.
    fn args(self) -> &'static [&'static str] {
        match self {
            Kernel::Debian => &["--guest-kernel", "debian"],
            Kernel::Minimal => &["--guest-kernel", "minimal"],
        }
    }

    /// Runs the demo scenario on this kernel; the report name says which.
    fn demo(self, name: &str, args: &[&str]) -> DemoReport {
        let mut a = self.args().to_vec();
        a.extend_from_slice(args);
        match self {
            Kernel::Debian => demo(name, &a),
            Kernel::Minimal => demo(&format!("{name}-minimal-kernel"), &a),
        }
    }
}

fn own_cmb(k: Kernel) {
    let d = k.demo("own-cmb", &["--nvme", "1", "--mode", "p2p"]);
    assert_p2p(&d);
    assert_eq!(d.guest_ram_data_bytes.unwrap(), 0);
    assert_eq!(d.cmb_data_bytes.unwrap(), 2 * BYTES);
    assert_eq!(d.peer_data_bytes.unwrap(), 0);
}

fn peer_below_one_switch(k: Kernel) {
    let d = k.demo("peer-switch", &["--nvme", "2", "--mode", "p2p"]);
    assert_p2p(&d);
    assert_eq!(d.guest_ram_data_bytes.unwrap(), 0);
    // The source controller writes into the peer's CMB, the peer reads its own.
    assert_eq!(d.peer_data_bytes.unwrap(), BYTES);
    assert_eq!(d.cmb_data_bytes.unwrap(), BYTES);
}

fn bounce_counterfactual(k: Kernel) {
    let d = k.demo("bounce-switch", &["--nvme", "2", "--mode", "bounce"]);
    assert_eq!(d.mode, "bounce");
    assert!(d.checksum_match);
    assert_eq!(d.guest_ram_data_bytes.unwrap(), 2 * BYTES);
    assert!(d.ram_dump_hits > 0, "{d:?}");
    // The same check that passes p2p copies fails here: it can fail.
    assert_eq!(d.bypassed_system_memory, Some(false), "{d:?}");
    assert_eq!(d.verdict, Verdict::Pass);
}

#[test]
fn p2p_within_one_controller_through_its_own_cmb() {
    own_cmb(Kernel::Debian);
}

#[test]
fn p2p_between_controllers_below_one_switch() {
    peer_below_one_switch(Kernel::Debian);
}

#[test]
fn bounce_is_the_counterfactual_and_shows_in_ram() {
    bounce_counterfactual(Kernel::Debian);
}

#[test]
fn minimal_kernel_p2p_within_one_controller_through_its_own_cmb() {
    own_cmb(Kernel::Minimal);
}

#[test]
fn minimal_kernel_p2p_between_controllers_below_one_switch() {
    peer_below_one_switch(Kernel::Minimal);
}

#[test]
fn minimal_kernel_bounce_is_the_counterfactual_and_shows_in_ram() {
    bounce_counterfactual(Kernel::Minimal);
}

fn sqes_out_of_the_cmb(k: Kernel) {
    let d = k.demo(
        "peer-switch-no-cmb-sqes",
        &[
            "--nvme",
            "2",
            "--mode",
            "p2p",
            "--append",
            "nvme.use_cmb_sqes=0",
        ],
    );
    assert_p2p(&d);
    assert_eq!(d.guest_ram_data_bytes.unwrap(), 0);
}

fn intel_root_ports(k: Kernel) {
    let mut a = vec!["demo", "--json", "--size", SIZE, "--nvme", "2"];
    a.extend_from_slice(k.args());
    a.extend_from_slice(&[
        "--topology",
        "root-ports",
        "--cpu",
        "intel",
        "--mode",
        "p2p",
    ]);
    let out = p2pnvme(&a);
    assert_ne!(
        out.status.code(),
        Some(0),
        "p2p between root ports on Intel must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("p2p"), "{err}");
    let d = k.demo(
        "root-ports-intel-auto",
        &[
            "--nvme",
            "2",
            "--topology",
            "root-ports",
            "--cpu",
            "intel",
            "--mode",
            "auto",
        ],
    );
    assert_eq!(d.mode, "bounce", "{d:?}");
    assert!(d.checksum_match);
    assert_eq!(d.verdict, Verdict::Pass);
}

fn amd_root_ports(k: Kernel) {
    let d = k.demo(
        "root-ports-amd",
        &[
            "--nvme",
            "2",
            "--topology",
            "root-ports",
            "--cpu",
            "amd",
            "--mode",
            "p2p",
        ],
    );
    assert_p2p(&d);
    let map = format!("{:?}", d.map_type).to_lowercase();
    assert!(map.contains("host"), "{d:?}");
}

fn reference_qemu_nvme(k: Kernel) {
    let d = k.demo(
        "qemu-nvme-p2p",
        &["--device", "qemu", "--nvme", "2", "--mode", "p2p"],
    );
    // No data in RAM, but QEMU's nvme has no counters: the bypass claim
    // lacks evidence, so it is unknown, never a pass.
    assert_eq!(d.mode, "p2p", "{d:?}");
    assert!(d.checksum_match, "{d:?}");
    assert_eq!(d.ram_dump_hits, 0, "{d:?}");
    assert_eq!(d.verdict, Verdict::Unknown, "{d:?}");
    assert_eq!(d.bypassed_system_memory, None, "{d:?}");
    assert!(
        d.reasons
            .iter()
            .any(|r| r.starts_with("no counters: qemu0")),
        "{d:?}"
    );
    let b = k.demo(
        "qemu-nvme-bounce",
        &["--device", "qemu", "--nvme", "2", "--mode", "bounce"],
    );
    assert!(b.checksum_match);
    assert!(b.ram_dump_hits > 0);
    assert_eq!(b.bypassed_system_memory, Some(false));
}

#[test]
fn p2p_with_submission_queues_out_of_the_cmb() {
    sqes_out_of_the_cmb(Kernel::Debian);
}

#[test]
fn root_ports_on_intel_refuse_p2p_and_auto_falls_back() {
    intel_root_ports(Kernel::Debian);
}

#[test]
fn root_ports_on_amd_go_through_the_host_bridge() {
    amd_root_ports(Kernel::Debian);
}

#[test]
fn reference_qemu_nvme_p2p_copy_is_unknown_for_lack_of_counters() {
    reference_qemu_nvme(Kernel::Debian);
}

#[test]
fn minimal_kernel_p2p_with_submission_queues_out_of_the_cmb() {
    sqes_out_of_the_cmb(Kernel::Minimal);
}

#[test]
fn minimal_kernel_root_ports_on_intel_refuse_p2p_and_auto_falls_back() {
    intel_root_ports(Kernel::Minimal);
}

#[test]
fn minimal_kernel_root_ports_on_amd_go_through_the_host_bridge() {
    amd_root_ports(Kernel::Minimal);
}

#[test]
fn minimal_kernel_reference_qemu_nvme_p2p_copy_is_unknown_for_lack_of_counters() {
    reference_qemu_nvme(Kernel::Minimal);
}
