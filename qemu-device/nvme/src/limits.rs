//! The limits the controller advertises (CAP, Identify, features), shared
//! by the controller and the commands so neither depends on the other for
//! them.

/// I/O queue pairs the controller offers.
pub const MAX_IO_QUEUES: usize = 64;
/// Maximum queue entries supported, 0-based (CAP.MQES).
pub const MQES: u16 = 1023;
/// MSI-X vectors.
pub const MSIX_VECTORS: usize = 32;
/// MSI vectors (`irq=msi`): x86 Linux without interrupt remapping
/// allocates a single MSI vector anyway.
pub const MSI_VECTORS: usize = 1;
/// Error Information log entries kept (Identify ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 64;
/// NVMe 2.0 (VS register and Identify Controller VER).
pub const NVME_VERSION: u32 = 0x0002_0000;
/// Maximum data transfer size: 2^7 4 KiB pages = 512 KiB.
pub const MDTS: u8 = 7;
/// Largest data transfer of one command, in bytes.
pub const MAX_TRANSFER: usize = 4096 << MDTS;
