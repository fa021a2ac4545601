//! The guest copy-offload module and CLI, on the project's
//! controllers and on QEMU's built-in nvme (the reference).

use p2pnvme_ci::*;

fn module_tests(vm: &[&str], a: &str, b: &str) {
    let mut args = vec!["run", "--ns-size", "512M", "--timeout", "600"];
    args.extend_from_slice(vm);
    args.extend_from_slice(&["--", "sh /opt/p2pnvme/tests/module-tests.sh", a, b]);
    let out = p2pnvme(&args);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("0 failed"), "{s}");
    assert_eq!(out.status.code(), Some(0));
    assert!(s.matches("ok: ").count() >= 15, "{s}");
}

#[test]
fn module_on_project_controllers() {
    module_tests(
        &["--nvme", "2", "--namespaces", "2"],
        "p2pnvme-0",
        "p2pnvme-1",
    );
}

#[test]
fn p2p_between_root_ports_on_intel_is_refused_with_a_reason() {
    let s = guest_ok(
        &["--nvme", "2", "--topology", "root-ports", "--cpu", "intel"],
        "A=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1); B=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-1 1); \
         p2pcopy providers; ! p2pcopy copy --src $A --dst $B --len 1M 2>&1; \
         p2pcopy copy --src $A --dst $B --len 1M --mode auto; dmesg | grep p2pcopy: | tail -3",
    );
    assert!(s.contains("map not supported"), "{s}");
    assert!(s.contains("cannot do peer-to-peer"), "{s}");
    assert!(s.contains("fell back to bounce"), "{s}");
    assert!(
        s.contains("no P2P memory provider is reachable by both"),
        "{s}"
    );
}
