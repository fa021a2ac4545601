//! Accelerator choice: TCG, KVM (refused in one line where it does not
//! work: a CI job that asks for KVM never gets TCG behind its back), or
//! auto (KVM where a probe boot shows it works, TCG otherwise; nested KVM
//! often does not). The probe's answer is cached per image.

use crate::exit;
use crate::options::{AccelChoice, VmOptions};
use crate::paths;
use crate::qemu::Accel;
use crate::session::{Output, Session};
use anyhow::Result;
use std::fs;
use std::time::Duration;

/// The accelerator's name in reports (`kvm`, `tcg`).
pub fn name(a: Accel) -> &'static str {
    match a {
        Accel::Kvm => "kvm",
        Accel::Tcg(_) => "tcg",
    }
}

/// The accelerator for a session with these options.
pub fn choose(opts: &VmOptions, image_key: &str) -> Result<Accel> {
    let tcg = Accel::Tcg(opts.tcg_threads);
    let choice = opts.accel_choice();
    if choice == AccelChoice::Tcg {
        return Ok(tcg);
    }
    let usable = kvm_works(opts, image_key);
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
fn kvm_works(opts: &VmOptions, image_key: &str) -> Result<(), String> {
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

fn probe(opts: &VmOptions) -> Result<bool> {
    let mut probe = Session::prepare(VmOptions {
        qemu_nvme: 0,
        nvme: 0,
        accel: AccelChoice::Tcg,
        kvm: false,
        no_guest_driver: true,
        shares: vec![],
        user_modules: vec![],
        faults: vec![],
        trace: None,
        ..opts.clone()
    })?;
    probe.accel = Accel::Kvm;
    Ok(probe
        .run("true", Duration::from_secs(60), Output::Capture)
        .map(|r| r.status == 0)
        .unwrap_or(false))
}
