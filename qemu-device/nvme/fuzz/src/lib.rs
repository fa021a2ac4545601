//! Structured fuzzing of the controller: an op stream (register writes,
//! MMIO and shadow doorbells, DMA map/unmap, commands whose pointers are
//! rebased into guest RAM or the CMBs, resets, disconnects) decoded from
//! bytes and run against two controllers of one peer group through the
//! in-process test host. `encode` builds seeds; `run` reports which
//! commands completed successfully, so the seed generator can check its
//! corpus reaches the data path.

mod codec;
mod rig;

pub use codec::{decode, encode};
use p2pnvme_device::testhost::RAM_BASE;
pub use rig::{run, Rig};

/// Guest RAM of each controller.
pub const RAM: u64 = 4 << 20;
/// Namespace size.
pub const NS: u64 = 1 << 20;
/// Bus address of controller 0's CMB (2 MiB) and of its peer's.
pub const CMB: u64 = 0xfe00_0000;
/// The peer controller's CMB.
pub const PEER_CMB: u64 = 0xfd00_0000;
/// Fixed guest RAM layout: admin SQ/CQ, I/O SQ/CQ, shadow pages, buffers.
pub const ASQ: u64 = RAM_BASE;
/// Admin completion queue.
pub const ACQ: u64 = RAM_BASE + 0x1000;
/// Shadow doorbell page and event index page.
pub const SHADOW: u64 = RAM_BASE + 0x2000;
/// Event index page.
pub const EVENTIDX: u64 = RAM_BASE + 0x3000;
/// I/O queue 1 (64 entries): SQ and CQ.
pub const IOSQ: u64 = RAM_BASE + 0x4000;
/// I/O completion queue 1.
pub const IOCQ: u64 = RAM_BASE + 0x5000;
/// Data buffers and lists start here.
pub const BUF: u64 = RAM_BASE + 0x10_0000;

/// Where a command pointer points.
#[derive(Clone, Copy, Debug)]
pub enum Base {
    /// Guest RAM buffers (BUF + offset).
    Ram,
    /// Our own CMB.
    OwnCmb,
    /// The peer's CMB.
    PeerCmb,
    /// The offset as an absolute address.
    Raw,
}

/// One command an op submits.
#[derive(Clone, Copy, Debug)]
pub struct Cmd {
    /// Queue (0 admin, 1 I/O).
    pub qid: u8,
    /// Opcode.
    pub opcode: u8,
    /// Namespace id (0..=2 used as is, otherwise 1).
    pub nsid: u8,
    /// PSDT (bits 1:0) and FUSE (bits 3:2).
    pub flags: u8,
    /// Data pointer 1.
    pub p1: (Base, u32),
    /// Data pointer 2.
    pub p2: (Base, u32),
    /// CDW10..CDW15.
    pub cdw: [u32; 6],
}

/// One operation of the stream.
#[derive(Clone, Debug)]
pub enum Op {
    /// A register write: `which` picks CC, AQA, ASQ, ACQ, CMBMSC, INTMS,
    /// INTMC or (otherwise) an arbitrary BAR0 offset.
    Reg { which: u8, value: u64 },
    /// An MMIO doorbell write to slot `slot` (2*qid: SQ tail, +1 CQ head).
    Doorbell { slot: u8, value: u16 },
    /// A shadow doorbell write (no MMIO).
    Shadow { slot: u8, value: u16 },
    /// DMA_MAP: kind 0 a part of the RAM file, 1 fd-less, 2 past its EOF.
    Map { kind: u8, page: u16, pages: u8 },
    /// DMA_UNMAP of pages (0 pages: everything).
    Unmap { page: u16, pages: u8 },
    /// A command on queue `qid`.
    Cmd(Cmd),
    /// vfio-user DEVICE_RESET.
    Reset,
    /// The client disconnects (and the host maps its RAM again).
    Disconnect,
    /// CC.EN with the fixed admin queues.
    Enable,
    /// Create I/O queue pair 1 (SQ in our CMB if `in_cmb`).
    CreateQueue { in_cmb: bool },
    /// Doorbell Buffer Config with the fixed pages.
    ShadowConfig,
    /// One worker step.
    Step,
    /// Reap one completion of queue `qid`.
    Reap { qid: u8 },
    /// Writes 16 bytes at `offset` into RAM buffers (lists, ranges) or the CMB.
    Write {
        cmb: bool,
        offset: u16,
        bytes: [u8; 16],
    },
    /// Installs the fault rule `fault_rule` builds from these bytes.
    Fault { keys: u8, action: u8, value: u16 },
}

/// A valid fault rule from three fuzz values: match keys from `keys`, one
/// action from `action`, numbers from `value`.
pub fn fault_rule(keys: u8, action: u8, value: u16) -> String {
    let mut parts = vec![];
    let n = value % 8 + 1;
    match keys & 3 {
        1 => parts.push(format!("nth={n}")),
        2 => parts.push(format!("every={n}")),
        3 => parts.push(format!("first={n}")),
        _ => {}
    }
    if keys & 4 != 0 {
        parts.push(format!("q={}", keys >> 3 & 1));
    }
    if keys & 16 != 0 {
        parts.push("op=read".into());
    }
    if keys & 32 != 0 {
        parts.push(format!(
            "target={}",
            ["ram", "cmb", "peer"][value as usize % 3]
        ));
    }
    if keys & 64 != 0 {
        parts.push(format!("prob=0.5,seed={value}"));
    }
    if keys & 128 != 0 {
        parts.push(format!("lba=0-{value}"));
    }
    parts.push(match action % 12 {
        0 => format!("status={:#x}", value % 0x7ff + 1),
        1 => format!("delay-ms={}", value % 4),
        2 => "never".into(),
        3 => format!("dma-fail={value}"),
        4 => "no-irq".into(),
        5 => "cfs".into(),
        6 => "aen=smart".into(),
        7 => "aen=ns-changed".into(),
        8 => "cmb-revoke=disable".into(),
        9 => "cmb-revoke=unmap".into(),
        10 => format!("dma-stall-ms={}", value % 4),
        _ => "remove,replug-ms=1".into(),
    });
    parts.join(",")
}
