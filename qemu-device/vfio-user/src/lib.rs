//! The server side of QEMU's vfio-user protocol (`-device vfio-user-pci`).
//!
//! The server owns the socket, the message framing and every check of what
//! the client sends: sizes against the header, offsets and counts against
//! region and irq sizes (checked arithmetic), DMA_MAP file descriptors
//! against their real size, interrupt fds that must be eventfds. A device
//! implements [`Backend`] and only ever sees validated requests.
//!
//! INTERFACE CONTRACT (fixed; the device crate codes against it):
//! - region accesses: `index < regions().len()`, `offset + data.len() <=
//!   size` of that region, `data.len() <= MAX_DATA_XFER`.
//! - dma_map: `size > 0`, `iova + size` does not overflow, iova/size/offset
//!   page aligned, and an fd (if any) is at least `offset + size` long.
//! - set_irqs: `start + count <= count of that irq index`; eventfds are
//!   eventfds, set O_NONBLOCK.
//! - `connected` is called when a client comes, with the handle for
//!   requests to it (DMA_READ/DMA_WRITE, [`ClientRequests`]); `disconnected`
//!   is called once when it goes, before the next one is accepted; the
//!   backend drops all per-client state there.
//!
//! Serving: [`Server::bind`] + [`Server::serve`] (one client at a time,
//! reconnects, [`StopHandle`]), or [`serve_connection`] on a connected
//! stream. Layout: `wire` (message structs), `conn` (framing, fds),
//! `validate` (the checks above), `handle` (one request), `requests`
//! (requests to the client and their replies), `server` (socket and loop). `testing`, `build` and `fuzzing` hold the fake backend, the
//! client side and the fuzz harness for tests and `fuzz/`; they exist only
//! with the `test-utils` feature (a dev-dependency of other crates).

#![deny(missing_docs)]

#[cfg(any(test, feature = "test-utils"))]
pub mod build;
mod conn;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzzing;
mod handle;
mod requests;
mod server;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
mod validate;
pub mod wire;

pub use requests::{ClientRequests, RequestError};
pub use server::{
    serve_connection, serve_connection_until, End, Error, Server, StopHandle, Summary,
};

use std::os::fd::RawFd;
use vmm_sys_util::eventfd::EventFd;

/// Largest region read/write payload the server accepts (advertised to the
/// client as `max_data_xfer_size`).
pub const MAX_DATA_XFER: usize = 1 << 20;

/// An errno for the reply to the client (e.g. `Errno(libc::EINVAL)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// What the client may do with a region, and whether it may map it.
#[derive(Debug)]
pub struct RegionInfo {
    /// Region size in bytes (0: the region does not exist).
    pub size: u64,
    /// The client may read it.
    pub readable: bool,
    /// The client may write it.
    pub writable: bool,
    /// The client maps these parts of the region from this fd instead of
    /// sending region messages.
    pub mmap: Option<RegionMmap>,
}

/// A mappable region: the fd (kept open by the backend) and its areas.
#[derive(Debug)]
pub struct RegionMmap {
    /// File descriptor sent to the client; the backend keeps it open.
    pub fd: RawFd,
    /// (offset, size) areas of the region the client maps; must be non-empty.
    pub areas: Vec<(u64, u64)>,
}

/// One interrupt index (vfio-pci numbering: 0 INTx, 1 MSI, 2 MSI-X, ...).
#[derive(Clone, Copy, Debug)]
pub struct IrqInfo {
    /// Number of vectors (0: the index is not supported).
    pub count: u32,
}

/// A DMA_MAP request, validated.
#[derive(Debug)]
pub struct DmaMap {
    /// Guest I/O virtual address (guest physical without a vIOMMU).
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// The device may read this memory.
    pub readable: bool,
    /// The device may write this memory.
    pub writable: bool,
    /// The memory as (fd, offset into it); `None` for fd-less maps (e.g.
    /// QEMU's directly mapped BARs), which the client would serve only
    /// through DMA_READ/DMA_WRITE messages.
    pub fd: Option<(std::fs::File, u64)>,
}

/// A DEVICE_SET_IRQS request, validated. `F`: what it carries for the
/// vectors it routes (the eventfds; the test recorder keeps a summary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqSet<F = Vec<Option<EventFd>>> {
    /// Route vectors `start..start + fds.len()` to these eventfds (`None`
    /// deassigns that vector).
    Eventfds {
        /// First vector.
        start: u32,
        /// One entry per vector.
        fds: F,
    },
    /// Deassign every vector of the index.
    DisableAll,
    /// Mask or unmask vectors `start..start + count`.
    Mask {
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
        /// true: mask; false: unmask.
        masked: bool,
    },
    /// Trigger vectors `start..start + count` (loopback, for testing).
    Trigger {
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
    },
}

impl<F> IrqSet<F> {
    /// The same request carrying `f(fds)` instead of `fds`.
    pub fn map_fds<G>(self, f: impl FnOnce(F) -> G) -> IrqSet<G> {
        match self {
            IrqSet::Eventfds { start, fds } => IrqSet::Eventfds { start, fds: f(fds) },
            IrqSet::DisableAll => IrqSet::DisableAll,
            IrqSet::Mask {
                start,
                count,
                masked,
            } => IrqSet::Mask {
                start,
                count,
                masked,
            },
            IrqSet::Trigger { start, count } => IrqSet::Trigger { start, count },
        }
    }
}

/// A device served over vfio-user. Called on the connection's thread, one
/// request at a time; the client waits for each reply (QEMU: at most 5 s),
/// so no method may block on long I/O.
pub trait Backend: Send {
    /// The regions, indexed like vfio-pci's (BAR0..BAR5, ROM, config, ...).
    fn regions(&self) -> Vec<RegionInfo>;
    /// The interrupt indexes, vfio-pci numbering.
    fn irqs(&self) -> Vec<IrqInfo>;
    /// Reads `data.len()` bytes of region `index` at `offset`.
    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno>;
    /// Writes `data` to region `index` at `offset`.
    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno>;
    /// Adds guest memory the device may DMA to.
    fn dma_map(&mut self, map: DmaMap) -> Result<(), Errno>;
    /// Removes DMA mappings: `Some((iova, size))`, or `None` for all.
    fn dma_unmap(&mut self, range: Option<(u64, u64)>) -> Result<(), Errno>;
    /// Changes the routing of interrupt index `index`.
    fn set_irqs(&mut self, index: u32, set: IrqSet) -> Result<(), Errno>;
    /// DEVICE_RESET: back to the power-on state (DMA maps stay).
    fn reset(&mut self) -> Result<(), Errno>;
    /// A client connected: `requests` sends it DMA_READ/DMA_WRITE (for
    /// fd-less DMA maps) from any thread until it goes.
    fn connected(&mut self, requests: ClientRequests) {
        let _ = requests;
    }
    /// The client went away: drop every per-client state (DMA maps, irq fds,
    /// CMB contents, PCI state), bounded in time.
    fn disconnected(&mut self);
}
