//! The fault rule grammar: `key=value` pairs separated by commas, some
//! keys that match commands and exactly one action (see the README).

use crate::commands::table;
use crate::dma::route::TargetClass;

/// Why a rule was refused; the message is one line naming the bad key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// A key the grammar does not have.
    #[error("fault rule '{rule}': unknown key '{key}'")]
    UnknownKey {
        /// The rule.
        rule: String,
        /// The key.
        key: String,
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
    #[error("fault rule '{rule}': no action (one of status, delay-ms, never, dma-fail, no-irq, cfs, aen, cmb-revoke, remove)")]
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
fn opcode(name: &str) -> Option<OpMatch> {
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

/// A u64 in decimal or 0x hex.
fn number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

const ACTIONS: &[&str] = &[
    "status",
    "delay-ms",
    "never",
    "dma-fail",
    "no-irq",
    "cfs",
    "aen",
    "cmb-revoke",
    "remove",
];

impl Rule {
    /// Parses one rule; the error names the bad key.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        if text.chars().any(char::is_control) {
            return Err(RuleError::Unprintable {
                rule: format!("{text:?}"),
            });
        }
        let rule = text.to_string();
        let bad = |key: &str, value: &str, expected: &str| RuleError::BadValue {
            rule: rule.clone(),
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        };
        let mut r = Rule {
            ctrl: None,
            q: None,
            op: None,
            class: None,
            ns: None,
            lba: None,
            target: None,
            nth: None,
            every: None,
            first: None,
            prob: None,
            seed: 0,
            action: Action::Never,
            dnr: true,
        };
        let mut action: Option<&str> = None;
        let mut seen: Vec<&str> = vec![];
        let (mut dnr, mut replug, mut seed) = (None, None, None);
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            if seen.contains(&key) {
                return Err(RuleError::Repeated {
                    rule,
                    key: key.into(),
                });
            }
            seen.push(key);
            if ACTIONS.contains(&key) {
                if let Some(first) = action {
                    return Err(RuleError::TwoActions {
                        rule,
                        first: first.into(),
                        key: key.into(),
                    });
                }
                action = Some(key);
            }
            let flag = matches!(key, "never" | "no-irq" | "cfs" | "remove");
            let v = match (value, flag) {
                (Some(v), true) => return Err(bad(key, v, "takes no value")),
                (None, true) => "",
                (Some(v), false) => v,
                (None, false) if ACTIONS.contains(&key) || is_key(key) => {
                    return Err(bad(key, "", "needs a value (key=value)"))
                }
                (None, false) => {
                    return Err(RuleError::UnknownKey {
                        rule,
                        key: key.into(),
                    })
                }
            };
            let pos = |what: &str| number(v).filter(|n| *n >= 1).ok_or(bad(key, v, what));
            match key {
                "ctrl" => {
                    r.ctrl = Some(number(v).and_then(|n| usize::try_from(n).ok()).ok_or(bad(
                        key,
                        v,
                        "use a controller index 0..",
                    ))?)
                }
                "q" => {
                    r.q = Some(number(v).and_then(|n| u16::try_from(n).ok()).ok_or(bad(
                        key,
                        v,
                        "use a queue id 0..65535",
                    ))?)
                }
                "op" => {
                    r.op = Some(match number(v) {
                        Some(n) => OpMatch {
                            code: u8::try_from(n).map_err(|_| bad(key, v, "use 0..=0xff"))?,
                            class: None,
                        },
                        None => opcode(v).ok_or(RuleError::UnknownOp {
                            rule: rule.clone(),
                            value: v.into(),
                        })?,
                    })
                }
                "class" => {
                    r.class = Some(match v {
                        "io" => Class::Io,
                        "admin" => Class::Admin,
                        _ => return Err(bad(key, v, "use io or admin")),
                    })
                }
                "ns" => {
                    r.ns = Some(number(v).and_then(|n| u32::try_from(n).ok()).ok_or(bad(
                        key,
                        v,
                        "use an NSID",
                    ))?)
                }
                "lba" => {
                    let range = match v.split_once('-') {
                        Some((a, b)) => number(a).zip(number(b)),
                        None => number(v).map(|a| (a, a)),
                    };
                    r.lba = Some(range.filter(|(a, b)| a <= b).ok_or(bad(
                        key,
                        v,
                        "use START or START-END with START <= END",
                    ))?);
                }
                "target" => {
                    r.target = Some(match v {
                        "ram" => TargetClass::Ram,
                        "cmb" => TargetClass::Cmb,
                        "peer" => TargetClass::Peer,
                        _ => return Err(bad(key, v, "use ram, cmb or peer")),
                    })
                }
                "nth" => r.nth = Some(pos("use N >= 1")?),
                "every" => r.every = Some(pos("use N >= 1")?),
                "first" => r.first = Some(pos("use N >= 1")?),
                "prob" => {
                    r.prob = Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|p| (0.0..=1.0).contains(p))
                            .ok_or(bad(key, v, "use a probability 0.0..=1.0"))?,
                    )
                }
                "seed" => seed = Some(number(v).ok_or(bad(key, v, "use a u64"))?),
                "dnr" => {
                    dnr = Some(match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad(key, v, "use 0 or 1")),
                    })
                }
                "replug-ms" => replug = Some(number(v).ok_or(bad(key, v, "use milliseconds"))?),
                "status" => {
                    let s = number(v).filter(|s| (1..=0x7ff).contains(s)).ok_or(bad(
                        key,
                        v,
                        "use 0xSCT_SC, e.g. 0x281, 0x001..=0x7ff",
                    ))?;
                    r.action = Action::Status(s as u16);
                }
                "delay-ms" => {
                    r.action = Action::DelayMs(number(v).filter(|n| *n <= 3_600_000).ok_or(bad(
                        key,
                        v,
                        "use milliseconds up to 3600000",
                    ))?)
                }
                "dma-fail" => {
                    r.action = Action::DmaFail(number(v).ok_or(bad(key, v, "use a byte count"))?)
                }
                "aen" => {
                    r.action = Action::Aen(match v {
                        "smart" => AenKind::Smart,
                        "ns-changed" => AenKind::NsChanged,
                        _ => return Err(bad(key, v, "use smart or ns-changed")),
                    })
                }
                "cmb-revoke" => {
                    r.action = Action::CmbRevoke(match v {
                        "disable" => Revoke::Disable,
                        "unmap" => Revoke::Unmap,
                        _ => return Err(bad(key, v, "use disable or unmap")),
                    })
                }
                "never" => r.action = Action::Never,
                "no-irq" => r.action = Action::NoIrq,
                "cfs" => r.action = Action::Cfs,
                "remove" => r.action = Action::Remove { replug_ms: None },
                _ => {
                    return Err(RuleError::UnknownKey {
                        rule,
                        key: key.into(),
                    })
                }
            }
        }
        let Some(action) = action else {
            return Err(RuleError::NoAction { rule });
        };
        let needs = |key: &str, needs: &str| RuleError::Needs {
            rule: rule.clone(),
            key: key.into(),
            needs: needs.into(),
        };
        if let Some(d) = dnr {
            if !matches!(action, "status" | "dma-fail") {
                return Err(needs("dnr", "status or dma-fail"));
            }
            r.dnr = d;
        }
        if let Some(ms) = replug {
            let Action::Remove { replug_ms } = &mut r.action else {
                return Err(needs("replug-ms", "remove"));
            };
            *replug_ms = Some(ms);
        }
        if let Some(s) = seed {
            if r.prob.is_none() {
                return Err(needs("seed", "prob"));
            }
            r.seed = s;
        }
        Ok(r)
    }

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

/// Whether `key` is a key of the grammar (for "needs a value").
fn is_key(key: &str) -> bool {
    matches!(
        key,
        "ctrl"
            | "q"
            | "op"
            | "class"
            | "ns"
            | "lba"
            | "target"
            | "nth"
            | "every"
            | "first"
            | "prob"
            | "seed"
            | "dnr"
            | "replug-ms"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let r = Rule::parse("op=read,ns=1,nth=10,status=0x281").unwrap();
        assert_eq!(
            r.op,
            Some(OpMatch {
                code: 0x02,
                class: Some(Class::Io)
            })
        );
        assert_eq!(
            (r.ns, r.nth, r.action, r.dnr),
            (Some(1), Some(10), Action::Status(0x281), true)
        );
        let r = Rule::parse("target=peer,op=read,first=1,dma-fail=65536").unwrap();
        assert_eq!(
            (r.target, r.first, r.action),
            (Some(TargetClass::Peer), Some(1), Action::DmaFail(65536))
        );
        assert_eq!(
            Rule::parse("op=read,nth=5,never").unwrap().action,
            Action::Never
        );
        let r = Rule::parse("ctrl=1,op=write,nth=3,cfs").unwrap();
        assert_eq!((r.ctrl, r.action), (Some(1), Action::Cfs));
        let r = Rule::parse("op=read,nth=10,remove,replug-ms=2000").unwrap();
        assert_eq!(
            r.action,
            Action::Remove {
                replug_ms: Some(2000)
            }
        );
        let r = Rule::parse("op=0x06,q=0,lba=5-9,status=0x4,dnr=0").unwrap();
        assert_eq!(
            (r.op.unwrap().class, r.lba, r.dnr),
            (None, Some((5, 9)), false)
        );
        let r = Rule::parse("class=admin,op=identify,prob=0.5,seed=7,delay-ms=20").unwrap();
        assert_eq!(
            (r.class, r.prob, r.seed, r.action),
            (Some(Class::Admin), Some(0.5), 7, Action::DelayMs(20))
        );
        for a in [
            "no-irq",
            "aen=smart",
            "aen=ns-changed",
            "cmb-revoke=disable",
            "cmb-revoke=unmap",
        ] {
            assert!(Rule::parse(a).is_ok(), "{a}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Rule::parse("op=read,foo=1,status=0x281").unwrap_err();
        assert_eq!(e.key(), Some("foo"));
        assert_eq!(
            e.to_string(),
            "fault rule 'op=read,foo=1,status=0x281': unknown key 'foo'"
        );
        assert_eq!(Rule::parse("bar,never").unwrap_err().key(), Some("bar"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Rule::parse("op=bogus,never").unwrap_err();
        assert_eq!(
            e.to_string(),
            "fault rule 'op=bogus,never': unknown op 'bogus'"
        );
        for (rule, key) in [
            ("nth=0,never", "nth"),
            ("every=x,never", "every"),
            ("prob=1.5,never", "prob"),
            ("status=0x800", "status"),
            ("status=0", "status"),
            ("lba=9-5,never", "lba"),
            ("target=disk,never", "target"),
            ("aen=power", "aen"),
            ("cmb-revoke=maybe", "cmb-revoke"),
            ("never=1", "never"),
            ("q=70000,never", "q"),
            ("status", "status"),
            ("dnr=2,status=0x281", "dnr"),
            ("op=read,op=write,never", "op"),
            ("dnr=1,never", "dnr"),
            ("replug-ms=5,never", "replug-ms"),
            ("seed=3,never", "seed"),
        ] {
            let e = Rule::parse(rule).unwrap_err();
            assert_eq!(e.key(), Some(key), "{rule}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn no_action_refused() {
        let e = Rule::parse("op=read,nth=2").unwrap_err();
        assert_eq!(
            e,
            RuleError::NoAction {
                rule: "op=read,nth=2".into()
            }
        );
        assert!(e.to_string().ends_with(
            "no action (one of status, delay-ms, never, dma-fail, no-irq, cfs, aen, cmb-revoke, remove)"
        ));
        assert!(matches!(Rule::parse(""), Err(RuleError::NoAction { .. })));
    }

    #[test]
    fn two_actions_refused() {
        let e = Rule::parse("op=read,never,status=0x281").unwrap_err();
        assert!(matches!(e, RuleError::TwoActions { .. }), "{e}");
        assert!(e.to_string().contains("two actions"));
        assert_eq!(e.key(), Some("status"));
    }

    #[test]
    fn garbage_never_panics_and_errors_stay_one_line() {
        let alphabet: Vec<char> = "=,-.0x1279abcdefghilmnopqrstuvwyz \u{e9}\n"
            .chars()
            .collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Err(e) = Rule::parse(&s) {
                let msg = e.to_string();
                assert!(msg.starts_with("fault rule "), "{msg}");
                assert_eq!(msg.lines().count(), 1, "{msg:?}");
            }
        }
    }

    #[test]
    fn rule_for_a_missing_controller_refused() {
        let r = Rule::parse("ctrl=2,never").unwrap();
        assert!(r.check_controllers("ctrl=2,never", 3).is_ok());
        let e = r.check_controllers("ctrl=2,never", 2).unwrap_err();
        assert_eq!(e.key(), Some("ctrl"));
        assert!(Rule::parse("never")
            .unwrap()
            .check_controllers("never", 1)
            .is_ok());
    }
}
