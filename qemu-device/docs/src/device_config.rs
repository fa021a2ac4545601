//! The device process's configuration: what the launcher hands to
//! `p2pnvme device --config FILE` (and what the device's own flags build for
//! people who start it by hand). A JSON document with a version, so paths
//! travel as strings of any shape and an old device refuses a newer
//! document in one line instead of misreading it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The document version this build writes and reads.
pub const DEVICE_CONFIG_VERSION: u32 = 1;

/// Default shadow-doorbell polling after the queues drain, in µs.
pub const DEFAULT_POLL_US: u64 = 1000;
/// Default adaptive interrupt moderation, in µs (the quiet time after
/// which held I/O completions are signalled).
pub const DEFAULT_MODERATION_US: u64 = 50;
/// Default DMA_MAP sections one client may hold.
pub const DEFAULT_MAX_DMA_MAPS: u64 = 8192;
/// Default CMB size of a controller, in MiB.
pub const DEFAULT_CMB_MIB: u64 = 16;
/// Default logical block size of a namespace, in bytes.
pub const DEFAULT_LBA: u32 = 512;

/// Everything one device process serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Always `DEVICE_CONFIG_VERSION`.
    pub version: u32,
    /// The controllers, each on its own vfio-user socket.
    pub controllers: Vec<ControllerConfig>,
    /// Unix socket serving the counters and control requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_socket: Option<PathBuf>,
    /// Shadow-doorbell polling in µs for controllers that set none.
    #[serde(default = "default_poll_us")]
    pub poll_us: u64,
    /// Adaptive interrupt moderation in µs (0: off) for controllers that
    /// set none.
    #[serde(default = "default_moderation_us")]
    pub irq_moderation_us: u64,
    /// Fault rules installed before the first client connects (the rule
    /// grammar of the device's README).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// Where the command trace goes (one JSON line per command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// DMA_MAP sections one client may hold; more are refused with ENOSPC.
    #[serde(default = "default_max_dma_maps")]
    pub max_dma_maps: u64,
}

/// One controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// The vfio-user socket QEMU connects to.
    pub socket: PathBuf,
    /// CMB size in MiB (0: none; else a power of two >= 2).
    #[serde(default = "default_cmb_mib")]
    pub cmb_mib: u64,
    /// Serial number (at most 20 bytes); `p2pnvme-<index>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Peer group: controllers of one group (one VM) reach each other's
    /// CMBs; the empty group is shared by every controller of the process.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// How the controller interrupts.
    #[serde(default)]
    pub irq: Irq,
    /// Shadow-doorbell polling in µs (absent: the process's `poll_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_us: Option<u64>,
    /// Interrupt moderation in µs (absent: the process's
    /// `irq_moderation_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_us: Option<u64>,
    /// What a DMA to an address no DMA_MAP announced does (absent: off).
    #[serde(default, skip_serializing_if = "UnannouncedDma::is_off")]
    pub unannounced_dma: UnannouncedDma,
    /// Namespaces, nsid 1.. in order.
    pub namespaces: Vec<NamespaceConfig>,
}

/// How a controller treats a DMA range that lies in no DMA_MAP section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnannouncedDma {
    /// Data Transfer Error at once (the default).
    #[default]
    Off,
    /// Ask the client (DMA_READ/DMA_WRITE, which QEMU performs through
    /// the guest IOMMU) which peer CMB page it is, per command, as for a
    /// map without fd. For virtio-iommu, which announces no MMIO mapping.
    Probe,
}

impl UnannouncedDma {
    /// The default: no probing.
    pub fn is_off(&self) -> bool {
        *self == UnannouncedDma::Off
    }
}

/// The interrupt capability a controller offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Irq {
    /// MSI-X (the default).
    #[default]
    Msix,
    /// Plain MSI (QEMU 11.1 can hot-unplug only such a controller).
    Msi,
}

/// One namespace and its backing file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Backing file (created or extended to `size`).
    pub file: PathBuf,
    /// Size in bytes, a non-zero multiple of `lba`.
    pub size: u64,
    /// Logical block size: 512 or 4096.
    #[serde(default = "default_lba")]
    pub lba: u32,
}

impl ControllerConfig {
    /// A controller on `socket` with the default CMB, serial, group,
    /// interrupts and timing.
    pub fn new(socket: PathBuf, namespaces: Vec<NamespaceConfig>) -> ControllerConfig {
        ControllerConfig {
            socket,
            cmb_mib: DEFAULT_CMB_MIB,
            serial: None,
            group: String::new(),
            irq: Irq::Msix,
            poll_us: None,
            moderation_us: None,
            unannounced_dma: UnannouncedDma::Off,
            namespaces,
        }
    }
}

impl NamespaceConfig {
    /// A namespace of `size` bytes in `file` with 512-byte blocks.
    pub fn new(file: PathBuf, size: u64) -> NamespaceConfig {
        NamespaceConfig {
            file,
            size,
            lba: DEFAULT_LBA,
        }
    }
}

fn default_poll_us() -> u64 {
    DEFAULT_POLL_US
}
fn default_moderation_us() -> u64 {
    DEFAULT_MODERATION_US
}
fn default_max_dma_maps() -> u64 {
    DEFAULT_MAX_DMA_MAPS
}
fn default_cmb_mib() -> u64 {
    DEFAULT_CMB_MIB
}
fn default_lba() -> u32 {
    DEFAULT_LBA
}

/// Why a configuration document was refused (one line each).
#[derive(Debug)]
pub enum ConfigError {
    /// Not JSON, or not this document's shape.
    Json(serde_json::Error),
    /// No `version` field.
    NoVersion,
    /// A version this build does not read.
    Version(u64),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Json(e) => write!(f, "bad device config: {e}"),
            ConfigError::NoVersion => write!(
                f,
                "device config has no \"version\": add \"version\": {DEVICE_CONFIG_VERSION}"
            ),
            ConfigError::Version(v) => write!(
                f,
                "device config version {v} is not supported: this p2pnvme reads version {DEVICE_CONFIG_VERSION}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl DeviceConfig {
    /// An empty version-1 document with the defaults.
    pub fn new(controllers: Vec<ControllerConfig>) -> DeviceConfig {
        DeviceConfig {
            version: DEVICE_CONFIG_VERSION,
            controllers,
            stats_socket: None,
            poll_us: DEFAULT_POLL_US,
            irq_moderation_us: DEFAULT_MODERATION_US,
            faults: vec![],
            trace: None,
            max_dma_maps: DEFAULT_MAX_DMA_MAPS,
        }
    }

    /// Reads a document, checking its version before its shape.
    pub fn from_json(text: &str) -> Result<DeviceConfig, ConfigError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u64>,
        }
        let v: Versioned = serde_json::from_str(text).map_err(ConfigError::Json)?;
        match v.version {
            None => return Err(ConfigError::NoVersion),
            Some(v) if v != DEVICE_CONFIG_VERSION as u64 => return Err(ConfigError::Version(v)),
            Some(_) => {}
        }
        serde_json::from_str(text).map_err(ConfigError::Json)
    }

    /// The document as the device reads it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_reads_back_with_any_path() {
        let mut c = DeviceConfig::new(vec![ControllerConfig {
            socket: "/tmp/a dir,x=y:z/n0.sock".into(),
            cmb_mib: 16,
            serial: None,
            group: "vm0".into(),
            irq: Irq::Msi,
            poll_us: Some(5),
            moderation_us: None,
            unannounced_dma: UnannouncedDma::Probe,
            namespaces: vec![NamespaceConfig {
                file: "/tmp/a dir,x=y:z/ns.img".into(),
                size: 1 << 20,
                lba: 4096,
            }],
        }]);
        c.faults.push("op=read,nth=2,status=0x281".into());
        assert_eq!(DeviceConfig::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn unannounced_dma_is_off_when_absent_and_reads_probe() {
        let base = r#"{"version":1,"controllers":[{"socket":"/s","namespaces":[]}]}"#;
        let c = DeviceConfig::from_json(base).unwrap();
        assert_eq!(c.controllers[0].unannounced_dma, UnannouncedDma::Off);
        assert!(!c.to_json().contains("unannounced_dma"));
        let on = base.replace(r#""/s","#, r#""/s","unannounced_dma":"probe","#);
        let c = DeviceConfig::from_json(&on).unwrap();
        assert_eq!(c.controllers[0].unannounced_dma, UnannouncedDma::Probe);
    }

    #[test]
    fn unknown_versions_and_fields_are_refused_in_one_line() {
        let e = DeviceConfig::from_json(r#"{"version":2,"controllers":[]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device config version 2 is not supported: this p2pnvme reads version 1"
        );
        let e = DeviceConfig::from_json(r#"{"controllers":[]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device config has no \"version\": add \"version\": 1"
        );
        let e = DeviceConfig::from_json(r#"{"version":1,"controllers":[],"colour":1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `colour`") && !e.contains('\n'),
            "{e}"
        );
    }
}
