//! A fault rule: which commands it matches and the one action it takes
//! (the grammar is in the README; `parse` reads it).

use super::RuleError;
use crate::commands::table;
use crate::dma::route::TargetClass;

/// Admin or I/O commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Commands on the admin queue.
    Admin,
    /// Commands on I/O queues.
    Io,
}

/// An opcode to match: a name fixes the class, a number matches it on
/// either kind of queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpMatch {
    /// The opcode.
    pub code: u8,
    /// The queue class the name belongs to (None: given as a number).
    pub class: Option<Class>,
}

/// The asynchronous event an `aen` rule raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AenKind {
    /// SMART / health: critical warning (reliability degraded), log page 02h.
    Smart,
    /// Notice: namespace attribute changed, log page 04h.
    NsChanged,
}

/// How a `cmb-revoke` rule takes the CMB away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoke {
    /// As if the host cleared CMBMSC.CRE and CMSE.
    Disable,
    /// The window stays configured but nothing answers there.
    Unmap,
}

/// What a rule does to a command it fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Complete with this status (SCT << 8 | SC) instead of running.
    Status(u16),
    /// Run, post the completion this many ms later.
    DelayMs(u64),
    /// Never complete (a controller reset drops it).
    Never,
    /// Move the first K data bytes (to the rule's target), then fail with
    /// Data Transfer Error.
    DmaFail(u64),
    /// Hold the command's resolved memory this many ms before its data
    /// moves (a slow medium: the DMA is in flight meanwhile), then run.
    DmaStallMs(u64),
    /// Complete without the interrupt.
    NoIrq,
    /// Controller fatal status; the command is not completed.
    Cfs,
    /// Raise an asynchronous event, then run.
    Aen(AenKind),
    /// Revoke the CMB, then run.
    CmbRevoke(Revoke),
    /// Ask the launcher for a surprise removal; the command is held.
    Remove {
        /// Plug back this many ms after the removal.
        replug_ms: Option<u64>,
    },
}

/// A parsed fault rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Controller index.
    pub ctrl: Option<usize>,
    /// Submission queue id.
    pub q: Option<u16>,
    /// Opcode.
    pub op: Option<OpMatch>,
    /// Admin or I/O.
    pub class: Option<Class>,
    /// NSID.
    pub ns: Option<u32>,
    /// Inclusive LBA range the command's range must overlap.
    pub lba: Option<(u64, u64)>,
    /// Where the command's data must be.
    pub target: Option<TargetClass>,
    /// Only the Nth match.
    pub nth: Option<u64>,
    /// Every Nth match.
    pub every: Option<u64>,
    /// The first N matches.
    pub first: Option<u64>,
    /// Each match with this probability.
    pub prob: Option<f64>,
    /// Seed of `prob`.
    pub seed: u64,
    /// The action.
    pub action: Action,
    /// Do Not Retry of `status` and `dma-fail`.
    pub dnr: bool,
}

/// The opcode named `name`, with its class.
pub(super) fn opcode(name: &str) -> Option<OpMatch> {
    let admin = table::ADMIN.iter().find(|c| c.name == name);
    let io = table::IO.iter().find(|c| c.name == name);
    match (admin, io) {
        (Some(c), _) => Some(OpMatch {
            code: c.opcode,
            class: Some(Class::Admin),
        }),
        (None, Some(c)) => Some(OpMatch {
            code: c.opcode,
            class: Some(Class::Io),
        }),
        _ => None,
    }
}

/// The name of `opcode` on a queue of `class`.
pub fn op_name(class: Class, opcode: u8) -> Option<&'static str> {
    match class {
        Class::Admin => table::admin(opcode).map(|c| c.name),
        Class::Io => table::io(opcode).map(|c| c.name),
    }
}

impl Rule {
    /// Refuses a rule for a controller the device does not serve.
    pub fn check_controllers(&self, text: &str, count: usize) -> Result<(), RuleError> {
        match self.ctrl {
            Some(ctrl) if ctrl >= count => Err(RuleError::NoController {
                rule: text.into(),
                ctrl,
                count,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "rule_tests.rs"]
mod tests;
