//! Log pages: error information, SMART / health, firmware slot, commands
//! supported and effects, and the vendor DMA counters page (0xC0).

use super::{U128, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Log page identifiers.
pub mod lid {
    /// Error information.
    pub const ERROR: u8 = 0x01;
    /// SMART / health information.
    pub const SMART: u8 = 0x02;
    /// Firmware slot information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed namespace list.
    pub const CHANGED_NS: u8 = 0x04;
    /// Commands supported and effects.
    pub const COMMANDS_EFFECTS: u8 = 0x05;
    /// Vendor page: the DMA counters ([`super::DmaCountersLog`]).
    pub const VENDOR_DMA_COUNTERS: u8 = 0xc0;
}

/// An error information log entry.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ErrorLogEntry {
    /// Error count (unique, increasing).
    pub error_count: U64,
    /// Submission queue id.
    pub sqid: U16,
    /// Command id.
    pub cid: U16,
    /// Status field (without the phase bit).
    pub status: U16,
    /// Parameter error location (0xffff: not specific to a field).
    pub param_error_location: U16,
    /// The command's LBA (0 when it has none).
    pub lba: U64,
    /// Namespace id.
    pub nsid: U32,
    /// Vendor specific information available.
    pub vsia: u8,
    /// Transport type.
    pub trtype: u8,
    /// Reserved.
    pub rsvd30: [u8; 2],
    /// Command specific information.
    pub csi: U64,
    /// Transport type specific information.
    pub ttsi: U16,
    /// Reserved.
    pub rsvd42: [u8; 22],
}
const _: () = assert!(size_of::<ErrorLogEntry>() == 64);

/// SMART / health information log page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SmartLog {
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Composite temperature (K).
    pub temperature: U16,
    /// Available spare (percent).
    pub available_spare: u8,
    /// Available spare threshold (percent).
    pub spare_threshold: u8,
    /// Percentage used.
    pub percent_used: u8,
    /// Endurance group critical warning summary.
    pub endurance_group_warning: u8,
    /// Reserved.
    pub rsvd7: [u8; 25],
    /// Data units read (thousands of 512-byte units, rounded up).
    pub data_units_read: U128,
    /// Data units written (thousands of 512-byte units, rounded up).
    pub data_units_written: U128,
    /// Host read commands.
    pub host_reads: U128,
    /// Host write commands.
    pub host_writes: U128,
    /// Controller busy time (minutes).
    pub busy_time: U128,
    /// Power cycles.
    pub power_cycles: U128,
    /// Power on hours.
    pub power_on_hours: U128,
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: U128,
    /// Media and data integrity errors.
    pub media_errors: U128,
    /// Number of error information log entries over the controller's life.
    pub error_log_entries: U128,
    /// Warning composite temperature time (minutes).
    pub warning_temp_time: U32,
    /// Critical composite temperature time (minutes).
    pub critical_temp_time: U32,
    /// Temperature sensors 1-8 (K).
    pub temp_sensors: [U16; 8],
    /// Reserved.
    pub rsvd216: [u8; 296],
}
const _: () = assert!(size_of::<SmartLog>() == 512);

/// Firmware slot information log page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// Active firmware info (bits 2:0: the active slot).
    pub afi: u8,
    /// Reserved.
    pub rsvd1: [u8; 7],
    /// Firmware revisions of slots 1-7 (ASCII, space padded).
    pub frs: [[u8; 8]; 7],
    /// Reserved.
    pub rsvd64: [u8; 448],
}
const _: () = assert!(size_of::<FirmwareSlotLog>() == 512);

/// Commands supported and effects log page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CommandsEffectsLog {
    /// Admin commands, indexed by opcode.
    pub acs: [U32; 256],
    /// I/O commands, indexed by opcode.
    pub iocs: [U32; 256],
    /// Reserved.
    pub rsvd2048: [u8; 2048],
}
const _: () = assert!(size_of::<CommandsEffectsLog>() == 4096);

/// One data kind's byte counters in the vendor DMA page.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DmaKindCounters {
    /// Bytes read from guest RAM.
    pub guest_ram_read: U64,
    /// Bytes written to guest RAM.
    pub guest_ram_written: U64,
    /// Bytes read from this controller's CMB.
    pub own_cmb_read: U64,
    /// Bytes written to this controller's CMB.
    pub own_cmb_written: U64,
    /// Bytes read from peers' CMBs.
    pub peer_cmb_read: U64,
    /// Bytes written to peers' CMBs.
    pub peer_cmb_written: U64,
}

/// Vendor log page 0xC0: the DMA counters.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DmaCountersLog {
    /// Commands completed.
    pub commands: U64,
    /// Commands completed with an error.
    pub errors: U64,
    /// Payload bytes.
    pub data: DmaKindCounters,
    /// Queue entries, PRP lists and SGL descriptors.
    pub meta: DmaKindCounters,
    /// Doorbell register writes (each one a trapped MMIO write for the guest).
    pub doorbell_writes: U64,
    /// Interrupts signalled (MSI-X eventfd writes).
    pub interrupts: U64,
}
const _: () = assert!(size_of::<DmaCountersLog>() == 128);
