//! One NVMe controller: where its parts meet. The parts own their state
//! behind private fields (`bar0` registers, `cmb`, `vectors`,
//! `async_events`, `error_log`, `held` completions); the `impl Controller`
//! files (`registers`, `queues`, `shadow`, `irq`, `events`, `faults`,
//! `admin`) are the controller's operations, which call the parts' methods.

mod admin;
mod async_events;
mod bar0;
mod cmb;
pub mod dbbuf;
mod error_log;
mod events;
mod faults;
mod held;
mod irq;
mod queues;
mod registers;
pub mod regs;
mod shadow;
mod vectors;

use crate::controller::dbbuf::{Bell, DoorbellBuffer};
use crate::controller::regs::{Doorbells, RegMirror};
use crate::dma::{CmbRegistry, Dma, GuestRam, Target};
use crate::namespace::Namespace;
use crate::nvme::{cqe, Sqe, Status};
use crate::stats::{Counters, Kind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

pub const DOORBELLS: u64 = 0x1000;
pub use crate::limits::{MAX_IO_QUEUES, MQES};

/// BAR0 register offsets, taken from the typed register layout.
pub mod reg {
    use crate::wire::ControllerRegisters as R;
    use std::mem::offset_of;
    /// CAP.
    pub const CAP: u64 = offset_of!(R, cap) as u64;
    /// VS.
    pub const VS: u64 = offset_of!(R, vs) as u64;
    /// INTMS.
    pub const INTMS: u64 = offset_of!(R, intms) as u64;
    /// INTMC.
    pub const INTMC: u64 = offset_of!(R, intmc) as u64;
    /// CC.
    pub const CC: u64 = offset_of!(R, cc) as u64;
    /// CSTS.
    pub const CSTS: u64 = offset_of!(R, csts) as u64;
    /// NSSR.
    pub const NSSR: u64 = offset_of!(R, nssr) as u64;
    /// AQA.
    pub const AQA: u64 = offset_of!(R, aqa) as u64;
    /// ASQ.
    pub const ASQ: u64 = offset_of!(R, asq) as u64;
    /// ACQ.
    pub const ACQ: u64 = offset_of!(R, acq) as u64;
    /// CMBLOC.
    pub const CMBLOC: u64 = offset_of!(R, cmbloc) as u64;
    /// CMBSZ.
    pub const CMBSZ: u64 = offset_of!(R, cmbsz) as u64;
    /// CMBMSC.
    pub const CMBMSC: u64 = offset_of!(R, cmbmsc) as u64;
    /// CMBSTS.
    pub const CMBSTS: u64 = offset_of!(R, cmbsts) as u64;
}

use bar0::{CMBMSC_CMSE, CMBMSC_CRE};

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
    pub pending: VecDeque<crate::wire::Cqe>,
}

/// Per-controller settings (from the validated configuration document).
pub struct CtrlConfig {
    pub id: usize,
    pub serial: String,
    pub cmb_bytes: u64,
    pub namespaces: Vec<Namespace>,
    /// MSI-X or MSI: sets how many interrupt vectors there are.
    pub irq: crate::irq_mode::IrqMode,
}

/// One controller. Its identity, queues and parts are private (the
/// `controller` modules reach them through the parts' methods); what it
/// shares with the rest of the process (counters, guest RAM, Bus Master
/// Enable, fault rules, trace, timing settings) is public.
pub struct Controller {
    id: usize,
    serial: String,
    ns: Vec<Namespace>,
    /// This controller's DMA counters and health (shared with the stats
    /// socket).
    pub stats: Arc<Counters>,
    /// Guest RAM maps, shared with the message thread so DMA_MAP/UNMAP
    /// need not wait for the worker's pass.
    pub ram: Arc<GuestRam>,
    /// The CMB and its window in the peer group's table.
    cmb: cmb::Cmb,
    /// BAR0 register values (the mirror below is what clients read).
    bar0: bar0::Registers,
    sqs: Vec<Option<Sq>>,
    cqs: Vec<Option<Cq>>,
    /// Interrupt vectors: eventfds and masks.
    irqs: vectors::Vectors,
    features: crate::commands::state::Features,
    /// Asynchronous event requests, queued events and what their log
    /// pages report.
    events: async_events::AsyncEvents,
    /// The error log (log page 01h).
    errors: error_log::ErrorLog,
    host: crate::commands::state::HostCounters,
    /// Commands or a shutdown wait for the worker (the vfio-user reply to
    /// a doorbell write does not wait for the I/O).
    work: bool,
    /// Shadow doorbells for I/O queues: buffers, drain time, poll pace.
    shadow: shadow::Shadow,
    /// How long the worker keeps polling shadow SQ tails after the queues
    /// drain before it publishes event indices (and the driver rings
    /// again); `pace` shortens it while the driver's I/O is sparse.
    pub poll: Duration,
    /// Adaptive interrupt moderation (0: off): while the host has not
    /// set Interrupt Coalescing, an I/O vector's interrupt waits until no
    /// command arrived for this long (see `irq.rs`).
    pub moderation: Duration,
    /// When the last pass that fetched commands ended.
    last_fetch: Option<Instant>,
    /// PCI command register's Bus Master Enable (owned by the PCI config
    /// space): while clear, the controller performs no DMA at all.
    pub bus_master: Arc<AtomicBool>,
    /// BAR0 as the message thread reads it, without this controller's lock.
    regs: Arc<RegMirror>,
    /// Doorbell writes the message thread recorded for the worker.
    bells: Arc<Doorbells>,
    /// CC.SHN was set: the worker flushes, then reports SHST complete.
    shutdown_pending: bool,
    /// Work units left in this worker pass (the worker drops the lock
    /// between passes, so a pass is short).
    budget: usize,
    /// Where the next pass starts, so every queue gets its turn.
    next_sq: usize,
    /// Fault rules of the process (empty: no cost).
    pub faults: Arc<crate::faults::FaultTable>,
    /// The command trace of the process (off: no cost).
    pub trace: Arc<crate::trace::Tracer>,
    /// Completions fault rules hold back (delayed, or never posted).
    held: held::HeldCompletions<Option<faults::Traced>>,
    /// Completions not yet signalled (batching and coalescing).
    irq: irq::IrqState,
}

/// Work units per worker pass; the lock is free between passes. A command
/// costs one unit plus one per `PASS_UNIT_BYTES` of data it moves, so a pass
/// runs at most 16 small commands (one interrupt for all of them) and at
/// most about one 512 KiB transfer.
pub(crate) const PASS: usize = 16;
const PASS_UNIT_BYTES: u64 = 32 << 10;

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
        let cmb = cmb::Cmb::new(cfg.id, cfg.cmb_bytes, cmbs)?;
        Ok(Controller {
            id: cfg.id,
            serial: cfg.serial,
            ns: cfg.namespaces,
            stats,
            ram: Arc::default(),
            cmb,
            bar0: Default::default(),
            sqs: (0..=MAX_IO_QUEUES).map(|_| None).collect(),
            cqs: (0..=MAX_IO_QUEUES).map(|_| None).collect(),
            irqs: vectors::Vectors::new(cfg.irq.vectors()),
            features: Default::default(),
            events: Default::default(),
            errors: Default::default(),
            host: Default::default(),
            work: false,
            poll: Duration::ZERO,
            moderation: Duration::ZERO,
            last_fetch: None,
            shadow: Default::default(),
            bus_master: Arc::new(AtomicBool::new(false)),
            regs: Arc::default(),
            bells: Arc::default(),
            shutdown_pending: false,
            budget: 0,
            next_sq: 0,
            faults: Arc::new(crate::faults::FaultTable::new(0)),
            trace: Arc::default(),
            held: Default::default(),
            irq: Default::default(),
        })
        .inspect(|c| c.publish())
    }

    /// The narrow view an I/O command gets of this controller.
    pub fn io_ctx(&mut self) -> crate::commands::io::IoCtx<'_> {
        crate::commands::io::IoCtx {
            ns: &self.ns,
            dma: dma_over!(self),
            vwc: self.features.vwc,
            counters: &mut self.host,
        }
    }

    /// The narrow view identify, features and log pages get.
    pub fn admin_ctx(&mut self) -> crate::commands::admin::AdminCtx<'_> {
        let (masked_events, critical_warning, changed_ns) = self.events.log_view();
        crate::commands::admin::AdminCtx {
            id: self.id,
            serial: &self.serial,
            ns: &self.ns,
            dma: dma_over!(self),
            features: &mut self.features,
            errlog: self.errors.entries(),
            error_count: self.errors.count(),
            host: &self.host,
            stats: &self.stats,
            masked_events,
            critical_warning,
            changed_ns,
            vectors: self.irqs.count(),
        }
    }

    pub fn dma(&self) -> Dma<'_> {
        dma_over!(self)
    }

    /// The register mirror the transport reads without the lock.
    pub fn register_mirror(&self) -> Arc<RegMirror> {
        self.regs.clone()
    }

    /// The doorbell slots the transport records writes in.
    pub fn doorbells(&self) -> Arc<Doorbells> {
        self.bells.clone()
    }

    /// Work waits for the worker.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn has_work(&self) -> bool {
        self.work
    }

    /// The driver configured shadow doorbells.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn shadow_doorbells_on(&self) -> bool {
        self.shadow.buffer().is_some()
    }

    /// Completions of `cqid` waiting for room in the queue.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn cq_backlog(&self, cqid: usize) -> usize {
        self.cqs
            .get(cqid)
            .and_then(|q| q.as_ref())
            .map_or(0, |q| q.pending.len())
    }

    /// Namespace `i` (NSID i + 1).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn namespace(&self, i: usize) -> &Namespace {
        &self.ns[i]
    }

    /// CMB size in bytes (0: none).
    pub fn cmb_bytes(&self) -> u64 {
        self.cmb.bytes()
    }

    /// The CMB memory and the memfd the client maps (None: no CMB).
    pub fn cmb_memory(&self) -> Option<cmb::CmbMemory> {
        self.cmb.memory()
    }

    /// Set while a `cmb-revoke=unmap` rule holds: CPU reads of the CMB
    /// return all ones.
    pub fn cmb_unreachable(&self) -> Arc<AtomicBool> {
        self.cmb.unreachable_flag()
    }
}

/// The DMA engine over these fields of a controller; a free function so the
/// command contexts can borrow other fields mutably beside it.
/// The DMA view over a controller's fields, borrowing only the fields it
/// names (so a command context can borrow other fields mutably beside it).
macro_rules! dma_over {
    ($c:ident) => {
        Dma {
            ctrl: $c.id,
            ram: &$c.ram,
            cmbs: $c.cmb.group(),
            bus_master: $c.bus_master.load(Ordering::Acquire),
            stats: &$c.stats,
            cut: None,
        }
    };
}
use dma_over;
