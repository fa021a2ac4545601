//! The command trace on the device: one record per command with its data
//! segments, status and fault; dropped commands; a failing trace file.

use super::*;
use p2pnvme_docs::trace::{SegmentTarget, TraceRecord};

fn records(p: &std::path::Path) -> Vec<TraceRecord> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn trace_records_each_command_with_segments_status_and_fault() {
    let d = tempfile::tempdir().unwrap();
    let (mut a, _b) = peer_pair(&d);
    let cba_b = PEER_CMB;
    let file = d.path().join("trace.jsonl");
    a.ctrl.trace.start(Some(&file)).unwrap();
    let fault = a.fault("op=read,lba=64,status=0x281");
    let ram = a.alloc(8192);
    assert!(a.rw(1, io::WRITE, 8, 16, ram, ram + 4096).ok());
    assert!(a.rw(1, io::READ, 8, 16, cba_b, cba_b + 4096).ok());
    assert!(!a.rw(1, io::READ, 64, 1, ram, 0).ok());
    assert!(a.submit(1, command(io::FLUSH, 1)).unwrap().ok());
    a.ctrl.trace.stop();
    let r = records(&file);
    assert_eq!(r.len(), 4, "{r:?}");
    let ops: Vec<&str> = r.iter().map(|x| x.op.as_str()).collect();
    assert_eq!(ops, ["write", "read", "read", "flush"]);
    assert_eq!(
        (r[0].slba, r[0].nlb, r[0].bytes, r[0].q),
        (Some(8), Some(16), 8192, 1)
    );
    assert_eq!(r[0].segments.len(), 1);
    assert_eq!(r[0].segments[0].target, SegmentTarget::Ram);
    assert_eq!(
        (
            r[1].segments[0].target,
            r[1].segments[0].peer,
            r[1].segments[0].bytes
        ),
        (SegmentTarget::Peer, Some(1), 8192)
    );
    assert_eq!(
        (r[2].status, r[2].fault, r[2].bytes),
        (0x281, Some(fault), 0)
    );
    assert_eq!(
        (r[3].slba, r[3].nlb, r[3].status, r[3].fault),
        (None, None, 0, None)
    );
    assert!(r.windows(2).all(|w| w[0].t_us <= w[1].t_us));
    assert!(r.iter().all(|x| x.ctrl == 0 && !x.dropped));
}

#[test]
fn trace_marks_commands_a_reset_dropped() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 16, None);
    let file = d.path().join("t.jsonl");
    h.ctrl.trace.start(Some(&file)).unwrap();
    let id = h.fault("op=read,never");
    let buf = h.alloc(4096);
    assert!(h
        .submit(
            1,
            crate::testhost::rw_command(io::READ, 0, 8, buf, 0, false)
        )
        .is_none());
    h.write32(reg::CC, 0);
    h.ctrl.trace.stop();
    let r = records(&file);
    let last = r.last().unwrap();
    assert_eq!(
        (last.op.as_str(), last.dropped, last.fault),
        ("read", true, Some(id))
    );
}

#[test]
fn full_trace_disk_stops_tracing_never_the_device() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.create_io_queue(1, 64, None);
    h.ctrl
        .trace
        .start(Some(std::path::Path::new("/dev/full")))
        .unwrap();
    let buf = h.alloc(4096);
    let mut n = 0;
    while h.ctrl.trace.on() {
        assert!(h.rw(1, io::READ, 0, 8, buf, 0).ok(), "command {n}");
        n += 1;
        assert!(n < 100_000, "the trace never noticed the full disk");
    }
    assert!(h.rw(1, io::READ, 0, 8, buf, 0).ok(), "the device goes on");
}
