//! PCI configuration space of the controller: an NVMe function (class
//! 01 08 02) with a register BAR, a CMB BAR, MSI-X and a PCIe capability.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const CONFIG_SIZE: usize = 4096;
pub const BAR0_SIZE: u64 = 0x4000;
pub const BAR4_SIZE: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u32 = 0x2000;
const MSIX_CAP: usize = 0x40;
const PCIE_CAP: usize = 0x50;

pub struct PciConfig {
    space: Vec<u8>,
    /// (BAR index, size, flag bits) of each 64-bit BAR.
    bars: Vec<(usize, u64, u32)>,
    /// Mirrors the command register's Bus Master Enable for the controller.
    bus_master: Arc<AtomicBool>,
}

impl PciConfig {
    /// Power-on configuration space; Bus Master Enable (clear now) is
    /// mirrored into `bus_master`, which the controller's DMA checks.
    pub fn new(cmb_bytes: u64, msix_vectors: u16, bus_master: Arc<AtomicBool>) -> PciConfig {
        bus_master.store(false, Ordering::Release);
        let mut s = vec![0u8; CONFIG_SIZE];
        let mut put = |off: usize, v: &[u8]| s[off..off + v.len()].copy_from_slice(v);
        put(0x00, &0x1b36u16.to_le_bytes()); // Red Hat, Inc. (QEMU devices)
        put(0x02, &0x00f0u16.to_le_bytes());
        put(0x06, &0x0010u16.to_le_bytes()); // status: capability list
        put(0x08, &[0x01, 0x02, 0x08, 0x01]); // rev 1, class 01 08 02 (NVMe)
        put(0x2c, &0x1b36u16.to_le_bytes());
        put(0x2e, &0x00f0u16.to_le_bytes());
        put(0x34, &[MSIX_CAP as u8]);
        // Interrupt pin 0: no INTx (MSI-X only; the irq info says so too).
        // MSI-X: table at BAR4 offset 0, PBA behind it.
        put(MSIX_CAP, &[0x11, PCIE_CAP as u8]);
        put(MSIX_CAP + 2, &(msix_vectors - 1).to_le_bytes());
        put(MSIX_CAP + 4, &4u32.to_le_bytes());
        put(MSIX_CAP + 8, &(MSIX_PBA_OFFSET | 4).to_le_bytes());
        // PCIe capability v2, endpoint, x1 link.
        put(PCIE_CAP, &[0x10, 0x00]);
        put(PCIE_CAP + 2, &0x0002u16.to_le_bytes());
        put(PCIE_CAP + 0x0c, &0x0000_0011u32.to_le_bytes()); // link cap: 2.5 GT/s x1
        put(PCIE_CAP + 0x12, &0x0011u16.to_le_bytes()); // link status
        let mut bars = vec![(0, BAR0_SIZE, 0x4), (4, BAR4_SIZE, 0x4)];
        if cmb_bytes > 0 {
            bars.push((2, cmb_bytes, 0xc)); // 64-bit prefetchable
        }
        let mut c = PciConfig {
            space: s,
            bars,
            bus_master,
        };
        for &(i, _, flags) in &c.bars.clone() {
            c.space[0x10 + i * 4..0x14 + i * 4].copy_from_slice(&flags.to_le_bytes());
        }
        c
    }

    pub fn read(&self, off: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Ok(off) = usize::try_from(off) else {
            return;
        };
        if off < CONFIG_SIZE {
            let n = data.len().min(CONFIG_SIZE - off);
            data[..n].copy_from_slice(&self.space[off..off + n]);
        }
    }

    pub fn write(&mut self, off: u64, data: &[u8]) {
        let Ok(off) = usize::try_from(off) else {
            return;
        };
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = off.checked_add(i).filter(|&o| o < CONFIG_SIZE) else {
                return;
            };
            if let Some(v) = self.writable(o, b) {
                self.space[o] = v;
            }
        }
        let bme = self.space[0x04] & 0x04 != 0;
        self.bus_master.store(bme, Ordering::Release);
    }

    /// The value stored for a byte write, or None for read-only bytes.
    fn writable(&self, o: usize, b: u8) -> Option<u8> {
        match o {
            0x04 => Some(b & 0x07),        // I/O, memory, bus master
            0x05 => Some(b & 0x04),        // INTx disable
            0x0c | 0x0d | 0x3c => Some(b), // cache line, latency, int line
            0x10..=0x27 => {
                let bar_dw = (o - 0x10) / 4;
                for &(i, size, flags) in &self.bars {
                    let (lo_mask, hi_mask) = ((!(size - 1)) as u32, ((!(size - 1)) >> 32) as u32);
                    let byte = (o - 0x10) % 4 * 8;
                    if bar_dw == i {
                        let v = ((lo_mask >> byte) as u8 & b) | (flags >> byte) as u8;
                        return Some(v);
                    }
                    if bar_dw == i + 1 {
                        return Some((hi_mask >> byte) as u8 & b);
                    }
                }
                None
            }
            x if x == MSIX_CAP + 3 => Some(b & 0xc0), // MSI-X enable, function mask
            x if (PCIE_CAP + 8..PCIE_CAP + 10).contains(&x) => Some(b), // device control
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_and_bar_sizing() {
        let mut c = PciConfig::new(16 << 20, 32, Arc::default());
        let mut b = [0u8; 4];
        c.read(0x08, &mut b);
        assert_eq!(b, [0x01, 0x02, 0x08, 0x01]);
        c.write(0x18, &0xffff_ffffu32.to_le_bytes());
        c.write(0x1c, &0xffff_ffffu32.to_le_bytes());
        c.read(0x18, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0xff00_000c); // 16 MiB, 64-bit prefetchable
        c.read(0x1c, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0xffff_ffff);
        c.write(0x00, &[0, 0]);
        c.read(0x00, &mut b);
        assert_eq!(
            u16::from_le_bytes([b[0], b[1]]),
            0x1b36,
            "vendor is read-only"
        );
    }
}
