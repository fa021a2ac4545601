//! Fault rules are checked before boot.

use super::*;

#[test]
fn bad_fault_rules_are_refused_before_boot_in_one_line() {
    for (rule, want) in [
        ("op=read,foo=1,never", "foo"),
        ("op=bogus,never", "bogus"),
        ("op=read,nth=10", "no action"),
        ("ctrl=2,op=read,never", "ctrl=2: no such controller"),
    ] {
        let out = p2pnvme(&["run", "--nvme", "2", "--fault", rule, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{rule}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{rule}: {err}");
    }
    // The control: a good rule on an existing controller boots.
    let s = guest_ok(
        &[
            "--nvme",
            "2",
            "--fault",
            "ctrl=1,op=read,lba=400000-400001,never",
        ],
        "echo booted",
    );
    assert!(s.contains("booted"));
}
