//! What the module's codes mean, in words: map types, fallback reasons,
//! and the copy ioctl's errno values.

use crate::sys::{uapi, DEV};

/// A NUL-terminated name the module filled in.
pub fn cstr(buf: &[std::os::raw::c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `P2PCOPY_MAP_*` value.
pub fn map_name(m: u32) -> &'static str {
    match m {
        uapi::P2PCOPY_MAP_NONE => "none",
        uapi::P2PCOPY_MAP_NOT_SUPPORTED => "not supported",
        uapi::P2PCOPY_MAP_BUS_ADDR => "bus address",
        uapi::P2PCOPY_MAP_THRU_HOST_BRIDGE => "through host bridge",
        _ => "unknown",
    }
}

/// Why auto mode fell back to bounce buffers (`P2PCOPY_FALLBACK_*`).
pub fn fallback_name(f: u32) -> Option<&'static str> {
    match f {
        uapi::P2PCOPY_FALLBACK_NO_P2PDMA => Some("a device's queue does not accept P2P memory"),
        uapi::P2PCOPY_FALLBACK_DISTANCE => {
            Some("no P2P memory provider is reachable by both devices")
        }
        uapi::P2PCOPY_FALLBACK_NO_MEMORY => Some("the provider has not enough free P2P memory"),
        _ => None,
    }
}

/// What each errno of the copy ioctl means.
pub fn explain(errno: i32) -> String {
    match errno {
        libc::EINVAL => "offsets, length or chunk are not aligned to the logical block size (or chunk/depth out of range)".into(),
        libc::ERANGE => "the range runs past the end of a device".into(),
        libc::EBUSY => "source and destination ranges overlap on the same device".into(),
        libc::EOPNOTSUPP => "a device does not support P2PDMA (its queue does not accept P2P memory); use --mode bounce or auto".into(),
        libc::EXDEV => "the devices cannot do peer-to-peer with any provider (e.g. separate root ports on an Intel-like host); use --mode auto or bounce".into(),
        libc::ENOSPC => "the P2P memory provider has not enough free memory for chunk x depth; lower --chunk or --depth".into(),
        libc::ENODEV => "no such PCI device for --provider".into(),
        libc::EINTR => "interrupted by a signal".into(),
        libc::EIO => "an I/O error on a device".into(),
        libc::ENOENT => format!("{DEV} is missing: load the module (insmod p2pcopy.ko)"),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    }
}
