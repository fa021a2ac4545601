//! Accelerator choice: TCG, or KVM where a probe boot shows it works
//! (nested KVM often does not); the probe's answer is cached per image.

use crate::options::VmOptions;
use crate::paths;
use crate::qemu::Accel;
use crate::session::{Output, Session};
use anyhow::Result;
use std::fs;
use std::time::Duration;

/// The accelerator for a session with these options.
pub fn choose(opts: &VmOptions, image_key: &str) -> Result<Accel> {
    let tcg = Accel::Tcg(opts.tcg_threads);
    if !opts.kvm {
        return Ok(tcg);
    }
    let marker = paths::cache_root().join(format!("kvm-probe-{image_key}"));
    if let Ok(v) = fs::read_to_string(&marker) {
        return Ok(if v.trim() == "ok" { Accel::Kvm } else { tcg });
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        log::warn!("--kvm asked but /dev/kvm is not usable; using TCG");
        return Ok(tcg);
    }
    log::info!("probing KVM with a short boot");
    let mut probe = Session::prepare(VmOptions {
        qemu_nvme: 0,
        nvme: 0,
        kvm: false,
        no_guest_driver: true,
        shares: vec![],
        ..opts.clone()
    })?;
    probe.accel = Accel::Kvm;
    let ok = probe
        .run("true", Duration::from_secs(60), Output::Capture)
        .map(|r| r.status == 0)
        .unwrap_or(false);
    let _ = fs::write(&marker, if ok { "ok" } else { "failed" });
    if ok {
        Ok(Accel::Kvm)
    } else {
        log::warn!("KVM probe boot failed (nested KVM?); using TCG");
        Ok(tcg)
    }
}
