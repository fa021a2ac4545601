//! Guest RAM: the DMA_MAP sections a client announced, mapped through
//! rust-vmm's vm-memory.

use std::fs::File;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress, MmapRegion,
};

/// One DMA_MAP section: fd-backed sections are guest RAM we can reach;
/// fd-less ones (directly mapped BARs) are only remembered for unmapping.
struct Section {
    iova: u64,
    size: u64,
    region: Option<Arc<GuestRegionMmap>>,
}

/// Guest RAM sections announced with DMA_MAP, mapped through rust-vmm's
/// vm-memory. Shared between the controller's worker and the vfio-user
/// message thread: a DMA holds the region it uses (an `Arc` clone) while it
/// moves data, so an unmap removes the sections from the table first (no
/// new DMA finds them) and then waits only for the DMAs still using them,
/// never for the worker's whole pass.
#[derive(Default)]
pub struct GuestRam {
    sections: RwLock<Vec<Section>>,
}

/// How long an unmap waits for in-flight DMAs of its sections. The mapping
/// itself stays valid while a DMA holds it, so running out of patience can
/// only let a late DMA reach memory the guest gave back; it is logged.
const UNMAP_WAIT: Duration = Duration::from_secs(10);

impl GuestRam {
    /// Maps a section; `file` is the fd QEMU sent and the offset in it.
    pub fn map(&self, iova: u64, size: u64, file: Option<(File, u64)>) -> std::io::Result<()> {
        let region = match file {
            Some((f, offset)) => {
                let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
                // The server checks this too; a mapping past the end of its
                // file would turn our accesses into SIGBUS.
                let end = offset
                    .checked_add(size)
                    .ok_or_else(|| bad(format!("DMA section at {iova:#x} wraps its file")))?;
                if f.metadata()?.len() < end {
                    return Err(bad(format!(
                        "DMA section at {iova:#x} reaches past its file"
                    )));
                }
                iova.checked_add(size)
                    .ok_or_else(|| bad(format!("DMA section at {iova:#x} wraps")))?;
                let mmap = MmapRegion::from_file(FileOffset::new(f, offset), size as usize)
                    .map_err(|e| bad(format!("mapping DMA section at {iova:#x}: {e}")))?;
                let r = GuestRegionMmap::new(mmap, GuestAddress(iova))
                    .ok_or_else(|| bad(format!("DMA section at {iova:#x} wraps")))?;
                Some(Arc::new(r))
            }
            None => {
                iova.checked_add(size).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "fd-less DMA map wraps")
                })?;
                None
            }
        };
        let removed = {
            let mut sections = self.write();
            let removed = take_overlapping(&mut sections, iova, size);
            sections.push(Section { iova, size, region });
            removed
        };
        wait_unused(removed);
        Ok(())
    }

    /// Forgets every section overlapping [iova, iova+size), then waits for
    /// the DMAs still using them (and only them).
    pub fn unmap(&self, iova: u64, size: u64) {
        let removed = take_overlapping(&mut self.write(), iova, size);
        wait_unused(removed);
    }

    /// Forgets every section, then waits for the DMAs still using them.
    pub fn clear(&self) {
        let removed = std::mem::take(&mut *self.write());
        wait_unused(removed);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Section>> {
        self.sections.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the host address of [addr, addr+len) and the region
    /// holding it, when the range lies in one fd-backed section; the
    /// section cannot be removed while `f` runs.
    pub(super) fn with<R>(
        &self,
        addr: u64,
        len: u64,
        f: impl FnOnce(*mut u8, &Arc<GuestRegionMmap>) -> R,
    ) -> Option<R> {
        let end = addr.checked_add(len)?;
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        let s = sections
            .iter()
            .find(|s| s.iova <= addr && s.iova.checked_add(s.size).is_some_and(|e| end <= e))?;
        let region = s.region.as_ref()?;
        let off = MemoryRegionAddress(addr - s.iova);
        let slice = region.get_slice(off, usize::try_from(len).ok()?).ok()?;
        let p = slice.ptr_guard_mut().as_ptr();
        Some(f(p, region))
    }
}

/// Removes the sections overlapping [iova, iova+size) and returns their
/// regions.
fn take_overlapping(sections: &mut Vec<Section>, iova: u64, size: u64) -> Vec<Section> {
    let end = iova.saturating_add(size);
    let (gone, kept) = std::mem::take(sections)
        .into_iter()
        .partition(|s| s.iova < end && iova < s.iova.saturating_add(s.size));
    *sections = kept;
    gone
}

/// Waits (bounded) until no DMA holds these removed sections.
fn wait_unused(removed: Vec<Section>) {
    let regions: Vec<_> = removed.into_iter().filter_map(|s| s.region).collect();
    let start = Instant::now();
    while regions.iter().any(|r| Arc::strong_count(r) > 1) {
        if start.elapsed() > UNMAP_WAIT {
            log::warn!("DMA unmap: a DMA still uses the section after {UNMAP_WAIT:?}");
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    // strong_count reads relaxed: order the users' accesses (their drop
    // released them) before whatever the caller does next.
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
}
