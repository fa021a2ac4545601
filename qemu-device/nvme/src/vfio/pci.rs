//! PCI configuration space of the controller: an NVMe function (class
//! 01 08 02) with a register BAR, a CMB BAR, MSI-X or MSI (`IrqMode`) and a
//! PCIe capability.

use crate::irq_mode::IrqMode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const CONFIG_SIZE: usize = 4096;
pub const BAR0_SIZE: u64 = 0x4000;
pub const BAR4_SIZE: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u32 = 0x2000;
/// The interrupt capability (MSI-X or MSI) sits here, the PCIe one behind it.
const IRQ_CAP: usize = 0x40;
const PCIE_CAP: usize = 0x50;
/// MSI message control: 64-bit address capable (bit 7); Multiple Message
/// Capable 0 (one vector); no per-vector masking.
const MSI_CONTROL: u16 = 0x0080;

pub struct PciConfig {
    space: Vec<u8>,
    /// (BAR index, size, flag bits) of each 64-bit BAR.
    bars: Vec<(usize, u64, u32)>,
    /// Mirrors the command register's Bus Master Enable for the controller.
    bus_master: Arc<AtomicBool>,
    irq: IrqMode,
}

impl PciConfig {
    /// Power-on configuration space; Bus Master Enable (clear now) is
    /// mirrored into `bus_master`, which the controller's DMA checks.
    pub fn new(cmb_bytes: u64, irq: IrqMode, bus_master: Arc<AtomicBool>) -> PciConfig {
        bus_master.store(false, Ordering::Release);
        let mut s = vec![0u8; CONFIG_SIZE];
        let mut put = |off: usize, v: &[u8]| s[off..off + v.len()].copy_from_slice(v);
        put(0x00, &0x1b36u16.to_le_bytes()); // Red Hat, Inc. (QEMU devices)
        put(0x02, &0x00f0u16.to_le_bytes());
        put(0x06, &0x0010u16.to_le_bytes()); // status: capability list
        put(0x08, &[0x01, 0x02, 0x08, 0x01]); // rev 1, class 01 08 02 (NVMe)
        put(0x2c, &0x1b36u16.to_le_bytes());
        put(0x2e, &0x00f0u16.to_le_bytes());
        put(0x34, &[IRQ_CAP as u8]);
        // Interrupt pin 0: no INTx (the irq info says so too).
        match irq {
            IrqMode::Msix => {
                // Table at BAR4 offset 0, PBA behind it.
                let table_size = irq.vectors() as u16 - 1;
                put(IRQ_CAP, &[0x11, PCIE_CAP as u8]);
                put(IRQ_CAP + 2, &table_size.to_le_bytes());
                put(IRQ_CAP + 4, &4u32.to_le_bytes());
                put(IRQ_CAP + 8, &(MSIX_PBA_OFFSET | 4).to_le_bytes());
            }
            IrqMode::Msi => {
                // Control, address low/high, data: 14 bytes, before PCIE_CAP.
                put(IRQ_CAP, &[0x05, PCIE_CAP as u8]);
                put(IRQ_CAP + 2, &MSI_CONTROL.to_le_bytes());
            }
        }
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
            irq,
        };
        for &(i, _, flags) in &c.bars.clone() {
            c.space[0x10 + i * 4..0x14 + i * 4].copy_from_slice(&flags.to_le_bytes());
        }
        c
    }

    /// The interrupt capability this space offers.
    pub fn irq(&self) -> IrqMode {
        self.irq
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
            x if (IRQ_CAP..PCIE_CAP).contains(&x) => self.irq_cap_writable(x - IRQ_CAP, b),
            x if (PCIE_CAP + 8..PCIE_CAP + 10).contains(&x) => Some(b), // device control
            _ => None,
        }
    }

    /// Writable bits of the interrupt capability at `rel` bytes into it.
    fn irq_cap_writable(&self, rel: usize, b: u8) -> Option<u8> {
        let mask = match (self.irq, rel) {
            (IrqMode::Msix, 3) => 0xc0,       // MSI-X enable, function mask
            (IrqMode::Msi, 2) => 0x01,        // MSI enable (MME stays 0)
            (IrqMode::Msi, 4) => 0xfc,        // address, dword aligned
            (IrqMode::Msi, 5..=0x0d) => 0xff, // address, data
            _ => return None,
        };
        Some(self.space[IRQ_CAP + rel] & !mask | b & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_and_bar_sizing() {
        let mut c = PciConfig::new(16 << 20, IrqMode::Msix, Arc::default());
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

    /// The capability list as (offset, id) pairs, following the pointers.
    fn capabilities(c: &PciConfig) -> Vec<(u8, u8)> {
        let mut out = vec![];
        let mut b = [0u8; 2];
        c.read(0x34, &mut b[..1]);
        let mut at = b[0];
        while at != 0 && out.len() < 48 {
            c.read(at as u64, &mut b);
            out.push((at, b[0]));
            at = b[1];
        }
        out
    }

    #[test]
    fn msix_mode_offers_msix_and_pcie_only() {
        let c = PciConfig::new(16 << 20, IrqMode::Msix, Arc::default());
        assert_eq!(capabilities(&c), [(0x40, 0x11), (0x50, 0x10)]);
        let mut ctl = [0u8; 2];
        c.read(0x42, &mut ctl);
        assert_eq!(u16::from_le_bytes(ctl), 31, "32-entry table");
    }

    #[test]
    fn msi_mode_offers_one_64bit_msi_vector_and_pcie_only() {
        let mut c = PciConfig::new(16 << 20, IrqMode::Msi, Arc::default());
        assert_eq!(capabilities(&c), [(0x40, 0x05), (0x50, 0x10)]);
        let mut ctl = [0u8; 2];
        c.read(0x42, &mut ctl);
        assert_eq!(u16::from_le_bytes(ctl), 0x0080, "64-bit, 1 vector, no mask");
        // Enable with a message address and data as the host writes them.
        c.write(0x44, &0xfee0_1003u32.to_le_bytes());
        c.write(0x48, &0x1u32.to_le_bytes());
        c.write(0x4c, &0x4041u16.to_le_bytes());
        c.write(0x42, &0x0071u16.to_le_bytes());
        let mut dw = [0u8; 4];
        c.read(0x44, &mut dw);
        assert_eq!(u32::from_le_bytes(dw), 0xfee0_1000, "dword-aligned address");
        c.read(0x48, &mut dw);
        assert_eq!(u32::from_le_bytes(dw), 1);
        c.read(0x4c, &mut dw[..2]);
        assert_eq!(u16::from_le_bytes([dw[0], dw[1]]), 0x4041);
        c.read(0x42, &mut ctl);
        assert_eq!(u16::from_le_bytes(ctl), 0x0081, "enabled, MME stays 0");
        // The capability header and the PCIe capability are read-only.
        c.write(0x40, &[0x11, 0x00]);
        assert_eq!(capabilities(&c), [(0x40, 0x05), (0x50, 0x10)]);
    }
}
