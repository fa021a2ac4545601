//! The guest kernel: the image's own, or the user's `--kernel` (a bzImage,
//! or a kernel build tree), checked before boot.

use crate::image::Image;
use crate::options::VmOptions;
use anyhow::Result;
use std::path::PathBuf;

/// The kernel a session boots and what module builds need.
#[derive(Clone, Debug)]
pub struct GuestKernel {
    /// The bzImage QEMU boots.
    pub bzimage: PathBuf,
    /// Its release (`uname -r` in the guest; the modules' directory).
    pub release: String,
    /// Where out-of-tree modules are built against it, as a path inside
    /// the root filesystem (`make -C` there), or on the host for a tree.
    pub build: KernelBuild,
    /// Its modules, staged as a `lib/modules/<release>` tree, when they are
    /// not the image's own.
    pub modules: Option<PathBuf>,
}

/// Where to run `make -C ... M=...` for an out-of-tree module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelBuild {
    /// The image's headers package, inside the root filesystem.
    ImageHeaders(String),
}

impl GuestKernel {
    /// The image's kernel, or `--kernel` after its checks.
    pub fn resolve(opts: &VmOptions, image: &Image) -> Result<GuestKernel> {
        match &opts.kernel {
            None => Ok(Self::of_image(image)),
            Some(p) => anyhow::bail!("--kernel {} is not supported yet", p.display()),
        }
    }

    /// The image's own kernel and headers.
    pub fn of_image(image: &Image) -> GuestKernel {
        GuestKernel {
            bzimage: image.kernel(),
            release: image.kernel_version.clone(),
            build: KernelBuild::ImageHeaders(format!(
                "/usr/src/linux-headers-{}",
                image.kernel_version
            )),
            modules: None,
        }
    }

    /// The build directory as seen inside the root filesystem, and the
    /// mounts that make it visible there.
    pub fn kbuild_dir(&self) -> (String, Vec<crate::kbuild::Mount>) {
        match &self.build {
            KernelBuild::ImageHeaders(d) => (d.clone(), vec![]),
        }
    }

    /// Cache key part for modules built against this kernel.
    pub fn key(&self, image: &Image) -> String {
        match &self.build {
            KernelBuild::ImageHeaders(_) => image.key.clone(),
        }
    }
}
