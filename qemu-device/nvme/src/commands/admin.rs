//! What identify, features and log pages see of their controller: the
//! narrow [`AdminCtx`]. The admin commands that operate the controller
//! itself (queues, doorbell buffer, asynchronous events) live in
//! `controller`.

use super::features::Features;
use crate::dma::{prp, Dma};
use crate::namespace::Namespace;
use crate::nvme::{CmdResult, Sqe, Status};
use crate::stats::{Counters, Dir, Kind};
use crate::wire::ErrorLogEntry;
use std::collections::VecDeque;

/// Borrowed parts of a controller an admin command may read or change.
pub struct AdminCtx<'a> {
    /// Controller index (CNTLID is this + 1).
    pub id: usize,
    /// Serial number.
    pub serial: &'a str,
    /// The namespaces (NSID n is index n - 1).
    pub ns: &'a [Namespace],
    /// DMA to and from the command's buffer.
    pub dma: Dma<'a>,
    /// The feature values the host can change, and SMART's host counters.
    pub features: &'a mut Features,
    /// The error log, newest first.
    pub errlog: &'a VecDeque<ErrorLogEntry>,
    /// Errors logged since the controller started.
    pub error_count: u64,
    /// The DMA counters (vendor log page 0xC0).
    pub stats: &'a Counters,
    /// Asynchronous event types masked until their log page is read; the
    /// controller delivers newly unmasked events after the command.
    pub masked_events: &'a mut u8,
    /// SMART critical warning bits.
    pub critical_warning: u8,
    /// Changed Namespace List (log page 04h), cleared when read.
    pub changed_ns: &'a mut Vec<u32>,
    /// Interrupt vectors (MSI-X or MSI) the controller has.
    pub vectors: usize,
}

impl AdminCtx<'_> {
    /// Sends `data` to the host buffer of an admin command (metadata).
    pub fn send_to_host(&self, sqe: &Sqe, data: &[u8]) -> CmdResult {
        prp::transfer(sqe, data.len(), &self.dma, Kind::Meta, Dir::Written)?
            .scatter(data)
            .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        Ok(0)
    }

    /// Reads `len` bytes from the host buffer of an admin command.
    pub fn receive_from_host(&self, sqe: &Sqe, len: usize) -> Result<Vec<u8>, Status> {
        prp::transfer(sqe, len, &self.dma, Kind::Meta, Dir::Read)?
            .gather()
            .map_err(|_| Status::DATA_TRANSFER_ERROR)
    }

    /// The namespace index of `nsid`.
    pub fn ns_index(&self, nsid: u32) -> Result<usize, Status> {
        if nsid == 0 || nsid as usize > self.ns.len() {
            return Err(Status::INVALID_NAMESPACE);
        }
        Ok(nsid as usize - 1)
    }
}
