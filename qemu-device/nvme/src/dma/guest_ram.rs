//! Guest RAM: the DMA_MAP sections a client announced, mapped through
//! rust-vmm's vm-memory.

use std::fs::File;
use std::sync::Arc;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

/// One DMA_MAP section: fd-backed sections are guest RAM we can reach;
/// fd-less ones (directly mapped BARs) are only remembered for unmapping.
struct Section {
    iova: u64,
    size: u64,
    region: Option<Arc<GuestRegionMmap>>,
}

/// Guest RAM sections announced with DMA_MAP, mapped through rust-vmm's
/// vm-memory.
#[derive(Default)]
pub struct GuestRam {
    sections: Vec<Section>,
    mem: GuestMemoryMmap,
}

impl GuestRam {
    /// Maps a section; `file` is the fd QEMU sent and the offset in it.
    pub fn map(&mut self, iova: u64, size: u64, file: Option<(File, u64)>) -> std::io::Result<()> {
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
        self.unmap(iova, size);
        self.sections.push(Section { iova, size, region });
        self.rebuild();
        Ok(())
    }

    /// Forgets every section overlapping [iova, iova+size).
    pub fn unmap(&mut self, iova: u64, size: u64) {
        self.sections.retain(|s| {
            s.iova.saturating_add(s.size) <= iova || iova.saturating_add(size) <= s.iova
        });
        self.rebuild();
    }

    pub fn clear(&mut self) {
        self.sections.clear();
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let mut regions: Vec<_> = self
            .sections
            .iter()
            .filter_map(|s| s.region.clone())
            .collect();
        regions.sort_by_key(|r| r.start_addr());
        // Sections never overlap (map unmaps first), so this cannot fail.
        self.mem = GuestMemoryMmap::from_arc_regions(regions).unwrap_or_default();
    }

    /// Host address of [addr, addr+len) when it lies in one fd-backed section.
    pub(super) fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        addr.checked_add(len)?;
        let s = self.mem.get_slice(GuestAddress(addr), len as usize).ok()?;
        Some(s.ptr_guard_mut().as_ptr())
    }
}
