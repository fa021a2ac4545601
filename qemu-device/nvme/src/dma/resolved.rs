//! A transfer resolved to process memory: the pointers, the mappings that
//! keep them valid, and the only code that moves bytes through them.

use super::guest_ram::RamMap;
use super::{sigbus, DmaCut, DmaFault, Mapping};
use crate::dma::route::{Dir, Kind, Target};
use crate::stats::Counters;
use std::sync::Arc;

/// Bytes of each piece a transfer moves (None: every piece whole).
struct Lens(Option<Vec<usize>>);

impl Lens {
    fn of(&self, i: usize, p: &Piece) -> usize {
        self.0.as_ref().map_or(p.len, |l| l[i])
    }
}

/// One piece of a resolved transfer.
pub(super) struct Piece {
    /// None: a bit bucket (no memory behind it).
    pub(super) target: Option<Target>,
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

/// A transfer resolved to process memory. The pointers stay valid while it
/// lives: the guest RAM sections and CMB mappings it uses are held here. A
/// DMA_UNMAP of a section it uses does not wait for it: the unmap revokes
/// the section (see `RamMap::revoke`: the guest's pages leave this process
/// before the unmap is answered), the transfer moves junk from then on and
/// fails with [`DmaFault`] (the command: Data Transfer Error).
pub struct Resolved<'a> {
    pub(super) stats: &'a Counters,
    /// A fault rule's cut (data transfers only).
    pub(super) cut: Option<&'a DmaCut>,
    pub(super) kind: Kind,
    pub(super) pieces: Vec<Piece>,
    pub(super) cmbs: Vec<Arc<Mapping>>,
    pub(super) ram: Vec<Arc<RamMap>>,
}

impl Resolved<'_> {
    /// Where each piece lives (None: bit bucket), and its length.
    pub fn targets(&self) -> impl Iterator<Item = (Option<Target>, usize)> + '_ {
        self.pieces.iter().map(|p| (p.target, p.len))
    }

    /// Moves the whole transfer with one vectored call `io` over the
    /// pieces (bit buckets: scratch bytes), then counts it in direction
    /// `dir` — the only way to reach the pieces' memory. EFAULT when guest
    /// RAM it used was unmapped meanwhile.
    pub fn vectored(
        &self,
        dir: Dir,
        io: impl FnOnce(&mut [libc::iovec]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut bucket = vec![0u8; self.bucket_len()];
        let lens = self.lens();
        let mut iov = self.iovecs(&mut bucket, &lens);
        self.stall();
        io(&mut iov)?;
        self.count(dir, &lens);
        if self.revoked() {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        Ok(())
    }

    /// A `dma-stall-ms` rule's wait, with the memory resolved and held.
    fn stall(&self) {
        if let Some(d) = self.cut.and_then(|c| c.stall) {
            std::thread::sleep(d);
        }
    }

    /// Some guest RAM of this transfer was unmapped after it was resolved:
    /// what moved may be junk. Asked after the bytes moved (bytes that may
    /// have reached guest RAM are counted anyway: the counters never
    /// under-count guest RAM).
    fn revoked(&self) -> bool {
        // Pairs with the fence in `RamMap::revoke`: a transfer that sees
        // no revocation moved its bytes before the unmap replaced them.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.ram.iter().any(|r| r.revoked())
    }

    /// How many bytes of each piece move: all of them (and nothing
    /// allocated) unless a fault rule cuts the transfer.
    fn lens(&self) -> Lens {
        Lens(self.cut.map(|c| {
            self.pieces
                .iter()
                .map(|p| c.allow(p.target, p.len))
                .collect()
        }))
    }

    fn count(&self, dir: Dir, lens: &Lens) {
        for (i, p) in self.pieces.iter().enumerate() {
            if let Some(t) = p.target {
                self.stats.add(self.kind, dir, t, lens.of(i, p) as u64);
            }
        }
    }

    /// I/O vectors over the pieces; bit buckets read into or write from
    /// `bucket`, which must be as long as the longest of them.
    fn iovecs(&self, bucket: &mut [u8], lens: &Lens) -> Vec<libc::iovec> {
        self.pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let base = if p.target.is_some() {
                    p.ptr
                } else {
                    assert!(p.len <= bucket.len());
                    bucket.as_mut_ptr()
                };
                libc::iovec {
                    iov_base: base.cast(),
                    iov_len: lens.of(i, p),
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
    /// (counted as written); faults when guest RAM vanished under the copy.
    pub fn scatter(&self, data: &[u8]) -> Result<(), DmaFault> {
        let lens = self.lens();
        self.stall();
        self.guarded(|| {
            let mut done = 0;
            for (i, p) in self.pieces.iter().enumerate() {
                let n = lens.of(i, p);
                if p.target.is_some() {
                    // SAFETY: p.ptr..+n is inside a mapping this value keeps alive.
                    unsafe {
                        std::ptr::copy_nonoverlapping(data[done..done + n].as_ptr(), p.ptr, n)
                    }
                }
                done += p.len;
            }
        })?;
        self.count(Dir::Written, &lens);
        if self.revoked() {
            return Err(DmaFault);
        }
        Ok(())
    }

    /// Collects the pieces in order; bit buckets read as zeros (counted as
    /// read); faults when guest RAM vanished under the copy.
    pub fn gather(&self) -> Result<Vec<u8>, DmaFault> {
        let lens = self.lens();
        let mut data = vec![0u8; self.pieces.iter().map(|p| p.len).sum()];
        self.stall();
        self.guarded(|| {
            let mut done = 0;
            for (i, p) in self.pieces.iter().enumerate() {
                if p.target.is_some() {
                    // SAFETY: as in scatter.
                    let n = lens.of(i, p);
                    unsafe { std::ptr::copy_nonoverlapping(p.ptr, data[done..].as_mut_ptr(), n) }
                }
                done += p.len;
            }
        })?;
        self.count(Dir::Read, &lens);
        if self.revoked() {
            return Err(DmaFault);
        }
        Ok(data)
    }

    /// Runs a copy over the pieces; guest RAM lost under it (SIGBUS) marks
    /// the client's memory lost and faults the transfer.
    fn guarded(&self, copy: impl FnOnce()) -> Result<(), DmaFault> {
        if self.ram.is_empty() {
            copy();
            return Ok(());
        }
        sigbus::guarded(copy).map_err(|sigbus::Lost| {
            self.ram.iter().for_each(|r| r.lose());
            DmaFault
        })
    }
}
