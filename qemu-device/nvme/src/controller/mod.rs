//! One NVMe controller: where its parts meet.
//!
//! Parts (each owns its state behind private fields and is changed only
//! through its methods):
//! - `bar0`: register values (CC, CSTS, AQA/ASQ/ACQ, INTMS, CMBMSC);
//!   `regs`: the lock-free mirror and the doorbell slots the transport
//!   writes;
//! - `io_queues`: admin and I/O queues, queue create/delete checks, the
//!   round-robin cursor and per-pass budget;
//! - `worker`: pending work, shutdown, poll and moderation timing;
//! - `commands::features`: feature values and SMART's host counters;
//! - `cmb`, `vectors` (interrupt eventfds and masks), `irq` (batching and
//!   coalescing), `async_events`, `error_log`, `held` (completions fault
//!   rules hold back), `shadow` (shadow doorbells, with `dbbuf`).
//!
//! The `impl Controller` files are the controller's operations, which
//! combine the parts: `registers` (CC, resets), `queues` (the worker's
//! step and pass), `admin` (queue, doorbell buffer and AER commands),
//! `shadow`, `irq`, `events`, `faults`.

mod admin;
mod async_events;
mod bar0;
mod cmb;
pub mod dbbuf;
mod error_log;
mod events;
mod faults;
mod held;
mod io_queues;
mod irq;
mod queues;
mod registers;
pub mod regs;
mod shadow;
mod vectors;
mod worker;

use crate::controller::dbbuf::{Bell, DoorbellBuffer};
use crate::controller::regs::{Doorbells, RegMirror};
use crate::dma::{CmbRegistry, Dma, GuestRam, Target};
use crate::namespace::Namespace;
use crate::nvme::{Sqe, Status};
use crate::stats::{Counters, Kind};
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

/// Per-controller settings (from the validated configuration document).
pub struct CtrlConfig {
    pub id: usize,
    pub serial: String,
    pub cmb_bytes: u64,
    pub namespaces: Vec<Namespace>,
    /// MSI-X or MSI: sets how many interrupt vectors there are.
    pub irq: crate::irq_mode::IrqMode,
}

/// One controller. Its identity and parts are private (the `controller`
/// modules reach them through the parts' methods); what it shares with the
/// rest of the process (counters, guest RAM, Bus Master Enable, fault
/// rules, trace) is public.
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
    /// Submission and completion queues, and the worker's pass over them.
    queues: io_queues::Queues,
    /// Interrupt vectors: eventfds and masks.
    irqs: vectors::Vectors,
    /// Feature values the host set, and SMART's host counters.
    features: crate::commands::features::Features,
    /// Asynchronous event requests, queued events and what their log
    /// pages report.
    events: async_events::AsyncEvents,
    /// The error log (log page 01h).
    errors: error_log::ErrorLog,
    /// Pending work and the worker's timing (polling, moderation).
    worker: worker::Worker,
    /// Shadow doorbells for I/O queues: buffers, drain time, poll pace.
    shadow: shadow::Shadow,
    /// PCI command register's Bus Master Enable (owned by the PCI config
    /// space): while clear, the controller performs no DMA at all.
    pub bus_master: Arc<AtomicBool>,
    /// BAR0 as the message thread reads it, without this controller's lock.
    regs: Arc<RegMirror>,
    /// Doorbell writes the message thread recorded for the worker.
    bells: Arc<Doorbells>,
    /// Fault rules of the process (empty: no cost).
    pub faults: Arc<crate::faults::FaultTable>,
    /// The command trace of the process (off: no cost).
    pub trace: Arc<crate::trace::Tracer>,
    /// Completions fault rules hold back (delayed, or never posted).
    held: held::HeldCompletions<Option<faults::Traced>>,
    /// Completions not yet signalled (batching and coalescing).
    irq: irq::IrqState,
}

#[cfg(test)]
pub(crate) use io_queues::PASS;
use io_queues::PASS_UNIT_BYTES;

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
            queues: Default::default(),
            irqs: vectors::Vectors::new(cfg.irq.vectors()),
            features: Default::default(),
            events: Default::default(),
            errors: Default::default(),
            worker: Default::default(),
            shadow: Default::default(),
            bus_master: Arc::new(AtomicBool::new(false)),
            regs: Arc::default(),
            bells: Arc::default(),
            faults: Arc::new(crate::faults::FaultTable::new(0)),
            trace: Arc::default(),
            held: Default::default(),
            irq: Default::default(),
        })
        .inspect(|c| c.publish())
    }

    /// The narrow view an I/O command gets of this controller.
    pub fn io_ctx(&mut self) -> crate::commands::io::IoCtx<'_> {
        let (vwc, counters) = self.features.io_view();
        crate::commands::io::IoCtx {
            ns: &self.ns,
            dma: Dma {
                yields: true,
                ..dma_over!(self)
            },
            vwc,
            counters,
        }
    }

    /// The narrow view identify, features and log pages get.
    pub fn admin_ctx(&mut self) -> crate::commands::admin::AdminCtx<'_> {
        let (masked_events, critical_warning, changed_ns) = self.events.log_view();
        crate::commands::admin::AdminCtx {
            id: self.id,
            serial: &self.serial,
            ns: &self.ns,
            dma: Dma {
                yields: true,
                ..dma_over!(self)
            },
            features: &mut self.features,
            errlog: self.errors.entries(),
            error_count: self.errors.count(),
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

    /// Sets how long the worker polls shadow SQ tails after the queues
    /// drain (0: no polling).
    pub fn set_poll(&mut self, poll: Duration) {
        self.worker.set_poll(poll);
    }

    /// Sets the adaptive interrupt moderation time (0: off).
    pub fn set_moderation(&mut self, moderation: Duration) {
        self.worker.set_moderation(moderation);
    }

    /// Work waits for the worker.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn has_work(&self) -> bool {
        self.worker.has_work()
    }

    /// The driver configured shadow doorbells.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn shadow_doorbells_on(&self) -> bool {
        self.shadow.buffer().is_some()
    }

    /// Completions of `cqid` waiting for room in the queue.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn cq_backlog(&self, cqid: usize) -> usize {
        self.queues.backlog(cqid)
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
            yields: false,
        }
    };
}
use dma_over;
