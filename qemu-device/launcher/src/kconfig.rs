//! A kernel configuration checked against what the guest needs: the
//! `.config` of a tree, or the one a bzImage embeds (CONFIG_IKCONFIG).

use anyhow::Result;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// Options the guest needs: (option, must be built in). The rest may be
/// modules (`=m`), which the guest's init loads.
pub const REQUIRED: &[(&str, bool)] = &[
    ("PCI", true),
    ("PCIEPORTBUS", true),
    ("PCI_MSI", true),
    ("ZONE_DEVICE", true),
    ("PCI_P2PDMA", true),
    ("BLK_DEV_NVME", false),
    ("VIRTIO_PCI", true),
    ("VIRTIO_CONSOLE", true),
    ("VIRTIO_FS", true),
    ("FW_CFG_SYSFS", false),
    ("DEVTMPFS", true),
    ("BLK_DEV_INITRD", true),
    ("RD_LZ4", true), // images/initramfs.sh packs the image with lz4
    ("SERIAL_8250_CONSOLE", true),
    ("BINFMT_ELF", true),
    ("BINFMT_SCRIPT", true),
    ("TMPFS", true),
    ("PROC_FS", true),
    ("SYSFS", true),
];

/// One line for `image info`: a configuration's P2PDMA setting and what
/// else the launcher needs that it lacks.
pub fn p2pdma_state(config: &Path) -> String {
    let Ok(text) = fs::read_to_string(config) else {
        return format!("no configuration at {}", config.display());
    };
    let cfg = parse_config(&text);
    let p2pdma = cfg.get("PCI_P2PDMA").map_or("not set", String::as_str);
    let missing = missing_options(&cfg);
    let verdict = if missing.is_empty() {
        "usable".to_string()
    } else {
        format!("lacks {}", missing.join(", "))
    };
    format!(
        "CONFIG_PCI_P2PDMA={p2pdma} ({verdict}; {})",
        config.display()
    )
}

/// `.config` lines as option name (without CONFIG_) → value.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("CONFIG_")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Required options the configuration lacks, as `CONFIG_X` (with `=y` when
/// it is there only as a module).
pub fn missing_options(cfg: &BTreeMap<String, String>) -> Vec<String> {
    REQUIRED
        .iter()
        .filter_map(|&(opt, builtin)| match cfg.get(opt).map(String::as_str) {
            Some("y") => None,
            Some("m") if !builtin => None,
            Some("m") => Some(format!("CONFIG_{opt}=y (it is =m)")),
            _ => Some(format!("CONFIG_{opt}")),
        })
        .collect()
}

/// The configuration embedded in a bzImage (CONFIG_IKCONFIG): the payload
/// is decompressed with the root filesystem's tools, then the gzip stream
/// between the IKCFG_ST and IKCFG_ED markers.
pub fn ikconfig(rootfs: &Path, bz: &Path) -> Result<Option<String>> {
    let data = fs::read(bz)?;
    const FORMATS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b, 0x08], "usr/bin/gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "usr/bin/xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "usr/bin/zstd"),
        (&[0x02, 0x21, 0x4c, 0x18], "usr/bin/lz4"),
        (b"BZh", "usr/bin/bzip2"),
    ];
    for (magic, tool) in FORMATS {
        let Some(at) = find(&data, magic) else {
            continue;
        };
        let Some(image) = decompress(rootfs, tool, &data[at..]) else {
            continue;
        };
        let Some(st) = find(&image, b"IKCFG_ST") else {
            continue;
        };
        let rest = &image[st + 8..];
        let end = find(rest, b"IKCFG_ED").unwrap_or(rest.len());
        if let Some(cfg) = decompress(rootfs, "usr/bin/gzip", &rest[..end]) {
            return Ok(Some(String::from_utf8_lossy(&cfg).into_owned()));
        }
    }
    Ok(None)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whatever `tool -dc` makes of `input` (trailing garbage is normal here).
fn decompress(rootfs: &Path, tool: &str, input: &[u8]) -> Option<Vec<u8>> {
    let bin = rootfs.join(tool);
    if !bin.exists() {
        return None;
    }
    let mut child = crate::image::rootfs_command(rootfs, &bin)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().ok()?;
    let _ = feeder.join();
    (!out.stdout.is_empty()).then_some(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_names_what_is_missing() {
        let mut text: String = REQUIRED
            .iter()
            .map(|(o, _)| format!("CONFIG_{o}=y\n"))
            .collect();
        assert!(missing_options(&parse_config(&text)).is_empty());
        text = text.replace("CONFIG_PCI_P2PDMA=y\n", "# CONFIG_PCI_P2PDMA is not set\n");
        text = text.replace("CONFIG_VIRTIO_FS=y", "CONFIG_VIRTIO_FS=m");
        text = text.replace("CONFIG_BLK_DEV_NVME=y", "CONFIG_BLK_DEV_NVME=m");
        assert_eq!(
            missing_options(&parse_config(&text)),
            vec!["CONFIG_PCI_P2PDMA", "CONFIG_VIRTIO_FS=y (it is =m)"]
        );
    }
}
