//! `--witness FILE`: loads the TCG witness plugin (crate p2pnvme-witness)
//! into QEMU and collects its measurement windows.
//!
//! The guest opens and closes windows with `p2pnvme-host witness-start NAME`
//! and `p2pnvme-host witness-stop` (see hostctl.rs); windows nest, and
//! `run --witness` puts the whole guest command in the window `command`
//! ([`wrap_command`]). At the outermost start the
//! launcher reads the BAR addresses the guest assigned from QMP `query-pci`
//! and hands the plugin one named window per BAR of every NVMe controller
//! (`p2pnvme-0/cmb`, `p2pnvme-0/regs`, `qemu-nvme-0/cmb`, ...; the names are
//! the controllers' serial numbers), so the classification is exact.

use crate::qmp::Qmp;
use anyhow::{bail, Context, Result};
use p2pnvme_docs::kv;
use p2pnvme_docs::witness::{AddrWindow, WindowReport, WitnessReport, QEMU_PLUGIN_API};
use serde_json::{json, Value};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// File name of the plugin cargo builds next to the launcher.
const PLUGIN_FILE: &str = "libp2pnvme_witness.so";
/// Overrides where the plugin is looked for (tests, installed layouts).
const PLUGIN_ENV: &str = "P2PNVME_WITNESS_PLUGIN";

/// One run's witness: the plugin, its sockets, the windows closed so far.
pub struct Witness {
    plugin: PathBuf,
    dir: tempfile::TempDir,
    qemu_nvme: usize,
    cmb: bool,
    /// Windows open now (the plugin takes BAR addresses only when none is).
    open: Mutex<usize>,
    windows: Mutex<Vec<WindowReport>>,
}

/// The plugin: `$P2PNVME_WITNESS_PLUGIN`, else next to the launcher binary.
pub fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(PLUGIN_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{PLUGIN_ENV}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the p2pnvme binary")?;
    let p = exe.with_file_name(PLUGIN_FILE);
    if !p.is_file() {
        bail!(
            "no witness plugin at {}: build it with `cargo build --release -p p2pnvme-witness` (or plain `cargo build --release`)",
            p.display()
        );
    }
    Ok(p)
}

/// Refuses a plugin built for another API version than QEMU 11.1's, by
/// reading its exported `qemu_plugin_version` before QEMU starts.
pub fn check_api(plugin: &Path) -> Result<()> {
    let path = CString::new(plugin.as_os_str().as_encoded_bytes())?;
    // SAFETY: dlopen/dlsym/dlclose with valid C strings; RTLD_LAZY resolves
    // nothing eagerly, and the witness has no initialisers that need QEMU.
    let version = unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if h.is_null() {
            let e = std::ffi::CStr::from_ptr(libc::dlerror()).to_string_lossy();
            bail!("cannot load the witness plugin {}: {e}", plugin.display());
        }
        let sym = libc::dlsym(h, c"qemu_plugin_version".as_ptr()) as *const i32;
        let v = (!sym.is_null()).then(|| *sym);
        libc::dlclose(h);
        v
    };
    match version {
        Some(QEMU_PLUGIN_API) => Ok(()),
        Some(v) => bail!(
            "the witness plugin {} is built for plugin API {v}, but QEMU 11.1 accepts only {QEMU_PLUGIN_API}: rebuild it with `cargo build --release -p p2pnvme-witness`",
            plugin.display()
        ),
        None => bail!(
            "{} exports no qemu_plugin_version: not a QEMU plugin",
            plugin.display()
        ),
    }
}

impl Witness {
    /// Finds and checks the plugin for a guest with `qemu_nvme` QEMU
    /// controllers first and then the project's (the launcher's slot order).
    pub fn new(qemu_nvme: usize, cmb_mib: u32) -> Result<Witness> {
        let plugin = locate()?;
        check_api(&plugin)?;
        Ok(Witness {
            plugin,
            dir: tempfile::Builder::new()
                .prefix("p2pnvme-witness-")
                .tempdir()?,
            qemu_nvme,
            cmb: cmb_mib > 0,
            open: Mutex::new(0),
            windows: Mutex::new(vec![]),
        })
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    fn exit_report(&self) -> PathBuf {
        self.dir.path().join("exit.json")
    }

    /// QEMU arguments that load the plugin (TCG only).
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-plugin".into(),
            plugin_option(&self.plugin, &self.socket(), &self.exit_report()),
        ]
    }

    fn ask(&self, req: &str) -> Result<String> {
        let s = UnixStream::connect(self.socket()).context("connecting to the witness plugin")?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        (&s).write_all(format!("{req}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        match line.trim_end().strip_prefix("error ") {
            Some(e) => bail!("witness: {e}"),
            None if line.is_empty() => bail!("witness: no answer"),
            None => Ok(line.trim_end().to_string()),
        }
    }

    /// Opens window `name`; the outermost one with the BARs as the guest
    /// assigned them now.
    pub fn start(&self, qmp_socket: &Path, name: &str) -> Result<()> {
        let valid = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
            bail!("bad witness window name '{name}' (letters, digits, . _ -)");
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if *open == 0 {
            let pci = Qmp::connect(qmp_socket)?.execute("query-pci", json!({}))?;
            let windows = nvme_windows(&pci, self.qemu_nvme, self.cmb)?;
            self.ask(&format!("windows {}", serde_json::to_string(&windows)?))?;
        }
        self.ask(&format!("start {name}"))?;
        *open += 1;
        Ok(())
    }

    /// Closes the innermost open window and keeps its report.
    pub fn stop(&self) -> Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let r: WindowReport =
            serde_json::from_str(&self.ask("stop")?).context("the witness's window report")?;
        *open = open.saturating_sub(1);
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
        Ok(())
    }

    /// Every window the guest closed, then the whole run (`run`, written by
    /// the plugin as QEMU exited).
    pub fn report(&self) -> Result<WitnessReport> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let exit = std::fs::read(self.exit_report()).with_context(|| {
            format!(
                "the witness wrote no exit report {} (did QEMU load it?)",
                self.exit_report().display()
            )
        })?;
        let run: WitnessReport = serde_json::from_slice(&exit)?;
        windows.extend(run.windows);
        Ok(WitnessReport {
            plugin: self.plugin.display().to_string(),
            api_version: QEMU_PLUGIN_API,
            windows,
        })
    }

    /// Writes [`Self::report`] to `file`; returns it.
    pub fn save(&self, file: &Path) -> Result<WitnessReport> {
        let doc = self.report()?;
        std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write --witness {}", file.display()))?;
        Ok(doc)
    }
}

/// QEMU's `-plugin` option value: commas in the paths doubled, as QEMU's
/// option syntax (and the plugin's key=value parser) wants them.
fn plugin_option(plugin: &Path, sock: &Path, out: &Path) -> String {
    let esc = |p: &Path| kv::escape(&p.display().to_string());
    format!("{},sock={},out={}", esc(plugin), esc(sock), esc(out))
}

/// Name of the window `run --witness` puts around the guest command.
pub const COMMAND_WINDOW: &str = "command";

/// `command` inside the window [`COMMAND_WINDOW`]: a subshell, so that an
/// `exit` in the command still closes the window; the command's status stays.
pub fn wrap_command(command: &str) -> String {
    format!(
        "p2pnvme-host witness-start {COMMAND_WINDOW} >/dev/null || exit 1\n(\n{command}\n)\nrc=$?\np2pnvme-host witness-stop >/dev/null || exit 1\nexit $rc"
    )
}

/// One line: instructions, CPU bytes per class, trapped accesses.
pub fn summary(w: &WindowReport) -> String {
    let mut s = format!(
        "window {}: {:.1} s, {} instructions; CPU bytes",
        w.name, w.elapsed_s, w.instructions
    );
    for c in &w.classes {
        s += &format!(" {} {}", c.class, c.total.bytes());
    }
    s += "; trapped";
    for c in w.classes.iter().filter(|c| c.total.trapped() > 0) {
        s += &format!(" {} {}", c.class, c.total.trapped());
    }
    s
}

/// Index of the launcher's device below the port `qdev_id` (the launcher
/// names the port of device i `p2p_dn{i}` or `p2p_rp{i}`).
fn port_index(qdev_id: &str) -> Option<usize> {
    qdev_id
        .strip_prefix("p2p_dn")
        .or_else(|| qdev_id.strip_prefix("p2p_rp"))?
        .parse()
        .ok()
}

/// PCI class of an NVMe controller (mass storage, non-volatile memory).
const NVME_CLASS: u64 = 0x0108;

/// One window per assigned memory BAR of every NVMe controller in a QMP
/// `query-pci` answer.
pub fn nvme_windows(pci: &Value, qemu_nvme: usize, cmb: bool) -> Result<Vec<AddrWindow>> {
    fn walk(devs: &[Value], port: Option<usize>, found: &mut Vec<(usize, Value)>) {
        for d in devs {
            let class = d["class_info"]["class"].as_u64();
            if let (Some(i), Some(NVME_CLASS)) = (port, class) {
                found.push((i, d.clone()));
            }
            if let Some(children) = d["pci_bridge"]["devices"].as_array() {
                let port = d["qdev_id"].as_str().and_then(port_index).or(port);
                walk(children, port, found);
            }
        }
    }
    let mut found = vec![];
    for bus in pci.as_array().context("query-pci: not a list of buses")? {
        walk(
            bus["devices"].as_array().map(Vec::as_slice).unwrap_or(&[]),
            None,
            &mut found,
        );
    }
    let mut windows = vec![];
    for (i, dev) in found {
        let ctrl = if i < qemu_nvme {
            format!("qemu-nvme-{i}")
        } else {
            crate::device::nvme_serial(i - qemu_nvme)
        };
        for r in dev["regions"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let (Some(bar), Some(start), Some(size)) =
                (r["bar"].as_u64(), r["address"].as_u64(), r["size"].as_u64())
            else {
                continue; // unassigned BARs read back as -1
            };
            if r["type"] != "memory" || start == 0 || size == 0 {
                continue;
            }
            let what = match bar {
                0 => "regs".to_string(),
                2 if cmb => "cmb".to_string(),
                n => format!("bar{n}"),
            };
            windows.push(AddrWindow {
                name: format!("{ctrl}/{what}"),
                start,
                size,
            });
        }
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_paths_with_commas_reach_the_plugin_whole() {
        let (sock, out) = (
            Path::new("/tmp/a,b=c/ctl.sock"),
            Path::new("/t,x/exit.json"),
        );
        let opt = plugin_option(Path::new("/p,q/w.so"), sock, out);
        // QEMU splits at single commas; the first item is the file.
        let items = kv::parse(
            &opt,
            &[
                kv::Key::flag("/p,q/w.so"),
                kv::Key::value("sock"),
                kv::Key::value("out"),
            ],
        )
        .unwrap();
        assert_eq!(items[0].key, "/p,q/w.so");
        assert_eq!(items[1].value.as_deref(), Some("/tmp/a,b=c/ctl.sock"));
        assert_eq!(items[2].value.as_deref(), Some("/t,x/exit.json"));
    }

    fn nvme(bar0: i64, bar2: i64) -> Value {
        json!({"class_info": {"class": 264}, "qdev_id": "", "regions": [
            {"bar": 0, "type": "memory", "address": bar0, "size": 16384},
            {"bar": 2, "type": "memory", "address": bar2, "size": 16777216},
            {"bar": 4, "type": "io", "address": 49152, "size": 64},
        ]})
    }

    fn port(id: &str, children: Vec<Value>) -> Value {
        json!({"class_info": {"class": 1540}, "qdev_id": id, "regions": [],
            "pci_bridge": {"bus": {"number": 1}, "devices": children}})
    }

    #[test]
    fn windows_are_named_by_the_port_each_device_sits_below() {
        // Switch topology: root port -> upstream -> one downstream port each.
        let pci = json!([{"bus": 0, "devices": [
            {"class_info": {"class": 1536}, "qdev_id": "", "regions": []},
            port("p2p_rp", vec![port("p2p_up", vec![
                port("p2p_dn1", vec![nvme(0xfe20_0000, 0x8_0100_0000)]),
                port("p2p_dn0", vec![nvme(0xfe00_0000, 0x8_0000_0000)]),
                port("p2p_dn2", vec![nvme(0xfe40_0000, -1)]),
            ])]),
        ]}]);
        let w = nvme_windows(&pci, 1, true).unwrap();
        let names: Vec<_> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "p2pnvme-0/regs",
                "p2pnvme-0/cmb",
                "qemu-nvme-0/regs",
                "qemu-nvme-0/cmb",
                "p2pnvme-1/regs", // its CMB is not assigned yet: no window
            ]
        );
        assert_eq!(w[1].start, 0x8_0100_0000);
        assert_eq!(w[1].size, 16 << 20);
        assert_eq!(w[2].start, 0xfe00_0000);
    }

    #[test]
    fn root_ports_and_no_cmb() {
        let pci = json!([{"bus": 0, "devices": [
            port("p2p_rp0", vec![nvme(0xfe00_0000, 0x8_0000_0000)]),
        ]}]);
        let w = nvme_windows(&pci, 0, false).unwrap();
        assert_eq!(w[0].name, "p2pnvme-0/regs");
        assert_eq!(w[1].name, "p2pnvme-0/bar2");
    }

    /// Runs the wrapped `command` with the host's sh and a `p2pnvme-host`
    /// that logs its requests; returns the exit status and the log.
    fn run_wrapped(command: &str) -> (i32, String) {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("requests");
        let host = d.path().join("p2pnvme-host");
        std::fs::write(
            &host,
            format!("#!/bin/sh\necho \"$*\" >>{}\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", d.path().display(), std::env::var("PATH").unwrap());
        let st = std::process::Command::new("sh")
            .args(["-c", &wrap_command(command)])
            .env("PATH", path)
            .status()
            .unwrap();
        (st.code().unwrap(), std::fs::read_to_string(&log).unwrap())
    }

    #[test]
    fn a_command_that_exits_still_closes_its_window_and_keeps_its_status() {
        let (rc, log) = run_wrapped("true; exit 3; echo never");
        assert_eq!(rc, 3);
        assert_eq!(log, "witness-start command\nwitness-stop\n");
        let (rc, log) =
            run_wrapped("p2pnvme-host witness-start mine\np2pnvme-host witness-stop\nfalse");
        assert_eq!(rc, 1);
        assert_eq!(
            log,
            "witness-start command\nwitness-start mine\nwitness-stop\nwitness-stop\n"
        );
    }

    #[test]
    fn a_plugin_that_cannot_be_loaded_is_refused() {
        let e = check_api(Path::new("/nonexistent/libp2pnvme_witness.so")).unwrap_err();
        assert!(e.to_string().contains("cannot load the witness plugin"));
    }
}
