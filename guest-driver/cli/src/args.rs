//! Command-line values: sizes with K/M/G suffixes, block devices with an
//! optional byte offset (`/dev/nvme0n1:1M`).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// A byte count with an optional K, M or G suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size '{s}': use a number with an optional K, M or G suffix"))
}

/// The kernel's new_encode_dev() of a block device node.
pub fn block_dev(path: &str) -> Result<u32, String> {
    let md = fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if !md.file_type().is_block_device() {
        return Err(format!("{path} is not a block device"));
    }
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// A block device path with an optional `:OFFSET`: (path, device number,
/// offset).
pub fn dev_and_offset(s: &str) -> Result<(String, u32, u64), String> {
    let (path, off) = match s.rsplit_once(':') {
        Some((p, o)) if p.starts_with('/') => (p, parse_size(o)?),
        _ => (s, 0),
    };
    Ok((path.to_string(), block_dev(path)?, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_offsets() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert!(parse_size("x").is_err());
        assert!(dev_and_offset("/nonexistent:1M").is_err());
    }
}
