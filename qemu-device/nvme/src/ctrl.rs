//! Controller state machine: registers, enable/reset/shutdown, queues,
//! doorbells, completions and interrupts.

use crate::backing::Namespace;
use crate::dbbuf::{Bell, DoorbellBuffer};
use crate::mem::{CmbRegistry, Dma, GuestRam, Mapping, Target};
use crate::nvme::{cqe, Sqe, Status};
use crate::regs::{Doorbells, RegMirror};
use crate::stats::{Counters, Kind};
use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

pub const MAX_IO_QUEUES: usize = 64;
pub const MQES: u16 = 1023; // 0-based
pub const MSIX_VECTORS: usize = 32;
pub const DOORBELLS: u64 = 0x1000;
pub const MDTS: u8 = 7; // 2^7 pages = 512 KiB
pub const MAX_TRANSFER: usize = 4096 << MDTS;
pub const ERROR_LOG_ENTRIES: usize = 64;
/// NVMe 2.0 (VS register and Identify Controller VER).
pub const NVME_VERSION: u32 = 0x0002_0000;

pub mod reg {
    pub const CAP: u64 = 0x00;
    pub const VS: u64 = 0x08;
    pub const INTMS: u64 = 0x0c;
    pub const INTMC: u64 = 0x10;
    pub const CC: u64 = 0x14;
    pub const CSTS: u64 = 0x1c;
    pub const NSSR: u64 = 0x20;
    pub const AQA: u64 = 0x24;
    pub const ASQ: u64 = 0x28;
    pub const ACQ: u64 = 0x30;
    pub const CMBLOC: u64 = 0x38;
    pub const CMBSZ: u64 = 0x3c;
    pub const CMBMSC: u64 = 0x50;
    pub const CMBSTS: u64 = 0x58;
}

const CC_EN: u32 = 1;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 2;
const CSTS_SHST_OCCURRING: u32 = 1 << 2;
const CSTS_SHST_COMPLETE: u32 = 2 << 2;
const CMBMSC_CRE: u64 = 1;
const CMBMSC_CMSE: u64 = 2;

pub struct Sq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub cqid: u16,
}

pub struct Cq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub phase: bool,
    pub iv: u16,
    pub ien: bool,
    pub pending: VecDeque<[u8; 16]>,
}

/// One MSI-X vector's routing.
#[derive(Default)]
struct Vector {
    fd: Option<EventFd>,
    masked: bool,
    pending: bool,
}

/// Per-controller settings from the command line.
pub struct CtrlConfig {
    pub id: usize,
    pub serial: String,
    pub cmb_bytes: u64,
    pub namespaces: Vec<Namespace>,
}

pub struct Controller {
    pub id: usize,
    pub serial: String,
    pub ns: Vec<Namespace>,
    pub stats: Arc<Counters>,
    pub ram: GuestRam,
    pub cmbs: CmbRegistry,
    pub cmb: Option<(Arc<Mapping>, File)>,
    pub cc: u32,
    pub csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
    cmbmsc: u64,
    cmbsts: u32,
    pub sqs: Vec<Option<Sq>>,
    pub cqs: Vec<Option<Cq>>,
    irqs: Vec<Vector>,
    pub features: crate::admin::Features,
    pub aers: Vec<u16>,
    pub events: VecDeque<u32>,
    pub errlog: VecDeque<[u8; 64]>,
    pub error_count: u64,
    pub reads: u64,
    pub writes: u64,
    /// Exact data bytes of host reads and writes (SMART derives its
    /// 1000 x 512-byte data units from these).
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// the vfio-user reply to a doorbell write does not wait for the I/O.
    pub work: bool,
    /// Shadow doorbells for I/O queues, once the driver configured them.
    pub dbbuf: Option<DoorbellBuffer>,
    /// How long the worker keeps polling shadow SQ tails after the queues
    /// drain before it publishes event indices (and the driver rings again).
    pub poll: Duration,
    /// When the queues drained with event indices left unpublished.
    drained_at: Option<Instant>,
    /// PCI command register's Bus Master Enable (owned by the PCI config
    /// space): while clear, the controller performs no DMA at all.
    pub bus_master: Arc<AtomicBool>,
    /// Event types (bit = AER type) masked until their log page is read
    /// without Retain Asynchronous Event.
    pub masked_events: u8,
    /// BAR0 as the message thread reads it, without this controller's lock.
    pub regs: Arc<RegMirror>,
    /// Doorbell writes the message thread recorded for the worker.
    pub bells: Arc<Doorbells>,
    /// CC.SHN was set: the worker flushes, then reports SHST complete.
    shutdown_pending: bool,
    /// Commands left in this worker pass (the worker drops the lock
    /// between passes, so a pass is short).
    budget: usize,
    /// Where the next pass starts, so every queue gets its turn.
    next_sq: usize,
}

/// Commands per worker pass; the lock is free between passes.
const PASS: usize = 4;

/// What the worker should do after a step (see `step`).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Work is left: step again.
    Busy,
    /// Shadow tails are being polled: look again soon.
    Polling,
    /// Event indices are published: sleep until a doorbell.
    Sleep,
}

impl Controller {
    pub fn new(
        cfg: CtrlConfig,
        cmbs: CmbRegistry,
        stats: Arc<Counters>,
    ) -> std::io::Result<Controller> {
        let cmb = if cfg.cmb_bytes > 0 {
            let f = crate::mem::sealed_memfd(&format!("p2pnvme-cmb{}", cfg.id), cfg.cmb_bytes)?;
            let m = Arc::new(Mapping::new(&f, 0, cfg.cmb_bytes as usize)?);
            cmbs.write().unwrap().push(crate::mem::CmbWindow {
                ctrl: cfg.id,
                mem: m.clone(),
                base: None,
            });
            Some((m, f))
        } else {
            None
        };
        Ok(Controller {
            id: cfg.id,
            serial: cfg.serial,
            ns: cfg.namespaces,
            stats,
            ram: GuestRam::default(),
            cmbs,
            cmb,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            intms: 0,
            cmbmsc: 0,
            cmbsts: 0,
            sqs: (0..=MAX_IO_QUEUES).map(|_| None).collect(),
            cqs: (0..=MAX_IO_QUEUES).map(|_| None).collect(),
            irqs: (0..MSIX_VECTORS).map(|_| Vector::default()).collect(),
            features: Default::default(),
            aers: vec![],
            events: VecDeque::new(),
            errlog: VecDeque::new(),
            error_count: 0,
            reads: 0,
            writes: 0,
            bytes_read: 0,
            bytes_written: 0,
            work: false,
            dbbuf: None,
            poll: Duration::ZERO,
            drained_at: None,
            bus_master: Arc::new(AtomicBool::new(false)),
            masked_events: 0,
            regs: Arc::default(),
            bells: Arc::default(),
            shutdown_pending: false,
            budget: 0,
            next_sq: 0,
        })
        .inspect(|c| c.publish())
    }

    pub fn dma(&self) -> Dma<'_> {
        Dma {
            ctrl: self.id,
            ram: &self.ram,
            cmbs: &self.cmbs,
            bus_master: self.bus_master.load(Ordering::Acquire),
            stats: &self.stats,
        }
    }

    pub fn cmb_bytes(&self) -> u64 {
        self.cmb.as_ref().map(|(m, _)| m.len() as u64).unwrap_or(0)
    }

    fn cap(&self) -> u64 {
        let mut cap = MQES as u64 // MQES
            | 1 << 16 // CQR: queues must be physically contiguous
            | 20 << 24 // TO: 10 s
            | 1 << 37; // CSS: NVM command set
        if self.cmb.is_some() {
            cap |= 1 << 57; // CMBS: CMBMSC controls the CMB
        }
        cap
    }

    fn cmbsz(&self) -> u32 {
        if self.cmb.is_none() || self.cmbmsc & CMBMSC_CRE == 0 {
            return 0;
        }
        let mib = (self.cmb_bytes() >> 20) as u32;
        // SQS | LISTS | RDS | WDS, size unit 1 MiB.
        0x1d | 2 << 8 | mib << 12
    }

    fn reg64(&self, base: u64) -> Option<u64> {
        Some(match base {
            reg::CAP => self.cap(),
            reg::ASQ => self.asq,
            reg::ACQ => self.acq,
            reg::CMBMSC => self.cmbmsc,
            _ => return None,
        })
    }

    /// A BAR0 read (served from the mirror, as the message thread does).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn reg_read(&self, off: u64, data: &mut [u8]) {
        self.regs.read(off, data);
    }

    /// Copies the registers into the lock-free mirror; called after every
    /// change of register state.
    fn publish(&self) {
        let r = &self.regs;
        for off in [reg::CAP, reg::ASQ, reg::ACQ, reg::CMBMSC] {
            r.set64(off, self.reg64(off).unwrap_or(0));
        }
        r.set(reg::VS, NVME_VERSION);
        r.set(reg::INTMS, self.intms);
        r.set(reg::INTMC, self.intms);
        r.set(reg::CC, self.cc);
        r.set(reg::CSTS, self.csts);
        r.set(reg::AQA, self.aqa);
        // CMBLOC: BIR 2, offset 0, once the CMB is enabled.
        r.set(
            reg::CMBLOC,
            if self.cmbmsc & CMBMSC_CRE != 0 { 2 } else { 0 },
        );
        r.set(reg::CMBSZ, self.cmbsz());
        r.set(reg::CMBSTS, self.cmbsts);
    }

    pub fn reg_write(&mut self, off: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v64 = u64::from_le_bytes(b);
        let v = v64 as u32;
        if off >= DOORBELLS {
            // As on the vfio-user path: recorded for the worker.
            self.stats
                .doorbell_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.bells.ring((off - DOORBELLS) / 4, v);
            return;
        }
        let set_half = |old: u64, off: u64| -> u64 {
            if n == 8 {
                v64
            } else if off & 4 == 0 {
                (old & !0xffff_ffff) | v as u64
            } else {
                (old & 0xffff_ffff) | (v as u64) << 32
            }
        };
        match off & !3 {
            reg::INTMS => self.intms |= v,
            reg::INTMC => self.intms &= !v,
            reg::CC => self.set_cc(v),
            reg::NSSR => {}
            reg::AQA => self.aqa = v & 0x0fff_0fff,
            o if o & !7 == reg::ASQ => self.asq = set_half(self.asq, off) & !0xfff,
            o if o & !7 == reg::ACQ => self.acq = set_half(self.acq, off) & !0xfff,
            o if o & !7 == reg::CMBMSC => {
                let new = set_half(self.cmbmsc, off);
                self.set_cmbmsc(new);
            }
            _ => {}
        }
        self.publish();
    }

    /// One step of the worker, the only place commands run (production
    /// worker thread and the in-process test host alike): applies recorded
    /// doorbells, then runs a short pass or polls the shadow doorbells.
    pub fn step(&mut self) -> Step {
        self.apply_doorbells();
        if self.work {
            self.run_pending();
            return Step::Busy;
        }
        self.poll_shadows()
    }

    /// Applies the doorbell writes the message thread recorded (the
    /// worker's first step of every pass).
    fn apply_doorbells(&mut self) {
        if !self.bells.pending() {
            return;
        }
        let (writes, bad) = self.bells.take();
        for (slot, v) in writes {
            self.doorbell(DOORBELLS + slot as u64 * 4, v);
        }
        if bad && self.csts & CSTS_RDY != 0 {
            self.doorbell_error(0x00);
        }
    }

    fn set_cmbmsc(&mut self, v: u64) {
        if self.cmb.is_none() {
            return;
        }
        self.cmbmsc = v & (!0xfff | CMBMSC_CRE | CMBMSC_CMSE);
        let base = v & !0xfff;
        let enabled = v & CMBMSC_CMSE != 0 && v & CMBMSC_CRE != 0;
        let valid = base.checked_add(self.cmb_bytes()).is_some();
        self.cmbsts = (enabled && !valid) as u32; // CBAI
        for w in self.cmbs.write().unwrap().iter_mut() {
            if w.ctrl == self.id {
                w.base = (enabled && valid).then_some(base);
            }
        }
    }

    fn set_cc(&mut self, v: u32) {
        let was = self.cc;
        self.cc = v;
        if was & CC_EN == 0 && v & CC_EN != 0 {
            self.enable();
        } else if was & CC_EN != 0 && v & CC_EN == 0 {
            self.reset();
        }
        let shn = (v >> 14) & 3;
        if shn != 0 && (was >> 14) & 3 == 0 {
            // Shutdown processing (SHST 01b) until the worker flushed.
            self.csts = (self.csts & !(3 << 2)) | CSTS_SHST_OCCURRING;
            self.shutdown_pending = true;
            self.work = true;
        } else if shn == 0 {
            self.shutdown_pending = false;
            self.csts &= !(3 << 2);
        }
    }

    /// Flushes every namespace and reports shutdown complete (SHST 10b).
    fn finish_shutdown(&mut self) {
        self.shutdown_pending = false;
        for ns in &self.ns {
            if let Err(e) = ns.flush() {
                log::warn!("controller {}: flush at shutdown: {e}", self.id);
            }
        }
        self.csts = (self.csts & !(3 << 2)) | CSTS_SHST_COMPLETE;
        self.publish();
    }

    fn enable(&mut self) {
        let asqs = (self.aqa & 0xfff) as u16;
        let acqs = ((self.aqa >> 16) & 0xfff) as u16;
        let mps = (self.cc >> 7) & 0xf;
        let css = (self.cc >> 4) & 7;
        if asqs == 0 || acqs == 0 || mps != 0 || css != 0 || self.asq == 0 || self.acq == 0 {
            self.csts |= CSTS_CFS;
            return;
        }
        // The queues must fit the address space (the guest chose ASQ/ACQ);
        // the admin CQ may not be in a CMB (CMBSZ.CQS is 0), nor the admin
        // SQ in a peer's CMB.
        let sq_bytes = (asqs as u64 + 1) * 64;
        let cq_bytes = (acqs as u64 + 1) * 16;
        let fits =
            self.asq.checked_add(sq_bytes).is_some() && self.acq.checked_add(cq_bytes).is_some();
        let dma = self.dma();
        let cq_in_cmb = matches!(
            dma.classify(self.acq, cq_bytes),
            Ok(Target::OwnCmb | Target::PeerCmb(_))
        );
        let sq_in_peer = matches!(dma.classify(self.asq, sq_bytes), Ok(Target::PeerCmb(_)));
        if !fits || cq_in_cmb || sq_in_peer {
            log::debug!(
                "controller {}: CC.EN with bad ASQ {:#x} / ACQ {:#x}",
                self.id,
                self.asq,
                self.acq
            );
            self.csts |= CSTS_CFS;
            return;
        }
        self.cqs[0] = Some(Cq {
            base: self.acq,
            size: acqs + 1,
            head: 0,
            tail: 0,
            phase: true,
            iv: 0,
            ien: true,
            pending: VecDeque::new(),
        });
        self.sqs[0] = Some(Sq {
            base: self.asq,
            size: asqs + 1,
            head: 0,
            tail: 0,
            cqid: 0,
        });
        self.csts |= CSTS_RDY;
    }

    /// Controller reset (CC.EN 1 -> 0, or a vfio-user reset): queues go, the
    /// CMB configuration (CMBMSC) stays, as Linux expects across resets.
    pub fn reset(&mut self) {
        self.sqs.iter_mut().for_each(|q| *q = None);
        self.cqs.iter_mut().for_each(|q| *q = None);
        self.aers.clear();
        self.events.clear();
        self.features = Default::default();
        self.dbbuf = None;
        self.drained_at = None;
        self.csts &= !(CSTS_RDY | CSTS_CFS);
    }

    /// DEVICE_RESET: back to the power-on register state (DMA maps and
    /// interrupt routing stay, as the vfio-user protocol says).
    pub fn device_reset(&mut self) {
        self.reset();
        self.cc = 0;
        self.csts = 0;
        self.aqa = 0;
        self.asq = 0;
        self.acq = 0;
        self.intms = 0;
        self.set_cmbmsc(0);
        self.masked_events = 0;
        self.errlog.clear();
        self.error_count = 0;
        self.shutdown_pending = false;
        self.bells.clear();
        self.publish();
    }

    /// The client went away: power-on state, no DMA maps, no interrupt
    /// fds, and a zeroed CMB (the next client must not see this one's data).
    pub fn disconnect(&mut self) {
        self.device_reset();
        self.ram.clear();
        self.irqs.iter_mut().for_each(|i| *i = Vector::default());
        self.bus_master.store(false, Ordering::Release);
        if let Some((m, _)) = &self.cmb {
            m.clear();
        }
        self.publish();
    }

    /// Routes MSI-X `vector` to an eventfd (None: deassigned).
    pub fn set_irq(&mut self, vector: usize, fd: Option<EventFd>) {
        if let Some(slot) = self.irqs.get_mut(vector) {
            slot.fd = fd;
        }
    }

    /// Masks or unmasks a vector; an interrupt raised while masked is
    /// delivered on unmask.
    pub fn mask_irq(&mut self, vector: usize, masked: bool) {
        let Some(slot) = self.irqs.get_mut(vector) else {
            return;
        };
        slot.masked = masked;
        if !masked && std::mem::take(&mut slot.pending) {
            self.interrupt(vector as u16);
        }
    }

    /// Raises a vector (the client's loopback trigger).
    pub fn trigger_irq(&mut self, vector: usize) {
        self.interrupt(vector as u16);
    }

    fn interrupt(&mut self, iv: u16) {
        let Some(slot) = self.irqs.get_mut(iv as usize) else {
            return;
        };
        if slot.masked {
            slot.pending = true;
        } else if let Some(fd) = &slot.fd {
            // Non-blocking: a full counter already means "interrupt".
            let _ = fd.write(1);
        }
    }

    fn doorbell(&mut self, off: u64, v: u32) {
        let idx = (off - DOORBELLS) / 4;
        let qid = (idx / 2) as usize;
        if self.csts & CSTS_RDY == 0 {
            return;
        }
        let v = v as u16;
        if idx.is_multiple_of(2) {
            match self.sqs.get_mut(qid).and_then(|q| q.as_mut()) {
                Some(sq) if v < sq.size => sq.tail = v,
                Some(_) => return self.doorbell_error(0x01), // invalid write value
                None => return self.doorbell_error(0x00),    // invalid doorbell register
            }
            self.work = true;
        } else {
            match self.cqs.get_mut(qid).and_then(|q| q.as_mut()) {
                // The new head may only pass entries we posted: it lies
                // between the old head and the tail (modulo the size).
                Some(cq) if v < cq.size && cq_head_valid(cq, v) => cq.head = v,
                Some(_) => return self.doorbell_error(0x01),
                None => return self.doorbell_error(0x00),
            }
            self.work = true;
        }
    }

    /// Processes what doorbells recorded: completions waiting for CQ space
    /// first, then submission queues with new entries.
    /// One short pass (at most PASS commands): the worker drops the lock
    /// between passes, so the message thread never waits for a backlog.
    pub fn run_pending(&mut self) {
        self.work = false;
        if self.shutdown_pending {
            self.finish_shutdown();
        }
        for qid in 0..self.cqs.len() {
            if self.cqs[qid]
                .as_ref()
                .is_some_and(|cq| !cq.pending.is_empty())
            {
                self.drain_pending(qid);
            }
        }
        self.budget = PASS;
        let n = self.sqs.len();
        for i in 0..n {
            let qid = (self.next_sq + i) % n;
            self.process_sq(qid);
            if self.budget == 0 {
                self.next_sq = (qid + 1) % n;
                break;
            }
        }
        // Entries left over by the per-pass budget need another pass.
        self.work = self.sqs.iter().flatten().any(|sq| {
            sq.head != sq.tail
                && self.cqs[sq.cqid as usize]
                    .as_ref()
                    .is_some_and(|cq| cq.pending.is_empty())
        });
    }

    /// The controller hit a fatal error (a queue it cannot reach): CSTS.CFS,
    /// and no more commands until a reset, as QEMU's nvme does.
    fn fatal(&mut self, what: &str, addr: u64) {
        log::debug!("controller {}: fatal: {what} at {addr:#x}", self.id);
        self.csts |= CSTS_CFS;
        self.stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish();
    }

    fn doorbell_error(&mut self, info: u32) {
        // Asynchronous event: error status, info, log page 01h; one of a
        // kind outstanding, so a misbehaving guest cannot grow the queue.
        let ev = info << 8 | 0x01 << 16;
        if !self.events.contains(&ev) {
            self.events.push_back(ev);
        }
        self.deliver_events();
    }

    /// A drained I/O SQ with shadow doorbells: rereads the shadow tail and,
    /// unless the worker polls for a while first, publishes the tail we
    /// reached as the event index. True when the driver added entries.
    fn refresh_sq_tail(&mut self, qid: usize) -> bool {
        let (Some(db), true) = (self.dbbuf, qid != 0) else {
            return false;
        };
        let Some((tail, size)) = self.sqs[qid].as_ref().map(|q| (q.tail, q.size)) else {
            return false;
        };
        let seen = if !self.poll.is_zero() {
            self.drained_at.get_or_insert_with(Instant::now);
            db.read(&self.dma(), qid, Bell::SqTail)
        } else {
            db.settle(&self.dma(), qid, Bell::SqTail, tail)
        };
        let Some(t) = self.shadow_moved(seen, tail, size) else {
            return false;
        };
        self.sqs[qid].as_mut().unwrap().tail = t;
        true
    }

    /// A shadow doorbell value checked against its queue: the new value when
    /// it moved within the queue; a value beyond it is a doorbell error.
    fn shadow_moved(&mut self, seen: Option<u16>, current: u16, size: u16) -> Option<u16> {
        match seen {
            Some(v) if v >= size => {
                self.doorbell_error(0x01);
                None
            }
            Some(v) if v != current => Some(v),
            _ => None,
        }
    }

    /// The worker's idle step: looks for entries the driver added without
    /// ringing; once `poll` has passed with none, publishes every I/O SQ's
    /// tail as its event index (rereading after, so nothing is missed).
    pub fn poll_shadows(&mut self) -> Step {
        let Some(since) = self.drained_at else {
            return Step::Sleep;
        };
        let expired = since.elapsed() >= self.poll;
        let db = self.dbbuf.expect("polling only with shadow doorbells");
        for qid in 1..self.sqs.len() {
            let Some((tail, size)) = self.sqs[qid].as_ref().map(|q| (q.tail, q.size)) else {
                continue;
            };
            let seen = if expired {
                db.settle(&self.dma(), qid, Bell::SqTail, tail)
            } else {
                db.read(&self.dma(), qid, Bell::SqTail)
            };
            // A value beyond the queue is reported by the next real pass;
            // here it must not keep the worker spinning.
            if seen.is_some_and(|t| t != tail && t < size) {
                self.work = true;
            }
        }
        if expired || self.work {
            self.drained_at = None;
        }
        if self.drained_at.is_some() {
            Step::Polling
        } else {
            Step::Sleep
        }
    }

    /// A full I/O CQ with shadow doorbells: rereads the head the driver
    /// published. Until it moves, asks for a real head doorbell; otherwise
    /// keeps the driver from ringing at all. True when there is room now.
    fn refresh_cq_head(&mut self, cqid: usize) -> bool {
        let (Some(db), true) = (self.dbbuf, cqid != 0) else {
            return false;
        };
        let Some((head, size)) = self.cqs[cqid].as_ref().map(|q| (q.head, q.size)) else {
            return false;
        };
        let dma = self.dma();
        let mut now = db.read(&dma, cqid, Bell::CqHead);
        if now == Some(head) {
            now = db.settle(&dma, cqid, Bell::CqHead, head);
        }
        let Some(h) = self.shadow_moved(now, head, size) else {
            return false;
        };
        // Behind the driver's head: its next update rings nothing.
        db.set_event(&self.dma(), cqid, Bell::CqHead, h.wrapping_sub(1));
        self.cqs[cqid].as_mut().unwrap().head = h;
        true
    }

    /// Completes outstanding AERs with queued events whose type is not
    /// masked; a delivered type stays masked until the host reads its log
    /// page without RAE (see `unmask_events`).
    pub fn deliver_events(&mut self) {
        while !self.aers.is_empty() {
            let Some(i) = self
                .events
                .iter()
                .position(|ev| self.masked_events & (1 << (ev & 7)) == 0)
            else {
                return;
            };
            let ev = self.events.remove(i).unwrap_or_default();
            self.masked_events |= 1 << (ev & 7);
            let cid = self.aers.remove(0);
            self.post(0, 0, cid, ev, Status::SUCCESS);
        }
    }

    /// The host read log page `lid` without RAE: events of the types it
    /// reports are delivered again.
    pub fn unmask_events(&mut self, lid: u8) {
        // Error information (01h) clears the error type (0); SMART (02h)
        // the SMART/health type (1).
        match lid {
            0x01 => self.masked_events &= !1,
            0x02 => self.masked_events &= !2,
            _ => return,
        }
        self.deliver_events();
    }

    fn process_sq(&mut self, qid: usize) {
        // The budget counts fetched commands only. A queue is only ever
        // left drained after its shadow tail was looked at (and the event
        // index published): otherwise a driver that skipped the doorbell
        // would wait forever.
        loop {
            if self.csts & CSTS_CFS != 0 {
                return;
            }
            let Some(sq) = self.sqs[qid].as_mut() else {
                return;
            };
            if sq.head == sq.tail {
                if self.refresh_sq_tail(qid) {
                    continue;
                }
                return;
            }
            if self.budget == 0 {
                return; // entries left: run_pending keeps `work` set
            }
            // A full completion queue stops fetching; the CQ head doorbell
            // resumes it, so a guest that never reaps cannot grow our backlog.
            let cq_full = self.cqs[sq.cqid as usize]
                .as_ref()
                .is_some_and(|cq| !cq.pending.is_empty());
            if cq_full {
                return;
            }
            self.budget -= 1;
            let addr = sq.base.checked_add(sq.head as u64 * 64);
            sq.head = (sq.head + 1) % sq.size;
            let cqid = sq.cqid as usize;
            let mut raw = [0u8; 64];
            match addr.map(|a| (a, self.dma().read(Kind::Meta, a, &mut raw))) {
                Some((_, Ok(_))) => {}
                Some((a, Err(_))) => return self.fatal("SQ entry fetch fault", a),
                None => return self.fatal("SQ entry beyond the address space", u64::MAX),
            }
            let sqe = Sqe::from_bytes(&raw);
            let res = if sqe.dw[0] & 0x300 != 0 {
                // Fused operations (FUSE bits) are not supported (ONCS bit 0
                // of FUSES is clear): refuse both halves.
                Some(Err(Status::INVALID_FIELD))
            } else if qid == 0 && sqe.psdt() != 0 {
                // Admin commands use PRPs only.
                Some(Err(Status::INVALID_FIELD))
            } else if qid == 0 {
                self.admin(&sqe)
            } else {
                Some(crate::io::execute(self, &sqe))
            };
            let Some(res) = res else { continue }; // held (AER)
            let (dw0, status) = match res {
                Ok(v) => (v, Status::SUCCESS),
                Err(s) => {
                    // Only I/O commands carry an LBA in CDW10/11.
                    let lba = if qid == 0 { 0 } else { sqe.slba() };
                    self.log_error(qid as u16, sqe.cid(), s, sqe.nsid(), lba);
                    (0, s)
                }
            };
            self.stats
                .commands
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.post(cqid, qid as u16, sqe.cid(), dw0, status);
        }
    }

    /// Adds an error-log entry (`lba`: the command's LBA; 0 for commands
    /// without one, such as admin commands).
    pub fn log_error(&mut self, sqid: u16, cid: u16, s: Status, nsid: u32, lba: u64) {
        self.error_count += 1;
        self.stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut e = [0u8; 64];
        e[0..8].copy_from_slice(&self.error_count.to_le_bytes());
        e[8..10].copy_from_slice(&sqid.to_le_bytes());
        e[10..12].copy_from_slice(&cid.to_le_bytes());
        e[12..14].copy_from_slice(&s.field().to_le_bytes());
        e[14..16].copy_from_slice(&0xffffu16.to_le_bytes());
        e[16..24].copy_from_slice(&lba.to_le_bytes());
        e[24..28].copy_from_slice(&nsid.to_le_bytes());
        self.errlog.push_front(e);
        self.errlog.truncate(ERROR_LOG_ENTRIES);
    }

    /// Queues a completion on `cqid` and raises its interrupt.
    pub fn post(&mut self, cqid: usize, sqid: u16, cid: u16, dw0: u32, status: Status) {
        let sq_head = self
            .sqs
            .get(sqid as usize)
            .and_then(|q| q.as_ref())
            .map(|q| q.head)
            .unwrap_or(0);
        let Some(cq) = self.cqs.get_mut(cqid).and_then(|q| q.as_mut()) else {
            return;
        };
        // Phase is filled in when the entry is written.
        cq.pending
            .push_back(cqe(dw0, sq_head, sqid, cid, status.field(), false));
        self.drain_pending(cqid);
    }

    fn drain_pending(&mut self, cqid: usize) {
        let mut wrote = false;
        loop {
            let Some(cq) = self.cqs.get_mut(cqid).and_then(|q| q.as_mut()) else {
                return;
            };
            if cq.pending.is_empty() {
                break;
            }
            if (cq.tail + 1) % cq.size == cq.head {
                if self.refresh_cq_head(cqid) {
                    continue;
                }
                break;
            }
            let Some(mut e) = cq.pending.pop_front() else {
                break;
            };
            e[14] |= cq.phase as u8;
            let addr = cq.base.checked_add(cq.tail as u64 * 16);
            cq.tail = (cq.tail + 1) % cq.size;
            if cq.tail == 0 {
                cq.phase = !cq.phase;
            }
            match addr.map(|a| (a, self.dma().write(Kind::Meta, a, &e))) {
                Some((_, Ok(_))) => {}
                Some((a, Err(_))) => return self.fatal("CQ entry write fault", a),
                None => return self.fatal("CQ entry beyond the address space", u64::MAX),
            }
            wrote = true;
        }
        if wrote {
            let cq = self.cqs[cqid].as_ref().unwrap();
            if cq.ien {
                let iv = cq.iv;
                self.interrupt(iv);
            }
        }
    }

    /// Where a queue's memory lives, for the CMB rules on queue creation.
    /// An unreachable queue is an invalid field.
    pub fn queue_target(&self, base: u64, bytes: u64) -> Result<Target, Status> {
        self.dma()
            .classify(base, bytes)
            .map_err(|_| Status::INVALID_FIELD)
    }
}

/// Whether moving a CQ head to `v` only releases entries the controller
/// posted (the head may reach the tail, never pass it).
fn cq_head_valid(cq: &Cq, v: u16) -> bool {
    let size = cq.size as u32;
    let dist = |from: u16, to: u16| (to as u32 + size - from as u32) % size;
    dist(cq.head, v) <= dist(cq.head, cq.tail)
}
