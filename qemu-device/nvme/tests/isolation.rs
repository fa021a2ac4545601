//! One device process, many clients: what a buggy or hostile vfio-user
//! client does to its own controller must not crash, stall or reach any
//! other client. Each test drives the real `p2pnvme-device` binary with raw
//! vfio-user clients (`testhost::SocketHost`).

mod common;

use common::{Device, Start};
use p2pnvme_device::testhost::{SocketHost, DATA, SOCKET_RAM};
use p2pnvme_vfio_user::wire::dma;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Data Transfer Error (generic status 04h).
const DATA_TRANSFER_ERROR: (u8, u8) = (0, 4);

/// A client of controller `i`, enabled.
fn ready(d: &Device, i: usize) -> SocketHost {
    let mut h = SocketHost::connect(&d.sockets[i]).expect("connect");
    assert!(h.enable(), "controller {i} ready");
    h
}

#[test]
fn a_client_that_shrinks_its_ram_under_a_dma_fails_that_command_and_nothing_else() {
    let mut d = Device::start(&[]);
    let mut a = ready(&d, 0);
    let mut b = ready(&d, 1);
    assert_eq!(b.identify().as_deref(), Some("iso-1"));
    // Keep the admin queues (first two pages), drop the data page.
    a.ram_file()
        .set_len(DATA - p2pnvme_device::testhost::RAM_BASE)
        .unwrap();
    let c = a.identify_at(DATA);
    let c = c.unwrap_or_else(|| panic!("no completion; alive {}: {}", d.alive(), d.stderr()));
    assert_eq!((c.sct, c.sc), DATA_TRANSFER_ERROR, "{c:?}");
    assert!(d.alive(), "the device process died: {}", d.stderr());
    // That client's controller is failed (CSTS.CFS) ...
    let mut csts = 0;
    for _ in 0..100 {
        csts = a.read32(0x1c).expect("CSTS");
        if csts & 2 != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(csts & 2, 2, "CSTS.CFS on the faulting controller");
    // ... the other client goes on, and so does a new client of it.
    assert_eq!(b.identify().as_deref(), Some("iso-1"));
    drop(a);
    let mut a2 = ready(&d, 0);
    assert_eq!(a2.identify().as_deref(), Some("iso-0"));
}

#[test]
fn dma_maps_past_the_per_client_limit_are_refused_with_enospc() {
    let d = Device::start(&["--max-dma-maps", "16"]);
    let mut a = SocketHost::connect(&d.sockets[0]).unwrap(); // holds 1 map
    let page = 0x1_0000_0000u64;
    for i in 0..15 {
        assert_eq!(a.dma_map(page + i * 4096, 4096, dma::READ | dma::WRITE), 0);
    }
    let errno = a.dma_map(page + 15 * 4096, 4096, dma::READ | dma::WRITE);
    assert_eq!(errno, libc::ENOSPC as u32);
    // Replacing a map is not a new one.
    assert_eq!(a.dma_map(page, 4096, dma::READ), 0);
    // The other controller's clients have their own budget.
    let mut b = ready(&d, 1);
    assert_eq!(b.identify().as_deref(), Some("iso-1"));
}

#[test]
fn thousands_of_dma_maps_do_not_starve_other_clients_of_file_descriptors() {
    // A low fd limit, as a small box would have: every DMA_MAP carries an fd.
    let mut d = Device::start_with(Start {
        nofile: Some(256),
        ..Default::default()
    });
    let mut a = SocketHost::connect(&d.sockets[0]).unwrap();
    let page = 0x1_0000_0000u64;
    let mut refused = 0;
    for i in 0..2000 {
        let off = (i % (SOCKET_RAM / 4096)) * 4096;
        if a.dma_map_at(page + i * 4096, 4096, off, dma::READ | dma::WRITE) != 0 {
            refused += 1;
        }
    }
    // Another VM reconnects twice; its socket stays.
    for _ in 0..2 {
        let b = SocketHost::connect(&d.sockets[1]);
        let mut b = b.unwrap_or_else(|e| {
            let gone = !d.sockets[1].exists();
            panic!("reconnect: {e} (socket file removed: {gone})")
        });
        assert!(b.enable());
        assert_eq!(b.identify().as_deref(), Some("iso-1"));
    }
    assert!(d.sockets[1].exists(), "the listening socket was removed");
    assert!(d.alive());
    assert_eq!(refused, 0, "maps refused although the client holds no fds");
    // The mapping client still works too.
    assert!(a.enable());
    assert_eq!(a.identify().as_deref(), Some("iso-0"));
}

#[test]
fn a_new_client_gets_a_cmb_the_previous_client_cannot_reach() {
    let d = Device::start(&[]);
    let mut a = SocketHost::connect(&d.sockets[0]).unwrap();
    let old = std::fs::File::from(a.cmb_fd().expect("CMB fd"));
    old.write_all_at(b"left by client A", 0).unwrap();
    drop(a);
    let mut b = SocketHost::connect(&d.sockets[0]).unwrap();
    // The server handles B only after A's disconnect: a round trip proves it.
    assert!(b.read32(0x1c).is_some());
    let new = std::fs::File::from(b.cmb_fd().expect("CMB fd"));
    let ino = |f: &std::fs::File| {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into a local struct.
        assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    };
    assert_ne!(ino(&old), ino(&new), "B got A's CMB memfd");
    let mut buf = [0u8; 16];
    new.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0; 16], "B sees A's bytes");
    // A (still holding its old fd) writes; B's CMB does not change.
    old.write_all_at(b"written by A now", 4096).unwrap();
    new.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, [0; 16], "A reaches B's CMB");
    new.write_all_at(b"B's secret bytes", 8192).unwrap();
    old.read_exact_at(&mut buf, 8192).unwrap();
    assert_eq!(buf, [0; 16], "A reads B's CMB");
}

#[test]
fn identify_into_a_read_only_dma_map_fails_and_leaves_it_untouched() {
    let d = Device::start(&[]);
    let mut a = ready(&d, 0);
    let ro = 0x2_0000_0000u64;
    let off = 0x8000u64; // a page of the memfd nothing else uses
    assert_eq!(a.dma_map_at(ro, 4096, off, dma::READ), 0);
    let c = a.identify_at(ro).expect("completion");
    assert_eq!((c.sct, c.sc), DATA_TRANSFER_ERROR, "{c:?}");
    let mut page = [0u8; 4096];
    a.read_mem(p2pnvme_device::testhost::RAM_BASE + off, &mut page);
    assert!(
        page.iter().all(|&b| b == 0),
        "the read-only page was written"
    );
    // A writable map of the same page works.
    assert_eq!(a.dma_map_at(ro, 4096, off, dma::READ | dma::WRITE), 0);
    assert!(a.identify_at(ro).expect("completion").ok());
}
