//! Booting a session's guest: the helper processes QEMU connects to (the
//! device process, a virtiofsd per shared folder), the machine description
//! handed to qemu.rs, QEMU itself, and the surprise-removal watch.

use super::Session;
use crate::device;
use crate::faults;
use crate::hotplug;
use crate::kernel::KernelBuild;
use crate::overlay;
use crate::procs::Guarded;
use crate::qemu::{self, GuestPorts, MachineConfig, PciDevice};
use crate::virtiofs;
use crate::vm::{Accel, FsDevice, Root};
use anyhow::Result;
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;

impl Session {
    /// Starts the helper processes QEMU connects to: the device process
    /// and a virtiofsd per shared folder.
    pub(super) fn start_helpers(&mut self) -> Result<()> {
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
                iommu: self.opts.iommu,
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
        if let Some(dir) = self.root_dir() {
            let h = virtiofs::start_root(
                &self.image.rootfs,
                &dir,
                &self.root_socket(),
                self.run_file("virtiofsd-root.log"),
            )?;
            self.helpers.push(h);
        }
        Ok(())
    }

    /// The directory `--root` boots on (None: the busybox initramfs).
    fn root_dir(&self) -> Option<PathBuf> {
        match &self.opts.root {
            Root::Busybox => None,
            Root::Full => Some(self.image.rootfs.clone()),
            Root::Dir(d) => Some(d.clone()),
        }
    }

    fn root_socket(&self) -> PathBuf {
        self.run_file("virtiofs-root.sock")
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
        // log_buf_len: the kernel's log since the command started is the
        // evidence of its health; the default 128 KiB wrapped under the
        // debug kernel's reports, leaving a taint without its report (1 MiB
        // takes 4.5 MiB of guest RAM with its metadata).
        // p2pnvme.nvme, p2pnvme.ns: the controllers and namespaces init
        // waits for (QEMU's nvme has one namespace).
        let mut append = format!(
            "console=ttyS0 panic=-1 quiet no_timer_check tsc=reliable log_buf_len=1M p2pnvme.nvme={} p2pnvme.ns={}",
            self.opts.qemu_nvme + self.opts.nvme,
            self.opts
                .qemu_nvme
                .saturating_add(self.opts.nvme.saturating_mul(self.opts.namespaces))
        );
        // init_on_alloc=1 under TCG: TCG drops the code it translated from a
        // page only when the guest's CPU writes that page. virtiofsd (--root,
        // --share) and the device's DMA write guest RAM from outside, so a
        // page cache page that held another program's code ran that stale
        // code (random crashes of binaries from virtiofs). The kernel zeroing
        // each page it allocates is such a CPU write. Debian's kernel does it
        // by default; the user's --append comes later and wins.
        if matches!(self.accel, Accel::Tcg(_)) {
            append.push_str(" init_on_alloc=1");
            // nolapic_timer: the local APIC timer's calibration is 0.1 s of
            // busy waiting at every boot (TCG offers no TSC-deadline timer
            // nor CPUID leaf 0x15 to skip it); the HPET drives the ticks of
            // every CPU instead (ci/bench/boot).
            append.push_str(" nolapic_timer");
            // TCG's guest TSC is the host's: tell the kernel its rate and
            // loops per jiffy instead of letting it calibrate them.
            if let Some(tsc) = crate::tsc::host_tsc_hz() {
                append.push_str(&format!(" tsc_early_khz={}", tsc / 1000));
                if let Some(lpj) = self.kernel.hz.and_then(|hz| crate::tsc::lpj(tsc, hz)) {
                    append.push_str(&format!(" lpj={lpj}"));
                }
            }
        }
        for a in self.opts.iommu.kernel_args() {
            append.push(' ');
            append.push_str(a);
        }
        for a in self.kernel_args.iter().chain(&self.opts.append) {
            append.push(' ');
            append.push_str(a);
        }
        if self.root_dir().is_some() {
            append.push_str(&format!(" p2pnvme.root={}", virtiofs::ROOT_TAG));
        }
        let mut extra_args = self.opts.qemu_args.clone();
        if let Some(port) = self.opts.gdb {
            // Symbols match only at the link address.
            append.push_str(" nokaslr");
            extra_args.extend(["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()]);
            log::info!("{}", gdb_hint(port, &self.kernel.build));
        }
        let mut fw_files = vec![];
        if !self.opts.shares.is_empty() {
            let table = self.run_file("shares");
            fs::write(&table, virtiofs::mount_table(&self.opts.shares))?;
            fw_files.push(("shares".to_string(), table));
        }
        let interactive = command.is_none();
        Ok(MachineConfig {
            rootfs: &self.image.rootfs,
            kernel: self.kernel.boot.clone(),
            initrd,
            devices,
            topology: self.opts.topology,
            cpu: self.opts.cpu,
            accel: self.accel,
            iommu: self.opts.iommu,
            mem_mib: self.opts.mem_mib,
            smp: self.opts.smp,
            append,
            extra_args,
            command,
            console_log: (!interactive).then(|| self.run_file("console.log")),
            qmp_socket: Some(self.qmp_socket()),
            fs_devices: (0..self.opts.shares.len())
                .map(|i| FsDevice {
                    tag: virtiofs::tag(i),
                    socket: self.fs_socket(i),
                })
                .chain(self.root_dir().map(|_| FsDevice {
                    tag: virtiofs::ROOT_TAG.into(),
                    socket: self.root_socket(),
                }))
                .collect(),
            fw_files,
        })
    }

    pub(super) fn boot(&mut self, command: Option<(PathBuf, GuestPorts)>) -> Result<Guarded> {
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

    /// The surprise-removal watch, when a fault rule may ask for one.
    pub(super) fn watch_removals(&self) -> Option<hotplug::Watch> {
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
}

/// What to type to debug the guest's kernel (`--gdb`).
fn gdb_hint(port: u16, build: &KernelBuild) -> String {
    let target = format!("-ex 'target remote 127.0.0.1:{port}'");
    match build {
        KernelBuild::Tree(tree) if tree.join("vmlinux").is_file() => {
            let scripts = if tree.join("vmlinux-gdb.py").exists() {
                format!(" -ex 'add-auto-load-safe-path {}'", tree.display())
            } else {
                String::new()
            };
            format!(
                "the guest waits for gdb on 127.0.0.1:{port}; attach with: gdb{scripts} {target} {}",
                tree.join("vmlinux").display()
            )
        }
        _ => format!(
            "the guest waits for gdb on 127.0.0.1:{port}; this kernel has no vmlinux with symbols here (boot --guest-kernel minimal or --kernel TREE for one): gdb {target}"
        ),
    }
}
