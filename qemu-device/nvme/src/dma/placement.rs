//! What the device learnt about an fd-less DMA_MAP section (see
//! `remote`): the CMB page it is, and the views of that page lent to DMAs,
//! which the section's unmap revokes (see `guest_ram`).

use super::ram_map::RamMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Where an fd-less section is, and the views of it DMAs were lent.
#[derive(Default)]
pub(super) struct Placement {
    /// The one CMB page it is, for the section's life.
    pub found: OnceLock<Found>,
    /// Views lent for one DMA each (bytes found in several places of one
    /// CMB), revoked with the section.
    pub lent: Mutex<Vec<Weak<RamMap>>>,
}

/// An fd-less section found to be a CMB page of this group: controller
/// `ctrl`'s, seen through `view`, a mapping of that page of its own, so an
/// unmap can revoke it as it revokes guest RAM.
#[derive(Clone)]
pub(super) struct Found {
    pub ctrl: usize,
    pub view: Arc<RamMap>,
}

/// An fd-less section a DMA range lies in.
pub(super) struct FdLess {
    pub iova: u64,
    pub size: u64,
    pub write: bool,
    pub placement: Arc<Placement>,
}
