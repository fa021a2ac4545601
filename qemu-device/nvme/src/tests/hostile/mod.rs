//! What a buggy or hostile guest or client must not reach or break: bad
//! commands, bad controller use, memory it does not own. Each test is named
//! after the behaviour it guards.

mod commands;
mod controller;
mod memory;

use super::{host, status, NS};
use crate::controller::{reg, DOORBELLS};
use crate::nvme::{admin, io};
use crate::testhost::{command, Completion, TestHost, RAM_BASE};
use p2pnvme_vfio_user::Backend as _;
use std::sync::atomic::Ordering;

pub(super) const CMB: u64 = 0xfe00_0000;

pub(super) fn with_buffer(c: &mut crate::nvme::Sqe, buf: u64) {
    c.dw[6] = buf as u32;
    c.dw[7] = (buf >> 32) as u32;
}

/// Get Log Page `lid` of `bytes` at `offset`; the completion and the data.
pub(super) fn log_page(
    h: &mut TestHost,
    lid: u32,
    bytes: u32,
    offset: u64,
    rae: bool,
) -> (Completion, Vec<u8>) {
    let buf = h.alloc(4096);
    let mut c = command(admin::GET_LOG_PAGE, 0xffff_ffff);
    with_buffer(&mut c, buf);
    c.dw[10] = lid | (rae as u32) << 15 | (bytes / 4 - 1) << 16;
    c.dw[12] = offset as u32;
    c.dw[13] = (offset >> 32) as u32;
    let done = h.submit(0, c).unwrap();
    let mut b = vec![0u8; bytes as usize];
    h.read_mem(buf, &mut b);
    (done, b)
}

/// A transport backend over a fresh, enabled controller with its CMB at CMB.
pub(super) fn backend(dir: &tempfile::TempDir) -> crate::vfio::Backend {
    let mut h = host(dir);
    h.write64(reg::CMBMSC, CMB | 3);
    let TestHost { ctrl, .. } = h;
    let bme = ctrl.bus_master.clone();
    let pci = crate::vfio::pci::PciConfig::new(ctrl.cmb_bytes(), crate::IrqMode::Msix, bme);
    crate::vfio::Backend::new(ctrl, pci)
}
