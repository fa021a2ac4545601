//! Identify: controller, namespace, namespace lists and descriptors, and
//! the I/O Command Set structures (CNS 05h, 06h, 1Ch).

use super::{ascii, put};
use crate::controller::{Controller, MDTS, MQES};
use crate::nvme::{CmdResult, Sqe, Status};

/// Command Set Identifier of the NVM command set.
const CSI_NVM: u32 = 0;

impl Controller {
    pub(super) fn identify(&mut self, sqe: &Sqe) -> CmdResult {
        let cns = sqe.cdw(10) & 0xff;
        let nsid = sqe.nsid();
        let mut b = vec![0u8; 4096];
        match cns {
            0x00 => self.identify_ns(nsid, &mut b)?,
            0x01 => self.identify_ctrl(&mut b),
            0x02 => {
                let list: Vec<u32> = (1..=self.ns.len() as u32).filter(|&n| n > nsid).collect();
                if nsid >= 0xffff_fffe {
                    return Err(Status::INVALID_NAMESPACE);
                }
                for (i, n) in list.iter().take(1024).enumerate() {
                    put(&mut b, i * 4, &n.to_le_bytes());
                }
            }
            0x03 => {
                self.ns_index(nsid)?;
                // NGUID descriptor, then command set identifier (NVM).
                put(&mut b, 0, &[2, 16, 0, 0]);
                put(&mut b, 4, &self.nguid(nsid));
                put(&mut b, 20, &[4, 1, 0, 0, 0]);
            }
            // I/O Command Set specific structures, NVM command set (CSI 0)
            // only: no extended LBA formats, no further NVM limits.
            0x05 => {
                self.ns_index(nsid)?;
                if sqe.cdw(11) >> 24 != CSI_NVM {
                    return Err(Status::INVALID_FIELD);
                }
            }
            0x06 => {
                if sqe.cdw(11) >> 24 != CSI_NVM {
                    return Err(Status::INVALID_FIELD);
                }
            }
            // I/O Command Set combinations: one, the NVM command set.
            0x1c => put(&mut b, 0, &1u64.to_le_bytes()),
            _ => return Err(Status::INVALID_FIELD),
        }
        self.send_to_host(sqe, &b)
    }

    pub(super) fn ns_index(&self, nsid: u32) -> Result<usize, Status> {
        if nsid == 0 || nsid as usize > self.ns.len() {
            return Err(Status::INVALID_NAMESPACE);
        }
        Ok(nsid as usize - 1)
    }

    pub(super) fn nguid(&self, nsid: u32) -> [u8; 16] {
        // Unique per controller serial and namespace (Linux rejects duplicates).
        let mut g = [0u8; 16];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for c in self.serial.bytes() {
            h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
        }
        g[..8].copy_from_slice(&h.to_be_bytes());
        g[8..12].copy_from_slice(b"p2pn");
        g[12..16].copy_from_slice(&nsid.to_be_bytes());
        g
    }

    pub(super) fn identify_ns(&self, nsid: u32, b: &mut [u8]) -> Result<(), Status> {
        let ns = &self.ns[self.ns_index(nsid)?];
        for off in [0, 8, 16] {
            put(b, off, &ns.nlbas.to_le_bytes()); // NSZE, NCAP, NUSE
        }
        b[33] = 0x01; // DLFEAT: deallocated blocks read as zeros
        put(b, 74, &1024u16.to_le_bytes()); // MSSRL
        put(b, 76, &8192u32.to_le_bytes()); // MCL
        b[80] = 15; // MSRC: 16 source ranges (0-based)
        put(b, 104, &self.nguid(nsid));
        put(b, 128, &(ns.lba_shift << 16).to_le_bytes()); // LBAF0
        Ok(())
    }

    pub(super) fn identify_ctrl(&self, b: &mut [u8]) {
        put(b, 0, &0x1b36u16.to_le_bytes()); // VID
        put(b, 2, &0x1af4u16.to_le_bytes()); // SSVID
        ascii(b, 4, 20, &self.serial);
        ascii(b, 24, 40, "p2pnvme CMB controller");
        ascii(b, 64, 8, env!("CARGO_PKG_VERSION"));
        b[72] = 6; // RAB
        b[77] = MDTS;
        put(b, 78, &(self.id as u16 + 1).to_le_bytes()); // CNTLID
        put(b, 80, &crate::controller::NVME_VERSION.to_le_bytes()); // VER
        b[111] = 1; // CNTRLTYPE: I/O controller
        put(b, 256, &(1u16 << 8).to_le_bytes()); // OACS: doorbell buffer config
        b[258] = 3; // ACL
        b[259] = 3; // AERL
        b[260] = 0x03; // FRMW: one read-only slot
        b[261] = 0x02; // LPA: commands supported and effects
        b[262] = (crate::controller::ERROR_LOG_ENTRIES - 1) as u8; // ELPE
        put(b, 266, &343u16.to_le_bytes()); // WCTEMP
        put(b, 268, &373u16.to_le_bytes()); // CCTEMP
        b[512] = 0x66; // SQES
        b[513] = 0x44; // CQES
        put(b, 514, &(MQES + 1).to_le_bytes()); // MAXCMD
        put(b, 516, &(self.ns.len() as u32).to_le_bytes()); // NN
                                                            // ONCS: compare, DSM, write zeroes, timestamp, copy.
        put(
            b,
            520,
            &(1u16 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 8).to_le_bytes(),
        );
        b[525] = 0x07; // VWC present, flush of all namespaces supported
        put(b, 534, &1u16.to_le_bytes()); // OCFS: copy format 0
        put(b, 536, &(1u32 | 1 << 16).to_le_bytes()); // SGLS: SGLs, bit bucket
        let nqn = format!("nqn.2026-11.io.p2pnvme:{}", self.serial);
        put(b, 768, nqn.as_bytes());
        put(b, 2048, &2500u16.to_le_bytes()); // PSD0: 25 W
    }
}
