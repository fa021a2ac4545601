//! The TCG witness's documents: the address windows the launcher hands the
//! plugin, and what the plugin reports per measurement window (what
//! `p2pnvme run --witness FILE` writes and `demo --json` embeds).

use serde::{Deserialize, Serialize};

/// The only TCG plugin API version QEMU 11.1 accepts (it refuses both older
/// and newer plugins); the witness exports it as `qemu_plugin_version`.
pub const QEMU_PLUGIN_API: i32 = 7;

/// Class of guest-physical addresses that are neither a named window nor
/// MMIO: guest RAM (and ROM).
pub const CLASS_RAM: &str = "ram";
/// Class of trapped (MMIO) addresses outside every named window: APIC,
/// HPET, other devices' registers.
pub const CLASS_OTHER_MMIO: &str = "other-mmio";

/// A named range of guest physical addresses, e.g. `p2pnvme-0/cmb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrWindow {
    /// `CONTROLLER/cmb`, `CONTROLLER/regs` or `CONTROLLER/barN`.
    pub name: String,
    /// First guest physical address.
    pub start: u64,
    /// Length in bytes (non-zero).
    pub size: u64,
}

/// Guest CPU accesses of one class (and one vCPU, or all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accesses {
    /// Load instructions' accesses.
    pub loads: u64,
    /// Store instructions' accesses.
    pub stores: u64,
    /// Bytes loaded.
    pub load_bytes: u64,
    /// Bytes stored.
    pub store_bytes: u64,
    /// Loads QEMU had to emulate (MMIO: a device model or vfio-user message).
    pub trapped_loads: u64,
    /// Stores QEMU had to emulate.
    pub trapped_stores: u64,
}

impl Accesses {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Accesses) {
        self.loads += o.loads;
        self.stores += o.stores;
        self.load_bytes += o.load_bytes;
        self.store_bytes += o.store_bytes;
        self.trapped_loads += o.trapped_loads;
        self.trapped_stores += o.trapped_stores;
    }

    /// Bytes moved in either direction.
    pub fn bytes(&self) -> u64 {
        self.load_bytes + self.store_bytes
    }

    /// Trapped accesses in either direction.
    pub fn trapped(&self) -> u64 {
        self.trapped_loads + self.trapped_stores
    }
}

/// One class of addresses within one measurement window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassReport {
    /// [`CLASS_RAM`], [`CLASS_OTHER_MMIO`] or an [`AddrWindow`] name.
    pub class: String,
    /// The window's range, for named windows.
    pub window: Option<AddrWindow>,
    /// All vCPUs together.
    pub total: Accesses,
    /// Indexed by vCPU.
    pub per_vcpu: Vec<Accesses>,
}

/// Self-checks of the plugin: its callbacks fire and get their userdata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHealth {
    /// Translation-block callbacks so far (cumulative).
    pub translations: u64,
    /// Memory-access callbacks so far (cumulative).
    pub mem_callbacks: u64,
    /// Callbacks that received a userdata pointer other than the one
    /// registered (must stay 0: non-zero means a signature mismatch).
    pub userdata_mismatches: u64,
    /// Accesses QEMU could not resolve to a physical address.
    pub unresolved: u64,
    /// Accesses of a vCPU index beyond the plugin's tables.
    pub dropped: u64,
}

/// What the guest CPU did between `start NAME` and `stop`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// The name the guest gave the window (`p2pnvme-host witness-start NAME`).
    pub name: String,
    /// Host wall-clock seconds the window was open.
    pub elapsed_s: f64,
    /// Guest instructions executed, all vCPUs.
    pub instructions: u64,
    /// Guest instructions executed, indexed by vCPU.
    pub instructions_per_vcpu: Vec<u64>,
    /// RAM, other MMIO, then every named window in the order given.
    pub classes: Vec<ClassReport>,
    /// Plugin self-checks at the end of the window.
    pub health: PluginHealth,
}

impl WindowReport {
    /// The class named `name`, if reported.
    pub fn class(&self, name: &str) -> Option<&ClassReport> {
        self.classes.iter().find(|c| c.class == name)
    }

    /// Sum over the classes whose name starts with `prefix` (e.g. every
    /// window of controller `p2pnvme-0/`).
    pub fn sum_prefix(&self, prefix: &str) -> Accesses {
        let mut a = Accesses::default();
        for c in self.classes.iter().filter(|c| c.class.starts_with(prefix)) {
            a.add(&c.total);
        }
        a
    }
}

/// The whole `--witness FILE` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WitnessReport {
    /// Path of the plugin QEMU loaded.
    pub plugin: String,
    /// Its plugin API version.
    pub api_version: i32,
    /// Measurement windows in the order the guest closed them.
    pub windows: Vec<WindowReport>,
}

impl WitnessReport {
    /// The window named `name` (the last one if the guest reused the name).
    pub fn window(&self, name: &str) -> Option<&WindowReport> {
        self.windows.iter().rev().find(|w| w.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_prefix_adds_only_that_controllers_windows() {
        let a = |n| Accesses {
            stores: n,
            store_bytes: 8 * n,
            ..Default::default()
        };
        let class = |name: &str, n| ClassReport {
            class: name.into(),
            total: a(n),
            ..Default::default()
        };
        let w = WindowReport {
            classes: vec![
                class(CLASS_RAM, 100),
                class("p2pnvme-0/cmb", 1),
                class("p2pnvme-0/regs", 2),
                class("p2pnvme-1/cmb", 4),
            ],
            ..Default::default()
        };
        assert_eq!(w.sum_prefix("p2pnvme-0/").stores, 3);
        assert_eq!(w.sum_prefix("p2pnvme-0/").bytes(), 24);
        assert_eq!(w.class("p2pnvme-1/cmb").unwrap().total.stores, 4);
        assert!(w.class("p2pnvme-2/cmb").is_none());
    }
}
