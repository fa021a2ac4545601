//! Structured fuzzing of the controller: an op stream (register writes,
//! MMIO and shadow doorbells, DMA map/unmap, commands whose pointers are
//! rebased into guest RAM or the CMBs, resets, disconnects) decoded from
//! bytes and run against two controllers of one peer group through the
//! in-process test host. `encode` builds seeds; `run` reports which
//! commands completed successfully, so the seed generator can check its
//! corpus reaches the data path.

use p2pnvme_device::testhost::{command, Completion, Prot, TestHost, RAM_BASE};
use std::collections::BTreeSet;

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
    Cmd {
        /// Queue (0 admin, 1 I/O).
        qid: u8,
        /// Opcode.
        opcode: u8,
        /// Namespace id (0..=2 used as is, otherwise 1).
        nsid: u8,
        /// PSDT (bits 1:0) and FUSE (bits 3:2).
        flags: u8,
        /// Data pointer 1.
        p1: (Base, u32),
        /// Data pointer 2.
        p2: (Base, u32),
        /// CDW10..CDW15.
        cdw: [u32; 6],
    },
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
    parts.push(match action % 11 {
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
        _ => "remove,replug-ms=1".into(),
    });
    parts.join(",")
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (h, t) = self.0.split_at_checked(N)?;
        self.0 = t;
        h.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes()?))
    }
    fn ptr(&mut self) -> Option<(Base, u32)> {
        let b = match self.u8()? % 4 {
            0 => Base::Ram,
            1 => Base::OwnCmb,
            2 => Base::PeerCmb,
            _ => Base::Raw,
        };
        Some((b, self.u32()?))
    }
}

/// Decodes as many operations as the bytes hold.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut r = Reader(data);
    let mut ops = vec![];
    while let Some(op) = decode_one(&mut r) {
        ops.push(op);
    }
    ops
}

fn decode_one(r: &mut Reader) -> Option<Op> {
    Some(match r.u8()? % 15 {
        0 => Op::Reg {
            which: r.u8()?,
            value: u64::from_le_bytes(r.bytes()?),
        },
        1 => Op::Doorbell {
            slot: r.u8()?,
            value: r.u16()?,
        },
        2 => Op::Shadow {
            slot: r.u8()?,
            value: r.u16()?,
        },
        3 => Op::Map {
            kind: r.u8()?,
            page: r.u16()?,
            pages: r.u8()?,
        },
        4 => Op::Unmap {
            page: r.u16()?,
            pages: r.u8()?,
        },
        5 => Op::Cmd {
            qid: r.u8()?,
            opcode: r.u8()?,
            nsid: r.u8()?,
            flags: r.u8()?,
            p1: r.ptr()?,
            p2: r.ptr()?,
            cdw: [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?],
        },
        6 => Op::Reset,
        7 => Op::Disconnect,
        8 => Op::Enable,
        9 => Op::CreateQueue {
            in_cmb: r.u8()? & 1 != 0,
        },
        10 => Op::ShadowConfig,
        11 => Op::Step,
        12 => Op::Reap { qid: r.u8()? },
        14 => Op::Fault {
            keys: r.u8()?,
            action: r.u8()?,
            value: r.u16()?,
        },
        _ => Op::Write {
            cmb: r.u8()? & 1 != 0,
            offset: r.u16()?,
            bytes: r.bytes()?,
        },
    })
}

/// Encodes operations (the inverse of `decode`), for seeds.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut b = vec![];
    let ptr = |b: &mut Vec<u8>, (base, off): (Base, u32)| {
        b.push(base as u8);
        b.extend(off.to_le_bytes());
    };
    for op in ops {
        match op {
            Op::Reg { which, value } => {
                b.extend([0, *which]);
                b.extend(value.to_le_bytes());
            }
            Op::Doorbell { slot, value } => {
                b.extend([1, *slot]);
                b.extend(value.to_le_bytes());
            }
            Op::Shadow { slot, value } => {
                b.extend([2, *slot]);
                b.extend(value.to_le_bytes());
            }
            Op::Map { kind, page, pages } => {
                b.extend([3, *kind]);
                b.extend(page.to_le_bytes());
                b.push(*pages);
            }
            Op::Unmap { page, pages } => {
                b.push(4);
                b.extend(page.to_le_bytes());
                b.push(*pages);
            }
            Op::Cmd {
                qid,
                opcode,
                nsid,
                flags,
                p1,
                p2,
                cdw,
            } => {
                b.extend([5, *qid, *opcode, *nsid, *flags]);
                ptr(&mut b, *p1);
                ptr(&mut b, *p2);
                cdw.iter().for_each(|d| b.extend(d.to_le_bytes()));
            }
            Op::Reset => b.push(6),
            Op::Disconnect => b.push(7),
            Op::Enable => b.push(8),
            Op::CreateQueue { in_cmb } => b.extend([9, *in_cmb as u8]),
            Op::ShadowConfig => b.push(10),
            Op::Step => b.push(11),
            Op::Reap { qid } => b.extend([12, *qid]),
            Op::Write { cmb, offset, bytes } => {
                b.extend([13, *cmb as u8]);
                b.extend(offset.to_le_bytes());
                b.extend(bytes);
            }
            Op::Fault {
                keys,
                action,
                value,
            } => {
                b.extend([14, *keys, *action]);
                b.extend(value.to_le_bytes());
            }
        }
    }
    b
}

/// The two controllers of one peer group.
pub struct Rig {
    /// Controller 0, the one the ops drive.
    pub host: TestHost,
    /// Its peer (CMB at PEER_CMB).
    pub peer: TestHost,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Two controllers with 2 MiB CMBs; controller 0 is not yet enabled.
    pub fn new() -> Rig {
        let dir = tempfile::tempdir().expect("temporary directory");
        let reg = TestHost::registry();
        let host = TestHost::new(dir.path(), 0, reg.clone(), 2, RAM >> 20, NS);
        let mut peer = TestHost::new(dir.path(), 1, reg, 2, 1, NS);
        peer.write64(0x50, PEER_CMB | 3);
        Rig {
            host,
            peer,
            _dir: dir,
        }
    }
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

fn addr((base, off): (Base, u32)) -> u64 {
    match base {
        Base::Ram => BUF + (off as u64 % (RAM - (BUF - RAM_BASE))),
        Base::OwnCmb => CMB + (off as u64 % (2 << 20)),
        Base::PeerCmb => PEER_CMB + (off as u64 % (2 << 20)),
        Base::Raw => off as u64 | (off as u64 & 0x8000_0000) << 32,
    }
}

const REGS: [u64; 7] = [0x14, 0x24, 0x28, 0x30, 0x50, 0x0c, 0x10];

/// Runs the ops; returns the (queue, opcode) pairs that completed with
/// success. Never panics on any input (a panic is a device bug).
pub fn run(rig: &mut Rig, ops: &[Op]) -> BTreeSet<(u8, u8)> {
    let h = &mut rig.host;
    let mut ok = BTreeSet::new();
    let note =
        |ok: &mut BTreeSet<(u8, u8)>, qid: usize, c: Option<Completion>, pending: &mut Vec<u8>| {
            if let (Some(c), false) = (c, pending.is_empty()) {
                let op = pending.remove(0);
                if c.ok() {
                    ok.insert((qid as u8, op));
                }
            }
        };
    let mut pending: [Vec<u8>; 2] = [vec![], vec![]];
    for op in ops {
        match op {
            Op::Reg { which, value } => {
                let off = REGS
                    .get(*which as usize % 16)
                    .copied()
                    .unwrap_or(*value >> 48 & 0x3ffc);
                h.write64(off, *value);
            }
            Op::Doorbell { slot, value } => h.write32(0x1000 + *slot as u64 * 4, *value as u32),
            Op::Shadow { slot, value } => h.write_shadow(*slot as usize % 4, *value),
            Op::Map { kind, page, pages } => {
                let iova = RAM_BASE + (*page as u64) * 4096;
                let size = (*pages as u64 + 1) * 4096;
                let file = h.ram_file().try_clone().expect("dup");
                let fd = match kind % 3 {
                    0 => Some((file, (*page as u64 * 4096) % RAM)),
                    1 => None,
                    _ => Some((file, RAM)),
                };
                let _ = h.ctrl.ram.map(iova, size, fd, Prot::RW);
            }
            Op::Unmap { page, pages } => match pages {
                0 => h.ctrl.ram.clear(),
                n => h
                    .ctrl
                    .ram
                    .unmap(RAM_BASE + *page as u64 * 4096, *n as u64 * 4096),
            },
            Op::Cmd {
                qid,
                opcode,
                nsid,
                flags,
                p1,
                p2,
                cdw,
            } => {
                let qid = (*qid & 1) as usize;
                let nsid = if *nsid <= 2 { *nsid as u32 } else { 1 };
                let mut c = command(*opcode, nsid);
                c.dw[0] |= ((*flags as u32 & 3) << 14) | ((*flags as u32 >> 2 & 3) << 8);
                let (a1, a2) = (addr(*p1), addr(*p2));
                c.dw[6] = a1 as u32;
                c.dw[7] = (a1 >> 32) as u32;
                c.dw[8] = a2 as u32;
                c.dw[9] = (a2 >> 32) as u32;
                c.dw[10..16].copy_from_slice(cdw);
                if h.has_queue(qid) {
                    h.submit_no_reap(qid, c);
                    pending[qid].push(*opcode);
                    let done = h.reap(qid);
                    note(&mut ok, qid, done, &mut pending[qid]);
                }
            }
            Op::Reset => {
                h.ctrl.device_reset();
                pending = [vec![], vec![]];
            }
            Op::Disconnect => {
                h.ctrl.disconnect();
                let file = h.ram_file().try_clone().expect("dup");
                let _ = h.ctrl.ram.map(RAM_BASE, RAM, Some((file, 0)), Prot::RW);
                h.ctrl
                    .bus_master
                    .store(true, std::sync::atomic::Ordering::Release);
                pending = [vec![], vec![]];
            }
            Op::Enable => {
                h.enable_at(ASQ, ACQ);
                pending = [vec![], vec![]];
            }
            Op::CreateQueue { in_cmb } => {
                let sq = if *in_cmb { CMB } else { IOSQ };
                if let Some((cq, sq)) = h.create_io_queue_at(1, 64, sq, IOCQ) {
                    if cq.ok() && sq.ok() {
                        ok.insert((0, 0x01));
                    }
                }
                pending[1].clear();
            }
            Op::ShadowConfig => {
                let _ = h.enable_shadow_doorbells_at(SHADOW, EVENTIDX);
            }
            Op::Step => {
                let _ = h.ctrl.step();
            }
            Op::Reap { qid } => {
                let qid = (*qid & 1) as usize;
                let done = h.reap(qid);
                note(&mut ok, qid, done, &mut pending[qid]);
            }
            Op::Write { cmb, offset, bytes } => {
                if *cmb {
                    let _ = h.ctrl.dma().cpu_write(CMB + *offset as u64, bytes);
                } else {
                    h.write_mem(BUF + *offset as u64, bytes);
                }
            }
            Op::Fault {
                keys,
                action,
                value,
            } => {
                // A few rules at a time; the removal events go unread.
                if h.ctrl.faults.list().len() < 8 {
                    h.fault(&fault_rule(*keys, *action, *value));
                }
                h.ctrl.faults.take_events();
            }
        }
    }
    ok
}
