//! Per-run initramfs overlay: the project's guest module, the p2pcopy CLI and
//! guest-side test scripts, appended to the cached base image as a second
//! cpio archive (the kernel unpacks concatenated archives in order).

use crate::cpio::CpioWriter;
use crate::image::{key_of, CacheLock, Image};
use crate::kbuild;
use crate::kernel::GuestKernel;
use crate::paths;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files every guest gets in addition to the base image.
struct Overlay {
    files: Vec<(String, u32, Vec<u8>)>,
}

impl Overlay {
    fn add(&mut self, guest_path: String, mode: u32, data: Vec<u8>) {
        self.files.push((guest_path, mode, data));
    }

    fn add_tree(&mut self, host_dir: &Path, guest_dir: &str) -> Result<()> {
        if !host_dir.is_dir() {
            return Ok(());
        }
        for (rel, p) in files_below(host_dir)? {
            let mode = if is_executable(&p) { 0o755 } else { 0o644 };
            self.add(format!("{guest_dir}/{rel}"), mode, fs::read(&p)?);
        }
        Ok(())
    }

    fn write(self, out: &Path) -> Result<()> {
        let mut w = CpioWriter::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for (p, _, _) in &self.files {
            let mut acc = String::new();
            for part in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                dirs.insert(acc.clone());
            }
        }
        for d in dirs {
            w.dir(&d)?;
        }
        for (p, mode, data) in &self.files {
            w.file(p, *mode, data)?;
        }
        fs::write(out, w.finish()?)?;
        Ok(())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Builds `run_dir/initrd.img` = base image + overlay.
/// The user's `--module` files go below `modcheck::GUEST_DIR`.
pub fn guest_initrd(
    image: &Image,
    kernel: &GuestKernel,
    run_dir: &Path,
    with_driver: bool,
    user_modules: &[PathBuf],
) -> Result<PathBuf> {
    let src = paths::source_root();
    let mut ov = Overlay { files: vec![] };
    if let Some(staged) = &kernel.modules {
        ov.add_tree(staged, "")?;
    }
    // Where tools look for the running kernel's options (blktests'
    // _have_kernel_option, ...): a --kernel's configuration.
    if let Some(config) = &kernel.config {
        ov.add(
            format!("boot/config-{}", kernel.release),
            0o644,
            config.clone().into_bytes(),
        );
    }
    if with_driver {
        if let Some(ko) = guest_module(image, kernel, &src.join("guest-driver/module"))? {
            crate::modcheck::check(&ko, &kernel.release)?;
            ov.add(
                format!("lib/modules/{}/extra/p2pcopy.ko", kernel.release),
                0o644,
                fs::read(ko)?,
            );
        }
        if let Some(cli) = guest_cli(&src)? {
            ov.add("usr/bin/p2pcopy".into(), 0o755, fs::read(cli)?);
        }
    }
    for (i, ko) in user_modules.iter().enumerate() {
        ov.add(crate::modcheck::guest_path(i, ko), 0o644, fs::read(ko)?);
    }
    ov.add_tree(&src.join("guest-driver/tests"), "opt/p2pnvme/tests")?;
    ov.add_tree(&src.join("ci/guest"), "opt/p2pnvme/ci")?;
    // Sourced by the init for --root full|DIR.
    ov.add(
        "opt/p2pnvme/root.sh".into(),
        0o644,
        fs::read(src.join("images/guest-root.sh"))?,
    );
    let overlay = run_dir.join("overlay.cpio");
    ov.write(&overlay)?;

    let initrd = run_dir.join("initrd.img");
    let mut parts = vec![image.initramfs()];
    if wants_image_modules(image, kernel) {
        parts.push(image.modules_archive());
    }
    parts.push(overlay);
    concat_archives(&parts, &initrd)?;
    Ok(initrd)
}

/// Whether the guest needs the image kernel's modules: it boots a kernel of
/// that release that brings no modules of its own (the image's kernel).
fn wants_image_modules(image: &Image, kernel: &GuestKernel) -> bool {
    kernel.release == image.kernel_version && kernel.modules.is_none()
}

/// Writes the cpio archives one after the other into `out`, as the kernel
/// reads them: each next archive at a 4-byte aligned offset (it skips zero
/// bytes before one).
fn concat_archives(parts: &[PathBuf], out: &Path) -> Result<()> {
    let mut f = fs::File::create(out)?;
    let mut len = 0u64;
    for p in parts {
        let pad = ((4 - len % 4) % 4) as usize;
        f.write_all(&[0u8; 3][..pad])?;
        let mut part = fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
        len += pad as u64 + std::io::copy(&mut part, &mut f)?;
    }
    Ok(())
}

/// Builds p2pcopy.ko against the guest kernel's headers inside the root
/// filesystem (or against a --kernel tree); cached by the module sources
/// and the kernel (its release and .config).
fn guest_module(image: &Image, kernel: &GuestKernel, module_src: &Path) -> Result<Option<PathBuf>> {
    if !module_src.join("Makefile").exists() {
        return Ok(None);
    }
    let inputs = module_sources(module_src)?;
    let Some((kdir, mounts)) = kernel.kbuild_dir() else {
        log::warn!("--kernel is a bare bzImage: the guest gets no p2pcopy module (give the kernel's build tree)");
        return Ok(None);
    };
    let kernel_key = kernel.key().to_string();
    let mut parts: Vec<(&str, &[u8])> = vec![("kernel", kernel_key.as_bytes())];
    parts.extend(inputs.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    let dir = paths::cache_root().join(format!("module-{}", key_of(&parts)));
    let ko = dir.join("p2pcopy.ko");
    if ko.exists() {
        return Ok(Some(ko));
    }
    let _lock = CacheLock::take()?;
    let build = dir.join("build");
    let _ = fs::remove_dir_all(&build);
    for (name, data) in &inputs {
        let p = build.join(name);
        fs::create_dir_all(p.parent().unwrap())?;
        fs::write(p, data)?;
    }
    log::info!("building guest module p2pcopy.ko for {}", kernel.release);
    let built = kbuild::module(&image.rootfs, &kdir, &build, mounts).map_err(|e| {
        let _ = fs::remove_dir_all(&build);
        anyhow::anyhow!("{e:#}\n(pass --no-guest-driver to boot without the project's module)")
    })?;
    let src_ko = built
        .iter()
        .find(|k| k.file_name().is_some_and(|n| n == "p2pcopy.ko"))
        .context("make did not produce p2pcopy.ko")?;
    fs::copy(src_ko, &ko)?;
    let _ = fs::remove_dir_all(&build);
    Ok(Some(ko))
}

/// Files below `dir`, recursively, in a stable order, with paths relative to it.
fn files_below(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.push((rel, p));
            }
        }
        Ok(())
    }
    let mut out = vec![];
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// The inputs of the module build (its cache key).
fn module_sources(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = vec![];
    for (rel, p) in files_below(dir)? {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name == "Makefile" || name == "Kbuild" || name.ends_with(".c") || name.ends_with(".h") {
            out.push((rel, fs::read(&p)?));
        }
    }
    Ok(out)
}

/// Builds the p2pcopy CLI as a static binary for the guest.
fn guest_cli(src: &Path) -> Result<Option<PathBuf>> {
    if !src.join("guest-driver/cli/Cargo.toml").exists() {
        return Ok(None);
    }
    let target_dir = src.join("target/guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(src)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "p2pcopy",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Without debug info it is a tenth the size: every boot unpacks
        // it from the initrd (under TCG, ~0.2 s for 11 MB).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .status()
        .context("running cargo to build the guest CLI p2pcopy")?;
    if !status.success() {
        bail!("building the guest CLI p2pcopy failed (pass --no-guest-driver to boot without it)");
    }
    Ok(Some(
        target_dir.join("x86_64-unknown-linux-gnu/release/p2pcopy"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path) -> Image {
        Image {
            rootfs: dir.join("rootfs"),
            dir: dir.to_path_buf(),
            kernel_version: "7.3.4+deb13-amd64".into(),
            key: "k".into(),
        }
    }

    #[test]
    fn only_the_images_own_kernel_gets_the_images_modules() {
        let d = tempfile::tempdir().unwrap();
        let img = image(d.path());
        let mut k = GuestKernel::of_image(&img);
        assert!(wants_image_modules(&img, &k));
        // A kernel tree of the same release brings its own.
        k.modules = Some(d.path().join("staged"));
        assert!(!wants_image_modules(&img, &k));
        // Another release (the minimal kernel) has no use for them.
        k.modules = None;
        k.release = "7.3.4-p2pnvme".into();
        assert!(!wants_image_modules(&img, &k));
    }

    #[test]
    fn each_concatenated_archive_starts_at_a_4_byte_aligned_offset() {
        let d = tempfile::tempdir().unwrap();
        let parts: Vec<PathBuf> = [&b"abcde"[..], b"fgh", b"ijkl"]
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let p = d.path().join(format!("{i}.cpio"));
                fs::write(&p, data).unwrap();
                p
            })
            .collect();
        let out = d.path().join("initrd.img");
        concat_archives(&parts, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"abcde\0\0\0fgh\0ijkl");
    }
}
