//! Documents that cross a process boundary, as typed serde structs shared by
//! the side that writes them and the side that reads them: the device's stats
//! document and control requests (stats socket), its command trace, the
//! launcher's reports, and the TCG witness's
//! windows and reports; plus the one `key=value` list parser.

#![deny(missing_docs)]

pub mod control;
pub mod device_config;
pub mod kv;
pub mod report;
pub mod stats;
pub mod trace;
pub mod verdict;
pub mod witness;
