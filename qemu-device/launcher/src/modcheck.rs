//! `--module FILE.ko`: the user's modules, checked against the kernel that
//! will boot (the release in their vermagic) before anything starts, put in
//! the guest and loaded in order before the command. The project's own
//! p2pcopy.ko gets the same check.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;

/// Where the user's modules sit in the guest.
pub const GUEST_DIR: &str = "opt/p2pnvme/modules";

/// The `vermagic=` string of a module's .modinfo (`7.3.4 SMP mod_unload`).
pub fn vermagic(ko: &Path) -> Result<String> {
    let data = fs::read(ko).with_context(|| format!("cannot read module {}", ko.display()))?;
    if !data.starts_with(b"\x7fELF") {
        bail!("{} is not a kernel module (no ELF header)", ko.display());
    }
    const KEY: &[u8] = b"vermagic=";
    let at = data
        .windows(KEY.len())
        .position(|w| w == KEY)
        .with_context(|| format!("{} has no vermagic: is it a kernel module?", ko.display()))?;
    let rest = &data[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end]).trim().to_string())
}

/// Refuses, in one line, a module built for another kernel release than
/// `release`, saying which one it was built for and how to rebuild it.
pub fn check(ko: &Path, release: &str) -> Result<()> {
    let magic = vermagic(ko)?;
    let built_for = magic.split_whitespace().next().unwrap_or("");
    if built_for != release {
        let dir = ko.parent().unwrap_or(Path::new("."));
        bail!(
            "{} was built for kernel {built_for} but this run boots {release}: rebuild it with 'p2pnvme module build {}' and the same --guest-kernel/--kernel option as this run",
            ko.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The guest path of the i-th user module.
pub fn guest_path(i: usize, ko: &Path) -> String {
    let name = ko
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "module.ko".into());
    format!("{GUEST_DIR}/{i:02}-{name}")
}

/// Shell lines that load the user's modules before the command; a module
/// that does not load ends the command with its insmod status.
pub fn preamble(modules: &[std::path::PathBuf]) -> String {
    let mut s = String::new();
    for (i, ko) in modules.iter().enumerate() {
        let p = guest_path(i, ko);
        s += &format!(
            "insmod /{p} || {{ rc=$?; echo \"p2pnvme: --module {}: insmod failed (exit $rc)\" >&2; exit $rc; }}\n",
            ko.display()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_ko(dir: &Path, magic: &str) -> std::path::PathBuf {
        let mut b = b"\x7fELF\x02\x01\x01\0junk\0license=GPL\0vermagic=".to_vec();
        b.extend_from_slice(magic.as_bytes());
        b.extend_from_slice(b"\0name=mydrv\0");
        let p = dir.join("mydrv.ko");
        fs::write(&p, b).unwrap();
        p
    }

    #[test]
    fn a_module_for_another_kernel_is_refused_in_one_line() {
        let d = tempfile::tempdir().unwrap();
        let ko = fake_ko(
            d.path(),
            "6.1.0-28-amd64 SMP preempt mod_unload modversions ",
        );
        assert_eq!(
            vermagic(&ko).unwrap(),
            "6.1.0-28-amd64 SMP preempt mod_unload modversions"
        );
        check(&ko, "6.1.0-28-amd64").unwrap();
        let e = check(&ko, "7.3.4-p2pnvme").unwrap_err().to_string();
        assert!(e.contains("built for kernel 6.1.0-28-amd64"), "{e}");
        assert!(e.contains("boots 7.3.4-p2pnvme"), "{e}");
        assert!(e.contains("p2pnvme module build"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn non_modules_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.ko");
        fs::write(&p, b"not elf").unwrap();
        assert!(vermagic(&p)
            .unwrap_err()
            .to_string()
            .contains("not a kernel module"));
        fs::write(&p, b"\x7fELF no magic").unwrap();
        assert!(vermagic(&p)
            .unwrap_err()
            .to_string()
            .contains("no vermagic"));
        assert!(vermagic(&d.path().join("none.ko")).is_err());
    }

    #[test]
    fn modules_load_in_order_and_a_failed_load_ends_the_command() {
        let p = preamble(&["/a/x.ko".into(), "/b/y.ko".into()]);
        let lines: Vec<&str> = p.lines().collect();
        assert!(
            lines[0].starts_with("insmod /opt/p2pnvme/modules/00-x.ko ||"),
            "{p}"
        );
        assert!(
            lines[1].starts_with("insmod /opt/p2pnvme/modules/01-y.ko ||"),
            "{p}"
        );
        assert!(lines[0].contains("exit $rc"));
    }
}
