//! BAR0 registers: the lock-free mirror the message thread reads, CC
//! (enable, reset, shutdown), the admin queue registers, the CMB window, and
//! the resets a client triggers (DEVICE_RESET, disconnect).

use super::*;

impl Controller {
    pub(super) fn cap(&self) -> u64 {
        let mut cap = MQES as u64 // MQES
            | 1 << 16 // CQR: queues must be physically contiguous
            | 20 << 24 // TO: 10 s
            | 1 << 37; // CSS: NVM command set
        if self.cmb.present() {
            cap |= 1 << 57; // CMBS: CMBMSC controls the CMB
        }
        cap
    }

    pub(super) fn cmbsz(&self) -> u32 {
        if !self.cmb.present() || self.bar0.cmbmsc() & CMBMSC_CRE == 0 {
            return 0;
        }
        let mib = (self.cmb_bytes() >> 20) as u32;
        // SQS | LISTS | RDS | WDS, size unit 1 MiB.
        0x1d | 2 << 8 | mib << 12
    }

    /// A BAR0 read (served from the mirror, as the message thread does).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn reg_read(&self, off: u64, data: &mut [u8]) {
        self.regs.read(off, data);
    }

    /// Copies the registers into the lock-free mirror; called after every
    /// change of register state.
    pub(super) fn publish(&self) {
        self.bar0.publish(&self.regs, self.cap(), self.cmbsz());
    }

    pub fn reg_write(&mut self, off: u64, data: &[u8]) {
        if off >= DOORBELLS {
            // As on the vfio-user path: recorded for the worker.
            self.stats
                .doorbell_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.bells.write(off - DOORBELLS, data);
        }
        match self.bar0.write(off, data) {
            bar0::Write::Stored => {}
            bar0::Write::Cc { was, now } => self.set_cc(was, now),
            bar0::Write::Cmbmsc(v) => self.set_cmbmsc(v),
        }
        self.publish();
    }

    pub(super) fn set_cmbmsc(&mut self, v: u64) {
        if !self.cmb.present() {
            return;
        }
        let base = v & !0xfff;
        let enabled = v & CMBMSC_CMSE != 0 && v & CMBMSC_CRE != 0;
        let valid = base.checked_add(self.cmb_bytes()).is_some();
        self.bar0.set_cmb(v, enabled && !valid); // CBAI
        self.cmb.place((enabled && valid).then_some(base));
    }

    pub(super) fn set_cc(&mut self, was: u32, v: u32) {
        use bar0::Registers as R;
        if !R::enabled(was) && R::enabled(v) {
            self.enable();
        } else if R::enabled(was) && !R::enabled(v) {
            self.reset();
        }
        let shn = R::shutdown_notification(v);
        if shn != 0 && R::shutdown_notification(was) == 0 {
            // Shutdown processing (SHST 01b) until the worker flushed.
            self.bar0.shutdown_occurring();
            self.worker.request_shutdown();
        } else if shn == 0 {
            self.worker.cancel_shutdown();
            self.bar0.clear_shutdown();
        }
    }

    /// Flushes every namespace and reports shutdown complete (SHST 10b).
    pub(super) fn finish_shutdown(&mut self) {
        for ns in &self.ns {
            if let Err(e) = ns.flush() {
                log::warn!("controller {}: flush at shutdown: {e}", self.id);
            }
        }
        self.bar0.shutdown_complete();
        self.publish();
    }

    pub(super) fn enable(&mut self) {
        let q = self.bar0.admin_queues();
        if q.sq_entries < 2
            || q.cq_entries < 2
            || !self.bar0.cc_supported()
            || q.sq_base == 0
            || q.cq_base == 0
        {
            self.bar0.set_fatal();
            self.stats.fatal_error();
            return;
        }
        if self.ram.lost() {
            // Pages of this client's RAM are gone (see dma::sigbus): no
            // more commands until it reconnects with memory that stays.
            self.fatal("guest RAM lost (a DMA_MAP file shrank)", 0);
            return;
        }
        // The queues must fit the address space (the guest chose ASQ/ACQ);
        // the admin CQ may not be in a CMB (CMBSZ.CQS is 0), nor the admin
        // SQ in a peer's CMB.
        let sq_bytes = q.sq_entries as u64 * 64;
        let cq_bytes = q.cq_entries as u64 * 16;
        let fits =
            q.sq_base.checked_add(sq_bytes).is_some() && q.cq_base.checked_add(cq_bytes).is_some();
        let dma = self.dma();
        let cq_in_cmb = matches!(
            dma.classify(q.cq_base, cq_bytes),
            Ok(Target::OwnCmb | Target::PeerCmb(_))
        );
        let sq_in_peer = matches!(dma.classify(q.sq_base, sq_bytes), Ok(Target::PeerCmb(_)));
        if !fits || cq_in_cmb || sq_in_peer {
            log::debug!(
                "controller {}: CC.EN with bad ASQ {:#x} / ACQ {:#x}",
                self.id,
                q.sq_base,
                q.cq_base
            );
            self.bar0.set_fatal();
            self.stats.fatal_error();
            return;
        }
        self.queues
            .create_admin((q.sq_base, q.sq_entries), (q.cq_base, q.cq_entries));
        self.bar0.set_ready();
    }

    /// Controller reset (CC.EN 1 -> 0, or a vfio-user reset): queues go, the
    /// CMB configuration (CMBMSC) stays, as Linux expects across resets.
    pub fn reset(&mut self) {
        self.drop_held(); // fault rules' held completions go with the queues
        self.worker.unpark(); // so does a command parked to run again
        self.queues.reset();
        self.events.reset();
        self.features.reset();
        self.shadow.reset();
        self.reset_irqs();
        self.bar0.clear_ready_and_fatal();
    }

    /// DEVICE_RESET: back to the power-on register state (DMA maps and
    /// interrupt routing stay, as the vfio-user protocol says).
    pub fn device_reset(&mut self) {
        self.reset();
        self.bar0.power_on();
        self.set_cmbmsc(0);
        self.events.power_on(); // masks, and what `aen` fault rules set
        self.clear_fault_state(); // what fault rules changed ends with a function reset
        self.errors.clear();
        self.worker.cancel_shutdown();
        self.bells.clear();
        self.publish();
    }

    /// The client went away: power-on state, no DMA maps, no interrupt
    /// fds, and a zeroed CMB (the next client must not see this one's data).
    pub fn disconnect(&mut self) {
        self.device_reset();
        self.ram.clear();
        self.irqs.clear();
        self.bus_master.store(false, Ordering::Release);
        self.cmb.renew();
        self.publish();
    }
}
