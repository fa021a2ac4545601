//! One guest session: backing files, the helper processes (device process,
//! virtiofsd per shared folder), QEMU, and the command channel (fw_cfg in,
//! virtio-serial ports out).

use crate::console::{self, Tail};
use crate::device::{self, Controller};
use crate::exit;
use crate::faults;
use crate::health::GuestReport;
use crate::hostctl;
use crate::hotplug;
use crate::image::{self, Image};
use crate::kernel::GuestKernel;
use crate::kernel_build;
use crate::options::VmOptions;
use crate::overlay;
use crate::procs::{self, Guarded, Helper};
use crate::qemu::{self, Accel, GuestPorts, MachineConfig, PciDevice};
use crate::virtiofs::{self, FsDevice};
use crate::witness::Witness;
use anyhow::{bail, Context, Result};
use p2pnvme_docs::stats::StatsDoc;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the guest command produced.
pub struct GuestResult {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The guest's report: taint, kernel log, controllers (health.rs).
    pub guest: GuestReport,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Copy guest output to our stdout/stderr as it arrives.
    Stream,
    /// Keep it in the result only.
    Capture,
}

pub struct Session {
    pub opts: VmOptions,
    pub image: Image,
    /// The kernel to boot and its modules (the image's unless `--kernel`).
    pub kernel: GuestKernel,
    run_dir: tempfile::TempDir,
    pub accel: Accel,
    /// Backing file per QEMU built-in controller.
    pub qemu_backing: Vec<PathBuf>,
    /// The project's controllers.
    pub controllers: Vec<Controller>,
    /// Helper processes, started in order and stopped in reverse.
    helpers: Vec<Helper>,
    /// Shell lines run before the command (e.g. `--prove`'s variables).
    pub preamble: String,
    /// Extra kernel arguments the launcher itself adds (e.g. `p2pnvme.prove=1`).
    pub kernel_args: Vec<String>,
    /// The TCG witness plugin, when asked for (see witness.rs).
    pub witness: Option<Arc<Witness>>,
}

impl Session {
    /// Checks the options, builds the image if needed, resolves the kernel
    /// and creates the backing files; nothing runs yet.
    pub fn prepare(opts: VmOptions) -> Result<Session> {
        opts.validate()?;
        let image = image::ensure(false)?;
        let opts = kernel_build::pick(opts, &image.rootfs)?;
        let kernel = GuestKernel::resolve(&opts, &image)?;
        for ko in &opts.user_modules {
            crate::modcheck::check(ko, &kernel.release)?;
        }
        let run_dir = tempfile::Builder::new()
            .prefix("p2pnvme-")
            .tempdir()
            .context("creating a run directory in $TMPDIR")?;
        let data_dir = opts
            .backing_dir
            .clone()
            .unwrap_or_else(|| run_dir.path().to_path_buf());
        fs::create_dir_all(&data_dir).with_context(|| {
            format!(
                "cannot create --backing-dir {}: pick a writable directory",
                data_dir.display()
            )
        })?;
        let mut qemu_backing = vec![];
        for i in 0..opts.qemu_nvme {
            let f = data_dir.join(format!("qemu-nvme{i}.img"));
            backing_file(&f, opts.ns_size)?;
            qemu_backing.push(f);
        }
        let mut controllers = vec![];
        for c in 0..opts.nvme {
            let mut namespaces = vec![];
            for n in 1..=opts.namespaces {
                let f = data_dir.join(format!("nvme{c}n{n}.img"));
                backing_file(&f, opts.ns_size)?;
                namespaces.push(f);
            }
            controllers.push(Controller {
                socket: run_dir.path().join(format!("nvme{c}.sock")),
                namespaces,
            });
        }
        let accel = crate::accel::choose(&opts, &image.key)?;
        Ok(Session {
            accel,
            qemu_backing,
            controllers,
            helpers: vec![],
            preamble: crate::modcheck::preamble(&opts.user_modules),
            kernel_args: vec![],
            witness: None,
            image,
            kernel,
            run_dir,
            opts,
        })
    }

    fn qmp_socket(&self) -> PathBuf {
        self.run_dir.path().join("qmp.sock")
    }

    pub fn stats_socket(&self) -> PathBuf {
        self.run_dir.path().join("stats.sock")
    }

    fn fs_socket(&self, i: usize) -> PathBuf {
        self.run_dir.path().join(format!("virtiofs{i}.sock"))
    }

    /// Starts the helper processes QEMU connects to: the device process
    /// and a virtiofsd per shared folder.
    fn start_helpers(&mut self) -> Result<()> {
        if !self.helpers.is_empty() {
            return Ok(());
        }
        if !self.controllers.is_empty() {
            let msi = faults::removable(&self.opts.faults, self.controllers.len());
            if !msi.is_empty() {
                log::info!(
                    "controller(s) {msi:?} use MSI instead of MSI-X: a fault rule may unplug them, and \
                     QEMU 11.1's vfio-user-pci aborts freeing an unplugged device with MSI-X \
                     (its MSI-X PBA teardown, vfio_user_msix_teardown)"
                );
            }
            let cfg = device::DeviceConfig {
                controllers: &self.controllers,
                cmb_mib: self.opts.cmb_mib,
                ns_size: self.opts.ns_size,
                lba: self.opts.lba,
                poll_us: &self.opts.poll_us,
                irq_moderation_us: &self.opts.irq_moderation_us,
                stats_socket: &self.stats_socket(),
                faults: &self.opts.faults,
                trace: self.opts.trace.as_deref(),
                msi: &msi,
            };
            let h = device::start(&cfg, self.run_file("device.log"))?;
            self.helpers.push(h);
        }
        for (i, share) in self.opts.shares.clone().iter().enumerate() {
            let h = virtiofs::start(
                &self.image.rootfs,
                share,
                &self.fs_socket(i),
                self.run_file(&format!("virtiofsd{i}.log")),
            )?;
            self.helpers.push(h);
        }
        Ok(())
    }

    fn machine(
        &self,
        command: Option<(PathBuf, GuestPorts)>,
        initrd: PathBuf,
    ) -> Result<MachineConfig<'_>> {
        let mut devices: Vec<PciDevice> = self
            .qemu_backing
            .iter()
            .map(|f| PciDevice::QemuNvme {
                backing: f.clone(),
                cmb_mib: self.opts.cmb_mib,
            })
            .collect();
        devices.extend(self.controllers.iter().map(|c| PciDevice::VfioUser {
            socket: c.socket.clone(),
        }));
        // no_timer_check: a TCG vCPU starved by a busy host fails the IO-APIC
        // timer check and panics; tsc=reliable: TCG's TSC is the host's, so
        // skip the clocksource watchdog and its wait (ci/bench/boot).
        let mut append = format!(
            "console=ttyS0 panic=-1 quiet no_timer_check tsc=reliable p2pnvme.nvme={}",
            self.opts.qemu_nvme + self.opts.nvme
        );
        for a in self.kernel_args.iter().chain(&self.opts.append) {
            append.push(' ');
            append.push_str(a);
        }
        let mut fw_files = vec![];
        if !self.opts.shares.is_empty() {
            let table = self.run_file("shares");
            fs::write(&table, virtiofs::mount_table(&self.opts.shares))?;
            fw_files.push(("shares".to_string(), table));
        }
        let interactive = command.is_none();
        Ok(MachineConfig {
            image: &self.image,
            kernel: self.kernel.bzimage.clone(),
            initrd,
            devices,
            topology: self.opts.topology,
            cpu: self.opts.cpu,
            accel: self.accel,
            mem_mib: self.opts.mem_mib,
            smp: self.opts.smp,
            append,
            extra_args: self.opts.qemu_args.clone(),
            command,
            console_log: (!interactive).then(|| self.run_file("console.log")),
            qmp_socket: Some(self.qmp_socket()),
            fs_devices: (0..self.opts.shares.len())
                .map(|i| FsDevice {
                    tag: virtiofs::tag(i),
                    socket: self.fs_socket(i),
                })
                .collect(),
            fw_files,
        })
    }

    fn boot(&mut self, command: Option<(PathBuf, GuestPorts)>) -> Result<Guarded> {
        let initrd = overlay::guest_initrd(
            &self.image,
            &self.kernel,
            self.run_dir.path(),
            self.opts.with_driver(),
            &self.opts.user_modules,
        )?;
        self.start_helpers()?;
        let interactive = command.is_none();
        let args = qemu::build_args(&self.machine(command, initrd)?);
        let mut cmd = qemu::qemu_command(&self.image.rootfs);
        cmd.args(&args);
        if let Some(w) = &self.witness {
            cmd.args(w.qemu_args());
        }
        if self.opts.verbose {
            log::info!("qemu {}", args.join(" "));
        }
        if !interactive {
            let log = fs::File::create(self.run_file("qemu.log"))?;
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
        }
        Guarded::spawn("qemu", &mut cmd, !interactive)
    }

    /// Runs `command` with the guest's shell; returns its exit status,
    /// output and the guest's report (kernel health is the caller's to
    /// judge). A timeout is an error with exit status 124; a guest that
    /// died without reporting (a kernel panic) one with 255.
    pub fn run(&mut self, command: &str, timeout: Duration, output: Output) -> Result<GuestResult> {
        let dir = self.run_dir.path().to_path_buf();
        let script = dir.join("cmd.sh");
        fs::write(&script, format!("{}{command}\n", self.preamble))?;
        let ports = GuestPorts {
            stdout: dir.join("guest.stdout"),
            stderr: dir.join("guest.stderr"),
            status: dir.join("guest.status"),
            control: dir.join("ctl.sock"),
        };
        for p in [&ports.stdout, &ports.stderr, &ports.status] {
            let _ = fs::remove_file(p);
        }
        let (out_path, err_path, status_path) = (
            ports.stdout.clone(),
            ports.stderr.clone(),
            ports.status.clone(),
        );
        let control = ports.control.clone();
        let mut qemu = self.boot(Some((script, ports)))?;
        // The timeout covers the guest, not building the image overlay.
        let start = Instant::now();
        let _host = hostctl::Server::start(
            control,
            hostctl::HostCtx {
                run_dir: dir.clone(),
                stats_socket: (!self.controllers.is_empty()).then(|| self.stats_socket()),
                qmp_socket: self.qmp_socket(),
                mem_bytes: u64::from(self.opts.mem_mib) << 20,
                witness: self.witness.clone(),
            },
        );
        let _removals = self.watch_removals();
        let mut out = Tail::new(out_path, output == Output::Stream, false);
        let mut err = Tail::new(err_path, output == Output::Stream, true);
        let console = dir.join("console.log");
        let qemu_exit = loop {
            out.pump();
            err.pump();
            if let Some(code) = qemu.try_exit() {
                break code;
            }
            if let Some(sig) = procs::signalled() {
                qemu.stop(Duration::from_secs(2));
                bail!("interrupted by signal {sig}; the guest and its devices were stopped");
            }
            if start.elapsed() > timeout {
                qemu.stop(Duration::from_secs(2));
                let saved = console::save_log(&console);
                return Err(exit::with(
                    exit::TIMEOUT,
                    format!(
                        "the guest did not finish within {} s (raise --timeout, or look at the console log {}):\n{}",
                        timeout.as_secs(),
                        saved.display(),
                        console::report(&console)
                    ),
                ));
            }
            if let Some(h) = self
                .helpers
                .iter_mut()
                .find_map(|h| h.proc.try_exit().map(|_| &*h))
            {
                // virtiofsd leaves when the guest resets its device on the
                // way down: a helper that exits while QEMU shuts down is fine.
                if let Some(code) = qemu.wait_exit(Duration::from_secs(3)) {
                    break code;
                }
                qemu.stop(Duration::from_secs(2));
                bail!(
                    "{} died while the guest ran:\n{}",
                    h.name,
                    console::tail(&h.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        out.pump();
        err.pump();
        let text = fs::read_to_string(&console).unwrap_or_default();
        let report = fs::read_to_string(&status_path).unwrap_or_default();
        let Some(guest) = GuestReport::parse(&report) else {
            let saved = console::save_log(&console);
            let (code, who) = stop_cause(qemu_exit, &text);
            return Err(exit::with(
                code,
                format!(
                    "{who} stopped without reporting an exit status (QEMU exit {qemu_exit}; console log {}):\n{}{}",
                    saved.display(),
                    console::tail(&dir.join("qemu.log"), 10),
                    console::report(&console)
                ),
            ));
        };
        Ok(GuestResult {
            status: guest.status,
            stdout: out.captured,
            stderr: err.captured,
            guest,
        })
    }

    /// Interactive console on this terminal; returns QEMU's exit code.
    pub fn shell(&mut self) -> Result<i32> {
        // The terminal is QEMU's: Ctrl-C goes to the guest, Ctrl-A X quits.
        // SAFETY: ignoring SIGINT in the launcher only.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
        let mut qemu = self.boot(None)?;
        let _removals = self.watch_removals();
        Ok(qemu.child.wait().map(|s| s.code().unwrap_or(1))?)
    }

    /// The surprise-removal watch, when a fault rule may ask for one.
    fn watch_removals(&self) -> Option<hotplug::Watch> {
        if !faults::wants_removal(&self.opts.faults) {
            return None;
        }
        let slot0 = self.qemu_backing.len();
        let devices = self
            .controllers
            .iter()
            .enumerate()
            .map(|(i, c)| qemu::vfio_user_device(self.opts.topology, slot0 + i, i, &c.socket))
            .collect();
        Some(hotplug::Watch::start(hotplug::Plan {
            stats_socket: self.stats_socket(),
            qmp_socket: self.qmp_socket(),
            devices,
        }))
    }

    /// Every controller's counters from the device process, while it runs.
    pub fn stats(&self) -> Result<StatsDoc> {
        if self.controllers.is_empty() || self.helpers.is_empty() {
            bail!("no p2pnvme device process is running (use --nvme N)");
        }
        crate::stats::get(&self.stats_socket())
    }

    /// A file in the run directory (where the guest's host requests write).
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.run_dir.path().join(name)
    }

    /// Stops the helper processes, last started first (QEMU is already gone
    /// after run/shell).
    pub fn stop_helpers(&mut self) {
        while let Some(mut h) = self.helpers.pop() {
            h.proc.stop(Duration::from_secs(3));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_helpers();
    }
}

/// Why a guest ended without an exit status, as (launcher exit status,
/// who stopped): QEMU killed by a signal (an abort in QEMU itself) is not
/// the guest kernel dying; kernel output otherwise means the guest booted
/// and died; none means QEMU refused to start (bad --qemu-arg, say).
fn stop_cause(qemu_exit: i32, console: &str) -> (u8, &'static str) {
    if qemu_exit > 128 {
        (
            exit::REFUSED,
            "QEMU died (killed by a signal) and the guest",
        )
    } else if console.trim().is_empty() {
        (exit::REFUSED, "the guest")
    } else {
        (exit::KERNEL_DIED, "the guest")
    }
}

/// Creates a sparse backing file, or checks an existing one is big enough.
fn backing_file(path: &Path, size: u64) -> Result<()> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot create backing file {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < size {
        f.set_len(size)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qemu_abort_is_not_reported_as_a_guest_kernel_death() {
        let booted = "p2pnvme-init: up\n[ 1.0] nvme nvme0: ...";
        assert_eq!(stop_cause(134, booted).0, exit::REFUSED);
        assert!(stop_cause(134, booted).1.starts_with("QEMU died"));
        assert_eq!(stop_cause(0, booted).0, exit::KERNEL_DIED);
        assert_eq!(stop_cause(1, "").0, exit::REFUSED);
    }
}
