//! Lock-free views of a controller for the vfio-user message thread:
//! a mirror of the BAR0 registers (reads never wait for the worker) and
//! per-queue doorbell slots (writes land in atomics the worker applies).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Doorbell slots: two per queue (SQ tail, CQ head) for the admin queue and
/// every I/O queue.
pub const SLOTS: usize = 2 * (crate::controller::MAX_IO_QUEUES + 1);
/// A slot with no doorbell write waiting.
const EMPTY: u32 = u32::MAX;

/// The BAR0 registers as last published by the controller.
#[derive(Default)]
pub struct RegMirror {
    /// Register values by dword index (offsets 0x00..0x60).
    dwords: [AtomicU32; 24],
}

impl RegMirror {
    /// Stores the dword at register offset `off` (4-byte aligned).
    pub fn set(&self, off: u64, v: u32) {
        if let Some(d) = self.dwords.get((off / 4) as usize) {
            d.store(v, Ordering::Release);
        }
    }

    /// Stores a 64-bit register as two dwords.
    pub fn set64(&self, off: u64, v: u64) {
        self.set(off, v as u32);
        self.set(off + 4, (v >> 32) as u32);
    }

    /// A register read of `data.len()` bytes at `off`; doorbells and
    /// unknown registers read as zero.
    pub fn read(&self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let mut bytes = [0u8; 8];
        let base = off & !3;
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let at = base.checked_add(i as u64 * 4).map(|o| (o / 4) as usize);
            if let Some(d) = at.and_then(|i| self.dwords.get(i)) {
                chunk.copy_from_slice(&d.load(Ordering::Acquire).to_le_bytes());
            }
        }
        let skip = (off & 3) as usize;
        let n = data.len().min(8 - skip);
        data[..n].copy_from_slice(&bytes[skip..skip + n]);
    }
}

/// Doorbell writes waiting for the worker.
pub struct Doorbells {
    slots: [AtomicU32; SLOTS],
    /// One bit per slot with a write waiting (the worker looks at these
    /// only, not at every slot).
    written: [AtomicU64; SLOTS.div_ceil(64)],
    /// A write to a doorbell of a queue that cannot exist.
    bad_register: AtomicBool,
    /// Any slot (or bad_register) changed since the worker last looked.
    pending: AtomicBool,
}

impl Default for Doorbells {
    fn default() -> Self {
        Doorbells {
            slots: std::array::from_fn(|_| AtomicU32::new(EMPTY)),
            written: Default::default(),
            bad_register: AtomicBool::new(false),
            pending: AtomicBool::new(false),
        }
    }
}

impl Doorbells {
    /// Records a doorbell write at BAR0 offset `doorbell_index * 4 +
    /// DOORBELLS`; a later write to the same slot supersedes it.
    /// A doorbell register write of `data` at `offset` bytes past the
    /// first doorbell (the low 32 bits count).
    pub fn write(&self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        self.ring(offset / 4, u32::from_le_bytes(b));
    }

    pub fn ring(&self, index: u64, v: u32) {
        match self.slots.get(index as usize) {
            Some(s) => {
                s.store(v & 0xffff, Ordering::Release);
                self.written[index as usize / 64].fetch_or(1 << (index % 64), Ordering::AcqRel);
            }
            None => self.bad_register.store(true, Ordering::Release),
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Whether writes are waiting.
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes every waiting write: (slot index, value) pairs, and whether a
    /// nonexistent doorbell was written.
    pub fn take(&self) -> (Vec<(usize, u32)>, bool) {
        self.pending.store(false, Ordering::Release);
        let mut writes = vec![];
        for (w, word) in self.written.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let v = self.slots[i].swap(EMPTY, Ordering::AcqRel);
                if v != EMPTY {
                    writes.push((i, v));
                }
            }
        }
        (writes, self.bad_register.swap(false, Ordering::AcqRel))
    }

    /// Forgets waiting writes (reset, disconnect).
    pub fn clear(&self) {
        let _ = self.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_reads_any_width_and_offset() {
        let m = RegMirror::default();
        m.set64(0x28, 0x1122_3344_5566_7788);
        let mut b = [0u8; 8];
        m.read(0x28, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
        let mut w = [0u8; 4];
        m.read(0x2c, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0x1122_3344);
        m.read(u64::MAX - 1, &mut w);
        assert_eq!(w, [0; 4], "no wrap");
    }

    #[test]
    fn doorbells_coalesce_and_flag_bad_registers() {
        let d = Doorbells::default();
        d.ring(2, 5);
        d.ring(2, 7);
        d.ring(1000, 1);
        assert!(d.pending());
        let (w, bad) = d.take();
        assert_eq!(w, vec![(2, 7)]);
        assert!(bad);
        assert!(!d.pending());
    }
}
