//! vfio-user wire format: the header, the command numbers and the fixed
//! parts of each message (little-endian, QEMU's docs/devel/vfio-user.rst).
//!
//! Each struct mirrors the C layout; `SIZE` is checked against the Rust
//! layout at compile time so a field added or mistyped fails the build.

use std::mem::size_of;

/// Size of the message header.
pub const HEADER_SIZE: usize = 16;
/// Page size of DMA maps (advertised as `pgsizes`).
pub const PAGE_SIZE: u64 = 4096;
/// Most file descriptors one message may carry (advertised as `max_msg_fds`).
/// QEMU sends SET_IRQS eventfds in batches of this many.
pub const MAX_MSG_FDS: usize = 8;
/// Largest message the server reads into memory: a region write of
/// `MAX_DATA_XFER` bytes plus its fixed part, with room to spare.
pub const MAX_MESSAGE_SIZE: usize = crate::MAX_DATA_XFER + 4096;

/// Command numbers.
pub mod cmd {
    /// Version and capability negotiation.
    pub const VERSION: u16 = 1;
    /// Add guest memory.
    pub const DMA_MAP: u16 = 2;
    /// Remove guest memory.
    pub const DMA_UNMAP: u16 = 3;
    /// Device flags, region and irq counts.
    pub const DEVICE_GET_INFO: u16 = 4;
    /// One region's size, flags and mmap areas.
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    /// ioeventfds for parts of a region (not implemented).
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    /// One interrupt index's count and flags.
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    /// Interrupt routing.
    pub const DEVICE_SET_IRQS: u16 = 8;
    /// Trapped region read.
    pub const REGION_READ: u16 = 9;
    /// Trapped region write.
    pub const REGION_WRITE: u16 = 10;
    /// Server-to-client memory read (refused as a request to the server).
    pub const DMA_READ: u16 = 11;
    /// Server-to-client memory write (refused as a request to the server).
    pub const DMA_WRITE: u16 = 12;
    /// Device reset.
    pub const DEVICE_RESET: u16 = 13;
    /// Dirty page tracking (migration; not supported).
    pub const DIRTY_PAGES: u16 = 14;
    /// Batched posted writes (only sent if the server advertises
    /// `write_multiple`, which this one does not).
    pub const REGION_WRITE_MULTI: u16 = 15;
    /// Device features (migration state, DMA logging; not supported).
    pub const DEVICE_FEATURE: u16 = 16;
    /// Migration data read (not supported).
    pub const MIG_DATA_READ: u16 = 17;
    /// Migration data write (not supported).
    pub const MIG_DATA_WRITE: u16 = 18;
    /// One past the highest known command.
    pub const COUNT: usize = 19;
}

/// Header flag bits.
pub mod flags {
    /// Mask of the message type.
    pub const TYPE_MASK: u32 = 0xf;
    /// Type: request.
    pub const REQUEST: u32 = 0;
    /// Type: reply.
    pub const REPLY: u32 = 1;
    /// The sender wants no reply (QEMU's posted writes).
    pub const NO_REPLY: u32 = 0x10;
    /// The reply carries an errno in `error_no`.
    pub const ERROR: u32 = 0x20;
}

/// Reads little-endian integers at fixed offsets of a slice already checked
/// to be long enough (callers check `len() >= SIZE` first).
fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(le(b, at))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(le(b, at))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(le(b, at))
}

/// Generates a fixed-size message part: the struct, its size check and a
/// parser that refuses a short payload.
macro_rules! wire_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[$fm])*
                #[doc = concat!("`", stringify!($field), "` as in the C struct.")]
                pub $field: $ty
            ),*
        }

        impl $name {
            /// Bytes on the wire.
            pub const SIZE: usize = 0 $(+ size_of::<$ty>())*;

            /// Parses the start of `b`; `None` if it is too short.
            pub fn parse(b: &[u8]) -> Option<Self> {
                if b.len() < Self::SIZE {
                    return None;
                }
                let mut _at = 0;
                $(
                    let $field = wire_struct!(@get $ty, b, _at);
                    _at += size_of::<$ty>();
                )*
                Some(Self { $($field),* })
            }

            /// Appends the little-endian bytes to `out`.
            pub fn write(&self, out: &mut Vec<u8>) {
                $(out.extend_from_slice(&self.$field.to_le_bytes());)*
            }
        }
        const _: () = assert!(size_of::<$name>() == $name::SIZE);
    };
    (@get u16, $b:ident, $at:ident) => { u16_at($b, $at) };
    (@get u32, $b:ident, $at:ident) => { u32_at($b, $at) };
    (@get u64, $b:ident, $at:ident) => { u64_at($b, $at) };
}

wire_struct!(
    /// The 16-byte header of every message.
    Header {
        /// Matches a reply to its request.
        msg_id: u16,
        /// Command number ([`cmd`]).
        command: u16,
        /// Whole message size, header included.
        message_size: u32,
        /// [`flags`].
        flags: u32,
        /// Errno of an error reply.
        error_no: u32,
    }
);
const _: () = assert!(Header::SIZE == HEADER_SIZE);

wire_struct!(
    /// VERSION: the fixed part, followed by NUL-terminated JSON.
    Version { major: u16, minor: u16 }
);

wire_struct!(
    /// DMA_MAP (struct vfio_iommu_type1_dma_map without the vaddr).
    DmaMapMsg {
        argsz: u32,
        flags: u32,
        offset: u64,
        iova: u64,
        size: u64,
    }
);

wire_struct!(
    /// DMA_UNMAP (struct vfio_iommu_type1_dma_unmap).
    DmaUnmapMsg {
        argsz: u32,
        flags: u32,
        iova: u64,
        size: u64,
    }
);

wire_struct!(
    /// DEVICE_GET_INFO (struct vfio_device_info, v0 fields).
    DeviceInfo {
        argsz: u32,
        flags: u32,
        num_regions: u32,
        num_irqs: u32,
    }
);

wire_struct!(
    /// DEVICE_GET_REGION_INFO (struct vfio_region_info).
    RegionInfoMsg {
        argsz: u32,
        flags: u32,
        index: u32,
        cap_offset: u32,
        size: u64,
        offset: u64,
    }
);

wire_struct!(
    /// The sparse-mmap capability's header and area count.
    SparseMmapCap {
        id: u16,
        version: u16,
        next: u32,
        nr_areas: u32,
        reserved: u32,
    }
);

wire_struct!(
    /// One sparse-mmap area.
    SparseArea { offset: u64, size: u64 }
);

wire_struct!(
    /// DEVICE_GET_IRQ_INFO (struct vfio_irq_info).
    IrqInfoMsg {
        argsz: u32,
        flags: u32,
        index: u32,
        count: u32,
    }
);

wire_struct!(
    /// DEVICE_SET_IRQS (struct vfio_irq_set without data).
    IrqSetMsg {
        argsz: u32,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
    }
);

wire_struct!(
    /// REGION_READ / REGION_WRITE: the fixed part, followed by data.
    RegionAccess {
        offset: u64,
        region: u32,
        count: u32,
    }
);

wire_struct!(
    /// DMA_READ / DMA_WRITE (server to client): the fixed part, followed by
    /// data (a DMA_WRITE request, a DMA_READ reply).
    DmaRw { offset: u64, count: u64 }
);

/// DMA_MAP flag bits.
pub mod dma {
    /// The device may read.
    pub const READ: u32 = 1;
    /// The device may write.
    pub const WRITE: u32 = 2;
    /// DMA_UNMAP: return a dirty bitmap (not supported).
    pub const UNMAP_GET_DIRTY_BITMAP: u32 = 1;
    /// DMA_UNMAP: unmap everything (iova and size must be 0).
    pub const UNMAP_ALL: u32 = 2;
}

/// Device, region and irq flag bits (the vfio uapi values).
pub mod info {
    /// DEVICE_GET_INFO: the device supports reset.
    pub const DEVICE_RESET: u32 = 1;
    /// DEVICE_GET_INFO: a PCI device.
    pub const DEVICE_PCI: u32 = 2;
    /// Region readable.
    pub const REGION_READ: u32 = 1;
    /// Region writable.
    pub const REGION_WRITE: u32 = 2;
    /// Region mappable from the fd sent with the reply.
    pub const REGION_MMAP: u32 = 4;
    /// Region info carries capabilities.
    pub const REGION_CAPS: u32 = 8;
    /// Capability id of the sparse mmap list.
    pub const CAP_SPARSE_MMAP: u16 = 1;
    /// Irq index delivered through eventfds.
    pub const IRQ_EVENTFD: u32 = 1;
    /// Irq index maskable.
    pub const IRQ_MASKABLE: u32 = 2;
    /// Irq index automasked after it fires (INTx).
    pub const IRQ_AUTOMASKED: u32 = 4;
    /// Vectors cannot be added without disabling the index (MSI, MSI-X).
    pub const IRQ_NORESIZE: u32 = 8;
}

/// DEVICE_SET_IRQS flag bits.
pub mod irq {
    /// No data.
    pub const DATA_NONE: u32 = 1;
    /// A bool per vector (not supported).
    pub const DATA_BOOL: u32 = 2;
    /// An eventfd per vector, passed as fds.
    pub const DATA_EVENTFD: u32 = 4;
    /// All data-type bits.
    pub const DATA_MASK: u32 = 7;
    /// Mask the vectors.
    pub const ACTION_MASK: u32 = 8;
    /// Unmask the vectors.
    pub const ACTION_UNMASK: u32 = 16;
    /// Route or fire the vectors.
    pub const ACTION_TRIGGER: u32 = 32;
    /// All action bits.
    pub const ACTION_MASK_ALL: u32 = 56;
}

impl Header {
    /// The header of a successful reply to `req` with `payload_len` bytes.
    pub fn reply_to(req: &Header, payload_len: usize) -> Header {
        Header {
            msg_id: req.msg_id,
            command: req.command,
            // Payloads are at most MAX_MESSAGE_SIZE, far below u32::MAX.
            message_size: u32::try_from(HEADER_SIZE + payload_len).unwrap_or(u32::MAX),
            flags: flags::REPLY,
            error_no: 0,
        }
    }

    /// The header of an error reply to `req`.
    pub fn error_to(req: &Header, errno: i32) -> Header {
        Header {
            msg_id: req.msg_id,
            command: req.command,
            message_size: HEADER_SIZE as u32,
            flags: flags::REPLY | flags::ERROR,
            error_no: errno.unsigned_abs(),
        }
    }

    /// The bytes of this header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_SIZE);
        self.write(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_input_is_none() {
        let h = Header {
            msg_id: 7,
            command: cmd::REGION_READ,
            message_size: 32,
            flags: flags::NO_REPLY,
            error_no: 0,
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), HEADER_SIZE);
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..15]), None);
    }

    #[test]
    fn sizes_match_the_c_structs() {
        assert_eq!(DmaMapMsg::SIZE, 32);
        assert_eq!(DmaUnmapMsg::SIZE, 24);
        assert_eq!(RegionInfoMsg::SIZE, 32);
        assert_eq!(SparseMmapCap::SIZE, 16);
        assert_eq!(IrqSetMsg::SIZE, 20);
        assert_eq!(RegionAccess::SIZE, 16);
    }
}
