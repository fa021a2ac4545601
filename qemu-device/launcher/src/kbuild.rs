//! Runs kernel builds (out-of-tree modules, `modules_install`) inside the
//! root filesystem with chroot, with host folders bind-mounted into it in a
//! private mount namespace, so no mount outlives the build.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

/// A host folder visible inside the root filesystem during one build.
pub struct Mount {
    /// The host folder.
    pub host: PathBuf,
    /// Its path inside the root filesystem (absolute, below /tmp).
    pub inside: String,
}

impl Mount {
    /// `host` at the same absolute path inside the root filesystem, so the
    /// absolute paths a kernel build records (KBUILD_OUTPUT, source paths)
    /// and the compiler's messages stay true; below /tmp when that path is
    /// taken inside the root filesystem.
    pub fn new(host: &Path, what: &str, rootfs: &Path) -> Mount {
        let same = host.display().to_string();
        let inside_host = rootfs.join(same.trim_start_matches('/'));
        let free = host.is_absolute()
            && !host.starts_with(rootfs)
            && host.components().count() > 2
            && fs::read_dir(&inside_host).map_or(true, |mut d| d.next().is_none());
        let inside = if free {
            same
        } else {
            let key = crate::image::key_of(&[("path", same.as_bytes())]);
            format!("/tmp/p2pnvme-{what}-{key}")
        };
        Mount {
            host: host.to_path_buf(),
            inside,
        }
    }
}

/// Runs `script` with sh inside `rootfs` (as root), with `mounts` bound in
/// and /proc mounted (objtool needs it).
pub fn run(rootfs: &Path, mounts: &[Mount], script: &str) -> Result<Output> {
    one_at_a_time(rootfs, mounts, || {
        command(rootfs, mounts, script)?
            .output()
            .context("running unshare/chroot for a kernel build (needs root)")
    })
}

/// Runs `build` holding the root filesystem's build lock, then removes the
/// mount points it made. One build at a time per root filesystem: builds
/// share mount points (a kernel tree sits at its own absolute path inside),
/// and removing one's empty mount point after a build would detach the
/// mount another build still uses in its namespace (parallel guests,
/// `p2pnvme test`).
fn one_at_a_time<T>(
    rootfs: &Path,
    mounts: &[Mount],
    build: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let _lock = crate::image::CacheLock::file(&rootfs.with_extension("kbuild.lock"))?;
    let out = build();
    for m in mounts {
        remove_empty_dirs(rootfs, &m.inside);
    }
    out
}

/// `run`, with the script's stdout handed to `line` as it comes (a long
/// build's progress); returns its exit status and its stderr.
pub fn run_lines(
    rootfs: &Path,
    mounts: &[Mount],
    script: &str,
    line: &mut dyn FnMut(&str),
) -> Result<(ExitStatus, String)> {
    one_at_a_time(rootfs, mounts, || {
        let mut child = command(rootfs, mounts, script)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running unshare/chroot for a kernel build (needs root)")?;
        let mut stderr = child.stderr.take().context("piped stderr")?;
        // Drained on its own thread so a chatty failure cannot block stdout.
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let stdout = child.stdout.take().context("piped stdout")?;
        for l in BufReader::new(stdout).split(b'\n') {
            line(&String::from_utf8_lossy(&l?));
        }
        let status = child.wait()?;
        Ok((status, errors.join().unwrap_or_default()))
    })
}

/// The unshare/chroot command that runs `script` (creates the mount points).
fn command(rootfs: &Path, mounts: &[Mount], script: &str) -> Result<Command> {
    let mut setup = String::from("set -e\n");
    for m in mounts {
        let point = rootfs.join(m.inside.trim_start_matches('/'));
        fs::create_dir_all(&point)
            .with_context(|| format!("creating {} (needs root)", point.display()))?;
        setup += &format!(
            "mount --bind '{}' '{}'\n",
            m.host.display(),
            point.display()
        );
    }
    setup += &format!(
        "exec chroot '{}' sh -c 'mount -t proc proc /proc && cd / && exec sh -c \"$1\"' sh \"$1\"\n",
        rootfs.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &setup,
        "sh",
        script,
    ]);
    Ok(cmd)
}

/// Removes the (empty) mount point `inside` and its empty parents that the
/// build created, up to the root filesystem's own folders.
fn remove_empty_dirs(rootfs: &Path, inside: &str) {
    let mut p = PathBuf::from(inside.trim_start_matches('/'));
    while p.components().count() > 1 && fs::remove_dir(rootfs.join(&p)).is_ok() {
        p.pop();
    }
}

/// Builds the out-of-tree module in `dir` (in place) against the kernel
/// build directory `kdir` (a path inside the root filesystem, or below one of
/// `extra` mounts); returns the `.ko` files, or the compiler's messages.
pub fn module(rootfs: &Path, kdir: &str, dir: &Path, extra: Vec<Mount>) -> Result<Vec<PathBuf>> {
    if !dir.join("Makefile").exists() && !dir.join("Kbuild").exists() {
        bail!(
            "{} has no Makefile or Kbuild: a module folder needs one (obj-m := NAME.o)",
            dir.display()
        );
    }
    let src = Mount::new(dir, "module", rootfs);
    let script = format!("make -C '{kdir}' M='{}' modules", src.inside);
    let inside = src.inside.clone();
    let mut mounts = extra;
    mounts.push(src);
    let out = run(rootfs, &mounts, &script)?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        return Err(crate::exit::with(
            crate::exit::REFUSED,
            format!(
                "the module in {} did not build; fix these errors:\n{}",
                dir.display(),
                text.replace(&inside, &dir.display().to_string())
            ),
        ));
    }
    let mut kos = vec![];
    collect_ko(dir, &mut kos)?;
    if kos.is_empty() {
        bail!(
            "make succeeded but left no .ko in {}: does the Makefile set obj-m?",
            dir.display()
        );
    }
    kos.sort();
    Ok(kos)
}

fn collect_ko(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect_ko(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "ko") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_keep_the_host_path_unless_the_root_filesystem_uses_it() {
        let root = tempfile::tempdir().unwrap();
        let rootfs = root.path().join("rootfs");
        fs::create_dir_all(rootfs.join("usr/src/busy/x")).unwrap();
        let m = Mount::new(Path::new("/home/dev/linux"), "kernel", &rootfs);
        assert_eq!(m.inside, "/home/dev/linux");
        // A folder the root filesystem already fills is never covered.
        let m = Mount::new(Path::new("/usr/src/busy"), "kernel", &rootfs);
        assert!(m.inside.starts_with("/tmp/p2pnvme-kernel-"), "{}", m.inside);
        // Nor the root filesystem itself, nor a top-level folder.
        let inner = rootfs.join("tmp/tree");
        assert!(Mount::new(&inner, "k", &rootfs)
            .inside
            .starts_with("/tmp/p2pnvme-k-"));
        assert!(Mount::new(Path::new("/usr"), "k", &rootfs)
            .inside
            .starts_with("/tmp/"));
    }

    #[test]
    fn only_the_empty_mount_point_folders_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("var/cache/apt")).unwrap();
        fs::create_dir_all(r.join("var/cache/p2pnvme/tree")).unwrap();
        remove_empty_dirs(r, "/var/cache/p2pnvme/tree");
        assert!(!r.join("var/cache/p2pnvme").exists());
        assert!(r.join("var/cache/apt").exists());
    }
}
