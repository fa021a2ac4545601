use super::{parse_size, validate, DeviceArgs, Limits};
use crate::irq_mode::IrqMode;
use p2pnvme_docs::device_config::{DeviceConfig, UnannouncedDma};

fn args(controller: &[&str]) -> DeviceArgs {
    DeviceArgs {
        controller: controller.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

fn specs(a: &DeviceArgs) -> crate::error::Result<Vec<super::CtrlSpec>> {
    validate(&a.to_config(&Limits::default())?)
}

#[test]
fn controller_irq_mode_defaults_to_msix_and_msi_is_chosen_per_controller() {
    let s = specs(&args(&[
        "socket=/tmp/a,ns=/tmp/a.img:1M",
        "socket=/tmp/b,irq=msi,ns=/tmp/b.img:1M",
        "socket=/tmp/c,irq=msix,ns=/tmp/c.img:1M",
    ]))
    .unwrap();
    let modes: Vec<IrqMode> = s.iter().map(|s| s.irq).collect();
    assert_eq!(modes, [IrqMode::Msix, IrqMode::Msi, IrqMode::Msix]);
}

#[test]
fn bad_controller_irq_mode_is_refused_with_the_fix() {
    let e = specs(&args(&["socket=/tmp/a,irq=intx,ns=/tmp/a.img:1M"])).unwrap_err();
    assert_eq!(e.to_string(), "bad irq 'intx': use irq=msix or irq=msi");
}

#[test]
fn poll_and_moderation_can_differ_per_controller() {
    let mut a = args(&[
        "socket=/tmp/a,moderation-us=30,poll-us=500,ns=/tmp/a.img:1M",
        "socket=/tmp/b,ns=/tmp/b.img:1M",
    ]);
    a.poll_us = Some(7);
    let s = specs(&a).unwrap();
    assert_eq!((s[0].moderation_us, s[0].poll_us), (30, 500));
    assert_eq!(
        (s[1].moderation_us, s[1].poll_us),
        (super::DEFAULT_MODERATION_US, 7)
    );
    let e = specs(&args(&[
        "socket=/tmp/a,moderation-us=20000,ns=/tmp/a.img:1M",
    ]))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad moderation-us=20000: use a number of microseconds from 0 to 10000"
    );
}

#[test]
fn doubled_commas_put_commas_spaces_equals_and_colons_in_paths() {
    let a = args(&["socket=/t/a,,b c=d:e.sock,ns=/t/a,,b c=d:e.img:1M:4096"]);
    let s = specs(&a).unwrap();
    assert_eq!(s[0].socket.to_str(), Some("/t/a,b c=d:e.sock"));
    assert_eq!(s[0].namespaces[0].file.to_str(), Some("/t/a,b c=d:e.img"));
    assert_eq!(
        (s[0].namespaces[0].size, s[0].namespaces[0].lba),
        (1 << 20, 4096)
    );
    let a = DeviceArgs {
        socket: Some("/t/s".into()),
        namespace: vec!["file=/t/x,,y=z:w.img,size=64K".into()],
        ..Default::default()
    };
    let s = specs(&a).unwrap();
    assert_eq!(s[0].namespaces[0].file.to_str(), Some("/t/x,y=z:w.img"));
}

#[test]
fn list_errors_name_the_key_and_the_accepted_keys() {
    let e = specs(&args(&["socket=/tmp/a,colour=red,ns=/tmp/a.img:1M"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--controller 'socket=/tmp/a,colour=red,ns=/tmp/a.img:1M': unknown key 'colour': use one of \
         socket=, cmb-mib=, serial=, group=, irq=, poll-us=, moderation-us=, unannounced-dma=, ns="
    );
    let a = DeviceArgs {
        socket: Some("/t/s".into()),
        namespace: vec!["file=/t/x,size=1M,lba".into()],
        ..Default::default()
    };
    let e = specs(&a).unwrap_err().to_string();
    assert!(e.ends_with("'lba' needs a value (key=value)"), "{e}");
}

#[test]
fn one_validation_refuses_what_the_device_cannot_serve() {
    for (c, want) in [
        (
            "socket=/a,cmb-mib=3,ns=/a.img:1M",
            "cmb-mib=3: use 0 or a power of two",
        ),
        (
            "socket=/a,ns=/a.img:1000:4096",
            "must be a non-zero multiple of the LBA size 4096",
        ),
        ("socket=/a,ns=/a.img:12Q", "bad size '12Q'"),
        (
            "socket=/a,serial=123456789012345678901,ns=/a.img:1M",
            "bad serial",
        ),
        ("socket=/a", "has no namespace"),
        ("cmb-mib=2,ns=/a.img:1M", "needs socket=PATH"),
    ] {
        let e = specs(&args(&[c])).unwrap_err().to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{c}: {e}");
    }
    let e = specs(&args(&["socket=/a,ns=/a.img:1M", "socket=/a,ns=/b.img:1M"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "two controllers on socket /a: give each its own"
    );
    let e = specs(&DeviceArgs::default()).unwrap_err().to_string();
    assert!(e.starts_with("nothing to serve"), "{e}");
    // The document, not only the flags, goes through the same checks.
    let mut cfg =
        DeviceArgs::to_config(&args(&["socket=/a,ns=/a.img:1M"]), &Limits::default()).unwrap();
    cfg.controllers[0].namespaces[0].lba = 1000;
    assert_eq!(
        validate(&cfg).unwrap_err().to_string(),
        "bad lba '1000': use 512 or 4096"
    );
    cfg.controllers[0].namespaces[0].lba = 512;
    cfg.faults.push("ctrl=1,op=read,never".into());
    let e = validate(&cfg).unwrap_err().to_string();
    assert!(e.contains("ctrl=1: no such controller"), "{e}");
}

#[test]
fn config_file_and_controller_flags_do_not_mix() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a, b=c:d.json");
    let flags = args(&["socket=/a,ns=/a.img:1M"]);
    let cfg = flags.to_config(&Limits::default()).unwrap();
    std::fs::write(&f, cfg.to_json()).unwrap();
    let from_file = DeviceArgs {
        config: Some(f.clone()),
        ..Default::default()
    };
    assert_eq!(from_file.to_config(&Limits::default()).unwrap(), cfg);
    let mixed = DeviceArgs {
        config: Some(f.clone()),
        ..flags
    };
    let e = mixed.to_config(&Limits::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--config replaces --controller: put it in the config file or drop --config"
    );
    let limits = Limits {
        max_dma_maps: Some(4),
    };
    let e = from_file.to_config(&limits).unwrap_err().to_string();
    assert!(e.contains("--config replaces --max-dma-maps"), "{e}");
    std::fs::write(&f, r#"{"version":9,"controllers":[]}"#).unwrap();
    let e = from_file
        .to_config(&Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("device config version 9 is not supported: this p2pnvme reads version 1"),
        "{e}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("64K"), Ok(65536));
    assert_eq!(parse_size("256m"), Ok(256 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert!(parse_size("12Q").is_err());
    assert!(parse_size("").is_err());
    assert!(parse_size("99999999999T").is_err());
}

#[test]
fn the_default_document_polls_as_the_flags_default() {
    let cfg = DeviceConfig::new(vec![]);
    assert_eq!(cfg.poll_us, super::DEFAULT_POLL_US);
}

#[test]
fn controllers_moderate_interrupts_unless_told_otherwise() {
    // Neither a flag nor a document field: moderation is on.
    let s = specs(&args(&["socket=/t/a,ns=/t/a.img:1M"])).unwrap();
    assert_eq!(s[0].moderation_us, super::DEFAULT_MODERATION_US);
    assert!(s[0].moderation_us > 0);
    let doc = r#"{"version": 1, "controllers": [{"socket": "/t/a", "namespaces": [{"file": "/t/a.img", "size": 1048576}]}]}"#;
    let read = DeviceConfig::from_json(doc).unwrap();
    let s = crate::validate_config(&read).unwrap();
    assert_eq!(s[0].moderation_us, super::DEFAULT_MODERATION_US);
    // Off only when asked for.
    let s = specs(&args(&["socket=/t/a,moderation-us=0,ns=/t/a.img:1M"])).unwrap();
    assert_eq!(s[0].moderation_us, 0);
}

#[test]
fn unannounced_dma_is_off_unless_a_controller_asks_to_probe() {
    let s = specs(&args(&[
        "socket=/t/a,ns=/t/a.img:1M",
        "socket=/t/b,unannounced-dma=probe,ns=/t/b.img:1M",
    ]))
    .unwrap();
    assert_eq!(s[0].unannounced_dma, UnannouncedDma::Off);
    assert_eq!(s[1].unannounced_dma, UnannouncedDma::Probe);
    let e = specs(&args(&["socket=/t/a,unannounced-dma=yes,ns=/t/a.img:1M"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad unannounced-dma 'yes': use unannounced-dma=off or unannounced-dma=probe"
    );
}
