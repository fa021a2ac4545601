//! Writes the seed corpus of the `ops` target (corpus/ops) and checks that
//! every seed reaches its command's successful completion: Read, Write,
//! Compare, DSM, Copy, Identify and Get Log Page, with data in guest RAM,
//! our CMB and the peer's CMB. Usage: gen-corpus [DIR]

use p2pnvme_device_fuzz::{decode, encode, run, Base, Cmd, Op, Rig};

const WRITE: u8 = 0x01;
const READ: u8 = 0x02;
const COMPARE: u8 = 0x05;
const DSM: u8 = 0x09;
const COPY: u8 = 0x19;
const IDENTIFY: u8 = 0x06;
const GET_LOG_PAGE: u8 = 0x02;

fn cmd(qid: u8, opcode: u8, nsid: u8, p1: (Base, u32), cdw: [u32; 6]) -> Op {
    Op::Cmd(Cmd {
        qid,
        opcode,
        nsid,
        flags: 0,
        p1,
        p2: (Base::Ram, 0),
        cdw,
    })
}

fn write_bytes(offset: u16, data: &[u8]) -> Vec<Op> {
    data.chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let mut bytes = [0u8; 16];
            bytes[..c.len()].copy_from_slice(c);
            Op::Write {
                cmb: false,
                offset: offset + i as u16 * 16,
                bytes,
            }
        })
        .collect()
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/ops".into());
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let up = vec![Op::Enable, Op::CreateQueue { in_cmb: false }];
    let ram = (Base::Ram, 0);
    let rw = [0, 0, 7, 0, 0, 0]; // LBA 0, 8 blocks
    let mut dsm_range = [0u8; 16];
    dsm_range[4..8].copy_from_slice(&8u32.to_le_bytes());
    let mut copy_range = [0u8; 32];
    copy_range[16..18].copy_from_slice(&7u16.to_le_bytes());
    let cmb_on = Op::Reg {
        which: 4,
        value: p2pnvme_device_fuzz::CMB | 3,
    };
    let seeds: Vec<(&str, Vec<Op>, (u8, u8))> = vec![
        (
            "write",
            [up.clone(), vec![cmd(1, WRITE, 1, ram, rw)]].concat(),
            (1, WRITE),
        ),
        (
            "read",
            [up.clone(), vec![cmd(1, READ, 1, ram, rw)]].concat(),
            (1, READ),
        ),
        (
            "compare",
            [up.clone(), vec![cmd(1, COMPARE, 1, ram, rw)]].concat(),
            (1, COMPARE),
        ),
        (
            "dsm",
            [
                up.clone(),
                write_bytes(0x8000, &dsm_range),
                vec![cmd(1, DSM, 1, (Base::Ram, 0x8000), [0, 4, 0, 0, 0, 0])],
            ]
            .concat(),
            (1, DSM),
        ),
        (
            "copy",
            [
                up.clone(),
                write_bytes(0x9000, &copy_range),
                vec![cmd(1, COPY, 1, (Base::Ram, 0x9000), [64, 0, 0, 0, 0, 0])],
            ]
            .concat(),
            (1, COPY),
        ),
        (
            "identify",
            [
                up.clone(),
                vec![cmd(0, IDENTIFY, 0, ram, [1, 0, 0, 0, 0, 0])],
            ]
            .concat(),
            (0, IDENTIFY),
        ),
        (
            "get-log-page",
            [
                up.clone(),
                vec![cmd(
                    0,
                    GET_LOG_PAGE,
                    1,
                    ram,
                    [0x02 | 127 << 16, 0, 0, 0, 0, 0],
                )],
            ]
            .concat(),
            (0, GET_LOG_PAGE),
        ),
        (
            "read-into-own-cmb",
            [
                vec![cmb_on.clone()],
                up.clone(),
                vec![cmd(1, READ, 1, (Base::OwnCmb, 0), rw)],
            ]
            .concat(),
            (1, READ),
        ),
        (
            "read-into-peer-cmb",
            [up.clone(), vec![cmd(1, READ, 1, (Base::PeerCmb, 0), rw)]].concat(),
            (1, READ),
        ),
        (
            "sq-in-cmb-write",
            [
                vec![cmb_on, Op::Enable, Op::CreateQueue { in_cmb: true }],
                vec![cmd(1, WRITE, 1, ram, rw)],
            ]
            .concat(),
            (1, WRITE),
        ),
        (
            "fault-rule-then-read",
            [
                up.clone(),
                vec![
                    Op::Fault {
                        keys: 16 | 1,
                        action: 0,
                        value: 0x280,
                    },
                    cmd(1, READ, 1, ram, rw),
                    cmd(1, READ, 1, ram, rw),
                ],
            ]
            .concat(),
            (1, READ),
        ),
        (
            "shadow-doorbells-read",
            [up.clone(), vec![Op::ShadowConfig, cmd(1, READ, 1, ram, rw)]].concat(),
            (1, READ),
        ),
    ];
    for (name, ops, want) in seeds {
        let bytes = encode(&ops);
        assert_eq!(
            decode(&bytes).len(),
            ops.len(),
            "{name}: encoding round trip"
        );
        let done = run(&mut Rig::new(), &ops);
        assert!(
            done.contains(&want),
            "seed {name} did not complete {want:?}: {done:?}"
        );
        std::fs::write(format!("{dir}/{name}"), bytes).expect("write seed");
        println!("seed {name}: {} ops, completes {want:?}", ops.len());
    }
}
