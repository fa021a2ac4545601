//! Guest RAM read in place: QEMU's RAM is a memfd (`memory-backend-memfd`);
//! the launcher opens it through /proc/<qemu>/fd and scans it where it
//! lies, skipping the holes the guest never wrote (they read as zeros, and
//! a zero sector is never evidence), instead of dumping it through QMP.

use crate::ramscan::{Scanner, SECTOR};
use anyhow::{bail, Context, Result};
use nix::unistd::Whence;
use p2pnvme_docs::verdict::RamRange;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Bytes one thread maps and scans at a time.
const PIECE: u64 = 64 << 20;

/// The name QEMU gives the memfd of `-object memory-backend-memfd`.
const BACKEND_MEMFD: &str = "/memfd:memory-backend-memfd";

/// A proof's host-side watch: when the command started and ended (the
/// guest's init asks `prove-start` and `prove-end`), and the scan of guest
/// RAM for the data, taken at `prove-end` while the guest waits for the
/// reply, so it sees RAM as the command left it.
pub struct ProofWatch {
    data: Arc<Vec<u8>>,
    ranges: Vec<RamRange>,
    qemu: OnceLock<u32>,
    seen: Mutex<Seen>,
}

/// What the watch saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// When the command started (host clock).
    pub started: Option<Instant>,
    /// When it ended.
    pub ended: Option<Instant>,
    /// The scan, once taken.
    pub scan: Option<ScanResult>,
}

/// One scan of guest RAM.
#[derive(Clone, Copy, Debug)]
pub struct ScanResult {
    /// Distinct data sectors found.
    pub hits: u64,
    /// Sectors of the data.
    pub sectors: u64,
    /// RAM sectors compared (holes included).
    pub scanned: u64,
    /// What the scan covered.
    pub coverage: Coverage,
    /// How long it took.
    pub seconds: f64,
}

impl ProofWatch {
    /// A watch for `data` over the guest-physical `ranges`.
    pub fn new(data: Arc<Vec<u8>>, ranges: Vec<RamRange>) -> Arc<ProofWatch> {
        Arc::new(ProofWatch {
            data,
            ranges,
            qemu: OnceLock::new(),
            seen: Mutex::default(),
        })
    }

    /// The QEMU process that runs the guest (its RAM is opened at the
    /// scan: QEMU creates it after it starts).
    pub fn attach(&self, qemu_pid: u32) {
        let _ = self.qemu.set(qemu_pid);
    }

    /// The command starts.
    pub fn started(&self) {
        self.seen.lock().unwrap().started = Some(Instant::now());
    }

    /// The command ended: scan guest RAM now.
    pub fn ended(&self) -> Result<()> {
        let ended = Instant::now();
        let pid = self.qemu.get().context("no QEMU to scan the RAM of")?;
        let ram = GuestRam::of_qemu(*pid)?;
        let mut scanner = Scanner::new(&self.data);
        let coverage = ram.scan(&self.ranges, &mut scanner)?;
        let scan = ScanResult {
            hits: scanner.hits(),
            sectors: scanner.sectors(),
            scanned: scanner.scanned,
            coverage,
            seconds: ended.elapsed().as_secs_f64(),
        };
        let mut seen = self.seen.lock().unwrap();
        seen.ended = Some(ended);
        seen.scan = Some(scan);
        Ok(())
    }

    /// What the watch saw so far.
    pub fn seen(&self) -> Seen {
        *self.seen.lock().unwrap()
    }

    /// The guest-physical ranges the scan covers.
    pub fn ranges(&self) -> &[RamRange] {
        &self.ranges
    }
}

/// Guest RAM, as QEMU's memory backend holds it: the ranges of the guest's
/// physical map back to back (q35: RAM below 4 GiB first, then above).
pub struct GuestRam {
    file: File,
}

/// What a scan covered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Bytes of guest RAM the scan covered (holes included).
    pub bytes: u64,
    /// Bytes it read (the rest were holes).
    pub resident: u64,
}

impl GuestRam {
    /// Opens the RAM of the QEMU process `pid`.
    pub fn of_qemu(pid: u32) -> Result<GuestRam> {
        let dir = format!("/proc/{pid}/fd");
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let path = e?.path();
            let Ok(target) = std::fs::read_link(&path) else {
                continue;
            };
            if target.to_string_lossy().starts_with(BACKEND_MEMFD) {
                return GuestRam::open(&path);
            }
        }
        bail!("QEMU (pid {pid}) has no {BACKEND_MEMFD}: guest RAM cannot be read in place")
    }

    /// Opens a file that holds guest RAM (read-only).
    pub fn open(path: &Path) -> Result<GuestRam> {
        let file =
            File::open(path).with_context(|| format!("opening guest RAM {}", path.display()))?;
        Ok(GuestRam { file })
    }

    /// Scans `ranges` (guest-physical, in backend order) for the data, on
    /// every CPU.
    pub fn scan(&self, ranges: &[RamRange], scanner: &mut Scanner) -> Result<Coverage> {
        let size = self.file.metadata()?.len();
        let mut cov = Coverage::default();
        let mut pieces = vec![];
        let mut offset = 0u64;
        for r in ranges {
            let end = offset
                .checked_add(r.len)
                .filter(|e| *e <= size)
                .with_context(|| {
                    format!(
                        "guest RAM range {:#x}+{:#x} is beyond the backend ({size} bytes)",
                        r.start, r.len
                    )
                })?;
            for (start, len) in self.extents(offset, end)? {
                let mut at = start;
                while at < start + len {
                    let n = (start + len - at).min(PIECE);
                    pieces.push((at, n));
                    at += n;
                }
                cov.resident += len;
            }
            cov.bytes += r.len;
            offset = end;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let next = AtomicUsize::new(0);
        let shared: &Scanner = scanner;
        let found: Vec<Result<Vec<u32>>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<Vec<u32>> {
                        let mut hits = vec![];
                        while let Some(&(at, n)) = pieces.get(next.fetch_add(1, Relaxed)) {
                            // SAFETY: a read-only view of guest RAM, which
                            // nobody truncates while QEMU runs; dropped here.
                            let map = unsafe {
                                memmap2::MmapOptions::new()
                                    .offset(at)
                                    .len(usize::try_from(n).context("guest RAM piece")?)
                                    .populate()
                                    .map(&self.file)
                            }
                            .context("mapping guest RAM")?;
                            shared.matches(&map, &mut hits);
                        }
                        Ok(hits)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a scan thread panicked"))
                .collect()
        });
        for hits in found {
            scanner.record(0, &hits?);
        }
        // Holes are zero sectors: compared, never found.
        scanner.record(cov.bytes / SECTOR as u64, &[]);
        Ok(cov)
    }

    /// The data extents in [from, to), page aligned (SEEK_DATA/SEEK_HOLE).
    fn extents(&self, from: u64, to: u64) -> Result<Vec<(u64, u64)>> {
        let seek = |at: u64, whence| -> Result<Option<u64>> {
            let at = i64::try_from(at).context("guest RAM offset")?;
            match nix::unistd::lseek(self.file.as_raw_fd(), at, whence) {
                Ok(r) => Ok(Some(r as u64)),
                // No data (or hole) at or after `at`.
                Err(nix::errno::Errno::ENXIO) => Ok(None),
                Err(e) => Err(e).context("seeking guest RAM"),
            }
        };
        let mut out = vec![];
        let mut at = from;
        while at < to {
            let Some(data) = seek(at, Whence::SeekData)?.filter(|d| *d < to) else {
                break;
            };
            let hole = seek(data, Whence::SeekHole)?.unwrap_or(to).min(to);
            out.push((data, hole - data));
            at = hole;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramscan::tests::pseudo_random;
    use std::io::{Seek, SeekFrom, Write};
    use std::time::Instant;

    fn memfd(size: u64) -> File {
        let fd = nix::sys::memfd::memfd_create(
            c"memory-backend-memfd",
            nix::sys::memfd::MemFdCreateFlag::empty(),
        )
        .unwrap();
        let f = File::from(fd);
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn finds_data_in_a_sparse_backend_and_counts_holes_as_scanned() {
        let data = pseudo_random(64 << 10, 9);
        let mut f = memfd(64 << 20);
        // Data in the second range, at an odd sector offset of a page.
        f.seek(SeekFrom::Start((48 << 20) + 3 * 512)).unwrap();
        f.write_all(&data[..8192]).unwrap();
        let ram = GuestRam::of_qemu(std::process::id()).unwrap();
        let ranges = [
            RamRange {
                start: 0,
                len: 32 << 20,
            },
            RamRange {
                start: 1 << 32,
                len: 32 << 20,
            },
        ];
        let mut s = Scanner::new(&data);
        let cov = ram.scan(&ranges, &mut s).unwrap();
        assert_eq!(s.hits(), 16);
        assert_eq!(s.scanned, (64 << 20) / 512);
        assert_eq!(cov.bytes, 64 << 20);
        assert!(cov.resident <= 4 * 4096, "{cov:?}: holes were read");
        let mut s = Scanner::new(&data);
        assert!(ram
            .scan(
                &[RamRange {
                    start: 0,
                    len: 65 << 20
                }],
                &mut s
            )
            .is_err());
        drop(f);
    }

    /// The in-place scan against the host's memcpy, one run, same memory.
    #[test]
    #[ignore = "timing: cargo test --release -p p2pnvme -- --ignored guest_ram_scan_speed --nocapture"]
    fn guest_ram_scan_speed() {
        let size = 1usize << 30;
        let data = pseudo_random(64 << 20, 3);
        let mut f = memfd(size as u64);
        let fill = pseudo_random(64 << 20, 5);
        for _ in 0..size / fill.len() {
            f.write_all(&fill).unwrap();
        }
        let ram = GuestRam::of_qemu(std::process::id()).unwrap();
        let ranges = [RamRange {
            start: 0,
            len: size as u64,
        }];
        // The host's memcpy bandwidth: both buffers touched first, best of 3.
        let src = vec![7u8; size];
        let mut dst = vec![1u8; size];
        let mut memcpy = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            memcpy = memcpy.max(size as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        assert_eq!(dst[4096], 7);
        let mut s = Scanner::new(&data);
        let t = Instant::now();
        ram.scan(&ranges, &mut s).unwrap();
        let scan = size as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!(
            "guest RAM scan in place: {scan:.1} GB/s; memcpy {memcpy:.1} GB/s; ratio {:.2}",
            scan / memcpy
        );
    }
}
