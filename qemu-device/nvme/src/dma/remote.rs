//! DMA into sections the client mapped without a file descriptor. With the
//! launcher's `memory-backend-memfd,share=on` every guest RAM map carries
//! its memfd, so an fd-less map is never guest RAM: QEMU sends one for a
//! BAR it maps directly (a ram-device region), which behind a guest IOMMU
//! is how a peer controller's CMB arrives (an IOVA, one IOMMU page, nothing
//! naming the BAR). Only QEMU can reach it (DMA_READ/DMA_WRITE); but every
//! CMB it could be is a memfd this process owns, so one message finds which
//! CMB page it is, and the DMA then moves straight in that memory, counted
//! as that CMB's bytes:
//! - a section the device may write: DMA_WRITE a nonce into the range
//!   (the command is about to write there anyway), then look for it;
//! - a read-only one (the kernel maps DMA_TO_DEVICE buffers without write
//!   permission): DMA_READ the range, then look for its bytes.
//!
//! The candidates are the pages of the group's other controllers' CMBs (a
//! controller reaches its own CMB by bus address, never through an IOVA).
//! One match: the answer is kept with the section until its DMA_UNMAP, as
//! a mapping of that CMB page of its own (a view), so the unmap revokes it
//! from DMAs in flight exactly as it revokes guest RAM: nothing reaches
//! the page through that section once the unmap is answered.
//! Several matches of a read probe, all in one controller's CMB (a page of
//! zeros): the bytes are the same in each, so this DMA reads one of them,
//! counted as that controller's, and the next asks again. Otherwise
//! (content found nowhere, or in several controllers' CMBs; a client that
//! does not answer) the DMA faults: the command fails with Data Transfer
//! Error, and nothing is ever counted as a CMB it might not be.
//!
//! A probe waits for QEMU, and the worker holds its controller's lock: a
//! command's probe gives way when a message waits for that lock (see
//! `give_way`), and the command runs again after it.
//!
//! Addresses no DMA_MAP announced (`unannounced_dma: probe`): QEMU's
//! virtio-iommu passes on no mapping the guest flags MMIO, so a peer CMB
//! page behind it is an IOVA in no section; QEMU still performs
//! DMA_READ/DMA_WRITE through the guest's mappings. Each IOMMU page of such
//! a range is probed the same way, on every DMA: nothing is cached, because
//! the guest can unmap that IOVA and map it to another BAR page without any
//! message reaching the device, so only a fresh answer from QEMU says where
//! it is now (the probe's search of the group's CMBs costs microseconds; the
//! message is the cost either way).

use super::guest_ram::Use;
use super::placement::Found;
use super::{Dma, DmaFault, Mapping, RamMap, Target};
use p2pnvme_vfio_user::RequestError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a probe waits for QEMU (its own requests wait 5 s).
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Guest IOMMU page: an fd-less section starts on one, in the BAR too.
pub(super) const PAGE: usize = 4096;
/// Bytes of a write probe.
const NONCE: usize = 16;
/// Shortest content a read probe may identify a page by.
const MIN_PROBE: usize = 8;

/// Where a range was found: the CMB (or the view of an fd-less section's
/// CMB page, which its unmap revokes) and the range's offset in it.
pub(super) enum Placed {
    Cmb(Target, Arc<Mapping>, usize),
    View(Target, Arc<RamMap>, usize),
}

/// A page-aligned place in a peer's CMB: controller `ctrl`'s, at `base`.
struct Spot {
    ctrl: usize,
    mem: Arc<Mapping>,
    base: usize,
}

impl Dma<'_> {
    /// Where [addr, addr+len) of an fd-less section is: the view of the
    /// CMB page it was found to be, lent to this DMA. Only finding out
    /// asks the client, so merely locating an unplaced section (which the
    /// message thread does, and it routes the client's replies) faults.
    pub(super) fn locate_fdless(
        &self,
        addr: u64,
        len: usize,
        how: Use,
    ) -> Result<Placed, DmaFault> {
        let s = self.ram.fdless(addr, len as u64, how).ok_or(DmaFault)?;
        // In the section (fdless checked it): rel + len <= size.
        let rel = usize::try_from(addr - s.iova).map_err(|_| DmaFault)?;
        let size = usize::try_from(s.size).map_err(|_| DmaFault)?;
        let (found, lend) = match s.placement.found.get() {
            Some(f) => (f.clone(), false),
            None if how == Use::Locate => return Err(DmaFault),
            None => match self.probe(addr, len, rel, size, how)? {
                Place::Unique(spot) => {
                    let f = self.view_of(&spot, size, s.write)?;
                    (s.placement.found.get_or_init(|| f).clone(), false)
                }
                Place::SameBytes(spot) => (self.view_of(&spot, size, s.write)?, true),
            },
        };
        let view = self
            .ram
            .hold(&s.placement, &found.view, lend)
            .ok_or(DmaFault)?;
        Ok(Placed::View(self.target(found.ctrl), view, rel))
    }

    /// A view of `size` bytes of the CMB at `spot` for an fd-less section
    /// (writable when the section is).
    fn view_of(&self, spot: &Spot, size: usize, write: bool) -> Result<Found, DmaFault> {
        let (file, start) = spot.mem.file().ok_or(DmaFault)?;
        let offset = start.checked_add(spot.base as u64).ok_or(DmaFault)?;
        let view = self.ram.view(file, offset, size, write).ok_or(DmaFault)?;
        Ok(Found {
            ctrl: spot.ctrl,
            view,
        })
    }

    /// Where [addr, addr+len) is when it lies in no section and this
    /// controller probes such ranges (None: it does not apply); the range
    /// must lie in one IOMMU page (`split` cuts it so).
    pub(super) fn locate_unannounced(
        &self,
        addr: u64,
        len: usize,
        how: Use,
    ) -> Option<Result<Placed, DmaFault>> {
        if !self.ram.probes_unannounced() || !self.ram.unannounced(addr, len as u64) {
            return None;
        }
        if how == Use::Locate {
            return Some(Err(DmaFault)); // only a DMA asks the client
        }
        let rel = usize::try_from(addr % PAGE as u64).ok()?;
        if rel.checked_add(len).is_none_or(|e| e > PAGE) {
            log::debug!(
                "controller {}: unannounced DMA at {addr:#x} of {len} bytes crosses a page",
                self.ctrl
            );
            return Some(Err(DmaFault));
        }
        Some(self.probe(addr, len, rel, PAGE, how).and_then(|p| {
            let (Place::Unique(f) | Place::SameBytes(f)) = p;
            let off = f.base.checked_add(rel).ok_or(DmaFault)?;
            Ok(Placed::Cmb(self.target(f.ctrl), f.mem, off))
        }))
    }

    /// Asks QEMU about the range once and finds the CMB page it is. A
    /// command's DMA stops waiting when a message waits for the
    /// controller lock its worker holds (see `give_way`).
    fn probe(
        &self,
        addr: u64,
        len: usize,
        rel: usize,
        size: usize,
        how: Use,
    ) -> Result<Place, DmaFault> {
        let client = self.ram.client().ok_or(DmaFault)?;
        let fail = |e: String| {
            log::debug!(
                "controller {}: DMA at {addr:#x} (no fd-backed map): {e}",
                self.ctrl
            );
            DmaFault
        };
        let give_up = || self.yields && self.ram.give_way().anyone_waiting();
        let asked = |what: &str, e: RequestError| {
            if matches!(e, RequestError::GaveUp) {
                self.ram.give_way().gave_way();
            }
            fail(format!("{what} probe: {e}"))
        };
        let bytes = match how {
            Use::Write => {
                let n = len.min(NONCE);
                let nonce = &nonce(addr)[..n];
                client
                    .dma_write_unless(addr, nonce, PROBE_WAIT, &give_up)
                    .map_err(|e| asked("DMA_WRITE", e))?;
                nonce.to_vec()
            }
            Use::Read | Use::Locate => {
                // The whole range: a page of it proves the place of a
                // unique match, but "the same bytes elsewhere" must hold
                // for every byte this DMA reads.
                let mut b = vec![0u8; len];
                client
                    .dma_read_unless(addr, &mut b, PROBE_WAIT, &give_up)
                    .map_err(|e| asked("DMA_READ", e))?;
                b
            }
        };
        if bytes.len() < MIN_PROBE {
            return Err(fail(format!(
                "{} bytes cannot identify a page",
                bytes.len()
            )));
        }
        let (first, hits, ctrls) = self.find(rel, size, &bytes);
        match first {
            Some(f) if hits == 1 => Ok(Place::Unique(f)),
            Some(f) if ctrls == 1 && how != Use::Write => Ok(Place::SameBytes(f)),
            _ => Err(fail(format!(
                "its content is in {hits} places of {ctrls} peer CMBs of this group, not one"
            ))),
        }
    }

    /// The page-aligned places of the peers' CMBs where a section of
    /// `size` bytes holds `bytes` at `rel`: the first, how many (counted up
    /// to 2 per CMB), and in how many controllers' CMBs.
    fn find(&self, rel: usize, size: usize, bytes: &[u8]) -> (Option<Spot>, usize, usize) {
        let windows = self.cmbs.read().unwrap_or_else(|e| e.into_inner());
        let (mut first, mut hits, mut ctrls) = (None, 0usize, 0usize);
        for w in windows
            .iter()
            .filter(|w| !w.unreachable && w.ctrl != self.ctrl)
        {
            let before = hits;
            let mut base = 0usize;
            // Two places in one CMB already say "not unique": stop there.
            while hits - before < 2 && base.checked_add(size).is_some_and(|e| e <= w.mem.len()) {
                if w.mem.holds(base + rel, bytes) {
                    hits += 1;
                    first.get_or_insert_with(|| Spot {
                        ctrl: w.ctrl,
                        mem: w.mem.clone(),
                        base,
                    });
                }
                base += PAGE;
            }
            ctrls += usize::from(hits > before);
        }
        (first, hits, ctrls)
    }
}

/// Where a probe put a section.
enum Place {
    /// The one place: kept for the section's life.
    Unique(Spot),
    /// One of several places of one controller's CMB holding the same
    /// bytes: right for this read only.
    SameBytes(Spot),
}

/// 16 bytes no guest writes by chance: a process-wide counter and the
/// address, mixed (splitmix64).
fn nonce(addr: u64) -> [u8; NONCE] {
    static NEXT: AtomicU64 = AtomicU64::new(0x7032_706e_766d_6500);
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let mut out = [0u8; NONCE];
    out[..8].copy_from_slice(&mix(n).to_le_bytes());
    out[8..].copy_from_slice(&mix(n ^ addr).to_le_bytes());
    out
}
