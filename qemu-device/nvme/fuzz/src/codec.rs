//! Bytes to ops and back: `decode` reads any input without failing,
//! `encode` writes seeds that decode to the same ops.

use super::*;

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
        5 => Op::Cmd(Cmd {
            qid: r.u8()?,
            opcode: r.u8()?,
            nsid: r.u8()?,
            flags: r.u8()?,
            p1: r.ptr()?,
            p2: r.ptr()?,
            cdw: [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?],
        }),
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
            Op::Cmd(c) => {
                b.extend([5, c.qid, c.opcode, c.nsid, c.flags]);
                ptr(&mut b, c.p1);
                ptr(&mut b, c.p2);
                c.cdw.iter().for_each(|d| b.extend(d.to_le_bytes()));
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
