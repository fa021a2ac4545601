//! vfio-user transport: the project's vfio-user server (crate
//! `p2pnvme-vfio-user`, which validates every request) calls this backend;
//! it maps region accesses, DMA maps and interrupt fds onto the controller.
//! `pci` is the configuration space.

pub mod pci;

use crate::controller::regs::{Doorbells, RegMirror};
use crate::controller::{Controller, Step, DOORBELLS};
use crate::dma::{GuestRam, MapError, Mapping, Prot};
use crate::irq_mode::IrqMode;
use crate::stats::Counters;
use p2pnvme_vfio_user::{
    Backend as VfioBackend, DmaMap, Errno, IrqInfo, IrqSet, RegionInfo, RegionMmap,
};
use pci::PciConfig;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The controller is shared with its I/O worker (see `worker`). The
/// message thread reads registers and records doorbells without its lock;
/// the worker drops the lock between short passes.
pub struct Backend {
    pub ctrl: Arc<Mutex<Controller>>,
    pub pci: PciConfig,
    regs: Arc<RegMirror>,
    bells: Arc<Doorbells>,
    stats: Arc<Counters>,
    /// The current client's CMB (memory and memfd): region accesses and
    /// region info are answered from it without the controller lock.
    cmb: Option<(Arc<Mapping>, Arc<std::fs::File>)>,
    /// A `cmb-revoke=unmap` fault: CMB reads return all ones.
    cmb_unreachable: Arc<std::sync::atomic::AtomicBool>,
    /// Guest RAM maps: DMA_MAP/UNMAP change them without the controller
    /// lock and never wait for the DMAs using the sections they remove.
    /// Also says when the message thread waits for the controller lock
    /// (the worker lets it through first).
    ram: Arc<GuestRam>,
    worker: Option<std::thread::Thread>,
}

impl Backend {
    pub fn new(ctrl: Controller, pci: PciConfig) -> Backend {
        Backend {
            regs: ctrl.register_mirror(),
            bells: ctrl.doorbells(),
            stats: ctrl.stats.clone(),
            cmb: ctrl.cmb_memory(),
            cmb_unreachable: ctrl.cmb_unreachable(),
            ram: ctrl.ram.clone(),
            ctrl: Arc::new(Mutex::new(ctrl)),
            pci,
            worker: None,
        }
    }

    /// Runs the queues whenever a doorbell recorded work, off the vfio-user
    /// thread, so QEMU gets its reply to the doorbell write at once.
    pub fn worker(&mut self) -> std::thread::JoinHandle<()> {
        let (ctrl, bells, ram) = (self.ctrl.clone(), self.bells.clone(), self.ram.clone());
        let h = std::thread::spawn(move || loop {
            let (step, deadline) = {
                let mut c = ctrl.lock().unwrap_or_else(|e| e.into_inner());
                let step = c.step();
                // Held interrupts (coalescing) and a fault rule's delayed
                // completion: the worker sleeps no longer than either.
                let delayed = c.next_due().map(|d| Instant::now() + d);
                (step, c.irq_deadline().into_iter().chain(delayed).min())
            };
            // The lock is free: a waiting message goes first.
            while ram.give_way().anyone_waiting() {
                std::thread::yield_now();
            }
            match step {
                Step::Busy => {}
                Step::Polling => std::thread::yield_now(),
                Step::Sleep if bells.pending() => {}
                // An unpark after our look makes park return at once.
                // Interrupts held by coalescing are due at `deadline`.
                Step::Sleep => match deadline {
                    Some(d) => {
                        std::thread::park_timeout(d.saturating_duration_since(Instant::now()))
                    }
                    None => std::thread::park(),
                },
            }
        });
        self.worker = Some(h.thread().clone());
        h
    }

    /// The register mirror BAR0 reads are answered from.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn registers(&self) -> Arc<RegMirror> {
        self.regs.clone()
    }

    /// Wakes the worker (a doorbell or a register change recorded work).
    fn kick(&self) {
        if let Some(w) = &self.worker {
            w.unpark();
        }
    }

    /// The controller, for this message. The worker's DMA that waits for
    /// the client meanwhile gives way (the client may be waiting for this
    /// message's reply), and the worker lets the message go first.
    fn lock(&self) -> Locked<'_> {
        let _waiting = self.ram.give_way().wait();
        Locked(self.ctrl.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The controller, locked by the message thread.
struct Locked<'a>(std::sync::MutexGuard<'a, Controller>);

impl std::ops::Deref for Locked<'_> {
    type Target = Controller;
    fn deref(&self) -> &Controller {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Controller {
        &mut self.0
    }
}

/// vfio-pci region indexes.
const CONFIG_REGION: u32 = 7;
const REGIONS: u32 = 9;
/// vfio-pci irq indexes: INTx, MSI, MSI-X, error, request.
const IRQ_INDEXES: u32 = 5;

/// The regions QEMU asks about, indexed like vfio-pci's.
pub fn regions(cmb: Option<&(Arc<Mapping>, Arc<std::fs::File>)>) -> Vec<RegionInfo> {
    (0..REGIONS)
        .map(|i| {
            let plain = |size| RegionInfo {
                size,
                readable: size > 0,
                writable: size > 0,
                mmap: None,
            };
            match i {
                0 => plain(pci::BAR0_SIZE),
                4 => plain(pci::BAR4_SIZE),
                2 => match cmb {
                    Some((m, f)) => RegionInfo {
                        mmap: Some(RegionMmap {
                            fd: f.as_raw_fd(),
                            areas: vec![(0, m.len() as u64)],
                        }),
                        ..plain(m.len() as u64)
                    },
                    None => plain(0),
                },
                CONFIG_REGION => plain(pci::CONFIG_SIZE as u64),
                _ => plain(0),
            }
        })
        .collect()
}

/// The interrupt indexes: MSI-X or MSI, never both (no INTx: interrupt
/// pin 0).
pub fn irqs(mode: IrqMode) -> Vec<IrqInfo> {
    (0..IRQ_INDEXES)
        .map(|index| IrqInfo {
            count: if index == mode.vfio_index() {
                mode.vectors() as u32
            } else {
                0
            },
        })
        .collect()
}

impl VfioBackend for Backend {
    fn regions(&self) -> Vec<RegionInfo> {
        // Asked before every region access: never waits for the worker.
        regions(self.cmb.as_ref())
    }

    fn irqs(&self) -> Vec<IrqInfo> {
        irqs(self.pci.irq())
    }

    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno> {
        match region {
            CONFIG_REGION => self.pci.read(offset, data),
            0 => self.regs.read(offset, data),
            2 => {
                let done = match (self.cmb.as_ref(), usize::try_from(offset)) {
                    _ if self.cmb_unreachable.load(Ordering::Acquire) => false,
                    (Some((m, _)), Ok(off)) => m.read(off, data),
                    _ => false,
                };
                if !done {
                    data.fill(0xff);
                }
            }
            _ => data.fill(0),
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        match region {
            CONFIG_REGION => self.pci.write(offset, data),
            0 if offset >= DOORBELLS => {
                // A doorbell: recorded for the worker, no lock taken.
                self.stats
                    .doorbell_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.bells.write(offset - DOORBELLS, data);
                self.kick();
            }
            0 => {
                self.lock().reg_write(offset, data);
                self.kick();
            }
            2 => {
                if let (Some((m, _)), Ok(off)) = (&self.cmb, usize::try_from(offset)) {
                    // Out of the CMB (checked, wrap included): dropped.
                    m.write(off, data);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dma_map(&mut self, map: DmaMap) -> Result<(), Errno> {
        // Without an fd (a BAR QEMU maps directly) there is nothing to map;
        // the section is kept: DMA there is found out through QEMU
        // (`dma/remote.rs`), never mistaken for RAM.
        let prot = Prot {
            read: map.readable,
            write: map.writable,
        };
        if map.fd.is_none() {
            log::debug!(
                "DMA_MAP without fd at {:#x}, {} bytes (read {}, write {}): not guest RAM (a BAR QEMU maps, e.g. a peer's CMB behind a guest IOMMU; reached through DMA_READ/DMA_WRITE)",
                map.iova,
                map.size,
                map.readable,
                map.writable
            );
        }
        self.ram
            .map(map.iova, map.size, map.fd, prot)
            .map_err(|e| match e {
                MapError::TooMany(_) => {
                    log::warn!("DMA_MAP at {:#x} refused: {e}", map.iova);
                    Errno(libc::ENOSPC)
                }
                e => {
                    log::debug!("DMA_MAP at {:#x}: {e}", map.iova);
                    Errno(libc::EINVAL)
                }
            })
    }

    fn dma_unmap(&mut self, range: Option<(u64, u64)>) -> Result<(), Errno> {
        match range {
            None => self.ram.clear(),
            Some((iova, size)) => self.ram.unmap(iova, size),
        }
        Ok(())
    }

    fn set_irqs(&mut self, index: u32, set: IrqSet) -> Result<(), Errno> {
        let mode = self.pci.irq();
        if index != mode.vfio_index() {
            log::debug!("SET_IRQS for irq index {index}: only {mode:?} is offered");
            return Err(Errno(libc::EINVAL));
        }
        let mut c = self.lock();
        match set {
            IrqSet::Eventfds { start, fds } => {
                for (i, fd) in fds.into_iter().enumerate() {
                    c.set_irq(start as usize + i, fd);
                }
            }
            IrqSet::DisableAll => {
                for v in 0..c.vectors() {
                    c.set_irq(v, None);
                }
            }
            IrqSet::Mask {
                start,
                count,
                masked,
            } => {
                for v in start..start.saturating_add(count) {
                    c.mask_irq(v as usize, masked);
                }
            }
            IrqSet::Trigger { start, count } => {
                for v in start..start.saturating_add(count) {
                    c.trigger_irq(v as usize);
                }
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), Errno> {
        let (cmb, bme) = {
            let mut c = self.lock();
            c.device_reset();
            (c.cmb_bytes(), c.bus_master.clone())
        };
        // A function reset also resets the PCI configuration space.
        self.pci = PciConfig::new(cmb, self.pci.irq(), bme);
        Ok(())
    }

    fn connected(&mut self, requests: p2pnvme_vfio_user::ClientRequests) {
        // DMA into maps without fd goes through the client (`dma/remote.rs`).
        self.ram.set_client(Some(requests));
    }

    fn disconnected(&mut self) {
        // The worker's DMAs stop finding guest RAM at once; the in-flight
        // ones finish before the lock is ours.
        self.ram.set_client(None);
        self.ram.clear();
        let (cmb, bytes, bme) = {
            let mut c = self.lock();
            c.disconnect();
            (c.cmb_memory(), c.cmb_bytes(), c.bus_master.clone())
        };
        // The next client gets the fresh CMB memfd, never this one's.
        self.cmb = cmb;
        self.pci = PciConfig::new(bytes, self.pci.irq(), bme);
    }
}
