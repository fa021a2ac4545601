//! Reading a fault rule: the `k=v` list goes through the project's one list
//! parser (`p2pnvme_docs::kv`), then each value is checked here.

use super::rule::{opcode, Action, AenKind, Class, OpMatch, Revoke, Rule};
use super::RuleError;
use crate::dma::route::TargetClass;
use p2pnvme_docs::kv::{self, Key, KvError};

/// Keys that take a value and act on the command instead of matching it.
const ACTIONS: &[&str] = &[
    "status",
    "delay-ms",
    "never",
    "dma-fail",
    "dma-stall-ms",
    "no-irq",
    "cfs",
    "aen",
    "cmb-revoke",
    "remove",
];

const KEYS: &[Key] = &[
    Key::value("ctrl"),
    Key::value("q"),
    Key::value("op"),
    Key::value("class"),
    Key::value("ns"),
    Key::value("lba"),
    Key::value("target"),
    Key::value("nth"),
    Key::value("every"),
    Key::value("first"),
    Key::value("prob"),
    Key::value("seed"),
    Key::value("dnr"),
    Key::value("replug-ms"),
    Key::value("status"),
    Key::value("delay-ms"),
    Key::flag("never"),
    Key::value("dma-fail"),
    Key::value("dma-stall-ms"),
    Key::flag("no-irq"),
    Key::flag("cfs"),
    Key::value("aen"),
    Key::value("cmb-revoke"),
    Key::flag("remove"),
];

/// A u64 in decimal or 0x hex.
fn number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn list_error(rule: &str, e: KvError) -> RuleError {
    let rule = rule.to_string();
    match e {
        KvError::UnknownKey { key, accepted } => RuleError::UnknownKey {
            rule,
            key,
            accepted,
        },
        KvError::Value { key, expected } => RuleError::BadValue {
            rule,
            key,
            value: String::new(),
            expected,
        },
        KvError::Repeated { key } => RuleError::Repeated { rule, key },
    }
}

impl Rule {
    /// Parses one rule; the error names the bad key.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        if text.chars().any(char::is_control) {
            return Err(RuleError::Unprintable {
                rule: format!("{text:?}"),
            });
        }
        let rule = text.to_string();
        let items = kv::parse(text, KEYS).map_err(|e| list_error(text, e))?;
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
        let (mut dnr, mut replug, mut seed) = (None, None, None);
        for item in &items {
            let key = item.key.as_str();
            let v = item.value.as_deref().unwrap_or("");
            if let Some(a) = ACTIONS.iter().find(|a| **a == key) {
                if let Some(first) = action {
                    return Err(RuleError::TwoActions {
                        rule,
                        first: first.into(),
                        key: key.into(),
                    });
                }
                action = Some(a);
            }
            let pos = |what: &str| number(v).filter(|n| *n >= 1).ok_or(bad(key, v, what));
            let int = |what: &str| number(v).ok_or(bad(key, v, what));
            match key {
                "ctrl" => {
                    r.ctrl = Some(
                        usize::try_from(int("use a controller index 0..")?)
                            .map_err(|_| bad(key, v, "use a controller index 0.."))?,
                    )
                }
                "q" => {
                    r.q = Some(
                        u16::try_from(int("use a queue id 0..65535")?)
                            .map_err(|_| bad(key, v, "use a queue id 0..65535"))?,
                    )
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
                    r.ns = Some(
                        u32::try_from(int("use an NSID")?)
                            .map_err(|_| bad(key, v, "use an NSID"))?,
                    )
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
                "seed" => seed = Some(int("use a u64")?),
                "dnr" => {
                    dnr = Some(match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad(key, v, "use 0 or 1")),
                    })
                }
                "replug-ms" => replug = Some(int("use milliseconds")?),
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
                "dma-fail" => r.action = Action::DmaFail(int("use a byte count")?),
                "dma-stall-ms" => {
                    r.action = Action::DmaStallMs(number(v).filter(|n| *n <= 60_000).ok_or(bad(
                        key,
                        v,
                        "use milliseconds up to 60000",
                    ))?)
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
                // `kv::parse` let only KEYS through: this is "remove".
                _ => r.action = Action::Remove { replug_ms: None },
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
}
