//! The controller's Controller Memory Buffer: its memory (a sealed memfd
//! the client maps, and this process's mapping of it), its window in the
//! peer group's table (where DMA finds it), and whether a fault rule made
//! it unreachable.
//!
//! Invariants: the group's table holds at most one window for this
//! controller, and its memory is the one this part holds; a new client
//! never gets the memory of the last one (`renew`).

use crate::dma::{CmbRegistry, CmbWindow, Mapping};
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The memory and the memfd the client maps.
pub type CmbMemory = (Arc<Mapping>, Arc<File>);

/// One controller's CMB (or none).
pub struct Cmb {
    id: usize,
    mem: Option<CmbMemory>,
    group: CmbRegistry,
    /// A `cmb-revoke=unmap` rule: CPU reads of the CMB return all ones.
    unreachable: Arc<AtomicBool>,
}

fn fresh(id: usize, bytes: u64) -> std::io::Result<CmbMemory> {
    let f = crate::dma::sealed_memfd(&format!("p2pnvme-cmb{id}"), bytes)?;
    let len = usize::try_from(bytes).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    Ok((Arc::new(Mapping::new(&f, 0, len)?), Arc::new(f)))
}

impl Cmb {
    /// A CMB of `bytes` (0: none) for controller `id`, listed in `group`.
    pub fn new(id: usize, bytes: u64, group: CmbRegistry) -> std::io::Result<Cmb> {
        let mem = if bytes > 0 {
            let (m, f) = fresh(id, bytes)?;
            group.write().unwrap().push(CmbWindow {
                ctrl: id,
                mem: m.clone(),
                base: None,
                unreachable: false,
            });
            Some((m, f))
        } else {
            None
        };
        Ok(Cmb {
            id,
            mem,
            group,
            unreachable: Arc::default(),
        })
    }

    /// The controller has a CMB.
    pub fn present(&self) -> bool {
        self.mem.is_some()
    }

    /// Its size in bytes (0: none).
    pub fn bytes(&self) -> u64 {
        self.mem.as_ref().map_or(0, |(m, _)| m.len() as u64)
    }

    /// The memory and memfd (for the transport's region accesses).
    pub fn memory(&self) -> Option<CmbMemory> {
        self.mem.clone()
    }

    /// The peer group's table of CMB windows (where DMA resolves).
    pub fn group(&self) -> &CmbRegistry {
        &self.group
    }

    /// The flag the transport checks before a CPU access.
    pub fn unreachable_flag(&self) -> Arc<AtomicBool> {
        self.unreachable.clone()
    }

    fn each_window(&self, f: impl Fn(&mut CmbWindow)) {
        let mut windows = self.group.write().unwrap_or_else(|e| e.into_inner());
        windows.iter_mut().filter(|w| w.ctrl == self.id).for_each(f);
    }

    /// Places the window at `base` (None: DMA no longer reaches it).
    pub fn place(&self, base: Option<u64>) {
        self.each_window(|w| w.base = base);
    }

    /// A `cmb-revoke=unmap` rule: neither DMA nor CPU reaches it.
    pub fn make_unreachable(&self) {
        self.unreachable.store(true, Ordering::Release);
        self.each_window(|w| w.unreachable = true);
    }

    /// Function reset or a new client: reachable again.
    pub fn make_reachable(&self) {
        if self.unreachable.swap(false, Ordering::AcqRel) {
            self.each_window(|w| w.unreachable = false);
        }
    }

    /// Fresh memory: the memfd the last client got (and may still map) is
    /// never used again, so it cannot see or change the next client's CMB.
    /// Peers find the new memory through the group's table.
    pub fn renew(&mut self) {
        let Some((old, _)) = &self.mem else { return };
        match fresh(self.id, old.len() as u64) {
            Ok((m, f)) => {
                self.each_window(|w| w.mem = m.clone());
                self.mem = Some((m, f));
            }
            Err(e) => {
                // No memory for a new CMB: the controller offers none rather
                // than share the old one with the next client.
                log::error!(
                    "controller {}: no memory for a fresh CMB ({e}); it has no CMB until restarted",
                    self.id
                );
                self.group
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|w| w.ctrl != self.id);
                self.mem = None;
            }
        }
    }
}
