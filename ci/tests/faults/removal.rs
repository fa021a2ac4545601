//! Surprise removal of a controller during a copy, and its replug.

use super::*;

#[test]
fn surprise_removal_during_a_copy_fails_it_cleanly_and_replug_works() {
    surprise_removal(Kernel::Debian);
}

/// Regression: with QEMU's default ACPI hotplug the minimal kernel (no
/// acpiphp, and _OSC withheld native hotplug) never acted on `device_del`.
#[test]
fn minimal_kernel_surprise_removal_during_a_copy_fails_it_cleanly_and_replug_works() {
    surprise_removal(Kernel::Minimal);
}

/// The launcher starts the removable controller with MSI (QEMU 11.1.3
/// aborts freeing an unplugged vfio-user-pci device that has MSI-X).
fn surprise_removal(k: Kernel) {
    let rule = format!(
        "ctrl=0,op=read,{},nth=10,remove,replug-ms=2000",
        lbas(OFF, LEN)
    );
    let run = scenario(
        k,
        std::slice::from_ref(&rule),
        &["--append", IO_TIMEOUT],
        &format!("sh /opt/p2pnvme/ci/fault-remove.sh {OFF} {LEN}"),
    );
    let (kv, stderr) = (&run.kv, &run.stderr);
    // 255 would be a guest kernel oops under the command; a QEMU abort
    // (its unplug of an MSI-X vfio-user-pci device) would end the run early.
    assert_eq!(run.code, Some(0), "the guest script ran to its end");
    assert!(
        stderr.contains("controller 0 (p2p_nvme0) removed"),
        "{stderr}"
    );
    assert!(stderr.contains("plugged back"), "{stderr}");
    // Only the controller the rule can remove does without MSI-X.
    assert!(
        stderr.contains("controller(s) [0] use MSI instead of MSI-X"),
        "{stderr}"
    );
    assert_eq!(kv.get("irq").trim(), "MSI: Enable+");
    assert_eq!(kv.get("irq_back").trim(), "MSI: Enable+");
    assert_eq!(kv.get("peer_irq").trim(), "MSI-X: Enable+");
    let f = kv.json("fault_json");
    assert_ne!(kv.num("fault_rc"), 0);
    assert_eq!(f["errno"], EIO, "{f}");
    let done = f["bytes_done"].as_u64().unwrap();
    assert!(done > 0 && done < LEN, "bytes done {done}");
    assert_eq!(kv.num("gone_rc"), 0, "the controller left the guest");
    assert_eq!(kv.num("back_rc"), 0, "the controller came back");
    // The removed provider's memory was all returned: its PCI device (and
    // p2pmem) went away, which the kernel finishes only once every P2P page
    // is back (QEMU's DEVICE_DELETED, "removed" above, comes after that).
    // The re-plugged provider is a new one with as much free as the old one
    // had before the copy (the nvme driver's CMB queues take the rest).
    assert_eq!(
        kv.num("p2pmem_gone_rc"),
        0,
        "p2pmem of the removed provider"
    );
    assert_eq!(kv.num("size_back"), kv.num("size"));
    assert_eq!(kv.num("avail_back"), kv.num("avail_before"));
    assert_eq!(kv.num("peer_avail_after"), kv.num("peer_avail_before"));
    assert_eq!(kv.num("nvme_list_has_it"), 1);
    assert_eq!(kv.num("read_rc"), 0);
    assert_eq!(kv.num("again_rc"), 0, "a copy through the new provider");
    assert_eq!(kv.json("again_json")["bytes_done"], LEN);
    assert_eq!(kv.num("rmmod_rc"), 0);
    assert_eq!(kv.num("oopses"), 0, "{:?}", kv.log(&[""]));
    // The native PCIe hotplug driver took the slot down and up, as on
    // real hardware.
    assert!(
        !kv.log(&["pciehp", "will power off"]).is_empty(),
        "{:?}",
        kv.log(&[""])
    );
    assert!(
        !kv.log(&["pciehp", "Link Up"]).is_empty(),
        "{:?}",
        kv.log(&[""])
    );
}
