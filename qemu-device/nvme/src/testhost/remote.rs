//! The test host on the production path: the controller moves into the
//! vfio-user backend with its worker thread, and the host drives it the way
//! QEMU's messages do (region writes for doorbells, region reads for
//! registers) while polling its completion queue in guest RAM. For the
//! benchmark's latency and scaling numbers.

use super::{Completion, HostQueue, TestHost};
use crate::controller::DOORBELLS;
use crate::dma::Mapping;
use crate::nvme::Sqe;
use crate::vfio::Backend;
use crate::RegMirror;
use p2pnvme_vfio_user::Backend as _;
use std::sync::Arc;

/// A host whose controller runs on its own worker thread.
pub struct RemoteHost {
    backend: Backend,
    ram: Mapping,
    queue: HostQueue,
    qid: usize,
    cid: u16,
    outstanding: u16,
}

impl TestHost {
    /// Hands the controller to a production backend and starts its worker;
    /// the host keeps I/O queue `qid` (created before).
    pub fn into_remote(self, qid: usize) -> RemoteHost {
        let TestHost {
            ctrl,
            ram,
            queues,
            irq_mode,
            ..
        } = self;
        let pci =
            crate::vfio::pci::PciConfig::new(ctrl.cmb_bytes(), irq_mode, ctrl.bus_master.clone());
        let bme = ctrl.bus_master.clone();
        let mut backend = Backend::new(ctrl, pci);
        bme.store(true, std::sync::atomic::Ordering::Release);
        backend.worker();
        RemoteHost {
            backend,
            ram,
            queue: queues[qid],
            qid,
            cid: 0,
            outstanding: 0,
        }
    }
}

impl RemoteHost {
    /// The register view a BAR0 read message is answered from.
    pub fn registers(&self) -> Arc<RegMirror> {
        self.backend.registers()
    }

    /// A DEVICE_SET_IRQS request as QEMU sends it (`index`: the vfio-pci
    /// irq index, 1 MSI, 2 MSI-X).
    pub fn set_irqs(
        &mut self,
        index: u32,
        set: p2pnvme_vfio_user::IrqSet,
    ) -> Result<(), p2pnvme_vfio_user::Errno> {
        self.backend.set_irqs(index, set)
    }

    /// Writes the entries to the SQ and rings its doorbell once.
    pub fn submit(&mut self, sqes: &[Sqe]) {
        for s in sqes {
            let mut s = *s;
            self.cid = self.cid.wrapping_add(1);
            s.dw[0] = (s.dw[0] & 0xffff) | (self.cid as u32) << 16;
            let raw: Vec<u8> = s.dw.iter().flat_map(|d| d.to_le_bytes()).collect();
            let at = self.queue.sq_base - super::RAM_BASE + self.queue.sq_tail as u64 * 64;
            assert!(self.ram.write(at as usize, &raw));
            self.queue.sq_tail = (self.queue.sq_tail + 1) % self.queue.sq_size;
        }
        self.outstanding += sqes.len() as u16;
        let tail = self.queue.sq_tail as u32;
        self.doorbell(2 * self.qid, tail);
    }

    fn doorbell(&mut self, slot: usize, v: u32) {
        let off = DOORBELLS + slot as u64 * 4;
        assert!(self.backend.region_write(0, off, &v.to_le_bytes()).is_ok());
    }

    /// Waits for every outstanding command; returns their completions.
    pub fn wait_all(&mut self) -> Vec<Completion> {
        let mut done = vec![];
        while self.outstanding > 0 {
            let q = &mut self.queue;
            let mut e = [0u8; 16];
            let at = q.cq_base - super::RAM_BASE + q.cq_head as u64 * 16;
            assert!(self.ram.read(at as usize, &mut e));
            let st = u16::from_le_bytes([e[14], e[15]]);
            if (st & 1 == 1) != q.phase {
                // Let the worker have the core (hosts with few cores).
                std::thread::yield_now();
                continue;
            }
            q.cq_head = (q.cq_head + 1) % q.cq_size;
            if q.cq_head == 0 {
                q.phase = !q.phase;
            }
            self.outstanding -= 1;
            done.push(super::completion(&e));
        }
        let head = self.queue.cq_head as u32;
        self.doorbell(2 * self.qid + 1, head);
        done
    }
}
