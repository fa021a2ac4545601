//! In-process test host: plays the Linux driver's role against a controller
//! (guest RAM in a memfd, queues, doorbell writes, interrupt eventfds), for
//! unit tests and the benchmark. Several controllers can share one CMB
//! registry for peer-to-peer tests.

use crate::controller::{reg, Controller, CtrlConfig, DOORBELLS};
use crate::dma::{memfd, CmbRegistry, Mapping};
use crate::irq_mode::IrqMode;
use crate::namespace::Namespace;
pub use crate::nvme::Sqe;
use crate::stats::Counters;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLock};
use vmm_sys_util::eventfd::EventFd;

mod admin;
mod remote;
mod socket;
pub use crate::dma::Prot;
pub use remote::RemoteHost;
pub use socket::{SocketHost, DATA, IO_ENTRIES, SOCKET_RAM};

/// Guest physical address of the test host's RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
const QUEUES: usize = 65;

/// A completion as the host sees it.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// Command specific result.
    pub dw0: u32,
    /// Command identifier.
    pub cid: u16,
    /// Status code type.
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
}

impl Completion {
    /// Successful completion.
    pub fn ok(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

#[derive(Default, Clone, Copy)]
struct HostQueue {
    sq_base: u64,
    sq_size: u16,
    sq_tail: u16,
    cq_base: u64,
    cq_size: u16,
    cq_head: u16,
    phase: bool,
}

/// A driver's view of one controller (see the module docs).
pub struct TestHost {
    /// The controller, driven directly.
    pub ctrl: Controller,
    ram: Mapping,
    ram_fd: File,
    ram_size: u64,
    next: u64,
    queues: [HostQueue; QUEUES],
    irq: EventFd,
    cid: u16,
    /// Shadow doorbell and event index pages, once configured.
    shadow: Option<(u64, u64)>,
    /// Doorbell register writes so far (each one a vfio-user round trip).
    pub doorbell_writes: u64,
    /// The test steps the worker itself (`ctrl.step()`); register writes
    /// do not run it.
    pub manual: bool,
    /// MSI-X or MSI (the PCI config space a remote host gets).
    irq_mode: IrqMode,
    /// The interrupt vector of the I/O CQs this host creates.
    pub io_vector: u16,
}

/// A completion entry as the host decodes it.
fn completion(e: &[u8; 16]) -> Completion {
    let st = u16::from_le_bytes([e[14], e[15]]);
    Completion {
        dw0: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
        cid: u16::from_le_bytes([e[12], e[13]]),
        sct: ((st >> 9) & 7) as u8,
        sc: (st >> 1) as u8,
        dnr: st & 0x8000 != 0,
    }
}

/// A submission entry under construction.
pub fn command(opcode: u8, nsid: u32) -> Sqe {
    let mut s = Sqe::default();
    s.dw[0] = opcode as u32;
    s.dw[1] = nsid;
    s
}

/// A Read or Write of `nlb` blocks at `slba` on namespace 1 with PRP1/PRP2
/// as given, FUA if asked.
pub fn rw_command(opcode: u8, slba: u64, nlb: u32, prp1: u64, prp2: u64, fua: bool) -> Sqe {
    let mut c = command(opcode, 1);
    c.dw[6] = prp1 as u32;
    c.dw[7] = (prp1 >> 32) as u32;
    c.dw[8] = prp2 as u32;
    c.dw[9] = (prp2 >> 32) as u32;
    c.dw[10] = slba as u32;
    c.dw[11] = (slba >> 32) as u32;
    c.dw[12] = (nlb - 1) | (fua as u32) << 30;
    c
}

/// What a test controller is made of (see [`TestHost::with_spec`]).
#[derive(Clone, Copy, Debug)]
pub struct HostSpec {
    /// Controller index (its namespace file is `ns{id}.img`).
    pub id: usize,
    /// CMB size in MiB (0: none).
    pub cmb_mib: u64,
    /// Guest RAM at RAM_BASE, in MiB.
    pub ram_mib: u64,
    /// Size of the namespace.
    pub ns_bytes: u64,
    /// How the controller interrupts: I/O CQs use vector 1 with MSI-X and
    /// vector 0 (the only one) with MSI.
    pub irq: IrqMode,
}

impl TestHost {
    /// A controller with an MSI-X interrupt, one namespace of `ns_bytes`
    /// in `dir`, a CMB of `cmb_mib` and guest RAM of `ram_mib` at RAM_BASE.
    pub fn new(
        dir: &Path,
        id: usize,
        cmbs: CmbRegistry,
        cmb_mib: u64,
        ram_mib: u64,
        ns_bytes: u64,
    ) -> TestHost {
        let irq = IrqMode::Msix;
        let spec = HostSpec {
            id,
            cmb_mib,
            ram_mib,
            ns_bytes,
            irq,
        };
        TestHost::with_spec(dir, cmbs, spec)
    }

    /// A controller as `spec` says, its namespace file in `dir`.
    pub fn with_spec(dir: &Path, cmbs: CmbRegistry, spec: HostSpec) -> TestHost {
        let HostSpec {
            id,
            cmb_mib,
            ram_mib,
            ns_bytes,
            irq: irq_mode,
        } = spec;
        let ns = Namespace::open(&dir.join(format!("ns{id}.img")), ns_bytes, 512).unwrap();
        let stats = Arc::new(Counters::new(id, &format!("test-{id}")));
        let mut ctrl = Controller::new(
            CtrlConfig {
                id,
                serial: format!("test-{id}"),
                cmb_bytes: cmb_mib << 20,
                namespaces: vec![ns],
                irq: irq_mode,
            },
            cmbs,
            stats,
        )
        .unwrap();
        ctrl.faults = Arc::new(crate::faults::FaultTable::new(id + 1));
        // The driver's pci_set_master().
        ctrl.bus_master
            .store(true, std::sync::atomic::Ordering::Release);
        let ram_size = ram_mib << 20;
        let ram_fd = memfd("test-ram", ram_size).unwrap();
        let f = ram_fd.try_clone().unwrap();
        ctrl.ram
            .map(
                RAM_BASE,
                ram_size,
                Some((f.try_clone().unwrap(), 0)),
                crate::dma::Prot::RW,
            )
            .unwrap();
        let ram = Mapping::new(&f, 0, ram_size as usize).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        for v in 0..ctrl.vectors() {
            ctrl.set_irq(v, Some(irq.try_clone().expect("eventfd clone")));
        }
        let io_vector = match irq_mode {
            IrqMode::Msix => 1,
            IrqMode::Msi => 0,
        };
        TestHost {
            ctrl,
            ram,
            ram_fd,
            ram_size,
            next: 0,
            queues: [HostQueue::default(); QUEUES],
            irq,
            cid: 0,
            shadow: None,
            doorbell_writes: 0,
            manual: false,
            irq_mode,
            io_vector,
        }
    }

    /// Installs a fault rule on this controller's table; its id.
    pub fn fault(&self, rule: &str) -> u64 {
        self.ctrl.faults.add(rule).expect("a valid fault rule")
    }

    /// A CMB registry for one peer group.
    pub fn registry() -> CmbRegistry {
        Arc::new(RwLock::new(vec![]))
    }

    /// Page-aligned guest RAM.
    pub fn alloc(&mut self, bytes: u64) -> u64 {
        let a = self.next;
        self.next += bytes.div_ceil(4096) * 4096;
        assert!(self.next <= self.ram_size, "test host RAM exhausted");
        RAM_BASE + a
    }

    /// The end of guest RAM.
    pub fn ram_end(&self) -> u64 {
        RAM_BASE + self.ram_size
    }

    /// Writes guest RAM (as the CPU).
    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        assert!(
            self.ram.write((addr - RAM_BASE) as usize, data),
            "outside test RAM"
        );
    }

    /// Reads guest RAM (as the CPU).
    pub fn read_mem(&self, addr: u64, data: &mut [u8]) {
        assert!(
            self.ram.read((addr - RAM_BASE) as usize, data),
            "outside test RAM"
        );
    }

    /// A register write, then the worker runs until it has no work left
    /// (as the production worker thread would, right away).
    pub fn write32(&mut self, off: u64, v: u32) {
        self.ctrl.reg_write(off, &v.to_le_bytes());
        self.run_worker();
    }

    /// A 64-bit register write, then the worker runs.
    pub fn write64(&mut self, off: u64, v: u64) {
        self.ctrl.reg_write(off, &v.to_le_bytes());
        self.run_worker();
    }

    /// Runs the controller's worker step (the production worker's code)
    /// until it is idle or only polling shadow doorbells.
    pub fn run_worker(&mut self) {
        if self.manual {
            return;
        }
        while self.ctrl.step() == crate::controller::Step::Busy {}
    }

    /// A 32-bit BAR0 read.
    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.ctrl.reg_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// A 64-bit BAR0 read.
    pub fn read64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.ctrl.reg_read(off, &mut b);
        u64::from_le_bytes(b)
    }

    /// Interrupts raised since the last call.
    pub fn take_interrupts(&mut self) -> u64 {
        self.irq.read().unwrap_or(0)
    }

    /// Sets up a 32-entry admin queue and enables the controller, as Linux does.
    pub fn enable(&mut self) {
        let (asq, acq) = (self.alloc(32 * 64), self.alloc(32 * 16));
        assert!(self.enable_at(asq, acq), "controller not ready");
    }

    /// Enables the controller with a 32-entry admin queue at `asq`/`acq`
    /// (after CC.EN 0); false if it did not become ready.
    pub fn enable_at(&mut self, asq: u64, acq: u64) -> bool {
        self.write32(reg::CC, 0);
        self.write32(reg::AQA, 31 << 16 | 31);
        self.write64(reg::ASQ, asq);
        self.write64(reg::ACQ, acq);
        self.write32(reg::CC, 1 | 6 << 16 | 4 << 20);
        self.queues = [HostQueue::default(); QUEUES];
        self.shadow = None;
        if self.read32(reg::CSTS) & 1 == 0 {
            return false;
        }
        self.queues[0] = HostQueue {
            sq_base: asq,
            sq_size: 32,
            cq_base: acq,
            cq_size: 32,
            phase: true,
            ..Default::default()
        };
        true
    }

    /// Whether the host has set up queue pair `qid`.
    pub fn has_queue(&self, qid: usize) -> bool {
        self.queues.get(qid).is_some_and(|q| q.sq_size > 0)
    }

    /// The guest RAM file, for DMA maps of parts of it.
    pub fn ram_file(&self) -> &File {
        &self.ram_fd
    }

    /// Submits on `qid` and returns the completion (None if none was posted).
    pub fn submit(&mut self, qid: usize, sqe: Sqe) -> Option<Completion> {
        self.submit_no_reap(qid, sqe);
        self.reap(qid)
    }

    /// Writes the entry and rings the SQ doorbell, without reaping.
    pub fn submit_no_reap(&mut self, qid: usize, mut sqe: Sqe) {
        if !self.has_queue(qid) {
            return;
        }
        self.cid = self.cid.wrapping_add(1);
        sqe.dw[0] = (sqe.dw[0] & 0xffff) | (self.cid as u32) << 16;
        let q = self.queues[qid];
        let mut raw = [0u8; 64];
        for (i, d) in sqe.dw.iter().enumerate() {
            raw[i * 4..i * 4 + 4].copy_from_slice(&d.to_le_bytes());
        }
        self.write_sq_entry(q.sq_base, q.sq_tail, &raw);
        let tail = (q.sq_tail + 1) % q.sq_size;
        self.queues[qid].sq_tail = tail;
        self.ring(2 * qid, q.sq_tail, tail);
    }

    /// The value of doorbell `slot` in the shadow (or event index) page.
    pub fn shadow_slot(&self, slot: usize, eventidx: bool) -> Option<u16> {
        let (db, ei) = self.shadow?;
        let mut b = [0u8; 4];
        self.read_mem(if eventidx { ei } else { db } + slot as u64 * 4, &mut b);
        Some(u32::from_le_bytes(b) as u16)
    }

    /// Writes the shadow doorbell `slot` without ringing anything.
    pub fn write_shadow(&self, slot: usize, v: u16) {
        let Some((db, _)) = self.shadow else {
            return;
        };
        self.write_mem(db + slot as u64 * 4, &(v as u32).to_le_bytes());
    }

    /// Moves doorbell `slot` (2*qid: SQ tail, 2*qid+1: CQ head) from `old`
    /// to `new`: with shadow doorbells as Linux's nvme_dbbuf_update_and_check_event
    /// does (shadow, full barrier, event index check), else straight to MMIO.
    pub fn ring(&mut self, slot: usize, old: u16, new: u16) {
        if let (Some(_), true) = (self.shadow, slot >= 2) {
            self.write_shadow(slot, new);
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            let ei = self.shadow_slot(slot, true).unwrap();
            if new.wrapping_sub(ei).wrapping_sub(1) >= new.wrapping_sub(old) {
                return;
            }
        }
        self.doorbell_writes += 1;
        self.write32(DOORBELLS + slot as u64 * 4, new as u32);
    }

    fn write_sq_entry(&mut self, base: u64, slot: u16, raw: &[u8; 64]) {
        let addr = base + slot as u64 * 64;
        if addr >= RAM_BASE && addr < self.ram_end() {
            self.write_mem(addr, raw);
        } else {
            // Submission queue in a CMB: write through the controller's view.
            // (A test that moved the CMB away sees the command go nowhere.)
            let _ = self.ctrl.dma().cpu_write(addr, raw);
        }
    }

    /// Takes the next completion of `qid`'s CQ, if the phase says it is new.
    pub fn reap(&mut self, qid: usize) -> Option<Completion> {
        if !self.has_queue(qid) {
            return None;
        }
        let q = self.queues[qid];
        let mut e = [0u8; 16];
        self.read_mem(q.cq_base + q.cq_head as u64 * 16, &mut e);
        let st = u16::from_le_bytes([e[14], e[15]]);
        if (st & 1 == 1) != q.phase {
            return None;
        }
        let head = (q.cq_head + 1) % q.cq_size;
        self.queues[qid].cq_head = head;
        if head == 0 {
            self.queues[qid].phase = !q.phase;
        }
        self.ring(2 * qid + 1, q.cq_head, head);
        Some(completion(&e))
    }
}
