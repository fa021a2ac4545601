//! p2pnvme's TCG witness: a QEMU 11.1 plugin (API 7) that classifies every
//! guest memory access by guest physical address — guest RAM, each named
//! window (a controller's CMB or register BAR), other MMIO — and counts it
//! per class, direction and vCPU, with the accesses QEMU had to emulate
//! (trapped MMIO) counted separately, plus instructions executed.
//!
//! QEMU loads it with `-plugin libp2pnvme_witness.so,sock=PATH,out=PATH`:
//! `sock` is the control socket (see [`control`]), `out` a file the plugin
//! writes at exit with the whole run's counts. Cost: one callback per guest
//! memory access (a physical-address lookup and a range check against a
//! handful of windows) and one per executed translation block (instructions).
//!
//! Memory callbacks are inserted only while a measurement window is open (or
//! always, with `arm=always`): opening and closing a window flushes QEMU's
//! translated code with `qemu_plugin_reset`, so code outside windows (boot,
//! set-up) runs without them. Instructions are counted all the time.
//!
//! Instructions are not counted with QEMU's inline per-vCPU scoreboard ops:
//! a guest kernel crashed early in boot (unexpected int3 while patching its
//! text) whenever the witness registered one, and booted with callbacks.
//!
//! Modules, bottom up: `sys` (the raw C ABI of QEMU's plugin API), `api`
//! (safe handles over it), `counters` (the window table, per-vCPU counters
//! and reports; pure data), `args` (the plugin's arguments), `control` (the
//! control socket's thread); this file holds the plugin's state and its
//! callbacks.
//!
//! Data path of one access: QEMU translates a block -> `on_tb_trans` asks
//! for memory callbacks on its instructions while armed -> `on_load` /
//! `on_store` -> `on_mem` classifies the physical address with the window
//! table and bumps the vCPU's counters -> the launcher's `stop` on the
//! control socket (or the exit) -> a `WindowReport` (counters.rs) as JSON.

pub mod api;
mod args;
pub mod control;
pub mod counters;
pub mod sys;

use api::{MemAccess, Plugin, Tb};
use counters::{Counters, Snapshot, WindowTable};
use p2pnvme_docs::witness::{AddrWindow, WitnessReport, QEMU_PLUGIN_API};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The API version QEMU checks before calling `qemu_plugin_install`.
#[no_mangle]
#[used]
pub static qemu_plugin_version: c_int = QEMU_PLUGIN_API;

/// The plugin's state, shared by QEMU's vCPU threads and the control thread.
pub struct Witness {
    api: &'static sys::Api,
    id: sys::PluginId,
    /// Memory callbacks are in the translated code (changed only in a reset,
    /// while every vCPU is stopped).
    armed: AtomicBool,
    /// What the control thread asks for; a vCPU thread resets to match it.
    want_armed: AtomicBool,
    /// A reset has been asked of QEMU and has not finished.
    resetting: AtomicBool,
    /// `arm=always`: memory callbacks from the start, no resets.
    always: bool,
    windows: WindowTable,
    counters: Counters,
    started: (Instant, Snapshot),
    /// Open measurement windows, innermost last (they nest: the launcher's
    /// window around a whole command holds the guest's own).
    open: Mutex<Vec<(String, Instant, Snapshot)>>,
    out: Option<PathBuf>,
}

static WITNESS: OnceLock<Witness> = OnceLock::new();

/// Most windows open at once (nesting depth).
const MAX_OPEN: usize = 16;

/// How long `start` waits for a vCPU to put memory callbacks in place.
const ARM_TIMEOUT: Duration = Duration::from_secs(20);

impl Witness {
    fn snapshot(&self) -> Snapshot {
        self.counters.snapshot()
    }

    /// Asks for memory callbacks on or off; with `wait`, returns once they
    /// are (a vCPU thread does the reset at its next translation block).
    fn arm(&self, on: bool, wait: bool) -> Result<(), String> {
        if self.always {
            return Ok(());
        }
        self.want_armed.store(on, SeqCst);
        let t0 = Instant::now();
        while wait && self.armed.load(SeqCst) != on {
            if t0.elapsed() > ARM_TIMEOUT {
                return Err("no vCPU ran to put the memory callbacks in place".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn register(&'static self) {
        let p = Plugin {
            id: self.id,
            api: self.api,
        };
        p.on_tb_trans(on_tb_trans, self);
        p.on_exit(on_exit, self);
    }

    fn since_start(&self, name: &str) -> String {
        let (t0, from) = &self.started;
        let r = self.counters.report(
            name,
            t0.elapsed().as_secs_f64(),
            &self.windows,
            from,
            &self.snapshot(),
        );
        serde_json::to_string(&r).unwrap_or_else(|e| format!("error {e}"))
    }

    fn write_out(&self) {
        let Some(path) = &self.out else { return };
        let (t0, from) = &self.started;
        let doc = WitnessReport {
            plugin: String::new(),
            api_version: QEMU_PLUGIN_API,
            windows: vec![self.counters.report(
                "run",
                t0.elapsed().as_secs_f64(),
                &self.windows,
                from,
                &self.snapshot(),
            )],
        };
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            log::error!("cannot write {}: {e}", path.display());
        }
    }
}

impl control::Handler for Witness {
    fn handle(&self, req: &str) -> String {
        let (cmd, rest) = req.split_once(' ').unwrap_or((req, ""));
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match (cmd, rest.trim()) {
            ("ping", "") => "pong".into(),
            ("windows", json) => match serde_json::from_str::<Vec<AddrWindow>>(json) {
                Err(e) => format!("error bad window list: {e}"),
                Ok(_) if !open.is_empty() => "error a measurement window is open".into(),
                Ok(ws) => match self.windows.set(&ws) {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("error {e}"),
                },
            },
            ("start", name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                if open.len() >= MAX_OPEN {
                    return format!("error {MAX_OPEN} windows are open already");
                }
                match self.arm(true, true) {
                    Err(e) => format!("error {e}"),
                    Ok(()) => {
                        open.push((name.to_string(), Instant::now(), self.snapshot()));
                        "ok".into()
                    }
                }
            }
            ("stop", "") => match open.pop() {
                None => "error no measurement window is open".into(),
                Some((name, t0, from)) => {
                    let r = self.counters.report(
                        &name,
                        t0.elapsed().as_secs_f64(),
                        &self.windows,
                        &from,
                        &self.snapshot(),
                    );
                    if open.is_empty() {
                        let _ = self.arm(false, false);
                    }
                    serde_json::to_string(&r).unwrap_or_else(|e| format!("error {e}"))
                }
            },
            ("report", "") => self.since_start("run"),
            _ => format!(
                "error unknown request '{req}' (ping, windows JSON, start NAME, stop, report)"
            ),
        }
    }
}

fn is_ours(w: &'static Witness, ud: *mut c_void) -> bool {
    std::ptr::eq(ud as *const Witness, w)
}

unsafe extern "C" fn on_tb_trans(tb: *mut sys::RawTb, ud: *mut c_void) {
    let Some(w) = WITNESS.get() else { return };
    if !is_ours(w, ud) {
        w.counters.mismatch();
    }
    // SAFETY: QEMU passed this block to this translation callback.
    let tb = unsafe { Tb::from_raw(tb, w.api) };
    let n = tb.n_insns();
    tb.on_exec(on_exec, &BLOCK_SIZES[n.min(BLOCK_SIZES.len() - 1)]);
    if w.armed.load(Relaxed) {
        for i in 0..n {
            tb.insn(i).on_mem(on_load, on_store, w);
        }
    }
    w.counters.translated();
}

/// Userdata of the block-execution callback: a pointer to its instruction
/// count (TCG blocks have at most 512 instructions).
static BLOCK_SIZES: [u64; 1024] = {
    let mut a = [0u64; 1024];
    let mut i = 0;
    while i < a.len() {
        a[i] = i as u64;
        i += 1;
    }
    a
};

unsafe extern "C" fn on_exec(vcpu: c_uint, ud: *mut c_void) {
    let Some(w) = WITNESS.get() else { return };
    if !BLOCK_SIZES.as_ptr_range().contains(&(ud as *const u64)) {
        w.counters.mismatch();
        return;
    }
    // SAFETY: a pointer into BLOCK_SIZES (checked above).
    w.counters
        .executed(vcpu as usize, unsafe { *(ud as *const u64) });
    // On a vCPU thread, as qemu_plugin_reset needs to flush translated code.
    if w.want_armed.load(Relaxed) != w.armed.load(Relaxed) && !w.resetting.swap(true, SeqCst) {
        Plugin {
            id: w.id,
            api: w.api,
        }
        .reset(on_reset);
    }
}

/// Every vCPU is stopped and the translated code is gone: switch modes and
/// register the callbacks again (a reset removed them all).
unsafe extern "C" fn on_reset(_id: sys::PluginId) {
    let Some(w) = WITNESS.get() else { return };
    w.armed.store(w.want_armed.load(SeqCst), SeqCst);
    w.register();
    w.resetting.store(false, SeqCst);
}

unsafe extern "C" fn on_load(vcpu: c_uint, info: sys::MemInfo, vaddr: u64, ud: *mut c_void) {
    on_mem(vcpu, info, vaddr, ud, false);
}

unsafe extern "C" fn on_store(vcpu: c_uint, info: sys::MemInfo, vaddr: u64, ud: *mut c_void) {
    on_mem(vcpu, info, vaddr, ud, true);
}

/// One access: its class by physical address, counted on this vCPU.
#[inline(always)]
fn on_mem(vcpu: c_uint, info: sys::MemInfo, vaddr: u64, ud: *mut c_void, store: bool) {
    let Some(w) = WITNESS.get() else { return };
    if !is_ours(w, ud) {
        w.counters.mismatch();
    }
    let access = MemAccess {
        info,
        vaddr,
        api: w.api,
    };
    match access.phys() {
        Some(p) => w.counters.record(
            vcpu as usize,
            w.windows.classify(p.addr, p.is_io),
            store,
            access.size(),
            p.is_io,
        ),
        None => w.counters.unresolved(),
    }
}

unsafe extern "C" fn on_exit(ud: *mut c_void) {
    let Some(w) = WITNESS.get() else { return };
    if !is_ours(w, ud) {
        w.counters.mismatch();
    }
    w.write_out();
}

/// Forwards the `log` crate to QEMU's log output. Hand-written on purpose:
/// a plugin shares QEMU's process, so it must write through
/// `qemu_plugin_outs` (QEMU's `-D`/stderr routing) and must not install a
/// crate logger that reads the environment or owns stderr for QEMU.
struct QemuLog;

impl log::Log for QemuLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            api::outs(&format!("{}: {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn install(id: sys::PluginId, info: &sys::QemuInfo, args: &[String]) -> Result<(), String> {
    if !(info.version_min..=info.version_cur).contains(&QEMU_PLUGIN_API) {
        return Err(format!(
            "built for plugin API {QEMU_PLUGIN_API}, QEMU supports {}..={}",
            info.version_min, info.version_cur
        ));
    }
    if !info.system_emulation {
        return Err("needs system emulation (guest physical addresses)".into());
    }
    let args = args::parse_args(args)?;
    let api = api::init()?;
    let _ = log::set_logger(&QemuLog).map(|()| log::set_max_level(log::LevelFilter::Warn));
    let vcpus = usize::try_from(info.max_vcpus.max(info.smp_vcpus)).unwrap_or(1);
    let counters = Counters::new(vcpus);
    let started = (Instant::now(), counters.snapshot());
    let w = WITNESS.get_or_init(|| Witness {
        api,
        id,
        armed: AtomicBool::new(args.always),
        want_armed: AtomicBool::new(args.always),
        resetting: AtomicBool::new(false),
        always: args.always,
        windows: WindowTable::default(),
        counters,
        started,
        open: Mutex::new(vec![]),
        out: args.out,
    });
    if let Some(sock) = &args.sock {
        control::spawn(sock, w).map_err(|e| format!("cannot listen on {}: {e}", sock.display()))?;
    }
    w.register();
    Ok(())
}

/// Called by QEMU after checking [`qemu_plugin_version`].
///
/// # Safety
/// QEMU's contract: `info` is valid, `argv` holds `argc` C strings.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: sys::PluginId,
    info: *const sys::QemuInfo,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: QEMU's contract above.
    let info = unsafe { &*info };
    let args: Vec<String> = (0..usize::try_from(argc).unwrap_or(0))
        // SAFETY: argv has argc NUL-terminated entries.
        .map(|i| {
            unsafe { CStr::from_ptr(*argv.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    match install(id, info, &args) {
        Ok(()) => 0,
        Err(e) => {
            // api::outs needs the resolved table; fall back to stderr.
            if api::api().is_some() {
                api::outs(&e);
            } else {
                eprintln!("p2pnvme-witness: {e}");
            }
            -1
        }
    }
}
