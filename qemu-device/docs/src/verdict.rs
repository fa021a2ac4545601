//! The three outcomes of a launcher verdict and the evidence every report
//! names: which controllers, which guest RAM ranges, what the kernel said.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A verdict: the claim held, did not hold, or could not be judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check held (exit 0).
    Pass,
    /// A check did not hold (exit 1).
    Fail,
    /// Evidence the claim needs is missing (exit 2); never a pass.
    #[default]
    Unknown,
}

impl Verdict {
    /// The launcher's exit status for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Unknown => 2,
        }
    }

    /// Pass only when nothing failed and nothing is missing; a failure
    /// outweighs missing evidence.
    pub fn from_checks(failed: bool, missing: bool) -> Verdict {
        match (failed, missing) {
            (true, _) => Verdict::Fail,
            (false, true) => Verdict::Unknown,
            (false, false) => Verdict::Pass,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Unknown => "UNKNOWN",
        })
    }
}

/// One controller of the run, named by identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerId {
    /// Host-side name: `p2p<C>` (the project's controller C) or `qemu<C>`.
    pub name: String,
    /// Serial number (Identify Controller), as the guest sees it.
    pub serial: String,
    /// PCI address in the guest (None: the guest did not see it at the end).
    pub pci: Option<String>,
    /// The controller counts its DMA (the project's do, QEMU's do not).
    pub counters: bool,
    /// Why it is not healthy at the end of the run (empty: healthy).
    #[serde(default)]
    pub failures: Vec<String>,
}

/// A guest-physical range of RAM the dump scan covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamRange {
    /// First guest-physical address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl fmt::Display for RamRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.start + self.len)
    }
}

/// What the guest kernel reported while the command ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelHealth {
    /// Oops, BUG, KASAN, UBSAN, lockdep, hung-task reports and new taint flags
    /// (each one line); any of them fails the run.
    pub errors: Vec<String>,
    /// WARNINGs (one line each); they fail the run unless `--allow-warn`.
    pub warnings: Vec<String>,
    /// `--allow-warn` was given.
    pub allow_warn: bool,
}

impl KernelHealth {
    /// The run keeps its verdict: no error, and no warning unless allowed.
    pub fn healthy(&self) -> bool {
        self.errors.is_empty() && (self.allow_warn || self.warnings.is_empty())
    }
}

/// Where a verdict's time went, on the host clock (seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// From launch to the command's start (guest boot included).
    pub boot_s: Option<f64>,
    /// The command itself.
    pub command_s: Option<f64>,
    /// The scan of guest RAM for the data, after the command.
    pub scan_s: Option<f64>,
    /// Bytes of guest RAM the scan covered.
    pub scan_bytes: u64,
    /// Of those, bytes the guest had written (read by the scan; the rest
    /// were never-touched holes, zero).
    pub scan_read_bytes: u64,
    /// From launch to verdict.
    pub total_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_lowercase_and_map_to_their_exit_codes() {
        for (v, s, c) in [
            (Verdict::Pass, "\"pass\"", 0),
            (Verdict::Fail, "\"fail\"", 1),
            (Verdict::Unknown, "\"unknown\"", 2),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), s);
            assert_eq!(v.exit_code(), c);
        }
        assert_eq!(Verdict::from_checks(true, true), Verdict::Fail);
        assert_eq!(Verdict::from_checks(false, true), Verdict::Unknown);
        assert_eq!(Verdict::from_checks(false, false), Verdict::Pass);
    }

    #[test]
    fn allowed_warnings_keep_the_kernel_healthy_errors_never_do() {
        let mut k = KernelHealth {
            warnings: vec!["WARNING: CPU: 0 at x".into()],
            ..Default::default()
        };
        assert!(!k.healthy());
        k.allow_warn = true;
        assert!(k.healthy());
        k.errors.push("Oops: 0002".into());
        assert!(!k.healthy());
    }
}
