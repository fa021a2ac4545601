//! Admin commands.

use crate::ctrl::{Controller, Cq, Sq, MAX_IO_QUEUES, MDTS, MQES, MSIX_VECTORS};
use crate::dbbuf::{Bell, DoorbellBuffer};
use crate::mem::Target;
use crate::nvme::{admin as op, CmdResult, Sqe, Status};
use crate::prp;
use crate::stats::Kind;
use std::collections::VecDeque;

pub const VENDOR_LOG_STATS: u8 = 0xc0;
/// Command Set Identifier of the NVM command set.
const CSI_NVM: u32 = 0;
const AER_LIMIT: usize = 4;

/// Feature values the host can change.
pub struct Features {
    pub arbitration: u32,
    pub power_state: u32,
    pub temp_threshold: u32,
    pub vwc: bool,
    pub nsqa: u16,
    pub ncqa: u16,
    pub queues_set: bool,
    pub int_coalescing: u32,
    pub async_config: u32,
    pub timestamp_ms: u64,
    pub timestamp_at: std::time::Instant,
    /// Error Recovery (05h): TLER and DULBE as the host set them.
    pub error_recovery: u32,
    /// Write Atomicity Normal (0Ah): DN bit.
    pub write_atomicity: u32,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            arbitration: 0,
            power_state: 0,
            temp_threshold: 343,
            vwc: true,
            nsqa: MAX_IO_QUEUES as u16,
            ncqa: MAX_IO_QUEUES as u16,
            queues_set: false,
            int_coalescing: 0,
            async_config: 0,
            timestamp_ms: 0,
            timestamp_at: std::time::Instant::now(),
            error_recovery: 0,
            write_atomicity: 0,
        }
    }
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn ascii(b: &mut [u8], off: usize, len: usize, s: &str) {
    let mut f = vec![b' '; len];
    let n = s.len().min(len);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    put(b, off, &f);
}

impl Controller {
    /// Runs one admin command; `None` holds it (Asynchronous Event Request).
    pub fn admin(&mut self, sqe: &Sqe) -> Option<CmdResult> {
        Some(match sqe.opcode() {
            op::IDENTIFY => self.identify(sqe),
            op::GET_LOG_PAGE => self.get_log_page(sqe),
            op::CREATE_CQ => self.create_cq(sqe),
            op::CREATE_SQ => self.create_sq(sqe),
            op::DELETE_SQ => self.delete_sq(sqe),
            op::DELETE_CQ => self.delete_cq(sqe),
            op::SET_FEATURES => self.set_features(sqe),
            op::GET_FEATURES => self.get_features(sqe),
            op::ASYNC_EVENT => {
                if self.aers.len() >= AER_LIMIT {
                    Err(Status::AER_LIMIT)
                } else {
                    self.aers.push(sqe.cid());
                    self.deliver_events();
                    return None;
                }
            }
            // Commands complete too fast to abort: report "not aborted".
            op::ABORT => Ok(1),
            op::KEEP_ALIVE => Ok(0),
            op::DOORBELL_BUFFER_CONFIG => self.doorbell_buffer_config(sqe),
            _ => Err(Status::INVALID_OPCODE),
        })
    }

    /// PRP1: shadow doorbell page, PRP2: event index page (both page
    /// aligned, in memory we can reach). Queues created later use them too.
    fn doorbell_buffer_config(&mut self, sqe: &Sqe) -> CmdResult {
        if sqe.psdt() != 0 {
            return Err(Status::INVALID_FIELD);
        }
        let db = DoorbellBuffer::new(sqe.dptr1(), sqe.dptr2(), &self.dma())
            .ok_or(Status::INVALID_FIELD)?;
        self.dbbuf = Some(db);
        for qid in 1..self.sqs.len() {
            self.arm_shadow_doorbells(qid);
        }
        Ok(0)
    }

    /// Event indices for a new I/O queue: the first submission rings, head
    /// updates stay silent until the completion queue fills.
    fn arm_shadow_doorbells(&mut self, qid: usize) {
        let Some(db) = self.dbbuf else { return };
        if let Some(sq) = &self.sqs[qid] {
            db.set_event(&self.dma(), qid, Bell::SqTail, sq.tail);
        }
        if let Some(cq) = &self.cqs[qid] {
            let quiet = cq.head.wrapping_sub(1);
            db.set_event(&self.dma(), qid, Bell::CqHead, quiet);
        }
    }

    /// Sends `data` to the host buffer of an admin command (metadata).
    fn send_to_host(&mut self, sqe: &Sqe, data: &[u8]) -> CmdResult {
        prp::transfer(sqe, data.len(), &self.dma(), Kind::Meta)?.scatter(data);
        Ok(0)
    }

    fn receive_from_host(&mut self, sqe: &Sqe, len: usize) -> Result<Vec<u8>, Status> {
        Ok(prp::transfer(sqe, len, &self.dma(), Kind::Meta)?.gather())
    }

    fn identify(&mut self, sqe: &Sqe) -> CmdResult {
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

    fn ns_index(&self, nsid: u32) -> Result<usize, Status> {
        if nsid == 0 || nsid as usize > self.ns.len() {
            return Err(Status::INVALID_NAMESPACE);
        }
        Ok(nsid as usize - 1)
    }

    fn nguid(&self, nsid: u32) -> [u8; 16] {
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

    fn identify_ns(&self, nsid: u32, b: &mut [u8]) -> Result<(), Status> {
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

    fn identify_ctrl(&self, b: &mut [u8]) {
        put(b, 0, &0x1b36u16.to_le_bytes()); // VID
        put(b, 2, &0x1af4u16.to_le_bytes()); // SSVID
        ascii(b, 4, 20, &self.serial);
        ascii(b, 24, 40, "p2pnvme CMB controller");
        ascii(b, 64, 8, env!("CARGO_PKG_VERSION"));
        b[72] = 6; // RAB
        b[77] = MDTS;
        put(b, 78, &(self.id as u16 + 1).to_le_bytes()); // CNTLID
        put(b, 80, &crate::ctrl::NVME_VERSION.to_le_bytes()); // VER
        b[111] = 1; // CNTRLTYPE: I/O controller
        put(b, 256, &(1u16 << 8).to_le_bytes()); // OACS: doorbell buffer config
        b[258] = 3; // ACL
        b[259] = 3; // AERL
        b[260] = 0x03; // FRMW: one read-only slot
        b[261] = 0x02; // LPA: commands supported and effects
        b[262] = (crate::ctrl::ERROR_LOG_ENTRIES - 1) as u8; // ELPE
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

    fn get_log_page(&mut self, sqe: &Sqe) -> CmdResult {
        let lid = (sqe.cdw(10) & 0xff) as u8;
        let numd = ((sqe.cdw(11) & 0xffff) << 16 | sqe.cdw(10) >> 16) as usize + 1;
        let offset = sqe.cdw(12) as u64 | (sqe.cdw(13) as u64) << 32;
        let len = numd * 4;
        if len > crate::ctrl::MAX_TRANSFER {
            return Err(Status::INVALID_FIELD);
        }
        let page: Vec<u8> = match lid {
            // The full log: ELPE + 1 entries, unused ones zero.
            0x01 => {
                let mut b: Vec<u8> = self.errlog.iter().flatten().copied().collect();
                b.resize(crate::ctrl::ERROR_LOG_ENTRIES * 64, 0);
                b
            }
            0x02 => self.smart_log(),
            0x03 => {
                let mut b = vec![0u8; 512];
                b[0] = 1; // slot 1 active
                ascii(&mut b, 8, 8, env!("CARGO_PKG_VERSION"));
                b
            }
            0x05 => self.effects_log(),
            VENDOR_LOG_STATS => self.stats.log_page(),
            _ => return Err(Status::INVALID_LOG_PAGE),
        };
        if !offset.is_multiple_of(4) || offset > page.len() as u64 {
            return Err(Status::INVALID_FIELD);
        }
        let mut out = vec![0u8; len];
        let avail = &page[offset as usize..];
        let n = avail.len().min(len);
        out[..n].copy_from_slice(&avail[..n]);
        self.send_to_host(sqe, &out)?;
        // Retain Asynchronous Event clear: the host consumed the event.
        if sqe.cdw(10) & (1 << 15) == 0 {
            self.unmask_events(lid);
        }
        Ok(0)
    }

    fn smart_log(&self) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        put(&mut b, 1, &300u16.to_le_bytes()); // composite temperature, K
        b[3] = 100; // available spare
        b[4] = 10; // threshold
                   // Data units: thousands of 512-byte units, rounded up, from the
                   // exact byte totals.
        let units = |bytes: u64| (bytes as u128).div_ceil(512_000);
        put(&mut b, 32, &units(self.bytes_read).to_le_bytes());
        put(&mut b, 48, &units(self.bytes_written).to_le_bytes());
        put(&mut b, 64, &(self.reads as u128).to_le_bytes());
        put(&mut b, 80, &(self.writes as u128).to_le_bytes());
        put(&mut b, 176, &(self.error_count as u128).to_le_bytes());
        b
    }

    fn effects_log(&self) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        let supported = 1u32;
        let changes_content = 1u32 << 1;
        for o in [
            op::DELETE_SQ,
            op::CREATE_SQ,
            op::GET_LOG_PAGE,
            op::DELETE_CQ,
            op::CREATE_CQ,
            op::IDENTIFY,
            op::ABORT,
            op::SET_FEATURES,
            op::GET_FEATURES,
            op::ASYNC_EVENT,
            op::KEEP_ALIVE,
            op::DOORBELL_BUFFER_CONFIG,
        ] {
            put(&mut b, o as usize * 4, &supported.to_le_bytes());
        }
        use crate::nvme::io;
        for (o, e) in [
            (io::FLUSH, 0),
            (io::READ, 0),
            (io::COMPARE, 0),
            (io::WRITE, changes_content),
            (io::WRITE_ZEROES, changes_content),
            (io::DSM, changes_content),
            (io::COPY, changes_content),
        ] {
            put(
                &mut b,
                1024 + o as usize * 4,
                &(supported | e).to_le_bytes(),
            );
        }
        b
    }

    fn create_cq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        let size = (sqe.cdw(10) >> 16) as u16;
        let pc = sqe.cdw(11) & 1 != 0;
        let ien = sqe.cdw(11) & 2 != 0;
        let iv = (sqe.cdw(11) >> 16) as u16;
        if qid == 0 || qid > self.features.ncqa as usize || self.cqs[qid].is_some() {
            return Err(Status::INVALID_QID);
        }
        if size == 0 || size > MQES {
            return Err(Status::INVALID_QSIZE);
        }
        if iv as usize >= MSIX_VECTORS {
            return Err(Status::INVALID_VECTOR);
        }
        if !pc || sqe.dptr1() & 0xfff != 0 {
            return Err(Status::INVALID_FIELD);
        }
        let base = sqe.dptr1();
        // CMBSZ.CQS is clear: completion queues may not live in the CMB.
        match self.queue_target(base, (size as u64 + 1) * 16)? {
            Target::GuestRam => {}
            _ => return Err(Status::INVALID_CMB_USE),
        }
        self.cqs[qid] = Some(Cq {
            base,
            size: size + 1,
            head: 0,
            tail: 0,
            phase: true,
            iv,
            ien,
            pending: VecDeque::new(),
        });
        self.arm_shadow_doorbells(qid);
        Ok(0)
    }

    fn create_sq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        let size = (sqe.cdw(10) >> 16) as u16;
        let pc = sqe.cdw(11) & 1 != 0;
        let cqid = (sqe.cdw(11) >> 16) as usize;
        if qid == 0 || qid > self.features.nsqa as usize || self.sqs[qid].is_some() {
            return Err(Status::INVALID_QID);
        }
        if cqid == 0 || cqid > MAX_IO_QUEUES || self.cqs[cqid].is_none() {
            return Err(Status::INVALID_CQ);
        }
        if size == 0 || size > MQES {
            return Err(Status::INVALID_QSIZE);
        }
        if !pc || sqe.dptr1() & 0xfff != 0 {
            return Err(Status::INVALID_FIELD);
        }
        // Submission queues may live in guest RAM or in our own CMB (SQS).
        match self.queue_target(sqe.dptr1(), (size as u64 + 1) * 64)? {
            Target::GuestRam | Target::OwnCmb => {}
            Target::PeerCmb(_) => return Err(Status::INVALID_CMB_USE),
        }
        self.sqs[qid] = Some(Sq {
            base: sqe.dptr1(),
            size: size + 1,
            head: 0,
            tail: 0,
            cqid: cqid as u16,
        });
        self.arm_shadow_doorbells(qid);
        Ok(0)
    }

    fn delete_sq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        if qid == 0 || qid > MAX_IO_QUEUES || self.sqs[qid].is_none() {
            return Err(Status::INVALID_QID);
        }
        // Commands complete synchronously, so none are left to abort.
        self.sqs[qid] = None;
        Ok(0)
    }

    fn delete_cq(&mut self, sqe: &Sqe) -> CmdResult {
        let qid = (sqe.cdw(10) & 0xffff) as usize;
        if qid == 0 || qid > MAX_IO_QUEUES || self.cqs[qid].is_none() {
            return Err(Status::INVALID_QID);
        }
        if self.sqs.iter().flatten().any(|sq| sq.cqid as usize == qid) {
            return Err(Status::INVALID_QUEUE_DELETION);
        }
        self.cqs[qid] = None;
        Ok(0)
    }

    fn get_features(&mut self, sqe: &Sqe) -> CmdResult {
        let fid = sqe.cdw(10) & 0xff;
        let sel = (sqe.cdw(10) >> 8) & 7;
        let f = &self.features;
        if sel == 3 {
            // Supported capabilities: changeable, not saveable.
            return match fid {
                0x01 | 0x02 | 0x04 | 0x05 | 0x06 | 0x07 | 0x08 | 0x09 | 0x0a | 0x0b | 0x0e => {
                    Ok(0x4)
                }
                _ => Err(Status::INVALID_FIELD),
            };
        }
        let d = Features::default();
        let f = if sel == 1 { &d } else { f };
        match fid {
            0x01 => Ok(f.arbitration),
            0x02 => Ok(f.power_state),
            0x04 => Ok(f.temp_threshold),
            0x06 => Ok(f.vwc as u32),
            0x07 => Ok(((f.ncqa as u32 - 1) << 16) | (f.nsqa as u32 - 1)),
            0x08 => Ok(f.int_coalescing),
            0x09 => {
                let iv = sqe.cdw(11) & 0xffff;
                if iv as usize >= MSIX_VECTORS {
                    return Err(Status::INVALID_FIELD);
                }
                Ok(iv)
            }
            0x05 => Ok(f.error_recovery),
            0x0a => Ok(f.write_atomicity),
            0x0b => Ok(f.async_config),
            0x0e => {
                let now = f.timestamp_ms + f.timestamp_at.elapsed().as_millis() as u64;
                let mut b = [0u8; 8];
                b[..6].copy_from_slice(&now.to_le_bytes()[..6]);
                b[6] = 1 << 1; // timestamp set by the host
                self.send_to_host(sqe, &b)
            }
            _ => Err(Status::INVALID_FIELD),
        }
    }

    fn set_features(&mut self, sqe: &Sqe) -> CmdResult {
        let fid = sqe.cdw(10) & 0xff;
        if sqe.cdw(10) >> 31 != 0 {
            return Err(Status::FEATURE_NOT_SAVEABLE);
        }
        let v = sqe.cdw(11);
        match fid {
            0x01 => self.features.arbitration = v,
            0x02 => {
                if v & 0x1f != 0 {
                    return Err(Status::INVALID_FIELD); // one power state
                }
                self.features.power_state = v;
            }
            0x04 => self.features.temp_threshold = v & 0xffff,
            0x06 => self.features.vwc = v & 1 != 0,
            0x07 => {
                let (nsqr, ncqr) = (v & 0xffff, v >> 16);
                if nsqr == 0xffff || ncqr == 0xffff {
                    return Err(Status::INVALID_FIELD);
                }
                if !self.features.queues_set {
                    self.features.nsqa = (nsqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                    self.features.ncqa = (ncqr as u16 + 1).min(MAX_IO_QUEUES as u16);
                    self.features.queues_set = true;
                }
                let f = &self.features;
                return Ok(((f.ncqa as u32 - 1) << 16) | (f.nsqa as u32 - 1));
            }
            0x08 => self.features.int_coalescing = v & 0xffff,
            0x09 => {
                if (v & 0xffff) as usize >= MSIX_VECTORS {
                    return Err(Status::INVALID_FIELD);
                }
            }
            0x05 => {
                // DULBE needs deallocated-block errors, which we do not
                // report; TLER is accepted and kept.
                if v & (1 << 16) != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                self.features.error_recovery = v & 0xffff;
            }
            0x0a => self.features.write_atomicity = v & 1,
            0x0b => self.features.async_config = v,
            0x0e => {
                let b = self.receive_from_host(sqe, 8)?;
                let mut t = [0u8; 8];
                t[..6].copy_from_slice(&b[..6]);
                self.features.timestamp_ms = u64::from_le_bytes(t);
                self.features.timestamp_at = std::time::Instant::now();
            }
            // Host Memory Buffer: not offered (HMPRE = 0).
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(0)
    }
}
