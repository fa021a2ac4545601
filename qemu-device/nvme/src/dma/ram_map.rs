//! One mapping of client memory in this process: a guest RAM section, or a
//! view of the CMB page an fd-less section was found to be. An unmap
//! revokes it from the DMAs still holding it: they move junk from then on
//! and fail.

use super::sigbus;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One mapping, unmapped when the last DMA using it and its section are
/// gone.
pub struct RamMap {
    ptr: *mut u8,
    len: usize,
    /// Shared with the client's `GuestRam`: raised when this memory
    /// raised SIGBUS.
    lost: Arc<AtomicBool>,
    /// Unmapped while a DMA held it: the range now holds anonymous junk.
    revoked: AtomicBool,
}

// SAFETY: the mapping is process memory owned by this value; accesses go
// through raw pointers whose lifetime the Arc holders bound.
unsafe impl Send for RamMap {}
// SAFETY: as above; concurrent DMAs into guest memory are the guest's race.
unsafe impl Sync for RamMap {}

impl RamMap {
    /// Maps `len` bytes of `file` from `offset`, shared; writable only when
    /// `write`.
    pub(super) fn new(
        file: &File,
        offset: u64,
        len: usize,
        write: bool,
        lost: Arc<AtomicBool>,
    ) -> std::io::Result<RamMap> {
        let ptr = sigbus::map_shared(file, offset, len, write)?;
        Ok(RamMap {
            ptr,
            len,
            lost,
            revoked: AtomicBool::new(false),
        })
    }

    /// Pointer to `off`, when `n` bytes from there lie within the mapping.
    pub(super) fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        off.checked_add(n).filter(|&end| end <= self.len)?;
        // SAFETY: off + n lies within the mapping (checked above).
        Some(unsafe { self.ptr.add(off) })
    }

    /// Marks the client's guest RAM as lost (a SIGBUS in this mapping).
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// The client unmapped this memory while a DMA held it.
    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Takes the memory away from the DMAs still holding this mapping:
    /// marks it revoked (they fail once their bytes moved), then maps
    /// anonymous memory over the whole range, so from this call's return
    /// no access of this process reaches the client's pages (a CPU copy
    /// or a preadv in flight goes on, into junk). Buffered file I/O copies
    /// through the page tables, so nothing pinned the old pages.
    pub(super) fn revoke(&self) -> Result<(), std::io::Error> {
        self.revoked.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Resolved::revoked`.
        std::sync::atomic::fence(Ordering::SeqCst);
        sigbus::replace_with_junk(self.ptr, self.len)
    }
}

impl Drop for RamMap {
    fn drop(&mut self) {
        sigbus::unmap(self.ptr, self.len);
    }
}
