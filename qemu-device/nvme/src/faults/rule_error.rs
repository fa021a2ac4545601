//! Why a fault rule was refused: one line naming the rule and the bad key.

/// Why a rule was refused; the message is one line naming the bad key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// A key the grammar does not have.
    #[error("fault rule '{rule}': unknown key '{key}': use one of {accepted}")]
    UnknownKey {
        /// The rule.
        rule: String,
        /// The key.
        key: String,
        /// The keys the grammar takes.
        accepted: String,
    },
    /// A key with a value it cannot take.
    #[error("fault rule '{rule}': bad {key} '{value}': {expected}")]
    BadValue {
        /// The rule.
        rule: String,
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What would do.
        expected: String,
    },
    /// An opcode name the command table does not have.
    #[error("fault rule '{rule}': unknown op '{value}'")]
    UnknownOp {
        /// The rule.
        rule: String,
        /// The name given.
        value: String,
    },
    /// A key given twice.
    #[error("fault rule '{rule}': {key} given twice")]
    Repeated {
        /// The rule.
        rule: String,
        /// The key.
        key: String,
    },
    /// No action key.
    #[error("fault rule '{rule}': no action (one of status, delay-ms, never, dma-fail, dma-stall-ms, no-irq, cfs, aen, cmb-revoke, remove)")]
    NoAction {
        /// The rule.
        rule: String,
    },
    /// More than one action key.
    #[error("fault rule '{rule}': two actions ('{first}' and '{key}'): keep one")]
    TwoActions {
        /// The rule.
        rule: String,
        /// The first action.
        first: String,
        /// The second one.
        key: String,
    },
    /// A modifier without the action it modifies.
    #[error("fault rule '{rule}': {key} needs {needs}")]
    Needs {
        /// The rule.
        rule: String,
        /// The modifier.
        key: String,
        /// What it goes with.
        needs: String,
    },
    /// Control characters (a newline, a tab) in the rule.
    #[error("fault rule {rule}: control characters: write the rule on one line")]
    Unprintable {
        /// The rule, escaped.
        rule: String,
    },
    /// `ctrl` names a controller the device does not serve.
    #[error("fault rule '{rule}': ctrl={ctrl}: no such controller (the device serves {count}, numbered from 0)")]
    NoController {
        /// The rule.
        rule: String,
        /// The index given.
        ctrl: usize,
        /// How many the device serves.
        count: usize,
    },
}

impl RuleError {
    /// The key the error is about (`None`: the rule as a whole).
    pub fn key(&self) -> Option<&str> {
        match self {
            RuleError::UnknownKey { key, .. }
            | RuleError::BadValue { key, .. }
            | RuleError::Repeated { key, .. }
            | RuleError::TwoActions { key, .. }
            | RuleError::Needs { key, .. } => Some(key),
            RuleError::UnknownOp { .. } => Some("op"),
            RuleError::NoController { .. } => Some("ctrl"),
            RuleError::NoAction { .. } | RuleError::Unprintable { .. } => None,
        }
    }
}
