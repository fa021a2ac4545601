//! `p2pnvme module build DIR [--kernel PATH | --guest-kernel minimal|debian]`:
//! builds an out-of-tree module against the guest kernel inside the root
//! filesystem, in place. Without either option it is the kernel `run` boots
//! by default (kernel_build::pick), so the module loads there.

use crate::image;
use crate::kbuild;
use crate::kernel::GuestKernel;
use crate::kernel_build;
use crate::options::{GuestKernelChoice, VmOptions};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum ModuleOp {
    /// Build the Kbuild module in DIR against the guest kernel; prints the .ko paths.
    Build {
        /// The module's folder (with its Makefile or Kbuild).
        dir: PathBuf,
        /// Build against this kernel tree instead of the default guest kernel.
        #[arg(long, value_name = "PATH")]
        kernel: Option<PathBuf>,
        /// Build against this guest kernel (default: the one `run` boots by
        /// default: minimal when built, else debian). Not with --kernel.
        #[arg(long, value_enum, value_name = "minimal|debian")]
        guest_kernel: Option<GuestKernelChoice>,
    },
}

pub fn run(op: ModuleOp) -> Result<i32> {
    let ModuleOp::Build {
        dir,
        kernel,
        guest_kernel,
    } = op;
    let dir = std::fs::canonicalize(&dir).with_context(|| {
        format!(
            "module folder '{}' does not exist: fix the path",
            dir.display()
        )
    })?;
    let opts = VmOptions {
        kernel,
        guest_kernel,
        ..VmOptions::default()
    };
    opts.validate()?;
    let img = image::ensure(false)?;
    let opts = kernel_build::pick(opts, &img.rootfs)?;
    let k = GuestKernel::resolve(&opts, &img)?;
    let t = Instant::now();
    let (kdir, mounts) = k.kbuild_dir().ok_or_else(|| {
        anyhow::anyhow!("--kernel is a bare bzImage: build modules against its build tree instead")
    })?;
    let kos = kbuild::module(&img.rootfs, &kdir, &dir, mounts)?;
    for ko in &kos {
        println!("{}", ko.display());
    }
    log::info!(
        "built {} module(s) for {} in {:.1} s",
        kos.len(),
        k.release,
        t.elapsed().as_secs_f64()
    );
    Ok(0)
}
