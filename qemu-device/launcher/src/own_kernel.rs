//! `--kernel DIR --build`: configures and builds the user's kernel source
//! tree out of tree (`make O=`) inside the root filesystem (chroot, through
//! kbuild), then boots the build directory as a `--kernel` tree.
//!
//! Promises: the source tree is never written (it must be clean: no in-tree
//! `.config`); the build directory is `<cache>/kernel-own-<key of DIR's
//! path>`, kept between runs, so a second build only recompiles what
//! changed (and says when nothing did); a `.config` already there (the
//! user's own, e.g. from `make O=... menuconfig`) is kept and gets
//! [`kconfig::fragment`] merged in; a first build starts from tinyconfig +
//! images/kernel/p2pnvme.config (the minimal kernel's configuration). A
//! configuration that still lacks a required option (Kconfig dropped it for
//! a missing dependency) is refused in one line naming it, before compiling.

use crate::exit;
use crate::image::{key_of, CacheLock};
use crate::kbuild::{self, Mount};
use crate::kconfig;
use crate::options::VmOptions;
use crate::paths;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// With `--build`, builds `--kernel DIR` and points `--kernel` at the build
/// directory; otherwise returns the options unchanged.
pub fn build_if_asked(mut opts: VmOptions, rootfs: &Path) -> Result<VmOptions> {
    if !opts.build {
        return Ok(opts);
    }
    let Some(src) = opts.kernel.clone() else {
        bail!("--build builds a kernel source tree: add --kernel DIR");
    };
    opts.kernel = Some(build(&src, rootfs, &mut |l| log::info!("{l}"))?);
    opts.build = false;
    Ok(opts)
}

fn refuse(msg: String) -> anyhow::Error {
    exit::with(exit::REFUSED, msg)
}

/// The build directory of the source tree `src` (canonical path).
pub fn build_dir(src: &Path) -> PathBuf {
    let key = key_of(&[("source", src.as_os_str().as_encoded_bytes())]);
    paths::cache_root().join(format!("kernel-own-{key}"))
}

/// Configures and builds `src` into its build directory; returns that
/// directory. `progress` gets condensed progress lines.
pub fn build(src: &Path, rootfs: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let src = fs::canonicalize(src).map_err(|e| {
        refuse(format!(
            "--kernel {} --build: cannot read it ({e}): give a kernel source tree",
            src.display()
        ))
    })?;
    check_source(&src)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("--kernel DIR --build runs the build in the root filesystem with chroot: run it as root");
    }
    let out = build_dir(&src);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = CacheLock::file(&out.with_extension("lock"))?;
    let log_path = out.with_extension("log");
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let first = !out.join(".config").exists();
    let base = paths::source_root().join("images/kernel/p2pnvme.config");
    fs::copy(&base, out.join("p2pnvme-base.config"))
        .with_context(|| format!("reading {}", base.display()))?;
    fs::write(out.join("p2pnvme-needs.config"), kconfig::fragment())?;
    let mounts = || {
        vec![
            Mount::new(&src, "ksrc", rootfs),
            Mount::new(&out, "kout", rootfs),
        ]
    };
    let m = mounts();
    let (s, o) = (m[0].inside.clone(), m[1].inside.clone());
    let make = format!("make -C {s} O={o} ARCH=x86_64");
    let merge = format!("{s}/scripts/kconfig/merge_config.sh -m -O {o} {o}/.config");
    progress(&format!(
        "[kernel] configuring {} in {}: {}",
        src.display(),
        out.display(),
        if first {
            "tinyconfig + p2pnvme.config + the guest's needs (first build)"
        } else {
            "its .config + the guest's needs"
        }
    ));
    let base_step = if first {
        format!("{make} tinyconfig && {merge} {o}/p2pnvme-base.config && ")
    } else {
        String::new()
    };
    // An unchanged configuration keeps its time stamp: make then rebuilds
    // nothing.
    let configure = format!(
        "set -e; {base_step}cp -p {o}/.config {o}/.config.before; {merge} {o}/p2pnvme-needs.config; {make} olddefconfig; \
         if cmp -s {o}/.config {o}/.config.before; then touch -r {o}/.config.before {o}/.config; fi; rm -f {o}/.config.before"
    );
    let cfg_out = kbuild::run(rootfs, &m, &configure)?;
    log.write_all(&cfg_out.stdout)?;
    log.write_all(&cfg_out.stderr)?;
    if !cfg_out.status.success() {
        if first {
            let _ = fs::remove_file(out.join(".config"));
        }
        bail!(
            "configuring {} failed; see {}",
            src.display(),
            log_path.display()
        );
    }
    let config = fs::read_to_string(out.join(".config"))?;
    check_config(&src, &out, &config)?;
    let t = Instant::now();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "[kernel] compiling with make -j{jobs} bzImage modules (progress every 100 objects)"
    ));
    let mut steps = Steps::default();
    let (status, errors) = kbuild::run_lines(
        rootfs,
        &mounts(),
        &format!("{make} -j{jobs} bzImage modules 2>&1"),
        &mut |l| {
            let _ = writeln!(log, "{l}");
            if let Some(p) = steps.see(l) {
                progress(&p);
            }
        },
    )?;
    let _ = log.write_all(errors.as_bytes());
    if !status.success() {
        bail!(
            "building {} failed ({status}); see {}",
            src.display(),
            log_path.display()
        );
    }
    progress(&steps.summary(t.elapsed().as_secs_f64(), &out));
    Ok(out)
}

/// A source tree to build out of tree: kbuild refuses a tree with an
/// in-tree configuration or build.
fn check_source(src: &Path) -> Result<()> {
    if !src.join("Makefile").is_file() || !src.join("Kconfig").is_file() {
        return Err(refuse(format!(
            "--kernel {} --build: no Makefile and Kconfig there: give a kernel source tree",
            src.display()
        )));
    }
    if src.join(".config").exists() || src.join("include/config").exists() {
        return Err(refuse(format!(
            "--kernel {} --build builds out of tree, but the tree has an in-tree build (.config): run 'make mrproper' in it, or drop --build to boot that build",
            src.display()
        )));
    }
    Ok(())
}

/// The configuration after the fragment was merged has every required
/// option, or one line names what is missing.
fn check_config(src: &Path, out: &Path, config: &str) -> Result<()> {
    let missing = kconfig::missing_options(&kconfig::parse_config(config));
    if missing.is_empty() {
        return Ok(());
    }
    Err(refuse(format!(
        "--kernel {} --build: the configuration {}/.config lacks {} even with p2pnvme's fragment merged (Kconfig turned it off: a dependency is off); enable it with 'make -C {} O={} menuconfig'",
        src.display(),
        out.display(),
        missing.join(", "),
        src.display(),
        out.display()
    )))
}

/// Counts what make compiled and linked, for progress lines.
#[derive(Default)]
struct Steps {
    compiled: usize,
    linked: usize,
}

impl Steps {
    /// Takes one line of make's output; returns a progress line now and then.
    fn see(&mut self, line: &str) -> Option<String> {
        let mut w = line.split_whitespace();
        let (step, what) = (w.next()?, w.next().unwrap_or(""));
        match step {
            "CC" | "AS" => {
                self.compiled += 1;
                self.compiled
                    .is_multiple_of(100)
                    .then(|| format!("[kernel] {step} {what} ({} objects)", self.compiled))
            }
            "LD" | "AR" | "OBJCOPY" => {
                self.linked += 1;
                (what == "vmlinux").then(|| "[kernel] LD vmlinux".to_string())
            }
            "BUILD" => Some(format!("[kernel] BUILD {what}")),
            _ => None,
        }
    }

    /// The closing line: what was rebuilt, or that nothing was.
    fn summary(&self, secs: f64, out: &Path) -> String {
        if self.compiled == 0 && self.linked == 0 {
            format!(
                "[kernel] up to date: nothing to rebuild ({secs:.1} s): {}",
                out.display()
            )
        } else {
            format!(
                "[kernel] built in {secs:.0} s ({} objects compiled, {} linked): {}",
                self.compiled,
                self.linked,
                out.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_lacking_a_required_option_is_named_in_one_line() {
        let full = parse_all_required();
        check_config(Path::new("/src"), Path::new("/out"), &full).unwrap();
        let lacking = full.replace("CONFIG_PCI_P2PDMA=y\n", "# CONFIG_PCI_P2PDMA is not set\n");
        let e = check_config(Path::new("/src"), Path::new("/out"), &lacking)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks CONFIG_PCI_P2PDMA "), "{e}");
        assert!(e.contains("O=/out menuconfig"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    fn parse_all_required() -> String {
        kconfig::REQUIRED
            .iter()
            .map(|(o, _)| format!("CONFIG_{o}=y\n"))
            .collect()
    }

    #[test]
    fn a_tree_with_an_in_tree_build_is_refused_before_anything_runs() {
        let d = tempfile::tempdir().unwrap();
        let e = check_source(d.path()).unwrap_err().to_string();
        assert!(e.contains("give a kernel source tree"), "{e}");
        fs::write(d.path().join("Makefile"), "").unwrap();
        fs::write(d.path().join("Kconfig"), "").unwrap();
        check_source(d.path()).unwrap();
        fs::write(d.path().join(".config"), "").unwrap();
        let e = check_source(d.path()).unwrap_err().to_string();
        assert!(e.contains("make mrproper"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn progress_counts_compiled_objects_and_says_when_nothing_was_rebuilt() {
        let mut s = Steps::default();
        for l in [
            "  CALL    scripts/checksyscalls.sh",
            "  DESCEND objtool",
            "Kernel: arch/x86/boot/bzImage is ready  (#1)",
        ] {
            assert_eq!(s.see(l), None);
        }
        assert!(s
            .summary(1.0, Path::new("/o"))
            .contains("nothing to rebuild"));
        let mut lines = vec![];
        for i in 0..200 {
            lines.extend(s.see(&format!("  CC      kernel/f{i}.o")));
        }
        lines.extend(s.see("  LD      vmlinux"));
        assert_eq!(
            lines,
            [
                "[kernel] CC kernel/f99.o (100 objects)",
                "[kernel] CC kernel/f199.o (200 objects)",
                "[kernel] LD vmlinux"
            ]
        );
        assert!(s
            .summary(3.0, Path::new("/o"))
            .contains("200 objects compiled"));
    }
}
