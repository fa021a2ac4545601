//! The VM options shared by `run`, `shell` and `demo` (one clap struct,
//! flattened into each), and their checks before anything starts.

pub use crate::vm::Share;
use crate::vm::{CpuModel, Iommu, Root, TcgThreads, Topology};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

/// How a guest is built: devices, machine, kernel, shared folders.
#[derive(Args, Clone, Debug)]
pub struct VmOptions {
    /// QEMU's built-in NVMe controllers, each with a CMB.
    #[arg(long, default_value_t = 0)]
    pub qemu_nvme: usize,
    /// The project's vfio-user NVMe controllers, served by one device process.
    #[arg(long, default_value_t = 0)]
    pub nvme: usize,
    /// Namespaces per project controller.
    #[arg(long, default_value_t = 1)]
    pub namespaces: usize,
    /// CMB size in MiB for every controller (QEMU's and the project's).
    #[arg(long, default_value_t = 16)]
    pub cmb_mib: u32,
    /// Size of each namespace's backing file (K/M/G suffixes).
    #[arg(long, default_value = "256M", value_parser = p2pnvme_device::parse_size)]
    pub ns_size: u64,
    /// LBA size of the project's namespaces.
    #[arg(long, default_value_t = 512, value_parser = parse_lba)]
    pub lba: u32,
    /// PCIe placement of the controllers.
    #[arg(long, value_enum, default_value = "switch")]
    pub topology: Topology,
    /// Guest CPU vendor model (amd makes root-port peers reachable through the host bridge).
    #[arg(long, value_enum, default_value = "intel")]
    pub cpu: CpuModel,
    /// The guest's IOMMU: none (default), intel (VT-d), amd (AMD-Vi) or
    /// virtio (virtio-iommu); the project's controllers then get IOVAs.
    #[arg(long, value_enum, default_value = "none")]
    pub iommu: Iommu,
    /// Extra kernel command line arguments.
    #[arg(long)]
    pub append: Option<String>,
    /// Extra QEMU argument (repeat for several).
    #[arg(long = "qemu-arg", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
    /// Guest memory in MiB.
    #[arg(long = "mem", default_value_t = 1024)]
    pub mem_mib: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Accelerator: tcg (the default), kvm (an error where KVM does not
    /// work) or auto (KVM where a probe boot shows it works, else TCG).
    /// P2PNVME_ACCEL sets it for every run (e.g. `auto` in CI).
    #[arg(
        long,
        value_enum,
        default_value = "tcg",
        value_name = "kvm|tcg|auto",
        env = "P2PNVME_ACCEL"
    )]
    pub accel: AccelChoice,
    /// Same as --accel kvm (and wins over P2PNVME_ACCEL).
    #[arg(long)]
    pub kvm: bool,
    /// Let kernel WARNINGs pass the kernel health check (they are still
    /// listed); Oops, BUG, KASAN, UBSAN, lockdep and hung tasks still fail.
    #[arg(long)]
    pub allow_warn: bool,
    /// Load this kernel module in the guest before the command (repeatable,
    /// in order); checked against the kernel that boots before boot.
    #[arg(long = "module", value_name = "FILE.ko")]
    pub user_modules: Vec<PathBuf>,
    /// TCG vCPU threading: single (default; robust) or multi (faster, may crash the guest rarely).
    #[arg(long, value_enum, default_value = "single")]
    pub tcg_threads: TcgThreads,
    /// Keep namespace backing files in this directory instead of a temporary one.
    #[arg(long)]
    pub backing_dir: Option<PathBuf>,
    /// Boot without the project's guest module and CLI.
    #[arg(long)]
    pub no_guest_driver: bool,
    /// How long (µs) the project's controllers poll shadow doorbells after
    /// their queues drain (a quarter of that while the driver pauses for
    /// more than twice as long; 0: never, the driver then rings every time). A
    /// comma-separated list gives controller 0, 1, ... their own values
    /// (the last one repeats), to compare settings in one guest.
    #[arg(long, value_name = "US[,US...]", value_delimiter = ',', default_value = "1000", value_parser = clap::value_parser!(u64).range(0..=p2pnvme_device::MAX_POLL_US))]
    pub poll_us: Vec<u64>,
    /// Adaptive interrupt moderation of the project's controllers, in µs
    /// (0: off): without a host Interrupt Coalescing setting, an I/O
    /// interrupt waits until no command arrived for this long, or until as
    /// many completions as the driver kept in flight last time are in. A
    /// list, as for --poll-us.
    #[arg(long, value_name = "US[,US...]", value_delimiter = ',', default_value = "50", value_parser = clap::value_parser!(u64).range(0..=p2pnvme_device::MAX_MODERATION_US))]
    pub irq_moderation_us: Vec<u64>,
    /// Share a host folder with the guest, read-write, through virtiofs
    /// (HOST_DIR[:GUEST_DIR]; default guest path /mnt/<basename>). Repeatable.
    #[arg(long = "share", value_name = "HOST[:GUEST]", value_parser = Share::parse)]
    pub shares: Vec<Share>,
    /// The guest's userland: busybox (the image's initramfs; the default),
    /// full (the toolchain root filesystem: bash, python3, fio, nvme-cli,
    /// udev tools, gcc) or DIR (your own root directory), the last two
    /// read-only over virtiofs below a tmpfs overlay.
    #[arg(long, value_name = "busybox|full|DIR", default_value = "busybox", value_parser = Root::parse)]
    pub root: Root,
    /// Boot this kernel: a bzImage, or a kernel build tree (arch/x86/boot/bzImage, .config, built modules).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// With --kernel DIR (a clean kernel source tree): configure it (its
    /// build directory's .config, or tinyconfig + images/kernel/p2pnvme.config
    /// the first time, with everything the guest needs merged in), build it
    /// out of tree in the root filesystem (incrementally) and boot it.
    #[arg(long, requires = "kernel")]
    pub build: bool,
    /// Which guest kernel to boot: minimal (images/kernel; the default once
    /// built, and built on first use when named), debug (minimal with
    /// KASAN, lockdep, kmemleak, fault injection; built on first use) or
    /// debian (the image's packaged kernel; the default's fallback until
    /// minimal is built). Not with --kernel.
    #[arg(long, value_enum, value_name = "minimal|debug|debian")]
    pub guest_kernel: Option<GuestKernelChoice>,
    /// Extra modules of the --kernel tree to put in the guest (comma-separated names).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub modules: Vec<String>,
    /// Fault rule for the project's controllers, installed before boot
    /// (repeatable; grammar in qemu-device/nvme/README.md), e.g.
    /// `op=read,nth=10,status=0x281`.
    #[arg(long = "fault", value_name = "RULE")]
    pub faults: Vec<String>,
    /// Write one JSON line per command the project's controllers run here.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Start QEMU's gdb stub on 127.0.0.1:PORT (default 1234) with the
    /// guest stopped before its first instruction, boot with nokaslr, and
    /// print the gdb command line with the kernel's vmlinux; the guest runs
    /// once gdb continues it, and --timeout does not apply.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "1234")]
    pub gdb: Option<u16>,
    /// Print the QEMU command line.
    #[arg(long, short)]
    pub verbose: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            vm: VmOptions,
        }
        Defaults::parse_from(["p2pnvme"]).vm
    }
}

fn parse_lba(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err(format!("bad LBA size '{s}': use 512 or 4096")),
    }
}

/// `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM, or an error when it does not work here.
    Kvm,
    /// TCG (the default).
    Tcg,
    /// KVM when it works, TCG otherwise; the report says which.
    Auto,
}

/// The guest kernels the project builds or ships (`--guest-kernel`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKernelChoice {
    /// images/kernel: everything built in, booted as `--kernel <its cached tree>`.
    Minimal,
    /// The minimal kernel with KASAN, lockdep, DEBUG_LIST, kmemleak, fault
    /// injection and debug info (built on first use, cached like minimal).
    Debug,
    /// The image's Debian kernel and its modules.
    Debian,
}

/// Namespaces per project controller that `--namespaces` accepts.
pub const MAX_NAMESPACES: usize = 256;

impl VmOptions {
    /// Checks that need no child process; each failure is one line saying what to fix.
    pub fn validate(&self) -> Result<()> {
        if self.cmb_mib != 0 && (self.cmb_mib < 2 || !self.cmb_mib.is_power_of_two()) {
            bail!(
                "--cmb-mib {} is not usable: Linux maps a CMB only in 2 MiB units; use a power of two >= 2",
                self.cmb_mib
            );
        }
        // Checked: a sum that wrapped would pass as a small count.
        if !matches!(self.qemu_nvme.checked_add(self.nvme), Some(n) if n <= 30) {
            bail!(
                "--nvme {} and --qemu-nvme {}: at most 30 NVMe controllers fit the emulated PCIe topology",
                self.nvme,
                self.qemu_nvme
            );
        }
        if self.namespaces == 0 {
            bail!("--namespaces must be at least 1");
        }
        // Each namespace is a backing file the device keeps open.
        if self.namespaces > MAX_NAMESPACES {
            bail!(
                "--namespaces {}: at most {MAX_NAMESPACES} namespaces per controller",
                self.namespaces
            );
        }
        if self.ns_size < 1 << 20 {
            bail!("--ns-size must be at least 1M");
        }
        if self.mem_mib < 256 {
            bail!(
                "--mem {} is too small for the guest: use 256 or more (MiB)",
                self.mem_mib
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.shares {
            if !seen.insert(&s.guest) {
                bail!(
                    "two --share folders would mount on {}: give one a GUEST path",
                    s.guest
                );
            }
        }
        if let (Some(k), Some(g)) = (&self.kernel, self.guest_kernel) {
            bail!(
                "--kernel {} and --guest-kernel {} both pick the kernel: give one of them",
                k.display(),
                format!("{g:?}").to_lowercase()
            );
        }
        if !self.modules.is_empty() && self.kernel.is_none() {
            bail!("--modules names modules of a --kernel tree: add --kernel PATH");
        }
        crate::faults::check(&self.faults, self.nvme)?;
        if self.trace.is_some() && self.nvme == 0 {
            bail!("--trace records the project's controllers: add --nvme N");
        }
        Ok(())
    }

    /// The accelerator asked for (`--kvm` is `--accel kvm`).
    pub fn accel_choice(&self) -> AccelChoice {
        if self.kvm {
            AccelChoice::Kvm
        } else {
            self.accel
        }
    }

    /// The project's guest module and CLI go into the guest.
    pub fn with_driver(&self) -> bool {
        !self.no_guest_driver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_guest_kernel_together_are_refused_in_one_line() {
        let o = VmOptions {
            kernel: Some("/tmp/tree".into()),
            guest_kernel: Some(GuestKernelChoice::Minimal),
            ..VmOptions::default()
        };
        let e = o.validate().unwrap_err().to_string();
        assert!(
            e.contains("--kernel /tmp/tree and --guest-kernel minimal"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        assert_eq!(
            VmOptions::default().guest_kernel,
            None,
            "no choice: minimal when built, else debian (kernel_build::pick)"
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let o = VmOptions::default();
        assert_eq!(
            (o.mem_mib, o.smp, o.cmb_mib, o.ns_size),
            (1024, 2, 16, 256 << 20)
        );
        assert!(o.with_driver() && o.shares.is_empty() && o.kernel.is_none());
        o.validate().unwrap();
    }
}
