//! One guest session: backing files, the device process, QEMU, and the
//! command channel (fw_cfg in, virtio-serial ports out).

use crate::hostctl;
use crate::image::{self, Image};
use crate::overlay;
use crate::paths;
use crate::procs::{self, Guarded};
use crate::qemu::{
    self, Accel, CpuModel, GuestPorts, MachineConfig, PciDevice, TcgThreads, Topology,
};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct VmOptions {
    pub qemu_nvme: usize,
    pub nvme: usize,
    pub namespaces: usize,
    pub cmb_mib: u32,
    pub ns_size: u64,
    pub lba: u32,
    pub topology: Topology,
    pub cpu: CpuModel,
    pub append: Option<String>,
    pub qemu_args: Vec<String>,
    pub mem_mib: u32,
    pub smp: u32,
    pub kvm: bool,
    pub tcg_threads: TcgThreads,
    pub backing_dir: Option<PathBuf>,
    pub with_driver: bool,
    pub poll_us: u64,
    pub verbose: bool,
}

/// What the guest command produced.
pub struct GuestResult {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
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
    run_dir: tempfile::TempDir,
    accel: Accel,
    /// Backing file per QEMU built-in controller.
    pub qemu_backing: Vec<PathBuf>,
    /// Backing files per project controller, one per namespace.
    pub nvme_backing: Vec<Vec<PathBuf>>,
    sockets: Vec<PathBuf>,
    device: Option<Guarded>,
}

impl Session {
    /// Builds the image if needed and creates the backing files; nothing runs yet.
    pub fn prepare(opts: VmOptions) -> Result<Session> {
        let image = image::ensure(false)?;
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
        let mut s = Session {
            accel: Accel::Tcg(opts.tcg_threads),
            qemu_backing: vec![],
            nvme_backing: vec![],
            sockets: vec![],
            device: None,
            image,
            run_dir,
            opts,
        };
        for i in 0..s.opts.qemu_nvme {
            let f = data_dir.join(format!("qemu-nvme{i}.img"));
            backing_file(&f, s.opts.ns_size)?;
            s.qemu_backing.push(f);
        }
        for c in 0..s.opts.nvme {
            let mut files = vec![];
            for n in 1..=s.opts.namespaces {
                let f = data_dir.join(format!("nvme{c}n{n}.img"));
                backing_file(&f, s.opts.ns_size)?;
                files.push(f);
            }
            s.nvme_backing.push(files);
            s.sockets
                .push(s.run_dir.path().join(format!("nvme{c}.sock")));
        }
        if s.opts.kvm {
            s.accel = kvm_probe(&s)?;
        }
        Ok(s)
    }

    fn qmp_socket(&self) -> PathBuf {
        self.run_dir.path().join("qmp.sock")
    }

    pub fn stats_socket(&self) -> PathBuf {
        self.run_dir.path().join("stats.sock")
    }

    /// Starts the device process serving the project's controllers and waits
    /// for its sockets.
    fn start_device(&mut self) -> Result<()> {
        if self.opts.nvme == 0 || self.device.is_some() {
            return Ok(());
        }
        let exe = std::env::current_exe().context("locating the p2pnvme binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("device");
        for (i, (sock, files)) in self.sockets.iter().zip(&self.nvme_backing).enumerate() {
            let mut spec = format!(
                "socket={},cmb-mib={},serial={}",
                sock.display(),
                self.opts.cmb_mib,
                nvme_serial(i)
            );
            for f in files {
                spec.push_str(&format!(
                    ",ns={}:{}:{}",
                    f.display(),
                    self.opts.ns_size,
                    self.opts.lba
                ));
            }
            cmd.arg("--controller").arg(spec);
        }
        cmd.arg("--stats-socket").arg(self.stats_socket());
        cmd.arg("--poll-us").arg(self.opts.poll_us.to_string());
        let log = fs::File::create(self.run_dir.path().join("device.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut dev = Guarded::spawn("device", &mut cmd, true)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.sockets.iter().all(|s| s.exists()) {
            if let Some(code) = dev.try_exit() {
                bail!(
                    "the device process exited ({code}) before listening:\n{}",
                    tail(&self.run_dir.path().join("device.log"), 20)
                );
            }
            if Instant::now() > deadline {
                bail!("the device process did not create its sockets within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.device = Some(dev);
        Ok(())
    }

    fn machine(
        &self,
        command: Option<(PathBuf, GuestPorts)>,
        initrd: PathBuf,
    ) -> MachineConfig<'_> {
        let mut devices: Vec<PciDevice> = self
            .qemu_backing
            .iter()
            .map(|f| PciDevice::QemuNvme {
                backing: f.clone(),
                cmb_mib: self.opts.cmb_mib,
            })
            .collect();
        devices.extend(
            self.sockets
                .iter()
                .map(|s| PciDevice::VfioUser { socket: s.clone() }),
        );
        // no_timer_check: a TCG vCPU starved by a busy host fails the IO-APIC
        // timer check and panics; tsc=reliable: TCG's TSC is the host's, so
        // skip the clocksource watchdog and its wait (ci/bench/boot).
        let mut append = format!(
            "console=ttyS0 panic=-1 quiet no_timer_check tsc=reliable p2pnvme.nvme={}",
            self.opts.qemu_nvme + self.opts.nvme
        );
        if let Some(extra) = &self.opts.append {
            append.push(' ');
            append.push_str(extra);
        }
        let interactive = command.is_none();
        MachineConfig {
            image: &self.image,
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
            console_log: (!interactive).then(|| self.run_dir.path().join("console.log")),
            qmp_socket: Some(self.qmp_socket()),
        }
    }

    fn boot(&mut self, command: Option<(PathBuf, GuestPorts)>) -> Result<Guarded> {
        let initrd =
            overlay::guest_initrd(&self.image, self.run_dir.path(), self.opts.with_driver)?;
        self.start_device()?;
        let interactive = command.is_none();
        let args = qemu::build_args(&self.machine(command, initrd));
        let mut cmd = qemu::qemu_command(&self.image.rootfs);
        cmd.args(&args);
        if self.opts.verbose {
            eprintln!("p2pnvme: qemu {}", args.join(" "));
        }
        if !interactive {
            let log = fs::File::create(self.run_dir.path().join("qemu.log"))?;
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
        }
        Guarded::spawn("qemu", &mut cmd, !interactive)
    }

    /// Runs `command` with the guest's shell; returns its exit status and output.
    pub fn run(&mut self, command: &str, timeout: Duration, output: Output) -> Result<GuestResult> {
        let dir = self.run_dir.path().to_path_buf();
        let script = dir.join("cmd.sh");
        fs::write(&script, format!("{command}\n"))?;
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
                stats_socket: (self.opts.nvme > 0).then(|| self.stats_socket()),
                qmp_socket: self.qmp_socket(),
                mem_bytes: u64::from(self.opts.mem_mib) << 20,
            },
        );
        let mut out = Tail::new(out_path, output == Output::Stream, false);
        let mut err = Tail::new(err_path, output == Output::Stream, true);
        let console = dir.join("console.log");
        let exit = loop {
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
                let saved = save_log(&console);
                bail!(
                    "the guest did not finish within {} s (raise --timeout, or look at the console log {}):\n{}",
                    timeout.as_secs(),
                    saved.display(),
                    console_report(&console)
                );
            }
            if let Some(dev) = self.device.as_mut() {
                if let Some(code) = dev.try_exit() {
                    qemu.stop(Duration::from_secs(2));
                    bail!(
                        "the device process died ({code}) while the guest ran:\n{}",
                        tail(&dir.join("device.log"), 20)
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        out.pump();
        err.pump();
        let status = fs::read_to_string(&status_path).unwrap_or_default();
        let Ok(status) = status.trim().parse::<i32>() else {
            let saved = save_log(&console);
            bail!(
                "the guest stopped without reporting an exit status (QEMU exit {exit}; console log {}):\n{}{}",
                saved.display(),
                tail(&dir.join("qemu.log"), 10),
                console_report(&console)
            );
        };
        Ok(GuestResult {
            status,
            stdout: out.captured,
            stderr: err.captured,
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
        Ok(qemu.child.wait().map(|s| s.code().unwrap_or(1))?)
    }

    /// Every controller's counters from the device process, while it runs.
    pub fn stats(&self) -> Result<serde_json::Value> {
        if self.device.is_none() {
            bail!("no p2pnvme device process is running (use --nvme N)");
        }
        p2pnvme_device::stats_query(&self.stats_socket(), "get")
    }

    /// A file in the run directory (where the guest's host requests write).
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.run_dir.path().join(name)
    }

    /// Stops the device process (QEMU is already gone after run/shell).
    pub fn stop_device(&mut self) {
        if let Some(mut d) = self.device.take() {
            d.stop(Duration::from_secs(3));
        }
    }
}

/// Serial number of the project's controller `i`, how guest scripts find it.
pub fn nvme_serial(i: usize) -> String {
    format!("p2pnvme-{i}")
}

/// Follows a file the guest writes through a virtio-serial port.
struct Tail {
    path: PathBuf,
    file: Option<fs::File>,
    forward: bool,
    to_stderr: bool,
    captured: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf, forward: bool, to_stderr: bool) -> Self {
        Tail {
            path,
            file: None,
            forward,
            to_stderr,
            captured: vec![],
        }
    }

    fn pump(&mut self) {
        if self.file.is_none() {
            self.file = fs::File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        if self.forward {
            if self.to_stderr {
                let _ = std::io::stderr().write_all(&buf);
            } else {
                let mut o = std::io::stdout();
                let _ = o.write_all(&buf);
                let _ = o.flush();
            }
        }
        self.captured.extend_from_slice(&buf);
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

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    let mut s = v[v.len().saturating_sub(lines)..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// The console's tail, preceded by the start of the first kernel oops when
/// the tail alone would hide it (a panic prints its own cause last).
fn console_report(path: &Path) -> String {
    const FIRST_OOPS: [&str; 5] = [
        "BUG:",
        "Oops:",
        "general protection fault",
        "WARNING:",
        "Kernel panic",
    ];
    const TAIL: usize = 15;
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail_from = lines.len().saturating_sub(TAIL);
    let oops = lines
        .iter()
        .position(|l| FIRST_OOPS.iter().any(|m| l.contains(m)));
    let mut s = String::new();
    if let Some(at) = oops.filter(|&at| at < tail_from) {
        let end = (at + 25).min(tail_from);
        s += "-- first kernel report\n";
        s += &lines[at..end].join("\n");
        s += "\n-- console tail\n";
    }
    s + &tail(path, TAIL)
}

/// Keeps a console log past the run directory's removal.
fn save_log(console: &Path) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("p2pnvme-console-{}.log", std::process::id()));
    let _ = fs::copy(console, &dst);
    dst
}

/// KVM only where a probe boot works (nested KVM often does not); the
/// answer is cached per image.
fn kvm_probe(s: &Session) -> Result<Accel> {
    let marker = paths::cache_root().join(format!("kvm-probe-{}", s.image.key));
    if let Ok(v) = fs::read_to_string(&marker) {
        return Ok(if v.trim() == "ok" {
            Accel::Kvm
        } else {
            Accel::Tcg(s.opts.tcg_threads)
        });
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("p2pnvme: --kvm asked but /dev/kvm is not usable; using TCG");
        return Ok(Accel::Tcg(s.opts.tcg_threads));
    }
    eprintln!("p2pnvme: probing KVM with a short boot");
    let mut probe = Session::prepare(VmOptions {
        qemu_nvme: 0,
        nvme: 0,
        kvm: false,
        with_driver: false,
        ..s.opts.clone()
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
        eprintln!("p2pnvme: KVM probe boot failed (nested KVM?); using TCG");
        Ok(Accel::Tcg(s.opts.tcg_threads))
    }
}
