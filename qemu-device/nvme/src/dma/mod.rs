//! DMA address resolution, in one place: every address a controller touches
//! is classified as its own CMB, a peer controller's CMB (served from the same
//! process: a real peer-to-peer transfer), guest RAM (DMA_MAP file
//! descriptors), or invalid — CMB windows first, because QEMU also announces
//! directly mapped BARs as fd-less DMA maps.

mod cmb;
mod cut;
mod give_way;
mod guest_ram;
mod placement;
pub mod prp;
mod ram_map;
mod remote;
mod resolved;
pub mod route;
mod sigbus;

#[cfg(any(test, feature = "test-utils"))]
pub use cmb::memfd;
pub use cmb::{sealed_memfd, CmbRegistry, CmbWindow, Mapping};
pub use cut::DmaCut;
use guest_ram::RamMap;
pub use guest_ram::{GuestRam, MapError, Prot, Use};
use remote::Placed;
use resolved::Piece;
pub use resolved::Resolved;
use std::sync::Arc;

pub use crate::dma::route::Target;
use crate::dma::route::{Dir, Kind};
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
    /// A `dma-fail` fault rule's cut of this command's data transfer.
    pub cut: Option<&'a DmaCut>,
    /// A wait for the client gives way to a thread waiting for the
    /// controller lock (a command's DMA on the worker; see `give_way`).
    pub yields: bool,
}

impl<'a> Dma<'a> {
    /// Where [addr, addr+len) lives; a range that straddles two windows or
    /// leaves one is invalid.
    pub fn classify(&self, addr: u64, len: u64) -> Result<Target, DmaFault> {
        let len = usize::try_from(len).map_err(|_| DmaFault)?;
        self.each_piece(addr, len, |at, _, n| {
            self.with(at, n, Use::Locate, |_, _| ()).map(|(t, ())| t)
        })
    }

    /// Runs `piece(address, offset in the range, length)` over [addr,
    /// addr+len): once for the whole range when one window holds it (the
    /// common case, one lookup), else once per guest RAM section the range
    /// runs through (see `split`). Every piece must land in the same kind
    /// of memory.
    fn each_piece(
        &self,
        addr: u64,
        len: usize,
        mut piece: impl FnMut(u64, usize, usize) -> Result<Target, DmaFault>,
    ) -> Result<Target, DmaFault> {
        let whole = piece(addr, 0, len);
        if whole.is_ok() {
            return whole;
        }
        let pieces = self.split(addr, len)?;
        if pieces.len() < 2 {
            return whole;
        }
        let mut target = None;
        for (at, off, n) in pieces {
            same_target(&mut target, piece(at, off, n)?)?;
        }
        target.ok_or(DmaFault)
    }

    /// [addr, addr+len) as (address, offset in the range, length) pieces
    /// that each lie in one window: one piece, unless the range runs
    /// through several guest RAM sections (a guest IOMMU maps memory page
    /// by page). A CMB window is never cut: a range that leaves one is
    /// invalid, as is one that runs from guest RAM into a CMB.
    fn split(&self, addr: u64, len: usize) -> Result<Vec<(u64, usize, usize)>, DmaFault> {
        let whole = vec![(addr, 0, len)];
        let in_cmb = self.cmbs.read().unwrap().iter().any(|w| {
            w.base
                .is_some_and(|b| addr >= b && addr - b < w.mem.len() as u64)
        });
        if in_cmb || len == 0 {
            return Ok(whole);
        }
        let page = self.ram.probes_unannounced().then_some(remote::PAGE as u64);
        let Some(runs) = self.ram.runs(addr, len as u64, page) else {
            return Ok(whole); // `with` refuses it
        };
        let mut off = 0usize;
        let mut out = Vec::with_capacity(runs.len());
        for (at, n) in runs {
            let n = usize::try_from(n).map_err(|_| DmaFault)?;
            out.push((at, off, n));
            off += n;
        }
        Ok(out)
    }

    /// Finds [addr, addr+len) (CMB windows first) and runs `f` on its host
    /// address and the shared handle that keeps that memory mapped (holding
    /// a guest RAM handle makes an unmap of it wait).
    fn with<R>(
        &self,
        addr: u64,
        len: usize,
        how: Use,
        f: impl FnOnce(*mut u8, Holder<'_>) -> R,
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
                if addr < base || end > wend || w.unreachable {
                    return Err(DmaFault);
                }
                let p = w.mem.at((addr - base) as usize, len).ok_or(DmaFault)?;
                return Ok((self.target(w.ctrl), f(p, Holder::Cmb(&w.mem))));
            }
        }
        let mut f = Some(f);
        let r = self.ram.with(addr, len as u64, how, |p, region| {
            f.take().map(|f| f(p, Holder::Ram(region)))
        });
        if let Some(Some(r)) = r {
            return Ok((Target::GuestRam, r));
        }
        // Not guest RAM we map: perhaps a section QEMU gave without fd, a
        // CMB of this group behind a guest IOMMU (`remote`).
        let f = f.ok_or(DmaFault)?;
        let placed = match self.locate_unannounced(addr, len, how) {
            Some(placed) => placed?,
            None => self.locate_fdless(addr, len, how)?,
        };
        Ok(match placed {
            Placed::Cmb(t, mem, off) => {
                (t, f(mem.at(off, len).ok_or(DmaFault)?, Holder::Cmb(&mem)))
            }
            Placed::View(t, view, off) => {
                (t, f(view.at(off, len).ok_or(DmaFault)?, Holder::Ram(&view)))
            }
        })
    }

    /// What controller `ctrl`'s CMB is to this controller.
    fn target(&self, ctrl: usize) -> Target {
        if ctrl == self.ctrl {
            Target::OwnCmb
        } else {
            Target::PeerCmb(ctrl)
        }
    }

    /// Resolves every piece of a transfer up front (None: a bit bucket), so
    /// data can move between a backing file and this memory in one system
    /// call, without a bounce buffer.
    pub fn resolve(
        &self,
        segs: &[(Option<u64>, usize)],
        kind: Kind,
        dir: Dir,
    ) -> Result<Resolved<'a>, DmaFault> {
        let how = match dir {
            Dir::Read => Use::Read,
            Dir::Written => Use::Write,
        };
        let mut r = Resolved {
            stats: self.stats,
            cut: self.cut.filter(|_| kind == Kind::Data),
            kind,
            pieces: Vec::with_capacity(segs.len()),
            cmbs: vec![],
            ram: vec![],
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
            let (pieces, cmbs, ram) = (&mut r.pieces, &mut r.cmbs, &mut r.ram);
            self.each_piece(addr, len, |at, _, n| {
                let (target, ptr) = self.with(at, n, how, |p, held| {
                    match held {
                        Holder::Cmb(m) if !cmbs.iter().any(|c| Arc::ptr_eq(c, m)) => {
                            cmbs.push(m.clone())
                        }
                        Holder::Ram(g) if !ram.iter().any(|c| Arc::ptr_eq(c, g)) => {
                            ram.push(g.clone())
                        }
                        _ => {}
                    }
                    p
                })?;
                pieces.push(Piece {
                    target: Some(target),
                    ptr,
                    len: n,
                });
                Ok(target)
            })?;
        }
        Ok(r)
    }

    /// Reads `buf.len()` bytes of `kind` at `addr` (counted).
    pub fn read(&self, kind: Kind, addr: u64, buf: &mut [u8]) -> Result<Target, DmaFault> {
        self.each_piece(addr, buf.len(), |at, off, n| {
            let dst = &mut buf[off..off + n];
            let (t, copied) = self.with(at, n, Use::Read, |p, held| {
                // SAFETY: `with` hands out a pointer to n mapped bytes.
                held.copy(|| unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), n) })
            })?;
            copied?;
            self.stats.add(kind, Dir::Read, t, n as u64);
            Ok(t)
        })
    }

    /// Writes `buf` as `kind` at `addr` (counted).
    pub fn write(&self, kind: Kind, addr: u64, buf: &[u8]) -> Result<Target, DmaFault> {
        self.each_piece(addr, buf.len(), |at, off, n| {
            let src = &buf[off..off + n];
            let (t, copied) = self.with(at, n, Use::Write, |p, held| {
                // SAFETY: as in read.
                held.copy(|| unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, n) })
            })?;
            copied?;
            self.stats.add(kind, Dir::Written, t, n as u64);
            Ok(t)
        })
    }

    /// A CPU store through the bus (the test host writing into a CMB, as a
    /// guest would through BAR2): not a DMA of this controller, not counted.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn cpu_write(&self, addr: u64, buf: &[u8]) -> Result<Target, DmaFault> {
        self.with(addr, buf.len(), Use::Write, |p, held| {
            // SAFETY: as in read.
            held.copy(|| unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) })
        })
        .and_then(|(t, copied)| copied.map(|()| t))
    }
}

/// Pieces of one range must all land in the same kind of memory.
fn same_target(seen: &mut Option<Target>, t: Target) -> Result<(), DmaFault> {
    match seen.replace(t) {
        Some(old) if old != t => Err(DmaFault),
        _ => Ok(()),
    }
}

/// What keeps the memory a DMA uses mapped.
enum Holder<'h> {
    /// A CMB mapping.
    Cmb(&'h Arc<Mapping>),
    /// A guest RAM section, or the view of a CMB page an fd-less section
    /// is: an unmap revokes it from the DMA holding a clone.
    Ram(&'h Arc<RamMap>),
}

impl Holder<'_> {
    /// Runs a CPU copy to or from this memory. Guest RAM can vanish under
    /// it (the client shrank the file): then the client's memory is marked
    /// lost and the DMA faults; the process lives on.
    fn copy(&self, copy: impl FnOnce()) -> Result<(), DmaFault> {
        match self {
            Holder::Cmb(_) => {
                copy();
                Ok(())
            }
            Holder::Ram(r) => sigbus::guarded(copy).map_err(|sigbus::Lost| {
                r.lose();
                DmaFault
            }),
        }
    }
}

#[cfg(test)]
mod tests;
