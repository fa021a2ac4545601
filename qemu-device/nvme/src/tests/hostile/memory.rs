//! What a client can reach: region offsets, the CMB memfd, peer groups, resets, Bus Master Enable.

use super::*;

#[test]
fn cmb_region_access_at_a_wrapping_offset_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut b = backend(&d);
    let wrap = 0u64.wrapping_sub(4096);
    let mut got = [0u8; 4096];
    b.region_read(2, wrap, &mut got).unwrap();
    assert_eq!(got, [0xff; 4096], "no bytes from below the mapping");
    b.region_write(2, wrap, &[0x5a; 4096]).unwrap();
    let c = b.ctrl.lock().unwrap();
    let (m, _) = c.cmb_memory().unwrap();
    let mut all = vec![0u8; m.len()];
    assert!(m.read(0, &mut all));
    assert!(all.iter().all(|&x| x == 0), "the write landed nowhere");
}

#[test]
fn cmb_memfd_is_sealed_against_resizing() {
    use std::os::unix::io::AsRawFd;
    let d = tempfile::tempdir().unwrap();
    let h = host(&d);
    let (_, f) = h.ctrl.cmb_memory().unwrap();
    // SAFETY: fcntl on an fd the controller keeps open.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want);
    assert!(f.set_len(4096).is_err(), "a client cannot shrink it");
}

#[test]
fn cmb_of_another_peer_group_never_captures_dma() {
    let args = crate::config::DeviceArgs {
        controller: vec![
            "socket=/tmp/a,group=vm-a,ns=/tmp/a.img:1M".into(),
            "socket=/tmp/b,group=vm-b,ns=/tmp/b.img:1M".into(),
            "socket=/tmp/c,group=vm-a,ns=/tmp/c.img:1M".into(),
        ],
        ..Default::default()
    };
    let cfg = args.to_config(&Default::default()).unwrap();
    let specs = crate::config::validate(&cfg).unwrap();
    let r = crate::peer_groups(&specs);
    assert!(
        std::sync::Arc::ptr_eq(&r[0], &r[2]),
        "one group, one registry"
    );
    assert!(
        !std::sync::Arc::ptr_eq(&r[0], &r[1]),
        "two VMs, two registries"
    );
    // Controller B of another group puts its CMB window over A's RAM: A's
    // DMA still reaches A's RAM.
    let d = tempfile::tempdir().unwrap();
    let mut a = TestHost::new(d.path(), 0, r[0].clone(), 16, 16, NS);
    let mut b = TestHost::new(d.path(), 1, r[1].clone(), 16, 16, NS);
    a.enable();
    b.enable();
    b.write64(reg::CMBMSC, RAM_BASE | 3);
    a.create_io_queue(1, 16, None);
    let buf = a.alloc(4096);
    a.write_mem(buf, &[0x77; 4096]);
    assert!(a.rw(1, io::WRITE, 0, 8, buf, 0).ok());
    a.write_mem(buf, &[0; 4096]);
    assert!(a.rw(1, io::READ, 0, 8, buf, 0).ok());
    let mut got = [0u8; 4096];
    a.read_mem(buf, &mut got);
    assert_eq!(got, [0x77; 4096]);
    assert_eq!(a.ctrl.stats.to_json()["data"]["peer_cmb"]["written"], 0);
}

#[test]
fn device_reset_clears_cmb_window_admin_queue_registers_intms_and_shst() {
    let d = tempfile::tempdir().unwrap();
    let mut b = backend(&d);
    {
        let mut c = b.ctrl.lock().unwrap();
        c.reg_write(reg::INTMS, &1u32.to_le_bytes());
        let cc = 1u32 | 6 << 16 | 4 << 20 | 1 << 14; // normal shutdown
        c.reg_write(reg::CC, &cc.to_le_bytes());
    }
    b.region_write(7, 4, &[0x06]).unwrap(); // PCI command: memory, bus master
    b.reset().unwrap();
    let c = b.ctrl.lock().unwrap();
    for (r, name) in [
        (reg::CMBMSC, "CMBMSC"),
        (reg::ASQ, "ASQ"),
        (reg::ACQ, "ACQ"),
        (reg::AQA, "AQA"),
        (reg::INTMS, "INTMS"),
        (reg::CSTS, "CSTS (SHST)"),
    ] {
        let mut v = [0u8; 8];
        c.reg_read(r, &mut v);
        let v = if r == reg::CMBMSC || r == reg::ASQ || r == reg::ACQ {
            u64::from_le_bytes(v)
        } else {
            u32::from_le_bytes(v[..4].try_into().unwrap()) as u64
        };
        assert_eq!(v, 0, "{name} after DEVICE_RESET");
    }
    assert!(c.dma().classify(CMB, 4096).is_err(), "no CMB window");
    drop(c);
    let mut cmd = [0u8; 2];
    b.region_read(7, 4, &mut cmd).unwrap();
    assert_eq!(cmd, [0, 0], "PCI command register reset");
}

#[test]
fn disconnect_zeroes_the_cmb_and_resets_pci_state() {
    let d = tempfile::tempdir().unwrap();
    let mut b = backend(&d);
    b.region_write(2, 4096, b"secret of the previous client")
        .unwrap();
    b.region_write(7, 4, &[0x06]).unwrap();
    b.disconnected();
    let mut got = [0u8; 29];
    b.region_read(2, 4096, &mut got).unwrap();
    assert_eq!(got, [0; 29]);
    let mut cmd = [0u8; 2];
    b.region_read(7, 4, &mut cmd).unwrap();
    assert_eq!(cmd, [0, 0]);
    assert!(!b.ctrl.lock().unwrap().bus_master.load(Ordering::Acquire));
}

#[test]
fn dma_fails_while_bus_master_is_disabled() {
    let d = tempfile::tempdir().unwrap();
    let mut h = host(&d);
    h.ctrl.bus_master.store(false, Ordering::Release);
    let buf = h.alloc(4096);
    let mut c = command(admin::IDENTIFY, 0);
    with_buffer(&mut c, buf);
    c.dw[10] = 1;
    assert!(h.submit(0, c).is_none(), "no fetch, no completion");
    let mut id = [0u8; 64];
    h.read_mem(buf, &mut id);
    assert_eq!(id, [0; 64], "nothing written");
    assert_eq!(h.read32(reg::CSTS) & 2, 2, "the fetch fault is fatal");
}

#[test]
fn intx_is_not_advertised() {
    for mode in [crate::IrqMode::Msix, crate::IrqMode::Msi] {
        let info = crate::vfio::irqs(mode);
        assert_eq!(info[0].count, 0, "irq index 0 (INTx)");
        let pci = crate::vfio::pci::PciConfig::new(16 << 20, mode, Default::default());
        let mut pin = [0u8; 1];
        pci.read(0x3d, &mut pin);
        assert_eq!(pin, [0], "interrupt pin");
    }
}

/// DMA_UNMAP waits neither for the worker's pass nor for the transfers
/// using the sections it removes: with the controller locked (a pass in
/// progress) and a transfer holding section A, unmapping B and then A both
/// return at once; the transfer then fails and A's memory is untouched.
#[test]
fn dma_unmap_revokes_the_transfers_using_its_mapping_without_waiting() {
    use std::time::{Duration, Instant};
    const A: u64 = 0x1_0000_0000;
    const B: u64 = 0x2_0000_0000;
    const SIZE: u64 = 1 << 20;
    let d = tempfile::tempdir().unwrap();
    let b = backend(&d);
    let ctrl = b.ctrl.clone();
    let pass = ctrl.lock().unwrap(); // the worker is mid-pass
    pass.bus_master.store(true, Ordering::Release);
    let mut files = vec![];
    for iova in [A, B] {
        let f = crate::dma::memfd("ram", SIZE).unwrap();
        pass.ram
            .map(
                iova,
                SIZE,
                Some((f.try_clone().unwrap(), 0)),
                crate::dma::Prot::RW,
            )
            .unwrap();
        files.push(f);
    }
    let dma = pass.dma();
    let in_flight = dma
        .resolve(
            &[(Some(A + 4096), 8192)],
            crate::stats::Kind::Data,
            crate::stats::Dir::Written,
        )
        .unwrap();
    // Unmaps on the message thread; the backend comes back when it is done
    // (a failing check leaves a blocked thread behind rather than hanging).
    let unmap = |mut b: crate::vfio::Backend, iova: u64| {
        std::thread::spawn(move || {
            let r = b.dma_unmap(Some((iova, SIZE)));
            (b, r)
        })
    };
    let finished_within = |t: &std::thread::JoinHandle<_>, limit| {
        let start = Instant::now();
        while !t.is_finished() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.is_finished()
    };
    let unmap_b = unmap(b, B);
    assert!(
        finished_within(&unmap_b, Duration::from_secs(5)),
        "unmapping B waited for the pass or for A's user"
    );
    let (b, r) = unmap_b.join().unwrap();
    r.unwrap();
    assert!(dma.classify(B, 4096).is_err(), "B is gone");
    assert!(dma.classify(A, 4096).is_ok(), "A is untouched");
    let unmap_a = unmap(b, A);
    assert!(
        finished_within(&unmap_a, Duration::from_secs(5)),
        "unmapping A waited for the transfer using it"
    );
    unmap_a.join().unwrap().1.unwrap();
    assert!(dma.classify(A, 4096).is_err(), "no new DMA finds A");
    assert_eq!(in_flight.scatter(&[0x5a; 8192]), Err(crate::dma::DmaFault));
    let mut seen = vec![0u8; SIZE as usize];
    std::os::unix::fs::FileExt::read_exact_at(&files[0], &mut seen, 0).unwrap();
    assert!(
        seen.iter().all(|b| *b == 0),
        "A was written after its unmap"
    );
}
