//! Builds and caches the minimal guest kernel: Debian's linux-source (the
//! same version as the packaged guest kernel) configured with the project's
//! fragment (images/kernel/p2pnvme.config on tinyconfig), built in the root
//! filesystem by images/kernel/build.sh.
//!
//! The result is a kernel build tree (arch/x86/boot/bzImage, .config,
//! include/config/kernel.release, Module.symvers, what external modules build
//! against) under the cache, keyed by the source version, the fragments and
//! the build script: a changed input rebuilds, an unchanged one is a no-op.

use crate::image::{key_of, CacheLock};
use crate::options::{GuestKernelChoice, VmOptions};
use crate::paths;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Which configuration to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFlavor {
    /// Adds images/kernel/p2pnvme-debug.config (KASAN, lockdep, kmemleak,
    /// fault injection, tracing, debug info): `--guest-kernel debug`.
    pub debug: bool,
}

/// The installed linux-source package's version, read from the root
/// filesystem's dpkg database (no chroot, no root needed on a cache hit).
pub fn source_version(rootfs: &Path) -> Result<String> {
    let status = rootfs.join("var/lib/dpkg/status");
    let text =
        fs::read_to_string(&status).with_context(|| format!("reading {}", status.display()))?;
    linux_source_version(&text).with_context(|| {
        format!(
            "the root filesystem {} has no linux-source package installed: rebuild it with 'p2pnvme image build --force'",
            rootfs.display()
        )
    })
}

/// `Package: linux-source-X.Y` stanza's version, if installed.
fn linux_source_version(dpkg_status: &str) -> Option<String> {
    dpkg_status.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
        };
        let pkg = field("Package:")?;
        let installed = field("Status:")? == "install ok installed";
        (pkg.starts_with("linux-source-") && installed)
            .then(|| format!("{pkg} {}", field("Version:").unwrap_or("?")))
    })
}

/// The cache directory the tree for `flavor` lives in (built or not).
pub fn tree_dir(rootfs: &Path, flavor: KernelFlavor) -> Result<PathBuf> {
    let src = paths::source_root().join("images/kernel");
    let read = |name: &str| {
        let p = src.join(name);
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let mut parts: Vec<(&str, Vec<u8>)> = vec![
        ("linux-source", source_version(rootfs)?.into_bytes()),
        ("build.sh", read("build.sh")?),
        ("p2pnvme.config", read("p2pnvme.config")?),
    ];
    if flavor.debug {
        parts.push(("p2pnvme-debug.config", read("p2pnvme-debug.config")?));
    }
    let borrowed: Vec<(&str, &[u8])> = parts.iter().map(|(l, d)| (*l, d.as_slice())).collect();
    Ok(paths::cache_root().join(format!("kernel-{}", key_of(&borrowed))))
}

/// Returns the minimal kernel's build tree, building it first when its inputs
/// changed. `progress` receives the build's condensed progress lines.
pub fn ensure_minimal(
    rootfs: &Path,
    flavor: KernelFlavor,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let tree = tree_dir(rootfs, flavor)?;
    if is_complete(&tree) {
        return Ok(tree);
    }
    // Its own lock: image builds and runs need not wait for a kernel build.
    let _lock = CacheLock::file(&tree.with_extension("lock"))?;
    if is_complete(&tree) {
        return Ok(tree); // another launcher built it while we waited
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("building the minimal kernel needs root (it runs chroot): run 'sudo p2pnvme image build --guest-kernel minimal' once");
    }
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let t = Instant::now();
    run_build(rootfs, &tree, flavor, progress)?;
    progress(&format!(
        "[kernel] built in {:.0} s: {}",
        t.elapsed().as_secs_f64(),
        tree.display()
    ));
    Ok(tree)
}

/// Turns the guest kernel choice into `--kernel`: `--guest-kernel minimal`
/// becomes `--kernel <the cached minimal tree>` (built first, with progress,
/// when missing), so it boots through the same checks, module staging and
/// p2pcopy build as any `--kernel` tree. With neither `--guest-kernel` nor
/// `--kernel` the minimal kernel is the default when it is built; until then
/// Debian's boots, with a one-line notice (a 15-minute build on first use is
/// asked for, never implied). `debian` and `--kernel` are left as they are.
/// `P2PNVME_GUEST_KERNEL=minimal|debian` stands for a `--guest-kernel` that
/// was not given (with neither option), e.g. to run a test suite on both.
pub fn pick(mut opts: VmOptions, rootfs: &Path) -> Result<VmOptions> {
    if opts.guest_kernel.is_none() && opts.kernel.is_none() {
        opts.guest_kernel = env_default()?;
    }
    opts = root_kernel(opts)?;
    choose(
        opts,
        || built_tree(rootfs, KernelFlavor { debug: false }),
        |flavor| ensure_minimal(rootfs, flavor, &mut |l| log::info!("{l}")),
    )
}

/// `--root full|DIR` without a kernel choice boots Debian's kernel: its
/// modules (null_blk, scsi_debug, ...) are what a full userland's test
/// suites expect. The minimal and debug kernels run it when named.
fn root_kernel(mut opts: VmOptions) -> Result<VmOptions> {
    if opts.root != crate::vm::Root::Busybox && opts.kernel.is_none() && opts.guest_kernel.is_none()
    {
        log::info!(
            "--root: booting Debian's guest kernel (--guest-kernel minimal|debug to change)"
        );
        opts.guest_kernel = Some(GuestKernelChoice::Debian);
    }
    Ok(opts)
}

/// The environment variable that picks the default guest kernel.
pub const GUEST_KERNEL_ENV: &str = "P2PNVME_GUEST_KERNEL";

/// The guest kernel `P2PNVME_GUEST_KERNEL` picks, if set.
pub fn env_default() -> Result<Option<GuestKernelChoice>> {
    env_choice(std::env::var(GUEST_KERNEL_ENV).ok().as_deref())
}

/// `P2PNVME_GUEST_KERNEL`'s value as a choice (unset or empty: none).
fn env_choice(v: Option<&str>) -> Result<Option<GuestKernelChoice>> {
    use clap::ValueEnum;
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => GuestKernelChoice::from_str(s, true).map(Some).map_err(|_| {
            anyhow::anyhow!(
                "{GUEST_KERNEL_ENV}={s}: set it to minimal, debug or debian, or unset it"
            )
        }),
    }
}

/// `pick` with the cache lookup and the build passed in.
fn choose(
    mut opts: VmOptions,
    built: impl FnOnce() -> Result<Option<PathBuf>>,
    build: impl FnOnce(KernelFlavor) -> Result<PathBuf>,
) -> Result<VmOptions> {
    match (opts.guest_kernel, &opts.kernel) {
        (Some(choice @ (GuestKernelChoice::Minimal | GuestKernelChoice::Debug)), _) => {
            let debug = choice == GuestKernelChoice::Debug;
            opts.kernel = Some(build(KernelFlavor { debug })?);
            // Resolved into --kernel: the result validates again (the KVM
            // probe boots a copy of these options).
            opts.guest_kernel = None;
        }
        (None, None) => match built() {
            Ok(Some(tree)) => opts.kernel = Some(tree),
            Ok(None) => log::info!(
                "booting Debian's guest kernel: the minimal one (the default) is not built yet; 'p2pnvme image build --guest-kernel minimal' builds it once (~15 min)"
            ),
            Err(e) => log::info!(
                "booting Debian's guest kernel: the minimal one (the default) cannot be built here: {e:#}"
            ),
        },
        _ => {}
    }
    Ok(opts)
}

/// The minimal kernel's tree if it is built (no build, no lock).
pub fn built_tree(rootfs: &Path, flavor: KernelFlavor) -> Result<Option<PathBuf>> {
    let tree = tree_dir(rootfs, flavor)?;
    Ok(is_complete(&tree).then_some(tree))
}

/// build.sh moves the tree into place only after a successful build.
fn is_complete(tree: &Path) -> bool {
    tree.join("arch/x86/boot/bzImage").is_file() && tree.join("Module.symvers").is_file()
}

fn run_build(
    rootfs: &Path,
    tree: &Path,
    flavor: KernelFlavor,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let script = paths::source_root().join("images/kernel/build.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if flavor.debug {
        cmd.arg("--debug");
    }
    let mut child = cmd
        .arg(rootfs)
        .arg(tree)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Drain stderr on its own thread so a chatty failure cannot block stdout.
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        progress(&line?);
    }
    let status = child.wait()?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        // build.sh's last line is the one-line error naming its log file.
        let last = errors.lines().rev().find(|l| !l.trim().is_empty());
        bail!(
            "{}",
            last.map(|l| l.trim_start_matches("error: ").to_string())
                .unwrap_or_else(|| format!(
                    "kernel build exited with {status}; see {}.log",
                    tree.display()
                ))
        );
    }
    if !is_complete(tree) {
        bail!(
            "kernel build finished without {}/arch/x86/boot/bzImage; see {}.log",
            tree.display(),
            tree.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: linux-headers-7.3.4+deb13-amd64\nStatus: install ok installed\nVersion: 7.3.4-1~bpo13+1\n\n\
Package: linux-source-7.3\nStatus: deinstall ok config-files\nVersion: 7.3.1-1\n\n\
Package: linux-source-7.3\nStatus: install ok installed\nPriority: optional\nVersion: 7.3.4-1~bpo13+1\n";

    #[test]
    fn source_version_is_the_installed_linux_source_stanza() {
        assert_eq!(
            linux_source_version(STATUS).as_deref(),
            Some("linux-source-7.3 7.3.4-1~bpo13+1")
        );
    }

    #[test]
    fn missing_linux_source_is_reported() {
        assert_eq!(
            linux_source_version(&STATUS[..STATUS.find("\n\n").unwrap()]),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        fs::write(dir.path().join("var/lib/dpkg/status"), "Package: x\n").unwrap();
        let e = source_version(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no linux-source package"), "{e}");
    }

    #[test]
    fn failed_build_is_one_line_naming_the_log() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/src")).unwrap();
        fs::write(
            root.path().join("usr/src/linux-source-7.3.tar.xz"),
            b"not xz",
        )
        .unwrap();
        let tree = root.path().join("kernel-x");
        let mut lines = vec![];
        let e = run_build(
            root.path(),
            &tree,
            KernelFlavor { debug: false },
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap_err()
        .to_string();
        let log = format!("{}.log", tree.display());
        assert!(e.contains(&log) && e.contains("unpack"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(Path::new(&log).is_file());
        assert!(!tree.exists());
        assert_eq!(lines[0], "[kernel] unpacking linux-source-7.3.tar.xz");
    }

    fn opts(kernel: Option<&str>, guest_kernel: Option<GuestKernelChoice>) -> VmOptions {
        VmOptions {
            kernel: kernel.map(PathBuf::from),
            guest_kernel,
            ..VmOptions::default()
        }
    }

    fn never_built() -> Result<Option<PathBuf>> {
        panic!("the cache was looked up")
    }

    fn never_build(_: KernelFlavor) -> Result<PathBuf> {
        panic!("a kernel build started")
    }

    /// `--guest-kernel minimal` named, nothing cached: what `build` makes of it.
    fn minimal_named(build: impl FnOnce() -> Result<PathBuf>) -> Result<VmOptions> {
        choose(
            opts(None, Some(GuestKernelChoice::Minimal)),
            never_built,
            |flavor| {
                assert!(!flavor.debug);
                build()
            },
        )
    }

    #[test]
    fn guest_kernel_debug_builds_the_debug_flavor_into_kernel() {
        let o = choose(
            opts(None, Some(GuestKernelChoice::Debug)),
            never_built,
            |flavor| {
                assert!(flavor.debug, "the debug fragment is built in");
                Ok("/c/kernel-debug".into())
            },
        )
        .unwrap();
        assert_eq!(o.kernel, Some(PathBuf::from("/c/kernel-debug")));
        assert_eq!(o.guest_kernel, None);
        assert_eq!(
            env_choice(Some("debug")).unwrap(),
            Some(GuestKernelChoice::Debug)
        );
    }

    #[test]
    fn default_boots_the_minimal_kernel_when_it_is_built() {
        let o = choose(
            opts(None, None),
            || Ok(Some("/c/kernel-k".into())),
            never_build,
        )
        .unwrap();
        assert_eq!(o.kernel, Some(PathBuf::from("/c/kernel-k")));
    }

    #[test]
    fn default_falls_back_to_debian_without_building_when_the_minimal_kernel_is_missing() {
        let o = choose(opts(None, None), || Ok(None), never_build).unwrap();
        assert_eq!(o.kernel, None, "the image's Debian kernel boots");
        let o = choose(
            opts(None, None),
            || bail!("no linux-source package installed"),
            never_build,
        )
        .unwrap();
        assert_eq!(
            o.kernel, None,
            "a root filesystem without linux-source boots Debian's"
        );
    }

    #[test]
    fn the_environment_picks_the_default_guest_kernel_and_a_bad_value_is_one_line() {
        assert_eq!(env_choice(None).unwrap(), None);
        assert_eq!(env_choice(Some("")).unwrap(), None);
        assert_eq!(
            env_choice(Some("debian")).unwrap(),
            Some(GuestKernelChoice::Debian)
        );
        assert_eq!(
            env_choice(Some("Minimal")).unwrap(),
            Some(GuestKernelChoice::Minimal)
        );
        let e = env_choice(Some("mainline")).unwrap_err().to_string();
        assert!(e.contains("P2PNVME_GUEST_KERNEL=mainline"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn guest_kernel_minimal_builds_when_missing() {
        let o = minimal_named(|| Ok("/c/kernel-new".into())).unwrap();
        assert_eq!(o.kernel, Some(PathBuf::from("/c/kernel-new")));
        let e = minimal_named(|| bail!("kernel build failed; see /c/kernel-new.log")).unwrap_err();
        assert!(e.to_string().contains(".log"), "{e}");
    }

    #[test]
    fn picked_minimal_kernel_validates_again_for_the_kvm_probe() {
        let o = minimal_named(|| Ok("/c/kernel-k".into())).unwrap();
        assert_eq!(o.guest_kernel, None);
        o.validate().unwrap();
    }

    #[test]
    fn guest_kernel_debian_and_kernel_path_skip_the_minimal_kernel() {
        let o = choose(
            opts(None, Some(GuestKernelChoice::Debian)),
            never_built,
            never_build,
        )
        .unwrap();
        assert_eq!(o.kernel, None);
        let o = choose(opts(Some("/my/tree"), None), never_built, never_build).unwrap();
        assert_eq!(o.kernel, Some(PathBuf::from("/my/tree")));
    }

    #[test]
    fn incomplete_tree_is_not_a_cache_hit() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_complete(dir.path()));
        fs::create_dir_all(dir.path().join("arch/x86/boot")).unwrap();
        fs::write(dir.path().join("arch/x86/boot/bzImage"), b"x").unwrap();
        assert!(!is_complete(dir.path()));
        fs::write(dir.path().join("Module.symvers"), b"").unwrap();
        assert!(is_complete(dir.path()));
    }
}
