//! Running ops against two controllers of one peer group.

use super::*;
use p2pnvme_device::testhost::{command, Completion, Prot, TestHost};
use std::collections::BTreeSet;

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
            Op::Cmd(cmd) => {
                let qid = (cmd.qid & 1) as usize;
                let nsid = if cmd.nsid <= 2 { cmd.nsid as u32 } else { 1 };
                let mut c = command(cmd.opcode, nsid);
                let flags = cmd.flags as u32;
                c.dw[0] |= ((flags & 3) << 14) | ((flags >> 2 & 3) << 8);
                let (a1, a2) = (addr(cmd.p1), addr(cmd.p2));
                c.dw[6] = a1 as u32;
                c.dw[7] = (a1 >> 32) as u32;
                c.dw[8] = a2 as u32;
                c.dw[9] = (a2 >> 32) as u32;
                c.dw[10..16].copy_from_slice(&cmd.cdw);
                if h.has_queue(qid) {
                    h.submit_no_reap(qid, c);
                    pending[qid].push(cmd.opcode);
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
