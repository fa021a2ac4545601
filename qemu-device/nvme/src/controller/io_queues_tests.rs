//! The queue part on its own: the Create/Delete checks, doorbell values,
//! the per-pass budget and round-robin cursor, completion entries.

use super::*;
use crate::nvme::Status;
use crate::testhost::command;

const BASE: u64 = 0x10_0000;

fn ram(_: u64, _: u64) -> Result<Target, Status> {
    Ok(Target::GuestRam)
}

fn own_cmb(_: u64, _: u64) -> Result<Target, Status> {
    Ok(Target::OwnCmb)
}

/// Create I/O CQ/SQ `qid` of `entries` (cdw11 high half: `hi`).
fn create(qid: u32, entries: u32, hi: u32, low: u32) -> Sqe {
    let mut s = command(0, 0);
    s.dw[6] = BASE as u32;
    s.dw[10] = qid | (entries - 1) << 16;
    s.dw[11] = low | hi << 16;
    s
}

fn delete(qid: u32) -> Sqe {
    let mut s = command(0, 0);
    s.dw[10] = qid;
    s
}

#[test]
fn queue_creation_checks_id_size_vector_contiguity_and_memory_in_spec_order() {
    let mut q = Queues::default();
    let cq = |q: &mut Queues, sqe: Sqe| q.create_cq(&sqe, 4, 2, ram);
    assert_eq!(cq(&mut q, create(0, 16, 1, 3)), Err(Status::INVALID_QID));
    assert_eq!(cq(&mut q, create(5, 16, 1, 3)), Err(Status::INVALID_QID));
    let mut too_big = create(1, 2, 1, 3);
    too_big.dw[10] = 1 | (MQES as u32 + 1) << 16;
    assert_eq!(cq(&mut q, too_big), Err(Status::INVALID_QSIZE));
    assert_eq!(cq(&mut q, create(1, 16, 2, 3)), Err(Status::INVALID_VECTOR));
    assert_eq!(cq(&mut q, create(1, 16, 1, 2)), Err(Status::INVALID_FIELD));
    let cmb = q.create_cq(&create(1, 16, 1, 3), 4, 2, own_cmb);
    assert_eq!(
        cmb,
        Err(Status::INVALID_CMB_USE),
        "CQs may not live in the CMB"
    );
    assert_eq!(cq(&mut q, create(1, 16, 1, 3)), Ok(1));
    assert_eq!(cq(&mut q, create(1, 16, 1, 3)), Err(Status::INVALID_QID));

    let sq = |q: &mut Queues, sqe: Sqe| q.create_sq(&sqe, 4, own_cmb);
    assert_eq!(sq(&mut q, create(1, 16, 2, 1)), Err(Status::INVALID_CQ));
    assert_eq!(sq(&mut q, create(1, 16, 1, 0)), Err(Status::INVALID_FIELD));
    assert_eq!(
        sq(&mut q, create(1, 16, 1, 1)),
        Ok(1),
        "SQs may live in the CMB"
    );
    assert_eq!(q.pointer(1, Bell::SqTail), Some((0, 16)));

    assert_eq!(q.delete_cq(&delete(1)), Err(Status::INVALID_QUEUE_DELETION));
    assert_eq!(q.delete_sq(&delete(1)), Ok(1));
    assert_eq!(q.delete_sq(&delete(1)), Err(Status::INVALID_QID));
    assert_eq!(q.delete_cq(&delete(1)), Ok(0));
    assert_eq!(q.pointer(1, Bell::CqHead), None);
}

#[test]
fn a_cq_head_doorbell_may_reach_the_tail_but_never_pass_it() {
    use BellError::{InvalidRegister, InvalidValue};
    let mut q = Queues::default();
    q.create_admin((BASE, 4), (BASE + 0x1000, 4));
    let e = crate::nvme::cqe(0, 0, 0, 1, 0, false);
    // Nothing posted yet: the head cannot move.
    assert_eq!(q.ring(0, Bell::CqHead, 1, false), Err(InvalidValue));
    assert!(q.push_completion(0, e));
    let written = q.drain(0);
    assert!(matches!(written, Drain::Write { addr: Some(a), .. } if a == BASE + 0x1000));
    // (queue, doorbell, value, what the write gets); in this order.
    let writes = [
        (0, Bell::CqHead, 2, Err(InvalidValue)), // past the tail
        (0, Bell::CqHead, 4, Err(InvalidValue)), // beyond the queue
        (7, Bell::CqHead, 0, Err(InvalidRegister)),
        (0, Bell::SqTail, 4, Err(InvalidValue)),
        (0, Bell::CqHead, 1, Ok(())), // up to the tail
    ];
    for (qid, bell, v, want) in writes {
        assert_eq!(q.ring(qid, bell, v, false), want, "queue {qid} value {v}");
    }
    assert_eq!(q.pointer(0, Bell::CqHead), Some((1, 4)));
}

#[test]
fn completions_carry_their_sq_head_and_flip_phase_when_the_queue_wraps() {
    let mut q = Queues::default();
    q.create_admin((BASE, 4), (BASE + 0x1000, 2));
    q.ring(0, Bell::SqTail, 1, false).unwrap();
    q.start_pass().for_each(drop);
    assert!(matches!(
        q.fetch(0),
        Fetch::Entry {
            addr: Some(BASE),
            cqid: 0
        }
    ));
    let e = |cid| crate::nvme::cqe(0, 0, 0, cid, 0, false);
    assert!(q.push_completion(0, e(1)));
    assert!(q.push_completion(0, e(2)));
    let Drain::Write { entry, .. } = q.drain(0) else {
        panic!("room for one entry");
    };
    assert_eq!((entry.sq_head.get(), entry.status_phase.get()), (1, 1));
    assert!(
        matches!(q.drain(0), Drain::Full),
        "2 entries: one slot usable"
    );
    assert_eq!(q.backlog(0), 1);
    q.ring(0, Bell::CqHead, 1, false).unwrap();
    let Drain::Write { entry, .. } = q.drain(0) else {
        panic!("the head moved");
    };
    // Written in the last slot, still in the first lap.
    assert_eq!((entry.cid.get(), entry.status_phase.get()), (2, 1));
    q.ring(0, Bell::CqHead, 0, false).unwrap();
    assert!(q.push_completion(0, e(3)));
    let Drain::Write { entry, .. } = q.drain(0) else {
        panic!("room again");
    };
    assert_eq!((entry.cid.get(), entry.status_phase.get()), (3, 0));
}

#[test]
fn a_pass_stops_when_its_budget_is_spent_and_the_next_one_starts_at_the_next_queue() {
    let mut q = Queues::default();
    q.create_admin((BASE, 64), (BASE + 0x1000, 64));
    q.ring(0, Bell::SqTail, 40, false).unwrap();
    let order: Vec<usize> = q.start_pass().collect();
    assert_eq!(order.len(), MAX_IO_QUEUES + 1);
    let mut fetched = 0;
    while let Fetch::Entry { .. } = q.fetch(0) {
        fetched += 1;
    }
    assert_eq!(fetched, PASS);
    assert!(matches!(q.fetch(0), Fetch::Spent));
    assert!(q.fetched() && q.pass_ends_after(0));
    assert_eq!(q.start_pass().next(), Some(1), "every queue gets its turn");
    q.charge(PASS);
    assert!(q.pass_ends_after(3));
    assert_eq!(q.start_pass().next(), Some(4));
    assert!(!q.fetched());
}
