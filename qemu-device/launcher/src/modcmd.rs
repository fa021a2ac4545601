//! `p2pnvme module build DIR [--kernel PATH]`: builds an out-of-tree module
//! against the guest kernel inside the root filesystem, in place.

use crate::image;
use crate::kbuild;
use crate::kernel::GuestKernel;
use crate::options::VmOptions;
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
        /// Build against this kernel tree instead of the image's kernel.
        #[arg(long, value_name = "PATH")]
        kernel: Option<PathBuf>,
    },
}

pub fn run(op: ModuleOp) -> Result<i32> {
    let ModuleOp::Build { dir, kernel } = op;
    let dir = std::fs::canonicalize(&dir).with_context(|| {
        format!(
            "module folder '{}' does not exist: fix the path",
            dir.display()
        )
    })?;
    let img = image::ensure(false)?;
    let opts = VmOptions {
        kernel,
        ..VmOptions::default()
    };
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
