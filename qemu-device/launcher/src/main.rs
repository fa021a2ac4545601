//! p2pnvme: boots QEMU guests with P2P-capable NVMe controllers.

mod cpio;
mod demo;
mod hostctl;
mod image;
mod kernel_build;
mod overlay;
mod paths;
mod procs;
mod qemu;
mod ramscan;
mod stats;
mod vm;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use qemu::{CpuModel, TcgThreads, Topology};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vm::{Output, Session, VmOptions};

#[derive(Parser)]
#[command(
    name = "p2pnvme",
    version,
    about = "Boot QEMU guests with P2P-capable NVMe controllers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build or inspect the toolchain root filesystem and the guest image.
    Image {
        #[command(subcommand)]
        op: ImageOp,
    },
    /// Boot a guest, run a command in it, print its output, exit with its status.
    Run(RunArgs),
    /// Boot a guest with an interactive console (Ctrl-A X quits).
    Shell(VmArgs),
    /// Boot a guest, copy host-written random data with the guest module and verify where it went.
    Demo(demo::DemoArgs),
    /// Serve the project's NVMe controllers over vfio-user (QEMU attaches with vfio-user-pci).
    Device(p2pnvme_device::DeviceArgs),
}

#[derive(Subcommand)]
enum ImageOp {
    /// Build the root filesystem and guest image (a no-op when cached).
    Build {
        /// Rebuild even if the cache is current.
        #[arg(long)]
        force: bool,
        /// Also build the minimal guest kernel (images/kernel) and print its build tree.
        #[arg(long)]
        minimal_kernel: bool,
    },
    /// Print where the cached image lives and what it contains.
    Info,
}

#[derive(Args, Clone)]
struct VmArgs {
    /// QEMU's built-in NVMe controllers, each with a CMB.
    #[arg(long, default_value_t = 0)]
    qemu_nvme: usize,
    /// The project's vfio-user NVMe controllers, served by one device process.
    #[arg(long, default_value_t = 0)]
    nvme: usize,
    /// Namespaces per project controller.
    #[arg(long, default_value_t = 1)]
    namespaces: usize,
    /// CMB size in MiB for every controller (QEMU's and the project's).
    #[arg(long, default_value_t = 16)]
    cmb_mib: u32,
    /// Size of each namespace's backing file (K/M/G suffixes).
    #[arg(long, default_value = "256M", value_parser = p2pnvme_device::parse_size)]
    ns_size: u64,
    /// LBA size of the project's namespaces.
    #[arg(long, default_value_t = 512, value_parser = parse_lba)]
    lba: u32,
    /// PCIe placement of the controllers.
    #[arg(long, value_enum, default_value = "switch")]
    topology: Topology,
    /// Guest CPU vendor model (amd makes root-port peers reachable through the host bridge).
    #[arg(long, value_enum, default_value = "intel")]
    cpu: CpuModel,
    /// Extra kernel command line arguments.
    #[arg(long)]
    append: Option<String>,
    /// Extra QEMU argument (repeat for several).
    #[arg(long = "qemu-arg", allow_hyphen_values = true)]
    qemu_arg: Vec<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    mem: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Use KVM if a probe boot shows it works (TCG otherwise).
    #[arg(long)]
    kvm: bool,
    /// TCG vCPU threading: single (default; robust) or multi (faster, may crash the guest rarely).
    #[arg(long, value_enum, default_value = "single")]
    tcg_threads: TcgThreads,
    /// Keep namespace backing files in this directory instead of a temporary one.
    #[arg(long)]
    backing_dir: Option<PathBuf>,
    /// Boot without the project's guest module and CLI.
    #[arg(long)]
    no_guest_driver: bool,
    /// How long (µs) the project's controllers poll shadow doorbells after
    /// their queues drain (0: never; the driver then rings every time).
    #[arg(long, default_value_t = p2pnvme_device::DEFAULT_POLL_US, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    poll_us: u64,
    /// Print the QEMU command line.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Write every controller's final counters (the device's stats document) here.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Fail if the guest has not finished after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Command for the guest's shell.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

fn parse_lba(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err(format!("bad LBA size '{s}': use 512 or 4096")),
    }
}

impl VmArgs {
    fn options(&self) -> Result<VmOptions> {
        if self.cmb_mib != 0 && (self.cmb_mib < 2 || !self.cmb_mib.is_power_of_two()) {
            bail!(
                "--cmb-mib {} is not usable: Linux maps a CMB only in 2 MiB units; use a power of two >= 2",
                self.cmb_mib
            );
        }
        if self.qemu_nvme + self.nvme > 30 {
            bail!("at most 30 NVMe controllers fit the emulated PCIe topology");
        }
        if self.namespaces == 0 {
            bail!("--namespaces must be at least 1");
        }
        if self.ns_size < 1 << 20 {
            bail!("--ns-size must be at least 1M");
        }
        if self.mem < 256 {
            bail!(
                "--mem {} is too small for the guest: use 256 or more (MiB)",
                self.mem
            );
        }
        Ok(VmOptions {
            qemu_nvme: self.qemu_nvme,
            nvme: self.nvme,
            namespaces: self.namespaces,
            cmb_mib: self.cmb_mib,
            ns_size: self.ns_size,
            lba: self.lba,
            topology: self.topology,
            cpu: self.cpu,
            append: self.append.clone(),
            qemu_args: self.qemu_arg.clone(),
            mem_mib: self.mem,
            smp: self.smp,
            kvm: self.kvm,
            tcg_threads: self.tcg_threads,
            backing_dir: self.backing_dir.clone(),
            with_driver: !self.no_guest_driver,
            poll_us: self.poll_us,
            verbose: self.verbose,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("p2pnvme: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Image { op } => image_cmd(op),
        Cmd::Run(args) => {
            if args.stats_json.is_some() && args.vm.nvme == 0 {
                bail!("--stats-json needs the project's controllers: add --nvme N");
            }
            procs::catch_signals();
            let mut s = Session::prepare(args.vm.options()?)?;
            let r = s.run(
                &args.cmd.join(" "),
                Duration::from_secs(args.timeout),
                Output::Stream,
            )?;
            if let Some(path) = &args.stats_json {
                let doc = s.stats()?;
                std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n").map_err(|e| {
                    anyhow::anyhow!("cannot write --stats-json {}: {e}", path.display())
                })?;
            }
            s.stop_device();
            Ok(r.status)
        }
        Cmd::Demo(args) => {
            procs::catch_signals();
            demo::run(args)
        }
        Cmd::Device(args) => p2pnvme_device::run(args).map(|_| 0),
        Cmd::Shell(vm) => {
            let mut s = Session::prepare(vm.options()?)?;
            s.shell()
        }
    }
}

fn image_cmd(op: ImageOp) -> Result<i32> {
    let t = Instant::now();
    let img = image::ensure(matches!(op, ImageOp::Build { force: true, .. }))?;
    println!("rootfs:   {}", img.rootfs.display());
    println!("image:    {}", img.dir.display());
    println!("kernel:   {}", img.kernel_version);
    println!("manifest: {}", img.dir.join("manifest.txt").display());
    if let ImageOp::Build {
        minimal_kernel: true,
        ..
    } = op
    {
        let flavor = kernel_build::KernelFlavor { debug: false };
        let tree = kernel_build::ensure_minimal(&img.rootfs, flavor, &mut |l| eprintln!("{l}"))?;
        println!("minimal kernel: {}", tree.display());
    }
    if let ImageOp::Build { .. } = op {
        println!("ready in {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(0)
}
