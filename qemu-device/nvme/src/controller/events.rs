//! Where the controller meets its event parts: interrupt delivery through
//! `vectors`, asynchronous events through `async_events`, the error log
//! through `error_log`.

use super::*;

impl Controller {
    /// Interrupt vectors (MSI-X or MSI): a queue's vector must be below this.
    pub fn vectors(&self) -> usize {
        self.irqs.count()
    }

    /// Routes `vector` to an eventfd (None: deassigned).
    pub fn set_irq(&mut self, vector: usize, fd: Option<EventFd>) {
        self.irqs.route(vector, fd);
    }

    /// Masks or unmasks a vector; an interrupt raised while masked is
    /// delivered on unmask.
    pub fn mask_irq(&mut self, vector: usize, masked: bool) {
        if self.irqs.mask(vector, masked) {
            self.interrupt(vector as u16);
        }
    }

    /// Raises a vector (the client's loopback trigger).
    pub fn trigger_irq(&mut self, vector: usize) {
        self.interrupt(vector as u16);
    }

    pub(super) fn interrupt(&mut self, iv: u16) {
        if self.irqs.raise(iv as usize) {
            self.stats
                .interrupts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn doorbell_error(&mut self, info: u32) {
        // Asynchronous event: error status, info, log page 01h; one of a
        // kind outstanding, so a misbehaving guest cannot grow the queue.
        self.events.queue(info << 8 | 0x01 << 16);
        self.deliver_events();
    }

    /// Completes outstanding AERs with queued events whose type is not
    /// masked; a delivered type stays masked until the host reads its log
    /// page without RAE (see `commands::log_pages`).
    pub fn deliver_events(&mut self) {
        while let Some(d) = self.events.next_delivery() {
            self.post(0, 0, d.cid, d.dw0, Status::SUCCESS);
        }
    }

    /// Adds an error-log entry (`lba`: the command's LBA; 0 for commands
    /// without one, such as admin commands).
    pub fn log_error(&mut self, sqid: u16, cid: u16, s: Status, nsid: u32, lba: u64) {
        log::debug!(
            "controller {}: SQ {sqid} CID {cid}: status type {:#x} code {:#x} (nsid {nsid}, lba {lba})",
            self.id,
            s.sct,
            s.sc
        );
        self.stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.errors.record(sqid, cid, s, nsid, lba);
    }

    /// Events waiting for an Asynchronous Event Request.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn queued_events(&self) -> usize {
        self.events.queued()
    }
}
