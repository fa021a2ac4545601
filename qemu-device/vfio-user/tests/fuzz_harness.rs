//! The fuzz harness runs in ordinary tests too: every seed (and some
//! mangled ones) goes through a whole connection without a contract breach.

use p2pnvme_vfio_user::fuzzing::{run, seeds, Input};
use p2pnvme_vfio_user::testing::{Call, FdSummary, IrqCall};
use p2pnvme_vfio_user::End;

#[test]
fn every_seed_runs_and_reaches_the_backend() {
    for (name, data) in seeds() {
        let (be, s) = run(&data);
        assert_eq!(s.end, End::Closed, "{name}");
        assert_eq!(be.calls.last(), Some(&Call::Disconnected), "{name}");
        assert_eq!(
            s.requests.iter().sum::<u64>(),
            if name.starts_with("session") { 24 } else { 1 },
            "{name}"
        );
    }
    let (_, data) = seeds()
        .into_iter()
        .find(|(n, _)| *n == "session_split")
        .unwrap();
    let (be, s) = run(&data);
    // Split records carry no fds: the maps become fd-less, the eventfd
    // routes deassign; only the six unsupported commands are refused.
    let with_fd = |c: &Call| matches!(c, Call::DmaMap { has_fd: true, .. });
    assert!(!be.calls.iter().any(with_fd));
    assert_eq!(s.refused, 6, "{s:?}");
    let (_, data) = seeds()
        .into_iter()
        .find(|(n, _)| *n == "set_irqs_eventfd")
        .unwrap();
    let (be, _) = run(&data);
    assert_eq!(
        be.calls[0],
        Call::SetIrqs {
            index: 0,
            set: IrqCall::Eventfds {
                start: 0,
                fds: FdSummary {
                    assigned: 1,
                    deassigned: 0
                }
            }
        }
    );
}

#[test]
fn input_encoding_round_trips_and_garbage_decodes() {
    for (_, data) in seeds() {
        assert_eq!(Input::decode(&data).encode(), data);
    }
    for data in [&[][..], &[0xff; 7], &[1, 3, 0, 0, 0, 1, 0xff, 0xff, 1]] {
        let (be, _) = run(data);
        assert_eq!(be.calls.last(), Some(&Call::Disconnected));
    }
}
