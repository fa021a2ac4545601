//! A controller in MSI mode (`irq=msi`): one vector, offered on the MSI
//! irq index only, and every completion interrupts on it.

use super::{status, NS};
use crate::nvme::{admin, io};
use crate::testhost::{command, rw_command, HostSpec, TestHost};
use crate::IrqMode;
use p2pnvme_vfio_user::{Errno, IrqSet};
use vmm_sys_util::eventfd::EventFd;

const MSI_INDEX: u32 = 1;
const MSIX_INDEX: u32 = 2;

fn msi_host(dir: &tempfile::TempDir) -> TestHost {
    let spec = HostSpec {
        id: 0,
        cmb_mib: 16,
        ram_mib: 64,
        ns_bytes: NS,
        irq: IrqMode::Msi,
    };
    let mut h = TestHost::with_spec(dir.path(), TestHost::registry(), spec);
    h.enable();
    h
}

#[test]
fn msi_mode_offers_one_vector_on_the_msi_index_only() {
    let counts: Vec<u32> = crate::vfio::irqs(IrqMode::Msi)
        .iter()
        .map(|i| i.count)
        .collect();
    assert_eq!(counts, [0, 1, 0, 0, 0]);
    let counts: Vec<u32> = crate::vfio::irqs(IrqMode::Msix)
        .iter()
        .map(|i| i.count)
        .collect();
    assert_eq!(counts, [0, 0, 32, 0, 0]);
}

#[test]
fn msi_mode_refuses_an_io_cq_vector_beyond_its_one_vector() {
    let d = tempfile::tempdir().unwrap();
    let mut h = msi_host(&d);
    h.io_vector = 1;
    let (cq, _) = h.create_io_queue(1, 16, None);
    assert_eq!(status(cq), (1, 0x08, true), "Invalid Interrupt Vector");
    h.io_vector = 0;
    let (cq, sq) = h.create_io_queue(1, 16, None);
    assert!(cq.ok() && sq.ok(), "vector 0 is the MSI vector");
    // Interrupt Vector Configuration names a vector too.
    let mut c = command(admin::GET_FEATURES, 0);
    c.dw[10] = 0x09;
    c.dw[11] = 1;
    assert_eq!(status(h.submit(0, c).unwrap()), (0, 0x02, true));
    c.dw[11] = 0;
    assert!(h.submit(0, c).unwrap().ok());
}

#[test]
fn msi_mode_refuses_set_irqs_on_the_msix_index_and_signals_the_msi_eventfd() {
    let d = tempfile::tempdir().unwrap();
    let mut h = msi_host(&d);
    let (cq, sq) = h.create_io_queue(1, 16, None);
    assert!(cq.ok() && sq.ok());
    let buf = h.alloc(4096);
    let mut r = h.into_remote(1);
    let efd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let msix = IrqSet::Eventfds {
        start: 0,
        fds: vec![Some(efd.try_clone().unwrap())],
    };
    assert_eq!(r.set_irqs(MSIX_INDEX, msix), Err(Errno(libc::EINVAL)));
    let msi = IrqSet::Eventfds {
        start: 0,
        fds: vec![Some(efd.try_clone().unwrap())],
    };
    assert_eq!(r.set_irqs(MSI_INDEX, msi), Ok(()));
    assert!(efd.read().is_err(), "no interrupt before a command");
    r.submit(&[rw_command(io::READ, 0, 8, buf, 0, false)]);
    assert!(r.wait_all()[0].ok());
    // The completion is in memory before its interrupt is sent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let n = loop {
        match efd.read() {
            Ok(n) => break n,
            Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("no MSI interrupt: {e}"),
        }
    };
    assert!(n >= 1);
    // MSI disabled by the host: no more interrupts.
    assert_eq!(r.set_irqs(MSI_INDEX, IrqSet::DisableAll), Ok(()));
    r.submit(&[rw_command(io::READ, 0, 8, buf, 0, false)]);
    assert!(r.wait_all()[0].ok());
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(efd.read().is_err(), "an interrupt after DisableAll");
}
