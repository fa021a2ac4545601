//! Accelerator choice: TCG, KVM (refused in one line where it does not
//! work: a CI job that asks for KVM never gets TCG behind its back), or
//! auto (KVM where a probe boot shows it works, TCG otherwise; nested KVM
//! often does not). The probe's answer is cached per image.

use crate::exit;
use crate::options::{AccelChoice, VmOptions};
use crate::paths;
use crate::vm::Accel;
use anyhow::Result;
use std::fs;

/// The accelerator's name in reports (`kvm`, `tcg`).
pub fn name(a: Accel) -> &'static str {
    match a {
        Accel::Kvm => "kvm",
        Accel::Tcg(_) => "tcg",
    }
}

/// The accelerator for a session with these options. `probe` boots a short
/// KVM guest with them and says whether it ran (the session owns booting,
/// so it is passed in); it runs only when the answer is not cached.
pub fn choose(
    opts: &VmOptions,
    image_key: &str,
    probe: impl FnOnce(&VmOptions) -> Result<bool>,
) -> Result<Accel> {
    let tcg = Accel::Tcg(opts.tcg_threads);
    let choice = opts.accel_choice();
    if choice == AccelChoice::Tcg {
        return Ok(tcg);
    }
    let usable = kvm_works(opts, image_key, probe);
    match (choice, usable) {
        (_, Ok(())) => Ok(Accel::Kvm),
        (AccelChoice::Auto, Err(why)) => {
            log::info!("--accel auto: {why}; using TCG");
            Ok(tcg)
        }
        (_, Err(why)) => Err(exit::with(
            exit::REFUSED,
            format!("--accel kvm: {why}: use --accel tcg or --accel auto"),
        )),
    }
}

/// Ok when KVM runs a guest here; otherwise why not.
fn kvm_works(
    opts: &VmOptions,
    image_key: &str,
    probe: impl FnOnce(&VmOptions) -> Result<bool>,
) -> Result<(), String> {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("/dev/kvm is not usable ({e})"));
    }
    let failed = "a KVM probe boot failed on this machine (nested KVM?)";
    let marker = paths::cache_root().join(format!("kvm-probe-{image_key}"));
    if let Ok(v) = fs::read_to_string(&marker) {
        return if v.trim() == "ok" {
            Ok(())
        } else {
            Err(format!(
                "{failed}; delete {} to probe again",
                marker.display()
            ))
        };
    }
    log::info!("probing KVM with a short boot");
    let ok = probe(opts).unwrap_or(false);
    let _ = fs::write(&marker, if ok { "ok" } else { "failed" });
    if ok {
        Ok(())
    } else {
        Err(failed.into())
    }
}
