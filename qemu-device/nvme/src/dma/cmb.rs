//! CMB memory: the sealed memfd each controller's CMB lives in, its
//! mapping, and the group's table of CMB windows (bus addresses while
//! CMBMSC.CMSE is set).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, RwLock};

/// A shared mapping of a file (guest RAM section or CMB memfd).
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared memory; concurrent access from the guest and
// other threads is inherent to DMA and handled with byte copies only.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn new(file: &File, offset: u64, len: usize) -> std::io::Result<Mapping> {
        // SAFETY: mapping a file we hold; result checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Pointer to `off`, when `n` bytes from there lie within the mapping
    /// (checked arithmetic: offsets come from the guest or the socket).
    pub(super) fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        if off.checked_add(n)? > self.len {
            return None;
        }
        // SAFETY: within the mapping, checked above.
        Some(unsafe { self.ptr.add(off) })
    }

    /// Copies out of the mapping; false (and nothing copied) when
    /// `off + buf.len()` is not within it.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        let Some(p) = self.at(off, buf.len()) else {
            return false;
        };
        // SAFETY: `at` checked the bounds; a byte copy of shared memory.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies into the mapping; false (and nothing copied) when out of it.
    pub fn write(&self, off: usize, buf: &[u8]) -> bool {
        let Some(p) = self.at(off, buf.len()) else {
            return false;
        };
        // SAFETY: as in read.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
        true
    }

    /// Zeroes the whole mapping (a CMB between two clients).
    pub fn clear(&self) {
        // SAFETY: the whole mapping, which we own.
        unsafe { std::ptr::write_bytes(self.ptr, 0, self.len) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what we mapped.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// A controller's CMB as seen by every controller of the process.
pub struct CmbWindow {
    pub ctrl: usize,
    pub mem: Arc<Mapping>,
    /// Bus address while CMBMSC.CMSE is set.
    pub base: Option<u64>,
}

/// All CMB windows of the process, for peer-to-peer resolution.
pub type CmbRegistry = Arc<RwLock<Vec<CmbWindow>>>;

/// An anonymous shared memory file (test RAM, or a CMB before sealing).
pub fn memfd(name: &str, size: u64) -> std::io::Result<File> {
    use std::os::unix::io::FromRawFd;
    let cname = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: memfd_create with a valid C string; fd checked.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size)?;
    Ok(f)
}

/// A CMB's memfd: its size sealed (no shrink, no grow, no further seals),
/// because the fd goes to the client, and a client that truncated it would
/// make every access of ours a SIGBUS.
pub fn sealed_memfd(name: &str, size: u64) -> std::io::Result<File> {
    let f = memfd(name, size)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}
