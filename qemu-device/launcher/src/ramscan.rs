//! Looks for copied data in a dump of guest RAM, 4 KiB block by block.
//!
//! Every page the guest CPU or a device wrote through system memory is a
//! 4 KiB-aligned block of RAM, so a block of the copied data that went through
//! guest RAM shows up verbatim at a page-aligned offset of the dump.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

pub const BLOCK: usize = 4096;

fn block_hash(b: &[u8]) -> u64 {
    // Cheap pre-filter; candidates are confirmed byte for byte.
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in b.chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap());
        h = (h ^ v).wrapping_mul(0x1000_0000_01b3).rotate_left(23);
    }
    h
}

/// Distinct 4 KiB blocks of `data` found anywhere in `ram` at block-aligned
/// offsets. All-zero blocks are ignored (free RAM is zero).
pub fn hits(data: &[u8], ram: &Path) -> Result<u64> {
    let mut wanted: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, b) in data.chunks_exact(BLOCK).enumerate() {
        if b.iter().any(|&x| x != 0) {
            wanted.entry(block_hash(b)).or_default().push(i);
        }
    }
    let mut found = vec![false; data.len() / BLOCK];
    let mut f = File::open(ram).with_context(|| format!("opening RAM dump {}", ram.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        for b in buf[..n].chunks_exact(BLOCK) {
            if let Some(cands) = wanted.get(&block_hash(b)) {
                for &i in cands {
                    if &data[i * BLOCK..(i + 1) * BLOCK] == b {
                        found[i] = true;
                    }
                }
            }
        }
    }
    Ok(found.iter().filter(|&&x| x).count() as u64)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
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

    #[test]
    fn finds_exactly_the_blocks_that_are_in_ram() {
        let data = pseudo_random(8 * BLOCK, 1);
        let mut ram = vec![0u8; 64 * BLOCK];
        // Blocks 2 and 5 of the data sit in RAM pages 10 and 40.
        ram[10 * BLOCK..11 * BLOCK].copy_from_slice(&data[2 * BLOCK..3 * BLOCK]);
        ram[40 * BLOCK..41 * BLOCK].copy_from_slice(&data[5 * BLOCK..6 * BLOCK]);
        // A misaligned copy of block 0 does not count.
        ram[20 * BLOCK + 8..21 * BLOCK + 8].copy_from_slice(&data[..BLOCK]);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&ram).unwrap();
        assert_eq!(hits(&data, f.path()).unwrap(), 2);
        let clean = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(hits(&data, clean.path()).unwrap(), 0);
    }
}
