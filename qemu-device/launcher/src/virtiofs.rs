//! Shared folders: one virtiofsd (Debian's, from the root filesystem) per
//! `--share`, a vhost-user-fs device in QEMU, and a mount table the guest's
//! init reads from fw_cfg.

use crate::image::rootfs_command;
use crate::procs::Helper;
use crate::vm::Share;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where virtiofsd lives in the root filesystem.
const VIRTIOFSD: &str = "usr/libexec/virtiofsd";

/// Tag of share `i`.
pub fn tag(i: usize) -> String {
    format!("p2pshare{i}")
}

/// Tag of the guest's root (`--root full|DIR`).
pub const ROOT_TAG: &str = "p2proot";

/// Starts virtiofsd for `share` on `socket`, through the root filesystem's
/// own dynamic loader (like QEMU), and waits for its socket.
pub fn start(rootfs: &Path, share: &Share, socket: &Path, log: PathBuf) -> Result<Helper> {
    serve(rootfs, &share.host, false, socket, log)
}

/// Starts virtiofsd serving the guest's root directory `dir`, read-only
/// (the guest writes into a tmpfs overlay above it).
pub fn start_root(rootfs: &Path, dir: &Path, socket: &Path, log: PathBuf) -> Result<Helper> {
    serve(rootfs, dir, true, socket, log)
}

fn serve(rootfs: &Path, dir: &Path, readonly: bool, socket: &Path, log: PathBuf) -> Result<Helper> {
    let bin = rootfs.join(VIRTIOFSD);
    if !bin.exists() {
        bail!(
            "virtiofsd is missing from the root filesystem {}: rebuild it with 'p2pnvme image build --force'",
            rootfs.display()
        );
    }
    let mut cmd = rootfs_command(rootfs, &bin);
    cmd.arg("--shared-dir")
        .arg(dir)
        .arg("--socket-path")
        .arg(socket)
        // Root on the host: the guest's root may write any file of the
        // share; keep it in its own namespaces (pivot_root into the folder).
        .args([
            "--sandbox",
            "namespace",
            "--cache",
            "auto",
            "--log-level",
            "warn",
        ]);
    if readonly {
        cmd.arg("--readonly");
    }
    Helper::start(
        &format!("virtiofsd for {}", dir.display()),
        &mut cmd,
        log,
        &[socket.to_path_buf()],
        Duration::from_secs(10),
    )
}

/// The mount table for the guest's init: one `TAG GUEST_PATH` line per share.
pub fn mount_table(shares: &[Share]) -> String {
    shares
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {}\n", tag(i), s.guest))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_lists_tag_and_guest_path() {
        let s = vec![
            Share {
                host: "/a".into(),
                guest: "/mnt/a".into(),
            },
            Share {
                host: "/b".into(),
                guest: "/src".into(),
            },
        ];
        assert_eq!(mount_table(&s), "p2pshare0 /mnt/a\np2pshare1 /src\n");
    }
}
