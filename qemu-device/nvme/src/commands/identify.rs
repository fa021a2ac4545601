//! Identify: controller, namespace, namespace lists and descriptors, and
//! the I/O Command Set structures (CNS 05h, 06h, 1Ch).

use super::admin::AdminCtx;
use crate::limits::MDTS;
use crate::limits::{ERROR_LOG_ENTRIES, MQES, NVME_VERSION};
use crate::nvme::{CmdResult, Sqe, Status};
use crate::wire::{
    ascii, cns, nul_padded, FromZeros, IdentifyController, IdentifyControllerNvm,
    IdentifyNamespace, IdentifyNamespaceNvm, IntoBytes, IoCommandSetCombinations,
    NsIdDescriptorList, NsList, NIDT_CSI, NIDT_NGUID, U16, U32, U64,
};

/// Command Set Identifier of the NVM command set.
const CSI_NVM: u8 = 0;

/// Identify: the structure CNS (CDW10) names, to the host buffer.
pub(super) fn identify(c: &mut AdminCtx<'_>, sqe: &Sqe) -> CmdResult {
    let cns = (sqe.cdw(10) & 0xff) as u8;
    let nsid = sqe.nsid();
    // CDW11 bits 31:24: command set identifier.
    let csi = (sqe.cdw(11) >> 24) as u8;
    match cns {
        cns::NAMESPACE => {
            let id = identify_ns(c, nsid)?;
            c.send_to_host(sqe, id.as_bytes())
        }
        cns::CONTROLLER => {
            let id = identify_ctrl(c);
            c.send_to_host(sqe, id.as_bytes())
        }
        cns::ACTIVE_NS_LIST => {
            if nsid >= 0xffff_fffe {
                return Err(Status::INVALID_NAMESPACE);
            }
            let mut list = NsList::new_zeroed();
            let ids = (1..=c.ns.len() as u32).filter(|&n| n > nsid);
            for (slot, n) in list.ids.iter_mut().zip(ids) {
                *slot = U32::new(n);
            }
            c.send_to_host(sqe, list.as_bytes())
        }
        cns::NS_ID_DESCRIPTORS => {
            c.ns_index(nsid)?;
            let mut d = NsIdDescriptorList::new_zeroed();
            d.nguid_hdr.nidt = NIDT_NGUID;
            d.nguid_hdr.nidl = 16;
            d.nguid = nguid(c, nsid);
            d.csi_hdr.nidt = NIDT_CSI;
            d.csi_hdr.nidl = 1;
            d.csi = CSI_NVM;
            c.send_to_host(sqe, d.as_bytes())
        }
        // I/O Command Set specific structures, NVM command set only: no
        // extended LBA formats, no further NVM limits (all zero).
        cns::NAMESPACE_IOCS => {
            c.ns_index(nsid)?;
            if csi != CSI_NVM {
                return Err(Status::INVALID_FIELD);
            }
            c.send_to_host(sqe, IdentifyNamespaceNvm::new_zeroed().as_bytes())
        }
        cns::CONTROLLER_IOCS => {
            if csi != CSI_NVM {
                return Err(Status::INVALID_FIELD);
            }
            c.send_to_host(sqe, IdentifyControllerNvm::new_zeroed().as_bytes())
        }
        // I/O Command Set combinations: one, the NVM command set.
        cns::IOCS_COMBINATIONS => {
            let mut combos = IoCommandSetCombinations::new_zeroed();
            combos.combinations[0] = U64::new(1 << CSI_NVM);
            c.send_to_host(sqe, combos.as_bytes())
        }
        _ => Err(Status::INVALID_FIELD),
    }
}

fn nguid(c: &AdminCtx<'_>, nsid: u32) -> [u8; 16] {
    // Unique per controller serial and namespace (Linux rejects duplicates).
    let mut g = [0u8; 16];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in c.serial.bytes() {
        h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
    }
    g[..8].copy_from_slice(&h.to_be_bytes());
    g[8..12].copy_from_slice(b"p2pn");
    g[12..16].copy_from_slice(&nsid.to_be_bytes());
    g
}

fn identify_ns(c: &AdminCtx<'_>, nsid: u32) -> Result<IdentifyNamespace, Status> {
    let ns = &c.ns[c.ns_index(nsid)?];
    let mut id = IdentifyNamespace::new_zeroed();
    id.nsze = U64::new(ns.nlbas);
    id.ncap = U64::new(ns.nlbas);
    id.nuse = U64::new(ns.nlbas);
    id.dlfeat = 0x01; // deallocated blocks read as zeros
    id.mssrl = U16::new(1024);
    id.mcl = U32::new(8192);
    id.msrc = 15; // 16 source ranges (0-based)
    id.nguid = nguid(c, nsid);
    id.lbaf[0].lbads = ns.lba_shift as u8;
    Ok(id)
}

fn identify_ctrl(c: &AdminCtx<'_>) -> IdentifyController {
    let mut id = IdentifyController::new_zeroed();
    id.vid = U16::new(0x1b36);
    id.ssvid = U16::new(0x1af4);
    id.sn = ascii(c.serial);
    id.mn = ascii("p2pnvme CMB controller");
    id.fr = ascii(env!("CARGO_PKG_VERSION"));
    id.rab = 6;
    id.mdts = MDTS;
    id.cntlid = U16::new(c.id as u16 + 1);
    id.ver = U32::new(NVME_VERSION);
    id.cntrltype = 1; // I/O controller
    id.oacs = U16::new(1 << 8); // doorbell buffer config
    id.oaes = U32::new(1 << 8); // namespace attribute notices (log page 04h)
    id.acl = 3;
    id.aerl = 3;
    id.frmw = 0x03; // one read-only slot
    id.lpa = 0x02; // commands supported and effects
    id.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
    id.wctemp = U16::new(343);
    id.cctemp = U16::new(373);
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd = U16::new(MQES + 1);
    id.nn = U32::new(c.ns.len() as u32);
    // ONCS: compare, DSM, write zeroes, timestamp, copy.
    id.oncs = U16::new(1 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 8);
    id.vwc = 0x07; // present, flush of all namespaces supported
    id.ocfs = U16::new(1); // copy format 0
    id.sgls = U32::new(1 | 1 << 16 | 1 << 18); // SGLs, bit bucket, lists longer than the data
    id.subnqn = nul_padded(&format!("nqn.2026-11.io.p2pnvme:{}", c.serial));
    id.psd[0].mp = U16::new(2500); // 25 W
    id
}
