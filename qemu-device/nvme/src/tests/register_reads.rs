//! Register reads over the socket are answered from the register mirror:
//! they never wait for the worker, which holds the controller lock while it
//! moves a command's data (a 32 MiB Copy takes tens of milliseconds).

use crate::controller::reg;
use p2pnvme_vfio_user::build::{region_rw, Client};
use p2pnvme_vfio_user::wire::cmd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn bar0_and_doorbell_messages_never_wait_for_the_controller_lock() {
    let d = tempfile::tempdir().unwrap();
    let mut backend = crate::tests::hostile::backend(&d);
    let ctrl = backend.ctrl.clone();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        p2pnvme_vfio_user::serve_connection(theirs, &mut backend);
    });
    let mut c = Client::new(ours);
    // The worker is in the middle of a long command.
    let held = ctrl.lock().unwrap();
    for (off, want) in [(reg::CSTS, 1u32), (reg::VS, crate::limits::NVME_VERSION)] {
        let start = Instant::now();
        let r = c.call(cmd::REGION_READ, &region_rw(0, off, 4, &[]), &[]);
        assert!(start.elapsed() < Duration::from_secs(1), "waited");
        assert_eq!(r.errno(), 0);
        assert_eq!(
            u32::from_le_bytes(r.payload[16..20].try_into().unwrap()),
            want
        );
    }
    let start = Instant::now();
    let bell = 0u32.to_le_bytes();
    let r = c.call(cmd::REGION_WRITE, &region_rw(0, 0x1000, 4, &bell), &[]);
    assert_eq!(r.errno(), 0);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a doorbell waited"
    );
    drop(held);
    drop(c);
    server.join().unwrap();
}
