//! DMA address resolution, in one place: every address a controller touches
//! is classified as its own CMB, a peer controller's CMB (served from the same
//! process: a real peer-to-peer transfer), guest RAM (DMA_MAP file
//! descriptors), or invalid — CMB windows first, because QEMU also announces
//! directly mapped BARs as fd-less DMA maps.

use std::fs::File;
use std::marker::PhantomData;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, RwLock};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

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
    fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
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
    fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        addr.checked_add(len)?;
        let s = self.mem.get_slice(GuestAddress(addr), len as usize).ok()?;
        Some(s.ptr_guard_mut().as_ptr())
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

pub use crate::route::Target;
use crate::route::{Dir, Kind};
use crate::stats::Counters;

#[derive(Debug, PartialEq, Eq)]
pub struct DmaFault;

/// Resolves and performs DMA for one controller, and counts every byte it
/// moves by kind, direction and where the memory was: callers never count.
pub struct Dma<'a> {
    pub ctrl: usize,
    pub ram: &'a GuestRam,
    pub cmbs: &'a CmbRegistry,
    /// PCI Bus Master Enable: clear, every DMA faults.
    pub bus_master: bool,
    /// The controller's counters.
    pub stats: &'a Counters,
}

impl<'a> Dma<'a> {
    /// Where [addr, addr+len) lives; a range that straddles two windows or
    /// leaves one is invalid.
    pub fn classify(&self, addr: u64, len: u64) -> Result<Target, DmaFault> {
        let len = usize::try_from(len).map_err(|_| DmaFault)?;
        self.with(addr, len, |_, _| ()).map(|(t, _)| t)
    }

    /// Finds [addr, addr+len) (CMB windows first) and runs `f` on its host
    /// address; for a CMB, also on the shared handle that keeps it mapped.
    fn with<R>(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(*mut u8, Option<&Arc<Mapping>>) -> R,
    ) -> Result<(Target, R), DmaFault> {
        if !self.bus_master {
            return Err(DmaFault);
        }
        let end = addr.checked_add(len as u64).ok_or(DmaFault)?;
        for w in self.cmbs.read().unwrap().iter() {
            let Some(base) = w.base else { continue };
            let Some(wend) = base.checked_add(w.mem.len() as u64) else {
                continue;
            };
            if addr < wend && end > base {
                if addr < base || end > wend {
                    return Err(DmaFault);
                }
                let t = if w.ctrl == self.ctrl {
                    Target::OwnCmb
                } else {
                    Target::PeerCmb(w.ctrl)
                };
                let p = w.mem.at((addr - base) as usize, len).ok_or(DmaFault)?;
                return Ok((t, f(p, Some(&w.mem))));
            }
        }
        let p = self.ram.host(addr, len as u64).ok_or(DmaFault)?;
        Ok((Target::GuestRam, f(p, None)))
    }

    /// Resolves every piece of a transfer up front (None: a bit bucket), so
    /// data can move between a backing file and this memory in one system
    /// call, without a bounce buffer.
    pub fn resolve(
        &self,
        segs: &[(Option<u64>, usize)],
        kind: Kind,
    ) -> Result<Resolved<'a>, DmaFault> {
        let mut r = Resolved {
            stats: self.stats,
            kind,
            pieces: Vec::with_capacity(segs.len()),
            cmbs: vec![],
            _ram: PhantomData,
        };
        for &(addr, len) in segs {
            let Some(addr) = addr else {
                r.pieces.push(Piece {
                    target: None,
                    ptr: std::ptr::null_mut(),
                    len,
                });
                continue;
            };
            let cmbs = &mut r.cmbs;
            let (target, ptr) = self.with(addr, len, |p, shared| {
                if let Some(shared) = shared {
                    if !cmbs.iter().any(|c| Arc::ptr_eq(c, shared)) {
                        cmbs.push(shared.clone());
                    }
                }
                p
            })?;
            r.pieces.push(Piece {
                target: Some(target),
                ptr,
                len,
            });
        }
        Ok(r)
    }

    /// Reads `buf.len()` bytes of `kind` at `addr` (counted).
    pub fn read(&self, kind: Kind, addr: u64, buf: &mut [u8]) -> Result<Target, DmaFault> {
        // SAFETY: `with` hands out a pointer to buf.len() mapped bytes.
        let (t, ()) = self.with(addr, buf.len(), |p, _| unsafe {
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len())
        })?;
        self.stats.add(kind, Dir::Read, t, buf.len() as u64);
        Ok(t)
    }

    /// Writes `buf` as `kind` at `addr` (counted).
    pub fn write(&self, kind: Kind, addr: u64, buf: &[u8]) -> Result<Target, DmaFault> {
        // SAFETY: as in read.
        let (t, ()) = self.with(addr, buf.len(), |p, _| unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len())
        })?;
        self.stats.add(kind, Dir::Written, t, buf.len() as u64);
        Ok(t)
    }

    /// A CPU store through the bus (the test host writing into a CMB, as a
    /// guest would through BAR2): not a DMA of this controller, not counted.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn cpu_write(&self, addr: u64, buf: &[u8]) -> Result<Target, DmaFault> {
        // SAFETY: as in read.
        self.with(addr, buf.len(), |p, _| unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len())
        })
        .map(|(t, ())| t)
    }
}

/// One piece of a resolved transfer.
struct Piece {
    /// None: a bit bucket (no memory behind it).
    target: Option<Target>,
    ptr: *mut u8,
    len: usize,
}

/// A transfer resolved to process memory. The pointers stay valid while it
/// lives: guest RAM maps are borrowed from the controller, CMB mappings are
/// held here.
pub struct Resolved<'a> {
    stats: &'a Counters,
    kind: Kind,
    pieces: Vec<Piece>,
    cmbs: Vec<Arc<Mapping>>,
    _ram: PhantomData<&'a GuestRam>,
}

impl Resolved<'_> {
    /// Where each piece lives (None: bit bucket), and its length.
    pub fn targets(&self) -> impl Iterator<Item = (Option<Target>, usize)> + '_ {
        self.pieces.iter().map(|p| (p.target, p.len))
    }

    /// Moves the whole transfer with one vectored call `io` over the
    /// pieces (bit buckets: scratch bytes), then counts it in direction
    /// `dir` — the only way to reach the pieces' memory.
    pub fn vectored(
        &self,
        dir: Dir,
        io: impl FnOnce(&mut [libc::iovec]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut bucket = vec![0u8; self.bucket_len()];
        let mut iov = self.iovecs(&mut bucket);
        io(&mut iov)?;
        self.count(dir);
        Ok(())
    }

    fn count(&self, dir: Dir) {
        for p in &self.pieces {
            if let Some(t) = p.target {
                self.stats.add(self.kind, dir, t, p.len as u64);
            }
        }
    }

    /// I/O vectors over the pieces; bit buckets read into or write from
    /// `bucket`, which must be as long as the longest of them.
    fn iovecs(&self, bucket: &mut [u8]) -> Vec<libc::iovec> {
        self.pieces
            .iter()
            .map(|p| {
                let base = if p.target.is_some() {
                    p.ptr
                } else {
                    assert!(p.len <= bucket.len());
                    bucket.as_mut_ptr()
                };
                libc::iovec {
                    iov_base: base.cast(),
                    iov_len: p.len,
                }
            })
            .collect()
    }

    /// The longest bit bucket (0 when there is none).
    fn bucket_len(&self) -> usize {
        self.pieces
            .iter()
            .filter(|p| p.target.is_none())
            .map(|p| p.len)
            .max()
            .unwrap_or(0)
    }

    /// Copies `data` into the pieces in order, skipping bit buckets
    /// (counted as written).
    pub fn scatter(&self, data: &[u8]) {
        self.count(Dir::Written);
        let mut done = 0;
        for p in &self.pieces {
            if p.target.is_some() {
                // SAFETY: p.ptr..+len is inside a mapping this value keeps alive.
                unsafe {
                    std::ptr::copy_nonoverlapping(data[done..done + p.len].as_ptr(), p.ptr, p.len)
                }
            }
            done += p.len;
        }
    }

    /// Collects the pieces in order; bit buckets read as zeros (counted as
    /// read).
    pub fn gather(&self) -> Vec<u8> {
        self.count(Dir::Read);
        let mut data = vec![0u8; self.pieces.iter().map(|p| p.len).sum()];
        let mut done = 0;
        for p in &self.pieces {
            if p.target.is_some() {
                // SAFETY: as in scatter.
                unsafe { std::ptr::copy_nonoverlapping(p.ptr, data[done..].as_mut_ptr(), p.len) }
            }
            done += p.len;
        }
        data
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (GuestRam, CmbRegistry) {
        let mut ram = GuestRam::default();
        let f = memfd("ram", 1 << 20).unwrap();
        ram.map(0x10_0000, 1 << 20, Some((f, 0))).unwrap();
        ram.map(0xfe00_0000, 1 << 20, None).unwrap(); // a directly mapped BAR, no fd
        let mut v = vec![];
        for (ctrl, base) in [(0usize, 0xfe00_0000u64), (1, 0xfd00_0000)] {
            let f = memfd("cmb", 2 << 20).unwrap();
            v.push(CmbWindow {
                ctrl,
                mem: Arc::new(Mapping::new(&f, 0, 2 << 20).unwrap()),
                base: Some(base),
            });
        }
        (ram, Arc::new(RwLock::new(v)))
    }

    #[test]
    fn every_address_class() {
        let (ram, cmbs) = setup();
        let stats = Counters::new(0, "t");
        let d = Dma {
            ctrl: 0,
            ram: &ram,
            cmbs: &cmbs,
            bus_master: true,
            stats: &stats,
        };
        assert_eq!(d.classify(0x10_0000, 4096), Ok(Target::GuestRam));
        assert_eq!(d.classify(0xfe00_1000, 4096), Ok(Target::OwnCmb));
        assert_eq!(d.classify(0xfd00_1000, 4096), Ok(Target::PeerCmb(1)));
        assert_eq!(d.classify(0x20_0000, 1), Err(DmaFault), "unmapped");
        assert_eq!(d.classify(0x1f_ffff, 2), Err(DmaFault), "leaves RAM");
        assert_eq!(d.classify(0xfe1f_ffff, 2), Err(DmaFault), "leaves the CMB");
        assert_eq!(d.classify(u64::MAX, 2), Err(DmaFault), "wraps");
        // A peer writes into our CMB and we read it back.
        let peer = Dma {
            ctrl: 1,
            ram: &ram,
            cmbs: &cmbs,
            bus_master: true,
            stats: &stats,
        };
        assert_eq!(
            peer.write(Kind::Data, 0xfe00_2000, b"p2p"),
            Ok(Target::PeerCmb(0))
        );
        let mut b = [0u8; 3];
        assert_eq!(d.read(Kind::Meta, 0xfe00_2000, &mut b), Ok(Target::OwnCmb));
        assert_eq!(&b, b"p2p");
        // Each access counted itself, by kind, direction and target.
        let s = stats.to_json();
        assert_eq!(s["data"]["peer_cmb"]["by_peer"]["0"]["written"], 3);
        assert_eq!(s["meta"]["own_cmb"]["read"], 3);
        // A disabled CMB falls back to whatever else maps the address.
        cmbs.write().unwrap()[0].base = None;
        assert_eq!(d.classify(0xfe00_1000, 4096), Err(DmaFault));
    }
}
