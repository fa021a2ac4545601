//! Classification of guest physical addresses and the per-vCPU counters the
//! memory callback bumps. Pure data: no QEMU calls, unit-tested.

use p2pnvme_docs::witness::{
    Accesses, AddrWindow, ClassReport, PluginHealth, WindowReport, CLASS_OTHER_MMIO, CLASS_RAM,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;

/// Named windows the plugin can tell apart (controllers' BARs).
pub const MAX_WINDOWS: usize = 62;
const RAM: usize = 0;
const OTHER_MMIO: usize = 1;
const FIRST_WINDOW: usize = 2;
const N_CLASSES: usize = FIRST_WINDOW + MAX_WINDOWS;

/// The named windows, readable by the memory callback without a lock.
///
/// Replacing them is not atomic for a callback running at that moment (it
/// may classify one access by the old table); the launcher sets windows
/// before it opens a measurement window, so no measured access is affected.
pub struct WindowTable {
    n: AtomicUsize,
    /// Lowest window start: every address below it (guest RAM, mostly)
    /// needs no search.
    lowest: AtomicU64,
    start: [AtomicU64; MAX_WINDOWS],
    end: [AtomicU64; MAX_WINDOWS],
    names: Mutex<Vec<AddrWindow>>,
}

impl Default for WindowTable {
    fn default() -> Self {
        WindowTable {
            n: AtomicUsize::new(0),
            lowest: AtomicU64::new(u64::MAX),
            start: std::array::from_fn(|_| AtomicU64::new(0)),
            end: std::array::from_fn(|_| AtomicU64::new(0)),
            names: Mutex::new(vec![]),
        }
    }
}

impl WindowTable {
    /// Class index of a guest physical address.
    #[inline]
    pub fn classify(&self, addr: u64, is_io: bool) -> usize {
        let n = self.n.load(Acquire);
        let n = if addr < self.lowest.load(Relaxed) {
            0
        } else {
            n
        };
        for i in 0..n {
            if addr >= self.start[i].load(Relaxed) && addr < self.end[i].load(Relaxed) {
                return FIRST_WINDOW + i;
            }
        }
        if is_io {
            OTHER_MMIO
        } else {
            RAM
        }
    }

    /// Replaces the windows; refuses empty, overflowing or overlapping ones.
    pub fn set(&self, windows: &[AddrWindow]) -> Result<(), String> {
        if windows.len() > MAX_WINDOWS {
            return Err(format!("{} windows: at most {MAX_WINDOWS}", windows.len()));
        }
        let mut ranges = Vec::with_capacity(windows.len());
        for w in windows {
            let end = w
                .start
                .checked_add(w.size)
                .filter(|_| w.size > 0)
                .ok_or_else(|| format!("window {} is empty or wraps around", w.name))?;
            if let Some((_, _, other)) = ranges.iter().find(|(s, e, _)| w.start < *e && *s < end) {
                return Err(format!("window {} overlaps {other}", w.name));
            }
            ranges.push((w.start, end, w.name.clone()));
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        self.n.store(0, Release);
        for (i, (s, e, _)) in ranges.iter().enumerate() {
            self.start[i].store(*s, Relaxed);
            self.end[i].store(*e, Relaxed);
        }
        let lowest = ranges.iter().map(|r| r.0).min().unwrap_or(u64::MAX);
        self.lowest.store(lowest, Relaxed);
        self.n.store(ranges.len(), Release);
        *names = windows.to_vec();
        Ok(())
    }

    fn names(&self) -> Vec<AddrWindow> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Counters of one class and direction on one vCPU.
#[derive(Default)]
struct Cell {
    accesses: AtomicU64,
    bytes: AtomicU64,
    trapped: AtomicU64,
}

/// Every class and direction of one vCPU. Only that vCPU's thread writes
/// them (a load and a store, no locked instruction); others only read.
struct VcpuCells {
    cells: [[Cell; 2]; N_CLASSES],
    instructions: AtomicU64,
}

#[inline]
fn bump(a: &AtomicU64, v: u64) {
    a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
}

/// Values of [`VcpuCells`] at one moment: `[class][store][accesses, bytes, trapped]`.
type CellValues = Vec<[[u64; 3]; 2]>;

/// All counters of the plugin.
pub struct Counters {
    vcpus: Box<[VcpuCells]>,
    translations: AtomicU64,
    mismatches: AtomicU64,
    unresolved: AtomicU64,
    dropped: AtomicU64,
}

/// Counter values when a measurement window opened.
#[derive(Clone, Default)]
pub struct Snapshot {
    cells: Vec<CellValues>,
    instructions: Vec<u64>,
}

impl Snapshot {
    /// The same snapshot with instruction counts kept elsewhere (QEMU's
    /// inline per-vCPU counters), one per vCPU; missing vCPUs count 0.
    pub fn with_instructions(mut self, per_vcpu: &[u64]) -> Snapshot {
        for (v, n) in self.instructions.iter_mut().enumerate() {
            *n = per_vcpu.get(v).copied().unwrap_or(0);
        }
        self
    }
}

impl Counters {
    /// Counters for vCPU indices below `vcpus`.
    pub fn new(vcpus: usize) -> Self {
        Counters {
            vcpus: (0..vcpus.max(1))
                .map(|_| VcpuCells {
                    cells: std::array::from_fn(|_| Default::default()),
                    instructions: AtomicU64::new(0),
                })
                .collect(),
            translations: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            unresolved: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// One access of `bytes` by `vcpu` to class `class`.
    #[inline]
    pub fn record(&self, vcpu: usize, class: usize, store: bool, bytes: u64, trapped: bool) {
        let Some(c) = self
            .vcpus
            .get(vcpu)
            .and_then(|v| v.cells.get(class))
            .map(|c| &c[usize::from(store)])
        else {
            self.dropped.fetch_add(1, Relaxed);
            return;
        };
        bump(&c.accesses, 1);
        bump(&c.bytes, bytes);
        if trapped {
            bump(&c.trapped, 1);
        }
    }

    /// `vcpu` executed a block of `n` instructions.
    #[inline]
    pub fn executed(&self, vcpu: usize, n: u64) {
        match self.vcpus.get(vcpu) {
            Some(v) => bump(&v.instructions, n),
            None => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// An access QEMU could not resolve to a physical address.
    pub fn unresolved(&self) {
        self.unresolved.fetch_add(1, Relaxed);
    }

    /// A callback got userdata other than what it was registered with.
    pub fn mismatch(&self) {
        self.mismatches.fetch_add(1, Relaxed);
    }

    /// A block was translated (and instrumented).
    pub fn translated(&self) {
        self.translations.fetch_add(1, Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> Snapshot {
        let cells = self
            .vcpus
            .iter()
            .map(|v| {
                v.cells
                    .iter()
                    .map(|dirs| {
                        dirs.each_ref().map(|c| {
                            [
                                c.accesses.load(Relaxed),
                                c.bytes.load(Relaxed),
                                c.trapped.load(Relaxed),
                            ]
                        })
                    })
                    .collect()
            })
            .collect();
        let instructions = self
            .vcpus
            .iter()
            .map(|v| v.instructions.load(Relaxed))
            .collect();
        Snapshot {
            cells,
            instructions,
        }
    }

    fn health(&self, now: &Snapshot) -> PluginHealth {
        let unresolved = self.unresolved.load(Relaxed);
        let dropped = self.dropped.load(Relaxed);
        let counted: u64 = now.cells.iter().flatten().flatten().map(|v| v[0]).sum();
        PluginHealth {
            translations: self.translations.load(Relaxed),
            mem_callbacks: counted + unresolved + dropped,
            userdata_mismatches: self.mismatches.load(Relaxed),
            unresolved,
            dropped,
        }
    }

    /// What happened between `from` and `to` (a snapshot taken now), by class.
    pub fn report(
        &self,
        name: &str,
        elapsed_s: f64,
        windows: &WindowTable,
        from: &Snapshot,
        to: &Snapshot,
    ) -> WindowReport {
        let named = windows.names();
        let mut class_names: Vec<(String, Option<AddrWindow>)> = vec![
            (CLASS_RAM.to_string(), None),
            (CLASS_OTHER_MMIO.to_string(), None),
        ];
        class_names.extend(named.into_iter().map(|w| (w.name.clone(), Some(w))));
        let zero: CellValues = vec![[[0; 3]; 2]; N_CLASSES];
        let classes = class_names
            .into_iter()
            .enumerate()
            .map(|(k, (class, window))| {
                let per_vcpu: Vec<Accesses> = to
                    .cells
                    .iter()
                    .enumerate()
                    .map(|(v, now)| {
                        let was = from.cells.get(v).unwrap_or(&zero);
                        let d = |store: usize, i: usize| {
                            now[k][store][i].wrapping_sub(was[k][store][i])
                        };
                        Accesses {
                            loads: d(0, 0),
                            stores: d(1, 0),
                            load_bytes: d(0, 1),
                            store_bytes: d(1, 1),
                            trapped_loads: d(0, 2),
                            trapped_stores: d(1, 2),
                        }
                    })
                    .collect();
                let mut total = Accesses::default();
                per_vcpu.iter().for_each(|a| total.add(a));
                ClassReport {
                    class,
                    window,
                    total,
                    per_vcpu,
                }
            })
            .collect();
        let instructions_per_vcpu: Vec<u64> = to
            .instructions
            .iter()
            .enumerate()
            .map(|(v, n)| n.wrapping_sub(from.instructions.get(v).copied().unwrap_or(0)))
            .collect();
        WindowReport {
            name: name.to_string(),
            elapsed_s,
            instructions: instructions_per_vcpu.iter().sum(),
            instructions_per_vcpu,
            classes,
            health: self.health(to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, start: u64, size: u64) -> AddrWindow {
        AddrWindow {
            name: name.into(),
            start,
            size,
        }
    }

    #[test]
    fn classify_windows_then_io_then_ram() {
        let t = WindowTable::default();
        t.set(&[
            w("a/regs", 0xfe00_0000, 0x4000),
            w("a/cmb", 0x8_0000_0000, 16 << 20),
        ])
        .unwrap();
        assert_eq!(t.classify(0xfe00_0000, true), FIRST_WINDOW);
        assert_eq!(t.classify(0xfe00_3fff, true), FIRST_WINDOW);
        assert_eq!(t.classify(0xfe00_4000, true), OTHER_MMIO);
        assert_eq!(
            t.classify(0x8_0000_0000 + (16 << 20) - 1, false),
            FIRST_WINDOW + 1
        );
        assert_eq!(t.classify(0x1000, false), RAM);
    }

    #[test]
    fn the_fast_path_below_every_window_follows_the_table() {
        let t = WindowTable::default();
        // No windows: everything is RAM or other MMIO.
        assert_eq!(t.classify(0x8_0000_0000, false), RAM);
        assert_eq!(t.classify(0xfee0_0000, true), OTHER_MMIO);
        t.set(&[w("a/cmb", 0x8_0000_0000, 1 << 20)]).unwrap();
        assert_eq!(t.classify(0xfee0_0000, true), OTHER_MMIO);
        assert_eq!(t.classify(0x7_ffff_ffff, false), RAM);
        assert_eq!(t.classify(0x8_0000_0000, false), FIRST_WINDOW);
        // A lower window: the bound moves down with it.
        t.set(&[
            w("a/cmb", 0x8_0000_0000, 1 << 20),
            w("a/regs", 0x1000, 0x1000),
        ])
        .unwrap();
        assert_eq!(t.classify(0x1000, true), FIRST_WINDOW + 1);
        assert_eq!(t.classify(0xfff, false), RAM);
        // And back up when the windows go.
        t.set(&[]).unwrap();
        assert_eq!(t.classify(0x1000, true), OTHER_MMIO);
    }

    #[test]
    fn bad_windows_are_refused_and_keep_the_old_table() {
        let t = WindowTable::default();
        t.set(&[w("a", 0x1000, 0x1000)]).unwrap();
        assert!(t.set(&[w("b", 0x1000, 0)]).is_err());
        assert!(t.set(&[w("b", u64::MAX, 2)]).is_err());
        assert!(t.set(&[w("b", 0, 0x2000), w("c", 0x1fff, 1)]).is_err());
        let many: Vec<_> = (0..=MAX_WINDOWS as u64)
            .map(|i| w("x", i << 20, 1))
            .collect();
        assert!(t.set(&many).is_err());
        assert_eq!(t.classify(0x1800, false), FIRST_WINDOW);
    }

    #[test]
    fn report_is_the_difference_per_class_vcpu_and_direction() {
        let t = WindowTable::default();
        t.set(&[w("p2pnvme-0/cmb", 0x10_0000, 0x1000)]).unwrap();
        let c = Counters::new(2);
        c.record(0, t.classify(0x2000, false), false, 8, false);
        c.executed(0, 10);
        c.executed(1, 20);
        let from = c.snapshot();
        c.executed(0, 5);
        c.executed(1, 30);
        c.record(1, t.classify(0x10_0010, false), true, 8, false);
        c.record(1, t.classify(0x10_0018, false), true, 4, false);
        c.record(0, t.classify(0xfee0_0000, true), true, 4, true);
        c.record(0, t.classify(0x3000, false), false, 2, false);
        c.record(7, RAM, false, 2, false); // beyond the table: dropped
        let to = c.snapshot();
        let r = c.report("copy", 1.0, &t, &from, &to);
        assert_eq!(r.instructions, 35);
        assert_eq!(r.instructions_per_vcpu, vec![5, 30]);
        let cmb = r.class("p2pnvme-0/cmb").unwrap();
        assert_eq!(cmb.total.stores, 2);
        assert_eq!(cmb.total.store_bytes, 12);
        assert_eq!(cmb.per_vcpu[1].stores, 2);
        assert_eq!(cmb.per_vcpu[0], Accesses::default());
        assert_eq!(cmb.window.as_ref().unwrap().start, 0x10_0000);
        let ram = r.class(CLASS_RAM).unwrap();
        assert_eq!((ram.total.loads, ram.total.load_bytes), (1, 2));
        let mmio = r.class(CLASS_OTHER_MMIO).unwrap();
        assert_eq!((mmio.total.stores, mmio.total.trapped_stores), (1, 1));
        assert_eq!(r.health.dropped, 1);
        assert_eq!(r.health.mem_callbacks, 6);
    }
}
