//! vfio-user transport: maps QEMU's region accesses, DMA maps and interrupt
//! fds onto the controller.

use crate::ctrl::{Controller, Step, DOORBELLS, MSIX_VECTORS};
use crate::mem::Mapping;
use crate::pci::{self, PciConfig};
use crate::regs::{Doorbells, RegMirror};
use crate::stats::Counters;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};

/// The controller is shared with its I/O worker (see `worker`). The
/// message thread reads registers and records doorbells without its lock;
/// the worker drops the lock between short passes.
pub struct Backend {
    pub ctrl: Arc<Mutex<Controller>>,
    pub pci: PciConfig,
    regs: Arc<RegMirror>,
    bells: Arc<Doorbells>,
    stats: Arc<Counters>,
    cmb: Option<Arc<Mapping>>,
    /// Message-thread lock requests the worker lets through first.
    waiters: Arc<AtomicUsize>,
    worker: Option<std::thread::Thread>,
}

impl Backend {
    /// The client disconnected: controller and PCI state back to power-on.
    pub fn disconnected(&mut self) {
        let (cmb, bme) = {
            let mut c = self.lock();
            c.disconnect();
            (c.cmb_bytes(), c.bus_master.clone())
        };
        self.pci = PciConfig::new(cmb, MSIX_VECTORS as u16, bme);
    }

    pub fn new(ctrl: Controller, pci: PciConfig) -> Backend {
        Backend {
            regs: ctrl.regs.clone(),
            bells: ctrl.bells.clone(),
            stats: ctrl.stats.clone(),
            cmb: ctrl.cmb.as_ref().map(|(m, _)| m.clone()),
            ctrl: Arc::new(Mutex::new(ctrl)),
            pci,
            waiters: Arc::default(),
            worker: None,
        }
    }

    /// Runs the queues whenever a doorbell recorded work, off the vfio-user
    /// thread, so QEMU gets its reply to the doorbell write at once.
    pub fn worker(&mut self) -> std::thread::JoinHandle<()> {
        let (ctrl, bells, waiters) = (self.ctrl.clone(), self.bells.clone(), self.waiters.clone());
        let h = std::thread::spawn(move || loop {
            let step = ctrl.lock().unwrap_or_else(|e| e.into_inner()).step();
            // The lock is free: a waiting message goes first.
            while waiters.load(Ordering::Acquire) > 0 {
                std::thread::yield_now();
            }
            match step {
                Step::Busy => {}
                Step::Polling => std::thread::yield_now(),
                // An unpark after our look makes park return at once.
                Step::Sleep if !bells.pending() => std::thread::park(),
                Step::Sleep => {}
            }
        });
        self.worker = Some(h.thread().clone());
        h
    }

    /// The register mirror BAR0 reads are answered from.
    pub fn registers(&self) -> Arc<RegMirror> {
        self.regs.clone()
    }

    /// Wakes the worker (a doorbell or a register change recorded work).
    fn kick(&self) {
        if let Some(w) = &self.worker {
            w.unpark();
        }
    }

    fn lock(&self) -> Locked<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let guard = self.ctrl.lock().unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        Locked(guard)
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

/// The regions QEMU asks about, indexed like vfio-pci's.
pub fn regions(ctrl: &Controller) -> Vec<ServerRegion> {
    let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    let info = |index: u32, size: u64, flags: u32| vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        flags,
        index,
        cap_offset: 0,
        size,
        offset: 0,
    };
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|i| {
            let plain = |size, flags| ServerRegion {
                region_info: info(i, size, flags),
                sparse_areas: vec![],
                mmap_fd: None,
            };
            match i {
                0 => plain(pci::BAR0_SIZE, rw),
                4 => plain(pci::BAR4_SIZE, rw),
                2 => match &ctrl.cmb {
                    // The fd is only sent with a non-empty sparse area list.
                    Some((m, f)) => ServerRegion {
                        region_info: info(i, m.len() as u64, rw | VFIO_REGION_INFO_FLAG_MMAP),
                        sparse_areas: vec![SparseArea {
                            area: vfio_region_sparse_mmap_area {
                                offset: 0,
                                size: m.len() as u64,
                            },
                        }],
                        mmap_fd: Some(f.as_raw_fd()),
                    },
                    None => plain(0, 0),
                },
                VFIO_PCI_CONFIG_REGION_INDEX => plain(pci::CONFIG_SIZE as u64, rw),
                _ => plain(0, 0),
            }
        })
        .collect()
}

pub fn irqs() -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| IrqInfo {
            index,
            flags: VFIO_IRQ_INFO_EVENTFD,
            count: match index {
                // No INTx: interrupts are MSI-X only (interrupt pin 0).
                VFIO_PCI_MSIX_IRQ_INDEX => MSIX_VECTORS as u32,
                _ => 0,
            },
        })
        .collect()
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.pci.read(offset, data),
            0 => self.regs.read(offset, data),
            2 => {
                let done = match (&self.cmb, usize::try_from(offset)) {
                    (Some(m), Ok(off)) => m.read(off, data),
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

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.pci.write(offset, data),
            0 if offset >= DOORBELLS => {
                // A doorbell: recorded for the worker, no lock taken.
                let mut b = [0u8; 4];
                let n = data.len().min(4);
                b[..n].copy_from_slice(&data[..n]);
                self.stats
                    .doorbell_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.bells
                    .ring((offset - DOORBELLS) / 4, u32::from_le_bytes(b));
                self.kick();
            }
            0 => {
                self.lock().reg_write(offset, data);
                self.kick();
            }
            2 => {
                if let (Some(m), Ok(off)) = (&self.cmb, usize::try_from(offset)) {
                    // Out of the CMB (checked, wrap included): dropped.
                    m.write(off, data);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        // Without an fd (QEMU's own directly mapped BARs) there is nothing to
        // map; the range is recorded so it is never mistaken for RAM.
        self.lock().ram.map(address, size, fd.map(|f| (f, offset)))
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        // Bit 1 means "unmap all" (the crate names it otherwise).
        let mut c = self.lock();
        if flags.bits() & 2 != 0 {
            c.ram.clear();
        } else {
            c.ram.unmap(address, size);
        }
        Ok(())
    }

    fn reset(&mut self) -> std::io::Result<()> {
        let (cmb, bme) = {
            let mut c = self.lock();
            c.device_reset();
            (c.cmb_bytes(), c.bus_master.clone())
        };
        // A function reset also resets the PCI configuration space.
        self.pci = PciConfig::new(cmb, MSIX_VECTORS as u16, bme);
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            return Ok(());
        }
        if flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 && !fds.is_empty() {
            let mut c = self.lock();
            for (i, f) in fds.into_iter().enumerate() {
                c.set_irq(start as usize + i, Some(f));
            }
        } else {
            // A count with no fds (or DATA_NONE) deassigns.
            let n = if count == 0 {
                MSIX_VECTORS as u32
            } else {
                count
            };
            let mut c = self.lock();
            for v in start..start.saturating_add(n) {
                c.set_irq(v as usize, None);
            }
        }
        Ok(())
    }
}
