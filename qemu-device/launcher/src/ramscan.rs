//! Looks for copied data in guest RAM, 512-byte sector by sector.
//!
//! Data that passed through system memory lands at some 512-byte aligned
//! address (the smallest logical block a device transfers), not always at
//! the start of a page: a buffer at an odd sector offset, split across two
//! pages, or partly overwritten afterwards. So every 512-byte sector of the
//! source is looked for at every 512-byte offset of every guest RAM range.

use p2pnvme_docs::verdict::RamRange;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The unit of the scan.
pub const SECTOR: usize = 512;

/// Bytes of a sector hashed as a pre-filter; candidates are confirmed
/// byte for byte, so a short prefix only costs a rare extra compare.
const PREFIX: usize = 64;

/// q35 keeps at most this much RAM below 4 GiB when the guest has at
/// least 2.75 GiB (QEMU's pc_q35_init); the rest starts at 4 GiB.
const Q35_LOWMEM: u64 = 0x8000_0000;
const Q35_SPLIT_AT: u64 = 0xb000_0000;
const FOUR_GIB: u64 = 1 << 32;

/// The guest-physical RAM ranges of a q35 guest with `mem` bytes.
pub fn q35_ranges(mem: u64) -> Vec<RamRange> {
    let below = if mem >= Q35_SPLIT_AT { Q35_LOWMEM } else { mem };
    let mut v = vec![RamRange {
        start: 0,
        len: below,
    }];
    if mem > below {
        v.push(RamRange {
            start: FOUR_GIB,
            len: mem - below,
        });
    }
    v
}

/// The keys are already hashes: no second hashing.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

fn prefix_hash(s: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in s[..PREFIX].chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().expect("8-byte chunk"));
        h = (h ^ v).wrapping_mul(0x1000_0000_01b3).rotate_left(23);
    }
    h
}

/// Size of the pre-filter: 2^21 bits (256 KiB, about an L2 cache).
const FILTER_BITS: u32 = 21;

fn filter_bit(h: u64) -> usize {
    (h >> (64 - FILTER_BITS)) as usize
}

/// The data's sectors, ready to be looked for.
pub struct Scanner<'a> {
    data: &'a [u8],
    wanted: HashMap<u64, Vec<u32>, BuildHasherDefault<Identity>>,
    /// One bit per value of a hash's top `FILTER_BITS` bits: a cache-sized
    /// pre-filter, so most RAM sectors never touch the (large) map.
    filter: Vec<u64>,
    found: Vec<bool>,
    /// RAM sectors compared so far.
    pub scanned: u64,
}

impl<'a> Scanner<'a> {
    /// Indexes every sector of `data` (a multiple of 512 bytes) that is not
    /// all zero (free RAM is zero).
    pub fn new(data: &'a [u8]) -> Scanner<'a> {
        let mut wanted: HashMap<u64, Vec<u32>, BuildHasherDefault<Identity>> = HashMap::default();
        let mut filter = vec![0u64; (1 << FILTER_BITS) / 64];
        for (i, s) in data.chunks_exact(SECTOR).enumerate() {
            if s.iter().any(|&x| x != 0) {
                let i = u32::try_from(i).expect("--prove data is below 2 TiB");
                let h = prefix_hash(s);
                let b = filter_bit(h);
                filter[b / 64] |= 1 << (b % 64);
                wanted.entry(h).or_default().push(i);
            }
        }
        Scanner {
            data,
            wanted,
            filter,
            found: vec![false; data.len() / SECTOR],
            scanned: 0,
        }
    }

    /// Sectors of the data.
    pub fn sectors(&self) -> u64 {
        self.found.len() as u64
    }

    /// Distinct data sectors found so far.
    pub fn hits(&self) -> u64 {
        self.found.iter().filter(|&&x| x).count() as u64
    }

    /// Compares every 512-byte sector of `ram` with the data.
    #[cfg(test)]
    pub fn scan(&mut self, ram: &[u8]) {
        let mut hits = vec![];
        self.matches(ram, &mut hits);
        self.record(ram.len() as u64 / SECTOR as u64, &hits);
    }

    /// The data sectors `ram` holds, appended to `hits` (no state changes,
    /// so several threads can scan at once).
    pub fn matches(&self, ram: &[u8], hits: &mut Vec<u32>) {
        for s in ram.chunks_exact(SECTOR) {
            let h = prefix_hash(s);
            let b = filter_bit(h);
            if self.filter[b / 64] & (1 << (b % 64)) == 0 {
                continue;
            }
            let Some(cands) = self.wanted.get(&h) else {
                continue;
            };
            for &i in cands {
                let at = i as usize * SECTOR;
                if &self.data[at..at + SECTOR] == s {
                    hits.push(i);
                }
            }
        }
    }

    /// Counts `sectors` compared and marks `hits` found.
    pub fn record(&mut self, sectors: u64, hits: &[u32]) {
        self.scanned += sectors;
        for &i in hits {
            self.found[i as usize] = true;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    /// Bytes no page of a booted guest holds by chance (xorshift).
    pub(crate) fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    const PAGE: usize = 4096;

    #[test]
    fn finds_sectors_at_odd_offsets_split_across_pages_and_partly_overwritten() {
        let data = pseudo_random(4 * PAGE, 1);
        let mut ram = vec![0u8; 64 * PAGE];
        // Three sectors past a page start, so the 8 KiB straddle three pages.
        let at = 10 * PAGE + 3 * SECTOR;
        ram[at..at + 2 * PAGE].copy_from_slice(&data[..2 * PAGE]);
        // One of them overwritten after the copy.
        ram[at + SECTOR..at + 2 * SECTOR].fill(0xaa);
        let mut s = Scanner::new(&data);
        s.scan(&ram);
        assert_eq!(s.hits(), 15, "16 sectors placed, one overwritten");
        assert_eq!(s.sectors(), 32);
        assert_eq!(s.scanned, (64 * PAGE / SECTOR) as u64);
        // Off the 512-byte grid is not a DMA target: not found.
        let mut ram = vec![0u8; 8 * PAGE];
        ram[PAGE + 8..PAGE + 8 + SECTOR].copy_from_slice(&data[..SECTOR]);
        let mut s = Scanner::new(&data);
        s.scan(&ram);
        assert_eq!(s.hits(), 0);
    }

    #[test]
    fn zero_sectors_of_the_data_are_not_evidence() {
        let mut data = pseudo_random(2 * PAGE, 7);
        data[..SECTOR].fill(0);
        let mut ram = vec![0u8; 16 * PAGE];
        ram[5 * SECTOR..5 * SECTOR + 2 * PAGE].copy_from_slice(&data);
        let mut s = Scanner::new(&data);
        s.scan(&ram);
        assert_eq!(s.hits(), 15, "the zero sector is not evidence");
    }

    #[test]
    fn q35_splits_ram_at_2_gib_from_2_75_gib_on() {
        let g = 1u64 << 30;
        assert_eq!(q35_ranges(g), vec![RamRange { start: 0, len: g }]);
        assert_eq!(q35_ranges(2 * g).len(), 1);
        assert_eq!(
            q35_ranges(4 * g),
            vec![
                RamRange {
                    start: 0,
                    len: 2 * g
                },
                RamRange {
                    start: 4 * g,
                    len: 2 * g
                }
            ]
        );
    }

    /// The scan is fast enough to cover a big guest (measured: see README.md,
    /// "Develop your own driver"); below 100 MB/s in a release build is a bug.
    #[test]
    #[ignore = "timing: cargo test --release -p p2pnvme -- --ignored ram_scan_speed"]
    fn ram_scan_speed() {
        let data = pseudo_random(64 << 20, 3);
        let ram = pseudo_random(1 << 30, 4);
        let mut s = Scanner::new(&data);
        let t = Instant::now();
        s.scan(&ram);
        let mbs = (1u64 << 30) as f64 / 1e6 / t.elapsed().as_secs_f64();
        println!("ram scan: 1 GiB against 64 MiB of data at {mbs:.0} MB/s");
        assert!(mbs > 100.0, "{mbs:.0} MB/s");
    }
}
