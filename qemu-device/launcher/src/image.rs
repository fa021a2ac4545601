//! Builds and caches the toolchain root filesystem and the guest image.
//!
//! Each artifact lives in the cache under a name keyed by a hash of its inputs,
//! so a changed script rebuilds it and an unchanged one is a no-op.

use crate::paths;
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::geteuid;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Runs a binary of the root filesystem through that filesystem's own
/// dynamic loader, so it uses its libraries without a chroot.
pub fn rootfs_command(rootfs: &Path, bin: &Path) -> Command {
    let mut cmd = Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"));
    cmd.arg("--library-path")
        .arg(format!(
            "{r}/lib/x86_64-linux-gnu:{r}/usr/lib/x86_64-linux-gnu",
            r = rootfs.display()
        ))
        .arg(bin);
    cmd
}

/// A built guest image and the root filesystem it came from.
pub struct Image {
    pub rootfs: PathBuf,
    pub dir: PathBuf,
    pub kernel_version: String,
    pub key: String,
}

impl Image {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    /// The userland archive every guest unpacks.
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.img")
    }
    /// The archive of the image kernel's modules: only a guest booting
    /// that kernel unpacks it.
    pub fn modules_archive(&self) -> PathBuf {
        self.dir.join("modules.img")
    }
}

/// Hash of a list of labelled inputs, shortened for directory names.
pub fn key_of(parts: &[(&str, &[u8])]) -> String {
    let mut h = Sha256::new();
    for (label, data) in parts {
        h.update(label.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// An exclusive `flock` on a lock file in a cache directory, held until
/// dropped, so that concurrent launchers do not build the same thing twice.
pub struct CacheLock {
    _lock: Flock<fs::File>,
}

impl CacheLock {
    /// Locks the whole cache (root filesystem, image, module builds).
    pub fn take() -> Result<Self> {
        let root = paths::cache_root();
        Self::file(&root.join(".lock"))
    }

    /// Locks `path` (created in its cache directory if missing); waits
    /// while another launcher holds it.
    pub fn file(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the cache {}: run as root or set P2PNVME_CACHE to a writable directory",
                dir.display()
            )
        })?;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))?;
        Ok(CacheLock { _lock: lock })
    }
}

/// Returns the cached image, building the root filesystem and image first if
/// their inputs changed (or `force`).
pub fn ensure(force: bool) -> Result<Image> {
    let src = paths::source_root().join("images");
    let rootfs_script = src.join("rootfs.sh");
    let image_script = src.join("initramfs.sh");
    let init = src.join("init");
    let host_helper = src.join("p2pnvme-host");
    let rootfs_key = key_of(&[("rootfs.sh", &read(&rootfs_script)?)]);
    let image_key = key_of(&[
        ("rootfs", rootfs_key.as_bytes()),
        ("initramfs.sh", &read(&image_script)?),
        ("init", &read(&init)?),
        ("p2pnvme-host", &read(&host_helper)?),
    ]);
    let cache = paths::cache_root();
    let rootfs = cache.join(format!("rootfs-{rootfs_key}"));
    let dir = cache.join(format!("image-{image_key}"));

    if force || !dir.join("kernel-version").exists() || !rootfs.join("usr/bin").exists() {
        let _lock = CacheLock::take()?;
        if force || !rootfs.join("usr/bin/qemu-system-x86_64").exists() {
            build_step("root filesystem", &rootfs, |tmp| {
                ensure_host_tool("mmdebstrap", "mmdebstrap")?;
                run_script(Command::new("bash").arg(&rootfs_script).arg(tmp))
            })?;
        }
        if force || !dir.join("kernel-version").exists() {
            build_step("guest image", &dir, |tmp| {
                run_script(
                    Command::new("bash")
                        .arg(&image_script)
                        .arg(&rootfs)
                        .arg(&src)
                        .arg(tmp),
                )
            })?;
        }
    }
    let kernel_version = fs::read_to_string(dir.join("kernel-version"))?
        .trim()
        .to_string();
    Ok(Image {
        rootfs,
        dir,
        kernel_version,
        key: image_key,
    })
}

/// Builds into a temporary sibling and renames it into place, so an
/// interrupted build never looks complete.
fn build_step(what: &str, dst: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    require_root(what)?;
    let tmp = dst.with_extension("partial");
    remove_tree(&tmp)?;
    remove_tree(dst)?;
    eprintln!("p2pnvme: building {what} into {}", dst.display());
    let t = Instant::now();
    build(&tmp).with_context(|| format!("building the {what} failed"))?;
    fs::rename(&tmp, dst)?;
    eprintln!(
        "p2pnvme: {what} built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn remove_tree(p: &Path) -> Result<()> {
    if p.exists() {
        fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    if !geteuid().is_root() {
        bail!("building the {what} needs root (it runs mmdebstrap and chroot): run 'sudo p2pnvme image build' once");
    }
    Ok(())
}

fn run_script(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().context("starting bash")?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}

/// Installs a missing host tool from the host's own (bookworm) archive.
pub fn ensure_host_tool(binary: &str, package: &str) -> Result<()> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {binary}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Ok(());
    }
    eprintln!("p2pnvme: installing {package} from the host's Debian archive");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}"
        ))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("could not install {package}: run 'apt-get install {package}' (needs root and the Debian mirror)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_launcher_waits_for_the_cache_lock_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/k.lock");
        let first = CacheLock::file(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let _second = CacheLock::file(&p).unwrap();
            tx.send(()).unwrap();
        });
        let wait = std::time::Duration::from_millis(300);
        assert!(rx.recv_timeout(wait).is_err(), "the lock was taken twice");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the second took the lock once the first let go");
        t.join().unwrap();
    }

    #[test]
    fn key_changes_with_any_input() {
        let a = key_of(&[("x", b"1"), ("y", b"2")]);
        assert_eq!(a, key_of(&[("x", b"1"), ("y", b"2")]));
        assert_ne!(a, key_of(&[("x", b"1"), ("y", b"3")]));
        // Boundaries matter: moving a byte between parts is a different input.
        assert_ne!(
            key_of(&[("x", b"12"), ("y", b"")]),
            key_of(&[("x", b"1"), ("y", b"2")])
        );
        assert_eq!(a.len(), 16);
    }
}
