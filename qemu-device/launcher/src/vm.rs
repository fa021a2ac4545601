//! Plain value types that describe a guest machine: the PCIe topology, the
//! CPU model, the accelerator, shared folders. The bottom layer of the
//! launcher: options, the QEMU command line, virtiofs and the session all
//! use them, and this module uses none of those.

use std::path::PathBuf;

/// A command-line choice's name as the user spells it (`root-ports`,
/// `intel`), for reports.
pub fn value_name<T: clap::ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Where the NVMe controllers sit in the emulated PCIe tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Every controller below one PCIe switch (P2PDMA distance: bus address).
    Switch,
    /// Every controller on its own root port (P2P only through the host bridge).
    RootPorts,
}

/// The guest CPU vendor model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuModel {
    /// Intel-like CPU: Linux refuses P2P through the host bridge.
    Intel,
    /// AMD Zen (family 17h): Linux allows P2P through the host bridge.
    Amd,
}

impl CpuModel {
    /// QEMU's `-cpu` value on this accelerator.
    ///
    /// Under TCG the CPU does not advertise fast string moves (ERMS, FSRM):
    /// with them Linux and glibc copy and clear memory with `rep movsb` /
    /// `rep stosb`, which TCG runs one byte per step. Without, they move
    /// eight bytes per step or run unrolled loops: page-cache reads in the
    /// guest went from 95 to 1,638 MB/s and the minimal kernel's boot to
    /// the command from 0.93 to 0.87 s (ci/bench/boot).
    pub fn qemu_cpu(self, accel: Accel) -> String {
        let model = match self {
            CpuModel::Intel => "max,vendor=GenuineIntel",
            CpuModel::Amd => "EPYC",
        };
        match accel {
            Accel::Tcg(_) => format!("{model},-erms,-fsrm"),
            Accel::Kvm => model.to_string(),
        }
    }
}

/// The accelerator a guest runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// TCG, with this vCPU threading.
    Tcg(TcgThreads),
    /// KVM.
    Kvm,
}

/// How TCG runs the guest's vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcgThreads {
    /// One host thread takes turns between vCPUs. The default: multi-threaded
    /// TCG can let a vCPU run stale code while another patches the kernel's
    /// text (static keys), which crashed guests now and then.
    Single,
    /// A host thread per vCPU: faster guests, rare guest crashes.
    Multi,
}

/// The guest's IOMMU (`--iommu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Iommu {
    /// No IOMMU: devices DMA to guest-physical addresses (the default).
    #[default]
    None,
    /// Intel VT-d (`intel-iommu`, caching mode on, as device assignment needs).
    Intel,
    /// AMD-Vi (`amd-iommu` with DMA remapping).
    Amd,
    /// virtio-iommu (`virtio-iommu-pci`).
    Virtio,
}

impl Iommu {
    /// QEMU's `-device` value for it.
    pub fn qemu_device(self) -> Option<&'static str> {
        match self {
            Iommu::None => None,
            // caching-mode: the vfio-user client must see every map.
            Iommu::Intel => Some("intel-iommu,caching-mode=on"),
            Iommu::Amd => Some("amd-iommu,dma-remap=on"),
            Iommu::Virtio => Some("virtio-iommu-pci"),
        }
    }

    /// Kernel arguments it needs (Debian's and the minimal kernel both
    /// start their driver when the firmware table is there; VT-d is asked
    /// for explicitly in case a kernel defaults it off).
    pub fn kernel_args(self) -> &'static [&'static str] {
        match self {
            Iommu::Intel => &["intel_iommu=on"],
            _ => &[],
        }
    }
}

/// The guest's userland (`--root`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Root {
    /// The image's busybox initramfs (fast; the default).
    #[default]
    Busybox,
    /// The toolchain root filesystem (Debian trixie: bash, python3, fio,
    /// nvme-cli, udev tools, compilers), read-only with a tmpfs overlay.
    Full,
    /// A root directory of the user's, the same way.
    Dir(PathBuf),
}

impl Root {
    /// Parses `busybox`, `full` or an existing directory.
    pub fn parse(s: &str) -> Result<Root, String> {
        match s {
            "busybox" => Ok(Root::Busybox),
            "full" => Ok(Root::Full),
            dir => {
                let p = std::fs::canonicalize(dir).map_err(|e| {
                    format!("--root {dir}: not busybox, full or an existing directory ({e})")
                })?;
                if !p.join("bin/sh").exists() && !p.join("usr/bin/sh").exists() {
                    return Err(format!(
                        "--root {dir}: {} has no bin/sh: give a root filesystem's top directory",
                        p.display()
                    ));
                }
                Ok(Root::Dir(p))
            }
        }
    }
}

/// A share as QEMU and the guest see it.
pub struct FsDevice {
    /// virtiofs tag the guest mounts.
    pub tag: String,
    /// virtiofsd's vhost-user socket.
    pub socket: PathBuf,
}

/// A host folder the guest mounts through virtiofs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// Absolute host path (an existing directory).
    pub host: PathBuf,
    /// Absolute guest mount point.
    pub guest: String,
}

impl Share {
    /// Parses `HOST_DIR[:GUEST_DIR]`; the host folder must exist.
    pub fn parse(s: &str) -> Result<Share, String> {
        let (host, guest) = match s.split_once(':') {
            Some((h, g)) => (h, Some(g)),
            None => (s, None),
        };
        let host = std::fs::canonicalize(host).map_err(|e| {
            format!("shared folder '{host}' does not exist or is not reachable ({e}): create it or fix the path")
        })?;
        if !host.is_dir() {
            return Err(format!(
                "'{}' is not a folder: --share takes a directory",
                host.display()
            ));
        }
        let guest = match guest {
            Some(g) if g.starts_with('/') && !g.contains(char::is_whitespace) && g.len() > 1 => {
                g.trim_end_matches('/').to_string()
            }
            Some(g) => {
                return Err(format!(
                    "guest path '{g}' must be absolute, without spaces, and not '/' (e.g. /mnt/src)"
                ))
            }
            None => {
                let base = host.file_name().map(|b| b.to_string_lossy().to_string());
                match base {
                    Some(b) if !b.contains(char::is_whitespace) => format!("/mnt/{b}"),
                    _ => {
                        return Err(format!(
                        "name a guest path for '{}' (HOST:GUEST): its name cannot be a mount point",
                        host.display()
                    ))
                    }
                }
            }
        };
        Ok(Share { host, guest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_defaults_to_mnt_basename_and_refuses_missing_folders() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("mydrv");
        std::fs::create_dir(&sub).unwrap();
        let s = Share::parse(sub.to_str().unwrap()).unwrap();
        assert_eq!(s.guest, "/mnt/mydrv");
        let s = Share::parse(&format!("{}:/src/x/", sub.display())).unwrap();
        assert_eq!(s.guest, "/src/x");
        assert!(Share::parse("/does/not/exist")
            .unwrap_err()
            .contains("does not exist"));
        assert!(Share::parse(&format!("{}:rel", sub.display())).is_err());
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(Share::parse(f.to_str().unwrap())
            .unwrap_err()
            .contains("not a folder"));
    }
}
