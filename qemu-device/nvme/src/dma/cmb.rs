//! CMB memory: the sealed memfd each controller's CMB lives in, its
//! mapping, and the group's table of CMB windows (bus addresses while
//! CMBMSC.CMSE is set).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, RwLock};
use vm_memory::{FileOffset, MmapRegion, VolatileMemory};

/// A shared mapping of a file (a CMB memfd, or the test host's RAM),
/// through rust-vmm's vm-memory: every access is a bounds-checked volatile
/// copy.
pub struct Mapping {
    region: MmapRegion,
}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset`, shared and writable.
    pub fn new(file: &File, offset: u64, len: usize) -> std::io::Result<Mapping> {
        let region = MmapRegion::from_file(FileOffset::new(file.try_clone()?, offset), len)
            .map_err(|e| std::io::Error::other(format!("mapping {len} bytes: {e}")))?;
        Ok(Mapping { region })
    }

    /// The file this maps and the file offset of its first byte.
    pub(super) fn file(&self) -> Option<(&File, u64)> {
        self.region.file_offset().map(|f| (f.file(), f.start()))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// Pointer to `off`, when `n` bytes from there lie within the mapping
    /// (vm-memory checks the arithmetic: offsets come from the guest or the
    /// socket).
    pub(super) fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        let s = self.region.get_slice(off, n).ok()?;
        Some(s.ptr_guard_mut().as_ptr())
    }

    /// Copies out of the mapping; false (and nothing copied) when
    /// `off + buf.len()` is not within it.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        match self.region.get_slice(off, buf.len()) {
            Ok(s) => s.copy_to(buf) == buf.len(),
            Err(_) => false,
        }
    }

    /// Whether the mapping holds `bytes` at `off` (false when out of it).
    /// Cheap on a mismatch: the first 8 bytes decide most candidates.
    pub(super) fn holds(&self, off: usize, bytes: &[u8]) -> bool {
        let Ok(s) = self.region.get_slice(off, bytes.len()) else {
            return false;
        };
        let head = bytes.len().min(8);
        let mut first = [0u8; 8];
        let copied = s.subslice(0, head).map(|h| h.copy_to(&mut first[..head]));
        if copied.ok() != Some(head) || first[..head] != bytes[..head] {
            return false;
        }
        let mut all = vec![0u8; bytes.len()];
        s.copy_to(&mut all[..]) == bytes.len() && all == bytes
    }

    /// Copies into the mapping; false (and nothing copied) when out of it.
    pub fn write(&self, off: usize, buf: &[u8]) -> bool {
        match self.region.get_slice(off, buf.len()) {
            Ok(s) => {
                s.copy_from(buf);
                true
            }
            Err(_) => false,
        }
    }
}

/// A controller's CMB as seen by every controller of the process.
pub struct CmbWindow {
    pub ctrl: usize,
    pub mem: Arc<Mapping>,
    /// Bus address while CMBMSC.CMSE is set.
    pub base: Option<u64>,
    /// A `cmb-revoke=unmap` fault: nothing answers in the window.
    pub unreachable: bool,
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
