//! `p2pnvme-device --config FILE`: the typed document carries any path. A
//! directory whose name holds a comma, a space, '=' and ':' (which the old
//! `--controller k=v` text could not carry) holds the document, the
//! sockets and the namespace file, and a raw vfio-user client gets
//! Identify from the controller.

use p2pnvme_device::testhost::SocketHost;
use p2pnvme_device::{ControllerConfig, DeviceConfig, NamespaceConfig};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_config_file_in_a_path_with_comma_space_equals_colon_serves_identify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a, b=c:d");
    std::fs::create_dir(&dir).unwrap();
    let sock = dir.join("c0, x=y:z.sock");
    let ns = NamespaceConfig::new(dir.join("ns, 1=2:3.img"), 1 << 20);
    let mut ctrl = ControllerConfig::new(sock.clone(), vec![ns]);
    ctrl.serial = Some("odd-path".into());
    ctrl.cmb_mib = 2;
    let mut cfg = DeviceConfig::new(vec![ctrl]);
    cfg.stats_socket = Some(dir.join("stats, s=t:u.sock"));
    let file = dir.join("device, v=w:x.json");
    std::fs::write(&file, cfg.to_json()).unwrap();
    let log = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pnvme-device"))
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        let stderr = || std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        if let Some(st) = child.try_wait().unwrap() {
            panic!("device exited ({st}): {}", stderr());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no socket: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut h = SocketHost::connect(&sock).expect("connect");
    assert!(h.enable(), "controller ready");
    assert_eq!(h.identify().as_deref(), Some("odd-path"));
    assert!(dir.join("ns, 1=2:3.img").exists());
    drop(h);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_with_controller_flags_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnvme-device"))
        .arg("--config")
        .arg(tmp.path().join("x.json"))
        .args(["--controller", "socket=/a,ns=/a.img:1M"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "p2pnvme-device: error: --config replaces --controller: put it in the config file or drop --config"
    );
}
