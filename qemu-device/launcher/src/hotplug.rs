//! Surprise removal for `remove` fault rules: a thread polls the device's
//! events every 50 ms; on a removal it unplugs that controller's
//! vfio-user-pci device over QMP (`device_del`, then DEVICE_DELETED once
//! the guest let go of it) and, with `replug_ms`, plugs the same device
//! back (`device_add` with the same properties) that long after.

use crate::qmp::Qmp;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
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
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Starts polling the device's events.
    pub fn start(plan: Plan) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || watch(&plan, &s));
        Watch {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
        if q.wait_event("DEVICE_DELETED", &json!({ "device": id }), Duration::from_secs(1))?
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
