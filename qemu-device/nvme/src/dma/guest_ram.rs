//! Guest RAM: the DMA_MAP sections a client announced, each mapped with the
//! protection the client gave it. Promises: a section mapped without WRITE
//! is never written (the mapping is PROT_READ and lookups for writes miss
//! it); no file descriptor outlives its DMA_MAP (the mapping keeps the
//! memory, so a client cannot pin fds); at most `limit` sections per
//! client. Once memory is lost (the client shrank the file under a copy,
//! see `sigbus`) the copy's DMA fails and [`GuestRam::lost`] stays true
//! until the client disconnects: the controller then runs no more commands
//! (CSTS.CFS) — the lost pages now hold anonymous junk. Nothing reaches a
//! section's memory once its DMA_UNMAP is answered: an unmap never waits
//! for the DMAs still using it, it revokes them (see [`RamMap::revoke`]).

use super::give_way::GiveWay;
use super::placement::{FdLess, Placement};
pub use super::ram_map::RamMap;
use p2pnvme_docs::device_config::UnannouncedDma;
use p2pnvme_vfio_user::ClientRequests;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Default of `--max-dma-maps`: DMA_MAP sections one client may hold.
/// QEMU sends one per RAM section (a handful) without a vIOMMU, one per
/// guest IOMMU mapping with one.
pub const DEFAULT_MAX_DMA_MAPS: usize = p2pnvme_docs::device_config::DEFAULT_MAX_DMA_MAPS as usize;

/// What the device may do with a section (the DMA_MAP flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    /// The device may read it.
    pub read: bool,
    /// The device may write it.
    pub write: bool,
}

impl Prot {
    /// Readable and writable.
    #[cfg(any(test, feature = "test-utils"))]
    pub const RW: Prot = Prot {
        read: true,
        write: true,
    };
}

/// How a DMA uses memory it looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Only asks where an address is.
    Locate,
    /// The device reads it.
    Read,
    /// The device writes it.
    Write,
}

/// Why a DMA_MAP was refused.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The client already holds the most sections it may.
    #[error("{0} DMA maps already: the per-client limit (--max-dma-maps)")]
    TooMany(usize),
    /// The request or its file cannot be mapped.
    #[error("{0}")]
    Bad(String),
    /// mmap failed.
    #[error("mapping DMA section at {iova:#x}: {source}")]
    Mmap {
        /// The section.
        iova: u64,
        /// Why.
        source: std::io::Error,
    },
}

/// One DMA_MAP section: fd-backed sections are guest RAM we can reach;
/// fd-less ones are a BAR QEMU maps (see `dma/remote.rs`): `placement`
/// says which CMB of the group it is, once a DMA found out.
struct Section {
    iova: u64,
    size: u64,
    prot: Prot,
    region: Option<Arc<RamMap>>,
    placement: Arc<Placement>,
}

/// Guest RAM sections announced with DMA_MAP. Shared between the
/// controller's worker and the vfio-user message thread: a DMA holds the
/// region it uses (an `Arc` clone) while it moves data, so an unmap removes
/// the sections from the table first (no new DMA finds them; short copies
/// done under the table's read lock finish first) and then revokes the
/// regions a DMA still holds: it never waits for a transfer or the
/// worker's pass, and the transfers it cut fail.
pub struct GuestRam {
    sections: RwLock<Vec<Section>>,
    limit: AtomicUsize,
    lost: Arc<AtomicBool>,
    /// Requests to the current client (DMA_READ/DMA_WRITE), for fd-less
    /// sections.
    client: RwLock<Option<ClientRequests>>,
    /// DMA to a range in no section asks the client where it is
    /// (`unannounced_dma: probe`, see `dma/remote.rs`).
    probe_unannounced: AtomicBool,
    /// Waiting for the client, the worker gives way to the message thread.
    give_way: GiveWay,
}

impl Default for GuestRam {
    fn default() -> GuestRam {
        GuestRam {
            sections: RwLock::default(),
            limit: AtomicUsize::new(DEFAULT_MAX_DMA_MAPS),
            lost: Arc::default(),
            client: RwLock::default(),
            probe_unannounced: AtomicBool::new(false),
            give_way: GiveWay::default(),
        }
    }
}

impl GuestRam {
    /// Sets the most sections one client may hold (`--max-dma-maps`).
    pub fn set_limit(&self, n: usize) {
        self.limit.store(n, Ordering::Relaxed);
    }

    /// Whether a DMA to a range in no section is probed through the client
    /// (else it faults at once).
    pub fn set_unannounced(&self, how: UnannouncedDma) {
        let on = how == UnannouncedDma::Probe;
        self.probe_unannounced.store(on, Ordering::Relaxed);
    }

    /// Whether unannounced ranges are probed.
    pub(super) fn probes_unannounced(&self) -> bool {
        self.probe_unannounced.load(Ordering::Relaxed)
    }

    /// Whether no byte of [addr, addr+len) lies in a section.
    pub(super) fn unannounced(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        !sections
            .iter()
            .any(|s| s.iova < end && addr < s.iova.saturating_add(s.size))
    }

    /// The current client's request handle (None: no client).
    pub fn set_client(&self, c: Option<ClientRequests>) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = c;
    }

    /// Requests to the current client.
    pub(super) fn client(&self) -> Option<ClientRequests> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The fd-less section that holds [addr, addr+len) and allows `how`.
    pub(super) fn fdless(&self, addr: u64, len: u64, how: Use) -> Option<FdLess> {
        let end = addr.checked_add(len)?;
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        let (s, allowed) = holding(&sections, addr, end, how)?;
        (s.region.is_none() && allowed).then(|| FdLess {
            iova: s.iova,
            size: s.size,
            write: s.prot.write,
            placement: s.placement.clone(),
        })
    }

    /// A clone of `view` for one DMA, if the fd-less section of `p` is
    /// still mapped; `lend` registers it for revocation (a view of this
    /// DMA's own). Under the table's lock: an unmap either comes first
    /// (None: the DMA faults) or sees the clone and revokes it.
    pub(super) fn hold(
        &self,
        p: &Arc<Placement>,
        view: &Arc<RamMap>,
        lend: bool,
    ) -> Option<Arc<RamMap>> {
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        if !sections.iter().any(|s| Arc::ptr_eq(&s.placement, p)) {
            return None;
        }
        if lend {
            let mut lent = p.lent.lock().unwrap_or_else(|e| e.into_inner());
            lent.retain(|w| w.strong_count() > 0);
            lent.push(Arc::downgrade(view));
        }
        Some(view.clone())
    }

    /// A view of `len` bytes of `file` (a CMB memfd) from `offset`, for an
    /// fd-less section placed there.
    pub(super) fn view(
        &self,
        file: &File,
        offset: u64,
        len: usize,
        write: bool,
    ) -> Option<Arc<RamMap>> {
        RamMap::new(file, offset, len, write, self.lost.clone())
            .inspect_err(|e| log::warn!("mapping a view of a CMB page: {e}"))
            .ok()
            .map(Arc::new)
    }

    /// The worker's give-way signal (see `dma/give_way.rs`).
    pub fn give_way(&self) -> &GiveWay {
        &self.give_way
    }

    /// Some of this client's memory raised SIGBUS (until it disconnects).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Maps a section; `file` is the fd QEMU sent and the offset in it (the
    /// fd is closed once mapped).
    pub fn map(
        &self,
        iova: u64,
        size: u64,
        file: Option<(File, u64)>,
        prot: Prot,
    ) -> Result<(), MapError> {
        let bad = |e: String| MapError::Bad(e);
        iova.checked_add(size)
            .ok_or_else(|| bad(format!("DMA section at {iova:#x} wraps")))?;
        let region = match file {
            Some((f, offset)) => {
                // The server checks this too; a mapping past the end of its
                // file would turn our accesses into SIGBUS.
                let end = offset
                    .checked_add(size)
                    .ok_or_else(|| bad(format!("DMA section at {iova:#x} wraps its file")))?;
                let flen = f.metadata().map_err(|e| bad(e.to_string()))?.len();
                if flen < end {
                    return Err(bad(format!(
                        "DMA section at {iova:#x} reaches past its file"
                    )));
                }
                let len = usize::try_from(size)
                    .map_err(|_| bad(format!("DMA section at {iova:#x} too large")))?;
                self.check_room(iova, size)?;
                let map = RamMap::new(&f, offset, len, prot.write, self.lost.clone())
                    .map_err(|source| MapError::Mmap { iova, source })?;
                Some(Arc::new(map))
            }
            None => {
                self.check_room(iova, size)?;
                None
            }
        };
        let removed = {
            let mut sections = self.write();
            let removed = take_overlapping(&mut sections, iova, size);
            sections.push(Section {
                iova,
                size,
                prot,
                region,
                placement: Arc::default(),
            });
            removed
        };
        revoke_used(removed);
        Ok(())
    }

    /// Refuses a new section when the client is at its limit (sections the
    /// new one replaces do not count).
    fn check_room(&self, iova: u64, size: u64) -> Result<(), MapError> {
        let limit = self.limit.load(Ordering::Relaxed);
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        let end = iova.saturating_add(size);
        let replaced = sections
            .iter()
            .filter(|s| s.iova < end && iova < s.iova.saturating_add(s.size))
            .count();
        if sections.len() - replaced >= limit {
            return Err(MapError::TooMany(sections.len()));
        }
        Ok(())
    }

    /// Forgets every section overlapping [iova, iova+size), then revokes
    /// them from the DMAs still using them: on return nothing of this
    /// process reaches their memory.
    pub fn unmap(&self, iova: u64, size: u64) {
        let removed = take_overlapping(&mut self.write(), iova, size);
        revoke_used(removed);
    }

    /// Forgets every section and revokes them from the DMAs still using
    /// them; a new client starts with its memory not lost.
    pub fn clear(&self) {
        let removed = std::mem::take(&mut *self.write());
        revoke_used(removed);
        self.lost.store(false, Ordering::Release);
    }

    /// [addr, addr+len) as runs that each lie in one section, in order;
    /// None when some byte of it is in no section, unless `page` is given:
    /// then bytes in no section run to the next multiple of `page` (or
    /// section). Under a guest IOMMU each IOMMU mapping is its own section,
    /// so memory that is contiguous for the device (in IOVA) lies in
    /// several, scattered in host memory.
    pub(super) fn runs(&self, addr: u64, len: u64, page: Option<u64>) -> Option<Vec<(u64, u64)>> {
        let end = addr.checked_add(len)?;
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        let mut at = addr;
        while at < end {
            let s = sections
                .iter()
                .find(|s| s.iova <= at && at < s.iova.saturating_add(s.size));
            let stop = match (s, page) {
                (Some(s), _) => s.iova.saturating_add(s.size),
                (None, None) => return None,
                (None, Some(p)) => {
                    let next = sections.iter().map(|s| s.iova).filter(|&i| i > at);
                    let page_end = (at / p).saturating_add(1).saturating_mul(p);
                    next.fold(page_end, u64::min)
                }
            }
            .min(end);
            out.push((at, stop - at));
            at = stop;
        }
        Some(out)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Section>> {
        self.sections.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the host address of [addr, addr+len) and the region
    /// holding it, when the range lies in one fd-backed section that allows
    /// `how`; the section cannot be removed while `f` runs.
    pub(super) fn with<R>(
        &self,
        addr: u64,
        len: u64,
        how: Use,
        f: impl FnOnce(*mut u8, &Arc<RamMap>) -> R,
    ) -> Option<R> {
        let end = addr.checked_add(len)?;
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        let (s, allowed) = holding(&sections, addr, end, how)?;
        if !allowed {
            log::debug!(
                "DMA {how:?} of {len} bytes at {addr:#x}: the section at {:#x} does not allow it ({:?})",
                s.iova,
                s.prot
            );
            return None;
        }
        let region = s.region.as_ref()?; // fd-less: see `fdless`
        let off = usize::try_from(addr - s.iova).ok()?;
        let p = region.at(off, usize::try_from(len).ok()?)?;
        Some(f(p, region))
    }
}

/// Removes the sections overlapping [iova, iova+size) and returns them.
/// The section holding [addr, end), and whether it allows `how`.
fn holding(sections: &[Section], addr: u64, end: u64, how: Use) -> Option<(&Section, bool)> {
    let s = sections
        .iter()
        .find(|s| s.iova <= addr && s.iova.checked_add(s.size).is_some_and(|e| end <= e))?;
    let allowed = match how {
        Use::Locate => true,
        Use::Read => s.prot.read,
        Use::Write => s.prot.write,
    };
    Some((s, allowed))
}

fn take_overlapping(sections: &mut Vec<Section>, iova: u64, size: u64) -> Vec<Section> {
    let end = iova.saturating_add(size);
    let (gone, kept) = std::mem::take(sections)
        .into_iter()
        .partition(|s| s.iova < end && iova < s.iova.saturating_add(s.size));
    *sections = kept;
    gone
}

/// Revokes the memory of removed sections a DMA still holds: guest RAM,
/// and the views of the CMB pages fd-less ones were found to be (the rest
/// is only unmapped: nobody can find it any more).
fn revoke_used(removed: Vec<Section>) {
    let mut maps = vec![];
    for s in removed {
        let mut lent = s.placement.lent.lock().unwrap_or_else(|e| e.into_inner());
        maps.extend(lent.drain(..).filter_map(|w| w.upgrade()));
        drop(lent);
        maps.extend(s.placement.found.get().map(|f| f.view.clone()));
        maps.extend(s.region);
    } // the sections are gone: only DMAs still hold what they used
    for r in maps {
        if Arc::strong_count(&r) == 1 {
            continue; // dropped here: munmap
        }
        if let Err(e) = r.revoke() {
            // Out of memory for the junk pages: fall back to waiting for
            // the holders, as the only other way to keep the promise.
            log::warn!("DMA unmap: cannot revoke a section in use ({e}); waiting for its DMAs");
            while Arc::strong_count(&r) > 1 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }
    // strong_count reads relaxed: order the users' accesses (their drop
    // released them) before whatever the caller does next.
    std::sync::atomic::fence(Ordering::Acquire);
}
