//! Identify data structures (CNS 00h, 01h, 02h, 03h, 05h, 06h, 1Ch).

use super::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Identify Controller data structure (CNS 01h).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdentifyController {
    /// PCI vendor id.
    pub vid: U16,
    /// PCI subsystem vendor id.
    pub ssvid: U16,
    /// Serial number (ASCII, space padded).
    pub sn: [u8; 20],
    /// Model number (ASCII, space padded).
    pub mn: [u8; 40],
    /// Firmware revision (ASCII, space padded).
    pub fr: [u8; 8],
    /// Recommended arbitration burst.
    pub rab: u8,
    /// IEEE OUI identifier.
    pub ieee: [u8; 3],
    /// Controller multi-path I/O and namespace sharing capabilities.
    pub cmic: u8,
    /// Maximum data transfer size (power of two of the minimum page size).
    pub mdts: u8,
    /// Controller id.
    pub cntlid: U16,
    /// Version.
    pub ver: U32,
    /// RTD3 resume latency.
    pub rtd3r: U32,
    /// RTD3 entry latency.
    pub rtd3e: U32,
    /// Optional asynchronous events supported.
    pub oaes: U32,
    /// Controller attributes.
    pub ctratt: U32,
    /// Read recovery levels supported.
    pub rrls: U16,
    /// Reserved.
    pub rsvd102: [u8; 9],
    /// Controller type.
    pub cntrltype: u8,
    /// FRU globally unique identifier and the remaining fields up to OACS.
    pub rsvd112: [u8; 144],
    /// Optional admin command support.
    pub oacs: U16,
    /// Abort command limit (0-based).
    pub acl: u8,
    /// Asynchronous event request limit (0-based).
    pub aerl: u8,
    /// Firmware updates.
    pub frmw: u8,
    /// Log page attributes.
    pub lpa: u8,
    /// Error log page entries (0-based).
    pub elpe: u8,
    /// Number of power states support (0-based).
    pub npss: u8,
    /// Admin vendor specific command configuration.
    pub avscc: u8,
    /// Autonomous power state transition attributes.
    pub apsta: u8,
    /// Warning composite temperature threshold (K).
    pub wctemp: U16,
    /// Critical composite temperature threshold (K).
    pub cctemp: U16,
    /// Fields this controller leaves zero, up to SQES.
    pub rsvd270: [u8; 242],
    /// Submission queue entry size (max:min, log2).
    pub sqes: u8,
    /// Completion queue entry size (max:min, log2).
    pub cqes: u8,
    /// Maximum outstanding commands.
    pub maxcmd: U16,
    /// Number of namespaces.
    pub nn: U32,
    /// Optional NVM command support.
    pub oncs: U16,
    /// Fused operation support.
    pub fuses: U16,
    /// Format NVM attributes.
    pub fna: u8,
    /// Volatile write cache.
    pub vwc: u8,
    /// Atomic write unit normal.
    pub awun: U16,
    /// Atomic write unit power fail.
    pub awupf: U16,
    /// I/O command set vendor specific command configuration.
    pub icsvscc: u8,
    /// Namespace write protection capabilities.
    pub nwpc: u8,
    /// Atomic compare and write unit.
    pub acwu: U16,
    /// Optional copy formats supported.
    pub ocfs: U16,
    /// SGL support.
    pub sgls: U32,
    /// Maximum number of allowed namespaces and the fields up to SUBNQN.
    pub rsvd540: [u8; 228],
    /// NVM subsystem NVMe qualified name (NUL terminated).
    pub subnqn: [u8; 256],
    /// Reserved and fabrics fields.
    pub rsvd1024: [u8; 1024],
    /// Power state descriptors 0-31.
    pub psd: [PowerState; 32],
    /// Vendor specific.
    pub vs: [u8; 1024],
}
const _: () = assert!(size_of::<IdentifyController>() == 4096);

/// A power state descriptor.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PowerState {
    /// Maximum power (centiwatts).
    pub mp: U16,
    /// Latencies, relative performance and the rest of the descriptor.
    pub rest: [u8; 30],
}
const _: () = assert!(size_of::<PowerState>() == 32);

/// An LBA format descriptor.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LbaFormat {
    /// Metadata size.
    pub ms: U16,
    /// LBA data size (log2).
    pub lbads: u8,
    /// Relative performance.
    pub rp: u8,
}
const _: () = assert!(size_of::<LbaFormat>() == 4);

/// Identify Namespace data structure, NVM command set (CNS 00h).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdentifyNamespace {
    /// Namespace size (blocks).
    pub nsze: U64,
    /// Namespace capacity (blocks).
    pub ncap: U64,
    /// Namespace utilization (blocks).
    pub nuse: U64,
    /// Namespace features.
    pub nsfeat: u8,
    /// Number of LBA formats (0-based).
    pub nlbaf: u8,
    /// Formatted LBA size.
    pub flbas: u8,
    /// Metadata capabilities.
    pub mc: u8,
    /// End-to-end data protection capabilities.
    pub dpc: u8,
    /// End-to-end data protection type settings.
    pub dps: u8,
    /// Namespace multi-path I/O and sharing capabilities.
    pub nmic: u8,
    /// Reservation capabilities.
    pub rescap: u8,
    /// Format progress indicator.
    pub fpi: u8,
    /// Deallocate logical block features.
    pub dlfeat: u8,
    /// Atomicity, I/O boundary and NVM capacity fields this controller leaves zero.
    pub rsvd34: [u8; 40],
    /// Maximum single source range length (Copy).
    pub mssrl: U16,
    /// Maximum copy length.
    pub mcl: U32,
    /// Maximum source range count (0-based).
    pub msrc: u8,
    /// Reserved up to the ANA group id.
    pub rsvd81: [u8; 11],
    /// ANA group identifier.
    pub anagrpid: U32,
    /// Reserved.
    pub rsvd96: [u8; 3],
    /// Namespace attributes.
    pub nsattr: u8,
    /// NVM set identifier.
    pub nvmsetid: U16,
    /// Endurance group identifier.
    pub endgid: U16,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier.
    pub eui64: [u8; 8],
    /// LBA formats 0-63.
    pub lbaf: [LbaFormat; 64],
    /// Reserved and vendor specific.
    pub rsvd384: [u8; 3712],
}
const _: () = assert!(size_of::<IdentifyNamespace>() == 4096);

/// A namespace identification descriptor header (CNS 03h).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NsIdDescriptorHeader {
    /// Namespace identifier type.
    pub nidt: u8,
    /// Namespace identifier length.
    pub nidl: u8,
    /// Reserved.
    pub rsvd: [u8; 2],
}

/// Namespace identifier type: NGUID.
pub const NIDT_NGUID: u8 = 2;
/// Namespace identifier type: command set identifier.
pub const NIDT_CSI: u8 = 4;

/// The descriptor list this controller returns for CNS 03h: the NGUID, then
/// the command set identifier, then zeros (the list terminator).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NsIdDescriptorList {
    /// NGUID descriptor header.
    pub nguid_hdr: NsIdDescriptorHeader,
    /// The NGUID.
    pub nguid: [u8; 16],
    /// Command set identifier descriptor header.
    pub csi_hdr: NsIdDescriptorHeader,
    /// The command set identifier.
    pub csi: u8,
    /// Zeros: the end of the list.
    pub rest: [u8; 4071],
}
const _: () = assert!(size_of::<NsIdDescriptorList>() == 4096);

/// Active namespace id list (CNS 02h): ids in increasing order, zero filled.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NsList {
    /// Namespace ids.
    pub ids: [U32; 1024],
}
const _: () = assert!(size_of::<NsList>() == 4096);

/// I/O command set specific Identify Namespace, NVM command set (CNS 05h).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdentifyNamespaceNvm {
    /// Logical block storage tag mask.
    pub lbstm: U64,
    /// Protection information capabilities.
    pub pic: u8,
    /// Reserved.
    pub rsvd9: [u8; 3],
    /// Extended LBA formats 0-63.
    pub elbaf: [U32; 64],
    /// Reserved.
    pub rsvd268: [u8; 3828],
}
const _: () = assert!(size_of::<IdentifyNamespaceNvm>() == 4096);

/// I/O command set specific Identify Controller, NVM command set (CNS 06h).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdentifyControllerNvm {
    /// Verify size limit.
    pub vsl: u8,
    /// Write zeroes size limit.
    pub wzsl: u8,
    /// Write uncorrectable size limit.
    pub wusl: u8,
    /// Dataset management ranges limit.
    pub dmrl: u8,
    /// Dataset management range size limit.
    pub dmrsl: U32,
    /// Dataset management size limit.
    pub dmsl: U64,
    /// Reserved.
    pub rsvd16: [u8; 4080],
}
const _: () = assert!(size_of::<IdentifyControllerNvm>() == 4096);

/// I/O command set combination list (CNS 1Ch): bit vectors of command sets.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IoCommandSetCombinations {
    /// Combinations 0-511.
    pub combinations: [U64; 512],
}
const _: () = assert!(size_of::<IoCommandSetCombinations>() == 4096);

/// Identify CNS values.
pub mod cns {
    /// Identify Namespace.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active namespace id list.
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    /// Namespace identification descriptor list.
    pub const NS_ID_DESCRIPTORS: u8 = 0x03;
    /// I/O command set specific Identify Namespace.
    pub const NAMESPACE_IOCS: u8 = 0x05;
    /// I/O command set specific Identify Controller.
    pub const CONTROLLER_IOCS: u8 = 0x06;
    /// I/O command set combination list.
    pub const IOCS_COMBINATIONS: u8 = 0x1c;
}
