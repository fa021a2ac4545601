//! `p2pcopy p2pmem-read`: the user-space P2PDMA path. Maps P2P memory from
//! a provider's `p2pmem/allocate` and reads a block device into it with
//! O_DIRECT, then prints a checksum of what arrived.

use crate::args::{dev_and_offset, parse_size};
use crate::fail;
use serde_json::json;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::process::ExitCode;

/// FNV-1a, enough to compare buffers across paths without extra crates.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// `p2pcopy p2pmem-read`.
pub fn p2pmem_read(dev: &str, provider: &str, len: &str) -> ExitCode {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let run = || -> Result<String, String> {
        let (path, _, off) = dev_and_offset(dev)?;
        let len = parse_size(len)? as usize;
        let alloc = format!("/sys/bus/pci/devices/{provider}/p2pmem/allocate");
        let a = File::options()
            .read(true)
            .write(true)
            .open(&alloc)
            .map_err(|e| format!("{alloc}: {e}"))?;
        // SAFETY: mapping a file we opened; checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                a.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {alloc}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: p maps len bytes of P2P memory until munmap below.
        let buf = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
        let d = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| format!("{path}: {e}"))?;
        let r = d
            .read_exact_at(buf, off)
            .map_err(|e| format!("O_DIRECT read into P2P memory: {e}"));
        let sum = fnv1a(buf);
        // SAFETY: unmapping our mapping.
        unsafe { libc::munmap(p, len) };
        r.map(|_| {
            format!("{len} bytes of {path} read into {provider} P2P memory, fnv1a {sum:016x}")
        })
    };
    match run() {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(false, e, json!({})),
    }
}
