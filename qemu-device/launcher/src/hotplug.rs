//! Surprise removal for `remove` fault rules: a thread polls the device's
//! events every 50 ms; on a removal it unplugs that controller's
//! vfio-user-pci device over QMP (`device_del`, then DEVICE_DELETED once
//! the guest let go of it) and, with `replug_ms`, plugs the same device
//! back (`device_add` with the same properties) that long after.

use crate::procs::Worker;
use crate::qmp::Qmp;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the device's events are read.
const POLL: Duration = Duration::from_millis(50);

/// Where the watch finds the device, QEMU and the controllers.
pub struct Plan {
    /// The device process's stats (control) socket.
    pub stats_socket: PathBuf,
    /// QEMU's QMP socket.
    pub qmp_socket: PathBuf,
    /// `device_add` properties of each project controller, by index.
    pub devices: Vec<Value>,
}

/// The removal thread; stopped and joined when dropped.
pub struct Watch {
    /// Held for its Drop: stops and joins the thread.
    _thread: Worker,
}

impl Watch {
    /// Starts polling the device's events.
    pub fn start(plan: Plan) -> Watch {
        Watch {
            _thread: Worker::spawn(move |s| watch(&plan, s)),
        }
    }
}

fn watch(plan: &Plan, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        let events = match crate::stats::events(&plan.stats_socket) {
            Ok(e) => e,
            Err(e) => {
                log::debug!("fault events: {e:#}");
                continue;
            }
        };
        for (ctrl, replug_ms) in events {
            let Some(props) = plan.devices.get(ctrl) else {
                log::warn!("fault: the device asked to remove controller {ctrl}, which this run does not have");
                continue;
            };
            if let Err(e) = remove(plan, ctrl, props, replug_ms, stop) {
                log::warn!("fault: surprise removal of controller {ctrl} failed: {e:#}");
            }
        }
    }
}

/// Unplugs one controller and, with `replug_ms`, plugs it back.
fn remove(
    plan: &Plan,
    ctrl: usize,
    props: &Value,
    replug_ms: Option<u64>,
    stop: &AtomicBool,
) -> Result<()> {
    let id = props["id"].as_str().context("a device without an id")?;
    let t = Instant::now();
    let mut q = Qmp::connect(&plan.qmp_socket)?;
    q.execute("device_del", json!({ "id": id }))?;
    log::info!("fault: removing controller {ctrl} ({id}) from the guest");
    // The guest's PCIe hotplug driver lets go of the slot, then QEMU frees
    // the device; stop waiting only when the session ends.
    loop {
        if q.wait_event(
            "DEVICE_DELETED",
            &json!({ "device": id }),
            Duration::from_secs(1),
        )?
        .is_some()
        {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
    drop(q);
    log::info!(
        "fault: controller {ctrl} ({id}) removed, {} ms after the request",
        t.elapsed().as_millis()
    );
    let Some(ms) = replug_ms else {
        return Ok(());
    };
    let back = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < back {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::sleep(POLL.min(back.saturating_duration_since(Instant::now())));
    }
    Qmp::connect(&plan.qmp_socket)?.execute("device_add", props.clone())?;
    log::info!("fault: controller {ctrl} ({id}) plugged back after {ms} ms");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// A stand-in for QEMU's QMP: answers every command, records it, and
    /// after `device_del` sends DEVICE_DELETED for each id in `deleted`.
    fn fake_qmp(path: &std::path::Path, deleted: Vec<&'static str>) -> Arc<Mutex<Vec<Value>>> {
        let seen = Arc::new(Mutex::new(vec![]));
        let l = UnixListener::bind(path).unwrap();
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut w) = conn else { return };
                let r = BufReader::new(w.try_clone().unwrap());
                writeln!(w, r#"{{"QMP":{{"version":{{}}}}}}"#).unwrap();
                for line in r.lines() {
                    let Ok(line) = line else { break };
                    let v: Value = serde_json::from_str(&line).unwrap();
                    // Recorded before the reply: the caller may check (and
                    // hang up) as soon as it has its answer.
                    s.lock().unwrap().push(v.clone());
                    let _ = writeln!(w, r#"{{"return":{{}}}}"#);
                    if v["execute"] == "device_del" {
                        for id in &deleted {
                            let e = json!({"event": "DEVICE_DELETED", "data": {"device": id}});
                            let _ = writeln!(w, "{e}");
                        }
                    }
                }
            }
        });
        seen
    }

    fn plan(dir: &std::path::Path) -> (Plan, Value) {
        let props = json!({"driver": "vfio-user-pci", "id": "p2p_nvme0",
            "socket": {"path": "/s0", "type": "unix"}, "bus": "p2p_dn0"});
        let plan = Plan {
            stats_socket: dir.join("stats.sock"),
            qmp_socket: dir.join("qmp.sock"),
            devices: vec![props.clone()],
        };
        (plan, props)
    }

    #[test]
    fn removal_deletes_waits_for_the_guest_and_plugs_back_the_same_device() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, props) = plan(dir.path());
        let seen = fake_qmp(&plan.qmp_socket, vec!["p2p_nvme0"]);
        remove(&plan, 0, &props, Some(20), &AtomicBool::new(false)).unwrap();
        let seen = seen.lock().unwrap();
        let cmds: Vec<_> = seen.iter().map(|v| v["execute"].clone()).collect();
        assert_eq!(
            cmds,
            [
                "qmp_capabilities",
                "device_del",
                "qmp_capabilities",
                "device_add"
            ]
        );
        assert_eq!(seen[1]["arguments"], json!({"id": "p2p_nvme0"}));
        assert_eq!(seen[3]["arguments"], props, "the same properties go back");
    }

    #[test]
    fn another_devices_deletion_does_not_end_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, props) = plan(dir.path());
        let seen = fake_qmp(&plan.qmp_socket, vec!["p2p_nvme1"]);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            s.store(true, Ordering::SeqCst);
        });
        remove(&plan, 0, &props, Some(0), &stop).unwrap();
        t.join().unwrap();
        let cmds: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["execute"].clone())
            .collect();
        assert_eq!(cmds, ["qmp_capabilities", "device_del"], "no device_add");
    }
}
