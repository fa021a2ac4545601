//! The guest kernel: the image's own, or the user's `--kernel` — a bzImage,
//! or a kernel tree — checked before boot.
//!
//! A kernel tree ("tree-shaped" directory) has:
//! - `arch/x86/boot/bzImage`, `.config`, `include/config/kernel.release`;
//! - a Makefile that builds out-of-tree modules (`make -C TREE M=...`), as a
//!   built source tree or a distribution's headers directory has;
//! - its modules either built in the tree (`modules.order`: staged with
//!   `make modules_install`) or already installed below
//!   `lib/modules/<release>/` inside the directory; or none when everything
//!   the guest needs is built in.
//!
//! A bare bzImage must carry its configuration (CONFIG_IKCONFIG=y); it gets
//! no modules and no project module.

use crate::exit;
use crate::image::{key_of, CacheLock, Image};
use crate::kbuild::{self, Mount};
use crate::kconfig::{ikconfig, missing_options, parse_config};
use crate::options::VmOptions;
use crate::paths;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Modules the guest's init loads when they are modules.
const GUEST_MODULES: &[&str] = &["nvme", "qemu_fw_cfg", "ext4", "brd"];

/// The kernel a session boots and what module builds need.
#[derive(Clone, Debug)]
pub struct GuestKernel {
    /// The file QEMU boots: the bzImage, or a tree's `vmlinux` through its
    /// PVH entry (see `pvh`), chosen once from the configuration.
    pub boot: PathBuf,
    /// Its release (`uname -r` in the guest; the modules' directory).
    pub release: String,
    /// Where out-of-tree modules are built against it.
    pub build: KernelBuild,
    /// A folder holding `lib/modules/<release>` with the modules the guest
    /// needs, when they are not the image's own.
    pub modules: Option<PathBuf>,
    /// Its timer ticks per second (CONFIG_HZ), for the loops-per-jiffy
    /// preset; None when its configuration is not known.
    pub hz: Option<u32>,
    /// The configuration of a `--kernel` (its tree's `.config` or its
    /// IKCONFIG), which the guest gets as `/boot/config-RELEASE`.
    pub config: Option<String>,
    /// Hash of the release and configuration (module cache key).
    config_key: String,
    /// The root filesystem builds run in.
    rootfs: PathBuf,
}

/// Where to run `make -C ... M=...` for an out-of-tree module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelBuild {
    /// The image's headers package, inside the root filesystem.
    ImageHeaders(String),
    /// A kernel tree on the host.
    Tree(PathBuf),
    /// A bare bzImage: nothing to build against.
    None,
}

fn refuse(msg: String) -> anyhow::Error {
    exit::with(exit::REFUSED, msg)
}

/// CONFIG_HZ of a parsed configuration.
fn hz_of(cfg: &BTreeMap<String, String>) -> Option<u32> {
    cfg.get("HZ")?.parse().ok()
}

impl GuestKernel {
    /// The image's kernel, or `--kernel` after its checks.
    pub fn resolve(opts: &VmOptions, image: &Image) -> Result<GuestKernel> {
        let Some(path) = &opts.kernel else {
            return Ok(Self::of_image(image));
        };
        let p = fs::canonicalize(path).map_err(|e| {
            refuse(format!(
                "--kernel {} does not exist ({e}): give a bzImage or a kernel build tree",
                path.display()
            ))
        })?;
        let (bzimage, config, release, tree) = if p.is_dir() {
            let bz = p.join("arch/x86/boot/bzImage");
            if !bz.is_file() {
                return Err(refuse(format!(
                    "--kernel {} has no arch/x86/boot/bzImage: build it (make bzImage modules) or give the bzImage itself",
                    p.display()
                )));
            }
            bzimage_release(&bz)?;
            let config = fs::read_to_string(p.join(".config")).map_err(|_| {
                refuse(format!(
                    "--kernel {} has no .config: give the tree the kernel was built in",
                    p.display()
                ))
            })?;
            let release = fs::read_to_string(p.join("include/config/kernel.release"))
                .map_err(|_| {
                    refuse(format!(
                        "--kernel {} has no include/config/kernel.release: run make in the tree first",
                        p.display()
                    ))
                })?
                .trim()
                .to_string();
            (bz, config, release, Some(p.clone()))
        } else {
            let release = bzimage_release(&p)?;
            let config = ikconfig(&image.rootfs, &p)?.ok_or_else(|| {
                refuse(format!(
                    "--kernel {} carries no configuration (CONFIG_IKCONFIG): give its build tree, which has the .config",
                    p.display()
                ))
            })?;
            (p.clone(), config, release, None)
        };
        let cfg = parse_config(&config);
        let missing = missing_options(&cfg);
        if !missing.is_empty() {
            return Err(refuse(format!(
                "--kernel {} ({release}) lacks {}: enable {} and rebuild it",
                p.display(),
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            )));
        }
        let config_key = key_of(&[
            ("release", release.as_bytes()),
            ("config", config.as_bytes()),
        ]);
        let modules = match &tree {
            Some(t) => Some(stage_modules(
                image,
                t,
                &release,
                &config_key,
                &opts.modules,
            )?),
            None if !opts.modules.is_empty() => {
                return Err(refuse(
                    "--modules needs a kernel tree, not a bare bzImage".into(),
                ))
            }
            None => {
                if cfg.get("BLK_DEV_NVME").map(String::as_str) != Some("y") {
                    return Err(refuse(format!(
                        "--kernel {} builds nvme as a module: give its build tree so its modules can go into the guest",
                        p.display()
                    )));
                }
                None
            }
        };
        Ok(GuestKernel {
            boot: crate::pvh::boot_file(&bzimage, tree.as_deref(), &cfg),
            release,
            build: tree.map_or(KernelBuild::None, KernelBuild::Tree),
            modules,
            hz: hz_of(&cfg),
            config: Some(config),
            config_key,
            rootfs: image.rootfs.clone(),
        })
    }

    /// The image's own kernel and headers.
    pub fn of_image(image: &Image) -> GuestKernel {
        let config = image
            .rootfs
            .join(format!("boot/config-{}", image.kernel_version));
        GuestKernel {
            boot: image.kernel(),
            release: image.kernel_version.clone(),
            build: KernelBuild::ImageHeaders(format!(
                "/usr/src/linux-headers-{}",
                image.kernel_version
            )),
            modules: None,
            hz: fs::read_to_string(config)
                .ok()
                .and_then(|text| hz_of(&parse_config(&text))),
            config: None,
            config_key: image.key.clone(),
            rootfs: image.rootfs.clone(),
        }
    }

    /// The build directory as seen inside the root filesystem, and the
    /// mounts that make it visible there (None: a bare bzImage).
    pub fn kbuild_dir(&self) -> Option<(String, Vec<Mount>)> {
        match &self.build {
            KernelBuild::ImageHeaders(d) => Some((d.clone(), vec![])),
            KernelBuild::Tree(t) => {
                let m = tree_mounts(t, &self.rootfs);
                Some((m[0].inside.clone(), m))
            }
            KernelBuild::None => None,
        }
    }

    /// Cache key part for modules built against this kernel.
    pub fn key(&self) -> &str {
        &self.config_key
    }
}

/// A kernel tree mounted for a build inside the root filesystem: the tree
/// first, then, for an out-of-tree build directory (`make O=`), the source
/// tree its `source` link names, which its Makefile includes.
fn tree_mounts(tree: &Path, rootfs: &Path) -> Vec<Mount> {
    let mut m = vec![Mount::new(tree, "kernel", rootfs)];
    if let Ok(src) = fs::read_link(tree.join("source")) {
        m.push(Mount::new(&src, "ksrc", rootfs));
    }
    m
}

/// Checks the bzImage boot header ("HdrS" at 0x202) and returns the release
/// from its kernel_version string.
fn bzimage_release(p: &Path) -> Result<String> {
    // The setup code holds the version string (within 64 KiB).
    let mut head = Vec::new();
    fs::File::open(p)
        .and_then(|f| f.take(0x10000).read_to_end(&mut head))
        .with_context(|| format!("reading --kernel {}", p.display()))?;
    let not_kernel = || {
        refuse(format!(
            "--kernel {} is not a kernel (no x86 bzImage header): give arch/x86/boot/bzImage or the build tree",
            p.display()
        ))
    };
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Err(not_kernel());
    }
    let at = u16::from_le_bytes([head[0x20e], head[0x20f]]) as usize + 0x200;
    let s = head.get(at..).ok_or_else(not_kernel)?;
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    let release = String::from_utf8_lossy(&s[..end])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if release.is_empty() {
        return Err(not_kernel());
    }
    Ok(release)
}

/// Stages the modules the guest needs (its init's, plus `extra`) from a
/// kernel tree into a cached folder holding `lib/modules/<release>`.
fn stage_modules(
    image: &Image,
    tree: &Path,
    release: &str,
    config_key: &str,
    extra: &[String],
) -> Result<PathBuf> {
    let stamp = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| format!("{t:?}"))
            .unwrap_or_default()
    };
    let order = tree.join("modules.order");
    let installed = tree.join("lib/modules").join(release);
    let names: Vec<String> = GUEST_MODULES
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect();
    let key = key_of(&[
        ("config", config_key.as_bytes()),
        ("tree", tree.as_os_str().as_encoded_bytes()),
        ("order", stamp(&order).as_bytes()),
        ("installed", stamp(&installed).as_bytes()),
        ("names", names.join(",").as_bytes()),
    ]);
    let dir = paths::cache_root().join(format!("kernel-modules-{key}"));
    if dir
        .join("lib/modules")
        .join(release)
        .join("modules.dep")
        .exists()
    {
        return Ok(dir);
    }
    let _lock = CacheLock::take()?;
    let work = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("raw"))?;
    fs::create_dir_all(work.join("out"))?;
    let mut mounts = tree_mounts(tree, &image.rootfs);
    let work_m = Mount::new(&work, "stage", &image.rootfs);
    let (t, w) = (mounts[0].inside.clone(), work_m.inside.clone());
    mounts.push(work_m);
    let src = if order.exists() {
        log::info!(
            "installing the modules of {} (make modules_install)",
            tree.display()
        );
        format!(
            "make -s -C {t} modules_install INSTALL_MOD_PATH={w}/raw DEPMOD=true >&2 && src={w}/raw"
        )
    } else if installed.is_dir() {
        format!("src={t}")
    } else {
        String::new()
    };
    if src.is_empty() {
        // No modules: everything the guest needs must be built in.
        let cfg = parse_config(&fs::read_to_string(tree.join(".config"))?);
        if cfg.get("BLK_DEV_NVME").map(String::as_str) != Some("y") || !extra.is_empty() {
            return Err(refuse(format!(
                "--kernel {} has no modules (no modules.order, no lib/modules/{release}): run make modules in it",
                tree.display()
            )));
        }
        fs::create_dir_all(work.join("out/lib/modules").join(release))?;
        fs::write(
            work.join("out/lib/modules")
                .join(release)
                .join("modules.dep"),
            "",
        )?;
    } else {
        let required: Vec<&str> = extra.iter().map(String::as_str).collect();
        let script = format!(
            r#"set -e
{src}
rel={release}
out={w}/out/lib/modules/$rel
mkdir -p "$out"
for m in {names}; do
	if ! modprobe -S "$rel" -d "$src" --show-depends "$m" >>{w}/deps 2>/dev/null; then
		echo "MISSING $m"
	fi
done
awk '$1 == "insmod" {{print $2}}' {w}/deps | sort -u | while read -r ko; do
	r=${{ko#"$src"/lib/modules/$rel/}}
	case $r in /*) r=${{ko##*/lib/modules/$rel/}} ;; esac
	d="$out/${{r%.*}}.ko"
	case $r in *.ko) d="$out/$r" ;; esac
	mkdir -p "$(dirname "$d")"
	case $ko in
	*.xz) xz -dc "$ko" >"$d" ;;
	*.zst) zstd -qdc "$ko" >"$d" ;;
	*.gz) gzip -dc "$ko" >"$d" ;;
	*) cp "$ko" "$d" ;;
	esac
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
	[ -e "$src/lib/modules/$rel/$f" ] && cp "$src/lib/modules/$rel/$f" "$out/"
done
depmod -b {w}/out "$rel"
"#,
            names = names.join(" "),
        );
        let out = kbuild::run(&image.rootfs, &mounts, &script)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "staging the modules of {} failed:\n{stdout}{}",
                tree.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let missing: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("MISSING "))
            .filter(|m| required.contains(m))
            .collect();
        if !missing.is_empty() {
            let _ = fs::remove_dir_all(&work);
            return Err(refuse(format!(
                "--modules {}: not among the modules of {}",
                missing.join(","),
                tree.display()
            )));
        }
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(work.join("out"), &dir)?;
    let _ = fs::remove_dir_all(&work);
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_the_boot_header_is_not_a_kernel() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x");
        fs::write(&f, vec![0u8; 4096]).unwrap();
        assert!(format!("{:#}", bzimage_release(&f).unwrap_err()).contains("not a kernel"));
        let mut bz = vec![0u8; 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        bz[0x500..0x50c].copy_from_slice(b"7.3.4-test (");
        fs::write(&f, &bz).unwrap();
        assert_eq!(bzimage_release(&f).unwrap(), "7.3.4-test");
    }
}
