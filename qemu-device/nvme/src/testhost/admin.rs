//! The test host's admin and I/O helpers: queue pairs, shadow doorbells,
//! reads and writes with PRPs.

use super::{command, rw_command, Completion, HostQueue, TestHost, QUEUES};

impl TestHost {
    /// Configures shadow doorbells (Doorbell Buffer Config); from then on
    /// I/O queue doorbells are written the way Linux writes them.
    pub fn enable_shadow_doorbells(&mut self) -> Completion {
        let (db, ei) = (self.alloc(4096), self.alloc(4096));
        self.enable_shadow_doorbells_at(db, ei)
            .expect("doorbell buffer config completes")
    }

    /// Doorbell Buffer Config with the pages at `db` and `ei`; None if it
    /// did not complete.
    pub fn enable_shadow_doorbells_at(&mut self, db: u64, ei: u64) -> Option<Completion> {
        let mut c = command(crate::nvme::admin::DOORBELL_BUFFER_CONFIG, 0);
        c.dw[6] = db as u32;
        c.dw[7] = (db >> 32) as u32;
        c.dw[8] = ei as u32;
        c.dw[9] = (ei >> 32) as u32;
        let done = self.submit(0, c)?;
        if done.ok() {
            self.shadow = Some((db, ei));
        }
        Some(done)
    }

    /// Creates I/O CQ and SQ `qid` of `size` entries; the SQ at `sq_base`
    /// if given (e.g. in the CMB), else in RAM.
    pub fn create_io_queue(
        &mut self,
        qid: u16,
        size: u16,
        sq_base: Option<u64>,
    ) -> (Completion, Completion) {
        self.create_io_queue_sized(qid, size, size, sq_base)
    }

    /// As create_io_queue, with different SQ and CQ sizes.
    pub fn create_io_queue_sized(
        &mut self,
        qid: u16,
        sq_size: u16,
        cq_size: u16,
        sq_base: Option<u64>,
    ) -> (Completion, Completion) {
        let cq_base = self.alloc(cq_size as u64 * 16);
        let sq_base = sq_base.unwrap_or_else(|| self.alloc(sq_size as u64 * 64));
        self.create_queue_pair(qid, sq_size, cq_size, sq_base, cq_base)
            .expect("queue creation completes")
    }

    /// Creates I/O queue pair `qid` of `size` entries at the given bases;
    /// None if a command did not complete.
    pub fn create_io_queue_at(
        &mut self,
        qid: u16,
        size: u16,
        sq_base: u64,
        cq_base: u64,
    ) -> Option<(Completion, Completion)> {
        self.create_queue_pair(qid, size, size, sq_base, cq_base)
    }

    pub(super) fn create_queue_pair(
        &mut self,
        qid: u16,
        sq_size: u16,
        cq_size: u16,
        sq_base: u64,
        cq_base: u64,
    ) -> Option<(Completion, Completion)> {
        let mut c = command(crate::nvme::admin::CREATE_CQ, 0);
        c.dw[6] = cq_base as u32;
        c.dw[7] = (cq_base >> 32) as u32;
        c.dw[10] = (cq_size as u32).wrapping_sub(1) << 16 | qid as u32;
        // Interrupts enabled, contiguous, on the host's I/O vector.
        c.dw[11] = (self.io_vector as u32) << 16 | 3;
        let cq = self.submit(0, c)?;
        let mut s = command(crate::nvme::admin::CREATE_SQ, 0);
        s.dw[6] = sq_base as u32;
        s.dw[7] = (sq_base >> 32) as u32;
        s.dw[10] = (sq_size as u32).wrapping_sub(1) << 16 | qid as u32;
        s.dw[11] = (qid as u32) << 16 | 1;
        let sq = self.submit(0, s)?;
        if sq.ok() && (qid as usize) < QUEUES {
            self.queues[qid as usize] = HostQueue {
                sq_base,
                sq_size,
                cq_base,
                cq_size,
                phase: true,
                ..Default::default()
            };
        }
        Some((cq, sq))
    }

    /// Read/Write of `nlb` blocks at `slba` with PRP1/PRP2 as given.
    pub fn rw(
        &mut self,
        qid: usize,
        opcode: u8,
        slba: u64,
        nlb: u32,
        prp1: u64,
        prp2: u64,
    ) -> Completion {
        let c = rw_command(opcode, slba, nlb, prp1, prp2, false);
        self.submit(qid, c).expect("completion")
    }

    /// A PRP list in guest RAM for the pages of a buffer after its first.
    pub fn prp_list(&mut self, buf: u64, len: u64) -> u64 {
        let pages: Vec<u64> = (1..len.div_ceil(4096)).map(|i| buf + i * 4096).collect();
        let list = self.alloc(pages.len() as u64 * 8);
        let raw: Vec<u8> = pages.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.write_mem(list, &raw);
        list
    }
}
