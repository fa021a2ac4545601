//! p2pnvme: boots QEMU guests with P2P-capable NVMe controllers.
//!
//! Modules by layer (each imports only from layers below it):
//! - subcommands: this file (`run`, `shell`, `image`, `device`), `demo`,
//!   `prove`, `blktests`, `ctl`, `modcmd`, `trace_summary`;
//! - one guest run: `session` (prepare, boot, run; owns every process it
//!   starts), `accel` (TCG/KVM choice), `witness` (host side of the TCG
//!   plugin), `judge` and `health` (the verdict's rules);
//! - pieces a session uses: `qemu` (command line), `device` (the device
//!   process), `virtiofs`, `hotplug`, `qmp`, `console`, `hostctl`, `stats`,
//!   `faults`, `image`, `kernel`, `kconfig`, `kernel_build`, `own_kernel`, `kbuild`,
//!   `overlay`, `cpio`, `modcheck`, `names`, `ramscan`;
//! - plain values and plumbing: `options` (`VmOptions`), `vm` (topology,
//!   CPU, accelerator, shares), `paths`, `procs`, `exit`, `logger`.
//!
//! Data path of `run --prove` / `demo`: options -> `Session::prepare`
//! (image, kernel, backing files, host-written data: prove.rs) -> boot
//! (session/boot.rs: the device process, QEMU from qemu.rs) -> the guest
//! command (session/run.rs; the guest's host requests in hostctl.rs save
//! the device counters over the stats socket and dump RAM over QMP) ->
//! `judge` (counters, RAM dump hits from ramscan.rs, kernel health) ->
//! verdict and exit status (exit.rs).

mod accel;
mod blktests;
mod console;
mod cpio;
mod ctl;
mod demo;
mod device;
mod exit;
mod faults;
mod guest_ram;
mod health;
mod hostctl;
mod hotplug;
mod image;
mod judge;
mod kbuild;
mod kconfig;
mod kernel;
mod kernel_build;
mod logger;
mod modcheck;
mod modcmd;
mod names;
mod options;
mod overlay;
mod own_kernel;
mod paths;
mod procs;
mod prove;
mod pvh;
mod qemu;
mod qmp;
mod ramscan;
mod session;
mod stats;
mod testrun;
mod trace_summary;
mod tsc;
mod virtiofs;
mod vm;
mod witness;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use options::{GuestKernelChoice, VmOptions};
use session::{Output, Session};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    Shell(ShellArgs),
    /// Boot a guest, copy host-written random data with the guest module and verify where it went.
    Demo(demo::DemoArgs),
    /// Build kernel modules against the guest kernel.
    Module {
        #[command(subcommand)]
        op: modcmd::ModuleOp,
    },
    /// Serve the project's NVMe controllers over vfio-user (QEMU attaches with vfio-user-pci).
    Device(DeviceCmd),
    /// Run the cases of test files in guests, up to --jobs at once; JUnit and KTAP reports.
    Test(testrun::TestArgs),
    /// Run a blktests checkout in a guest against the project's and/or QEMU's NVMe; a table and JUnit.
    Blktests(blktests::BlktestsArgs),
    /// Read a device command trace (`--trace FILE`).
    Trace {
        #[command(subcommand)]
        op: trace_summary::TraceOp,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DeviceCmd {
    #[command(subcommand)]
    op: Option<ctl::DeviceOp>,
    #[command(flatten)]
    args: p2pnvme_device::DeviceArgs,
    #[command(flatten)]
    limits: p2pnvme_device::Limits,
}

#[derive(Subcommand)]
enum ImageOp {
    /// Build the root filesystem and guest image (a no-op when cached).
    Build {
        /// Rebuild even if the cache is current.
        #[arg(long)]
        force: bool,
        /// Also build this guest kernel: minimal (images/kernel, cached; the
        /// default guest kernel once built), debug (minimal with the kernel's
        /// bug finders, cached) or debian (the image's own, always there).
        #[arg(long, value_enum, value_name = "minimal|debug|debian")]
        guest_kernel: Option<GuestKernelChoice>,
        /// Same as --guest-kernel minimal (older spelling).
        #[arg(long, hide = true, conflicts_with = "guest_kernel")]
        minimal_kernel: bool,
    },
    /// Print where the cached image lives and what it contains.
    Info,
}

#[derive(Args)]
struct ShellArgs {
    #[command(flatten)]
    vm: VmOptions,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    vm: VmOptions,
    #[command(flatten)]
    prove: prove::ProveArgs,
    /// Write every controller's final counters (the device's stats document) here.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Load the TCG witness plugin and write what the guest CPU touched here:
    /// the window `command` around the guest command, the windows the command
    /// opens itself (`p2pnvme-host witness-start NAME`), then the whole run.
    #[arg(long, value_name = "FILE")]
    witness: Option<PathBuf>,
    /// Fail if the guest has not finished after this many seconds (exit 124).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Command for the guest's shell.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(&cli.cmd, Cmd::Run(r) if r.prove.json);
    logger::init(quiet);
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("p2pnvme: error: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Image { op } => image_cmd(op),
        Cmd::Run(args) => run(args),
        Cmd::Demo(args) => {
            procs::catch_signals();
            demo::run(args)
        }
        Cmd::Module { op } => modcmd::run(op),
        Cmd::Device(DeviceCmd { op: Some(op), .. }) => ctl::run(op),
        Cmd::Device(DeviceCmd { args, limits, .. }) => {
            Ok(p2pnvme_device::run_limited(args, limits).map(|_| 0)?)
        }
        Cmd::Trace { op } => trace_summary::run(op),
        Cmd::Blktests(args) => blktests::run(args),
        Cmd::Test(args) => {
            procs::catch_signals();
            let cli = <Cli as clap::CommandFactory>::command();
            let run = cli.find_subcommand("run").expect("run is a subcommand");
            testrun::run(args, run)
        }
        Cmd::Shell(a) => {
            let mut s = Session::prepare(a.vm)?;
            s.shell()
        }
    }
}

fn run(args: RunArgs) -> Result<i32> {
    if args.stats_json.is_some() && args.vm.nvme == 0 {
        bail!("--stats-json needs the project's controllers: add --nvme N");
    }
    procs::catch_signals();
    let start = Instant::now();
    let mut s = Session::prepare(args.vm)?;
    s.attach_witness(args.witness.is_some())?;
    let proof = prove::Proof::arm(&mut s, &args.prove)?;
    let out = if args.prove.json {
        Output::Capture
    } else {
        Output::Stream
    };
    let mut cmd = args.cmd.join(" ");
    if args.witness.is_some() {
        cmd = witness::wrap_command(&cmd);
    }
    let r = s.run(&cmd, Duration::from_secs(args.timeout), out)?;
    if let Some(path) = &args.stats_json {
        let doc = s.stats()?;
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write --stats-json {}: {e}", path.display()))?;
    }
    let witness = match &args.witness {
        Some(file) => Some(s.save_witness(file)?),
        None => None,
    };
    s.stop_helpers();
    let kernel = r.guest.kernel_health(s.opts.allow_warn);
    let Some(proof) = proof else {
        health::enforce(&r.guest, &kernel)?;
        return Ok(r.status);
    };
    let ev = proof.evidence(&s, &r.guest)?;
    let mut report = prove::report(
        &ev,
        r.status,
        kernel,
        accel::name(s.accel),
        &vm::value_name(s.opts.iommu),
        start,
    );
    report.witness = witness;
    if args.prove.json {
        // The command's own output would not be JSON: keep it on stderr.
        let mut e = std::io::stderr();
        let _ = e.write_all(&r.stdout);
        let _ = e.write_all(&r.stderr);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.one_line());
        for reason in &report.reasons {
            println!("  {}: {reason}", report.verdict);
        }
    }
    // Kernel health (exit 3) outranks the verdict it is part of.
    health::enforce(&r.guest, &report.kernel)?;
    Ok(if args.prove.require_bypass {
        i32::from(report.verdict.exit_code())
    } else {
        r.status
    })
}

fn image_cmd(op: ImageOp) -> Result<i32> {
    let t = Instant::now();
    let img = image::ensure(matches!(op, ImageOp::Build { force: true, .. }))?;
    println!("rootfs:   {}", img.rootfs.display());
    println!("image:    {}", img.dir.display());
    println!("manifest: {}", img.dir.join("manifest.txt").display());
    let flavor = kernel_build::KernelFlavor { debug: false };
    if let ImageOp::Build {
        guest_kernel: Some(GuestKernelChoice::Debug),
        ..
    } = op
    {
        let debug = kernel_build::KernelFlavor { debug: true };
        let tree = kernel_build::ensure_minimal(&img.rootfs, debug, &mut |l| log::info!("{l}"))?;
        println!("debug kernel:   {}", tree.display());
    }
    let minimal = match op {
        ImageOp::Build {
            guest_kernel: Some(GuestKernelChoice::Minimal),
            ..
        }
        | ImageOp::Build {
            minimal_kernel: true,
            ..
        } => Some(kernel_build::ensure_minimal(
            &img.rootfs,
            flavor,
            &mut |l| log::info!("{l}"),
        )?),
        // Info only: a root filesystem without linux-source still has its
        // Debian kernel to show.
        _ => kernel_build::built_tree(&img.rootfs, flavor).unwrap_or_else(|e| {
            log::warn!("minimal kernel: {e:#}");
            None
        }),
    };
    let debian_config = img
        .rootfs
        .join(format!("boot/config-{}", img.kernel_version));
    println!(
        "debian kernel:  {}, {}",
        img.kernel_version,
        kconfig::p2pdma_state(&debian_config)
    );
    let default = match &minimal {
        Some(tree) => {
            println!("minimal kernel: {}", tree.display());
            println!(
                "minimal config: {}",
                kconfig::p2pdma_state(&tree.join(".config"))
            );
            "minimal"
        }
        None => {
            println!(
                "minimal kernel: not built ('p2pnvme image build --guest-kernel minimal' builds it, ~15 min)"
            );
            "debian (until the minimal kernel is built)"
        }
    };
    let env = kernel_build::env_default()?;
    let default = match env {
        Some(GuestKernelChoice::Debian) => "debian (P2PNVME_GUEST_KERNEL)",
        Some(GuestKernelChoice::Minimal) => "minimal (P2PNVME_GUEST_KERNEL)",
        Some(GuestKernelChoice::Debug) => "debug (P2PNVME_GUEST_KERNEL)",
        None => default,
    };
    println!("default kernel: {default}");
    next_run(&img, env, minimal.as_deref())?;
    if let ImageOp::Build { .. } = op {
        println!("ready in {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(0)
}

/// What a `run` without kernel options boots next: kernel, initramfs and
/// modules (the `kernel:` line's second word is that kernel's release).
fn next_run(
    img: &image::Image,
    env: Option<GuestKernelChoice>,
    minimal: Option<&std::path::Path>,
) -> Result<()> {
    let mut opts = VmOptions::default();
    let debug = kernel_build::KernelFlavor { debug: true };
    match (env, minimal) {
        (Some(GuestKernelChoice::Debian), _) | (None, None) => {}
        (Some(GuestKernelChoice::Debug), _) => {
            match kernel_build::built_tree(&img.rootfs, debug)? {
                Some(tree) => opts.kernel = Some(tree),
                None => {
                    println!("kernel:   none yet: the next run builds the debug kernel first");
                    return Ok(());
                }
            }
        }
        (_, Some(tree)) => opts.kernel = Some(tree.to_path_buf()),
        (Some(GuestKernelChoice::Minimal), None) => {
            println!("kernel:   none yet: the next run builds the minimal kernel first (~15 min)");
            return Ok(());
        }
    }
    let k = kernel::GuestKernel::resolve(&opts, img)?;
    println!("kernel:   {} ({})", k.release, k.boot.display());
    println!(
        "initrd:   {} + a per-run overlay (p2pcopy.ko built for {}, the p2pcopy CLI, ci/guest scripts, --module files)",
        img.initramfs().display(),
        k.release
    );
    match &k.modules {
        Some(dir) => println!(
            "modules:  {}",
            dir.join("lib/modules").join(&k.release).display()
        ),
        None if opts.kernel.is_some() => println!("modules:  built into the kernel"),
        None => println!(
            "modules:  {} (the image's /lib/modules/{})",
            img.modules_archive().display(),
            k.release
        ),
    }
    Ok(())
}
