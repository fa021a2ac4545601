//! Fault injection: rules (see `rule` and the README) installed at start-up
//! (`--fault`) or through the control endpoint, matched against every
//! command a controller fetches. With no rule installed the whole check is
//! one relaxed atomic load.

mod parse;
mod rule;
mod rule_error;

use crate::dma::route::Target;
pub use crate::dma::route::TargetClass;
pub use rule::{op_name, Action, AenKind, Class, OpMatch, Revoke, Rule};
pub use rule_error::RuleError;

use p2pnvme_docs::control::{Event, EventKind};
use p2pnvme_docs::stats::FaultCounts;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

/// One installed rule and its counts (per controller).
struct Installed {
    id: u64,
    text: String,
    rule: Rule,
    /// Matches so far over all controllers (drives nth/every/first/prob).
    seen: Mutex<u64>,
    matched: Vec<AtomicU64>,
    fired: Vec<AtomicU64>,
}

/// What the matcher needs to know of a fetched command.
pub struct Probe<'a> {
    /// Controller index.
    pub ctrl: usize,
    /// Submission queue.
    pub q: u16,
    /// Opcode.
    pub opcode: u8,
    /// NSID.
    pub nsid: u32,
    /// Inclusive LBA range (I/O commands with one).
    pub lba: Option<(u64, u64)>,
    /// Where the command's data segments are (asked only when a rule has
    /// a `target` key).
    pub targets: &'a dyn Fn() -> Vec<Target>,
}

/// A rule that fired on a command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fired {
    /// Rule id.
    pub id: u64,
    /// Its action.
    pub action: Action,
    /// Do Not Retry (status, dma-fail).
    pub dnr: bool,
    /// The rule's target class (what dma-fail cuts).
    pub target: Option<TargetClass>,
    /// The rule's NSID (the namespace an ns-changed event names).
    pub ns: Option<u32>,
}

/// The rules of a device process, shared by its controllers and the
/// control endpoint.
pub struct FaultTable {
    /// Rules installed: the hot path's only look when it is 0.
    active: AtomicUsize,
    rules: RwLock<Vec<Arc<Installed>>>,
    next_id: AtomicU64,
    controllers: usize,
    events: Mutex<Vec<Event>>,
}

impl FaultTable {
    /// An empty table for a device of `controllers` controllers.
    pub fn new(controllers: usize) -> FaultTable {
        FaultTable {
            active: AtomicUsize::new(0),
            rules: RwLock::default(),
            next_id: AtomicU64::new(1),
            controllers,
            events: Mutex::default(),
        }
    }

    /// No rule installed (one relaxed load: the hot path's check).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.active.load(Relaxed) == 0
    }

    /// Parses and installs a rule; its id.
    pub fn add(&self, text: &str) -> Result<u64, RuleError> {
        let rule = Rule::parse(text)?;
        rule.check_controllers(text, self.controllers)?;
        let id = self.next_id.fetch_add(1, Relaxed);
        let counts = || (0..self.controllers).map(|_| AtomicU64::new(0)).collect();
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        rules.push(Arc::new(Installed {
            id,
            text: text.into(),
            rule,
            seen: Mutex::new(0),
            matched: counts(),
            fired: counts(),
        }));
        self.active.store(rules.len(), Relaxed);
        Ok(id)
    }

    /// Removes rule `id`; false if there is none.
    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let before = rules.len();
        rules.retain(|r| r.id != id);
        self.active.store(rules.len(), Relaxed);
        rules.len() != before
    }

    /// Every rule with its counts over all controllers.
    pub fn list(&self) -> Vec<FaultCounts> {
        let sum = |v: &[AtomicU64]| v.iter().map(|c| c.load(Relaxed)).sum();
        self.read()
            .iter()
            .map(|r| FaultCounts {
                id: r.id,
                rule: r.text.clone(),
                matched: sum(&r.matched),
                fired: sum(&r.fired),
            })
            .collect()
    }

    /// The rules that can match controller `ctrl`, with their counts on it.
    pub fn counts_of(&self, ctrl: usize) -> Vec<FaultCounts> {
        let get = |v: &[AtomicU64]| v.get(ctrl).map(|c| c.load(Relaxed)).unwrap_or(0);
        self.read()
            .iter()
            .filter(|r| r.rule.ctrl.is_none_or(|c| c == ctrl))
            .map(|r| FaultCounts {
                id: r.id,
                rule: r.text.clone(),
                matched: get(&r.matched),
                fired: get(&r.fired),
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Installed>>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Matches a fetched command against every rule (each match counted);
    /// the first rule whose selectors pass fires.
    pub fn check(&self, p: &Probe<'_>) -> Option<Fired> {
        let mut fired = None;
        for r in self.read().iter() {
            if !matches(&r.rule, p) {
                continue;
            }
            if let Some(c) = r.matched.get(p.ctrl) {
                c.fetch_add(1, Relaxed);
            }
            let n = {
                let mut seen = r.seen.lock().unwrap_or_else(|e| e.into_inner());
                *seen = seen.saturating_add(1);
                *seen
            };
            if fired.is_none() && selected(&r.rule, n) {
                if let Some(c) = r.fired.get(p.ctrl) {
                    c.fetch_add(1, Relaxed);
                }
                fired = Some(Fired {
                    id: r.id,
                    action: r.rule.action,
                    dnr: r.rule.dnr,
                    target: r.rule.target,
                    ns: r.rule.ns,
                });
            }
        }
        fired
    }

    /// Queues an event for the launcher.
    pub fn push_event(&self, kind: EventKind, ctrl: usize, rule: u64, replug_ms: Option<u64>) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Event {
                kind,
                ctrl,
                rule,
                replug_ms,
            });
    }

    /// The events queued since the last call.
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Whether the command matches the rule's keys.
fn matches(r: &Rule, p: &Probe<'_>) -> bool {
    let class = if p.q == 0 { Class::Admin } else { Class::Io };
    r.ctrl.is_none_or(|c| c == p.ctrl)
        && r.q.is_none_or(|q| q == p.q)
        && r.class.is_none_or(|c| c == class)
        && r.op
            .is_none_or(|o| o.code == p.opcode && o.class.is_none_or(|c| c == class))
        && r.ns.is_none_or(|n| n == p.nsid)
        && r.lba
            .is_none_or(|(a, b)| p.lba.is_some_and(|(s, e)| s <= b && a <= e))
        && r.target
            .is_none_or(|t| (p.targets)().into_iter().any(|got| t.holds(got)))
}

/// Whether the nth match passes the rule's selectors.
fn selected(r: &Rule, n: u64) -> bool {
    r.nth.is_none_or(|k| n == k)
        && r.every.is_none_or(|k| n.is_multiple_of(k))
        && r.first.is_none_or(|k| n <= k)
        && r.prob.is_none_or(|p| chance(r.seed, n) < p)
}

/// A uniform number in [0, 1) from (seed, n): the same seed picks the same
/// commands (splitmix64).
fn chance(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(q: u16, opcode: u8) -> Probe<'static> {
        Probe {
            ctrl: 0,
            q,
            opcode,
            nsid: 1,
            lba: Some((0, 7)),
            targets: &|| vec![Target::GuestRam],
        }
    }

    fn fires(t: &FaultTable, p: &Probe<'_>, n: usize) -> Vec<bool> {
        (0..n).map(|_| t.check(p).is_some()).collect()
    }

    #[test]
    fn selectors_nth_every_first() {
        let t = FaultTable::new(1);
        t.add("op=read,nth=3,never").unwrap();
        assert_eq!(
            fires(&t, &probe(1, 2), 5),
            [false, false, true, false, false]
        );
        let t = FaultTable::new(1);
        t.add("every=2,never").unwrap();
        assert_eq!(
            fires(&t, &probe(1, 2), 5),
            [false, true, false, true, false]
        );
        let t = FaultTable::new(1);
        t.add("first=2,never").unwrap();
        assert_eq!(fires(&t, &probe(1, 2), 4), [true, true, false, false]);
        assert_eq!(t.list()[0].matched, 4);
        assert_eq!(t.list()[0].fired, 2);
    }

    #[test]
    fn prob_with_a_seed_repeats() {
        let run = |seed: u64| {
            let t = FaultTable::new(1);
            t.add(&format!("prob=0.3,seed={seed},never")).unwrap();
            fires(&t, &probe(1, 2), 200)
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same commands");
        assert_ne!(a, run(43));
        let n = a.iter().filter(|f| **f).count();
        assert!((30..=90).contains(&n), "{n} of 200 at p=0.3");
        let t = FaultTable::new(1);
        t.add("prob=0,never").unwrap();
        assert!(!fires(&t, &probe(1, 2), 50).contains(&true));
    }

    #[test]
    fn keys_narrow_the_match() {
        let t = FaultTable::new(2);
        t.add("ctrl=1,never").unwrap();
        t.add("q=2,never").unwrap();
        t.add("op=write,never").unwrap();
        t.add("class=admin,never").unwrap();
        t.add("ns=2,never").unwrap();
        t.add("lba=8-15,never").unwrap();
        t.add("target=peer,never").unwrap();
        // A read on ctrl 0, q 1, ns 1, LBA 0-7, to RAM: none of them.
        assert_eq!(t.check(&probe(1, 2)), None);
        assert!(t.list().iter().all(|r| r.matched == 0));
        let hit = |p: Probe<'_>| t.check(&p).map(|f| f.id);
        assert_eq!(
            hit(Probe {
                ctrl: 1,
                ..probe(1, 2)
            }),
            Some(1)
        );
        assert_eq!(hit(probe(2, 2)), Some(2));
        assert_eq!(hit(probe(1, 1)), Some(3));
        assert_eq!(hit(probe(0, 6)), Some(4));
        assert_eq!(
            hit(Probe {
                nsid: 2,
                ..probe(1, 2)
            }),
            Some(5)
        );
        assert_eq!(
            hit(Probe {
                lba: Some((15, 20)),
                ..probe(1, 2)
            }),
            Some(6)
        );
        assert_eq!(
            hit(Probe {
                lba: None,
                ..probe(1, 2)
            }),
            None
        );
        assert_eq!(
            hit(Probe {
                targets: &|| vec![Target::GuestRam, Target::PeerCmb(1)],
                ..probe(1, 2)
            }),
            Some(7)
        );
        // Counted per controller: rule 1 matched on controller 1 only.
        assert_eq!(t.counts_of(1)[0].matched, 1);
        assert_eq!(
            t.counts_of(0).len(),
            6,
            "ctrl=1 rule not listed for controller 0"
        );
    }

    #[test]
    fn op_names_fix_the_class_numbers_do_not() {
        let t = FaultTable::new(1);
        t.add("op=read,never").unwrap(); // io 0x02
        assert!(
            t.check(&probe(0, 2)).is_none(),
            "get-log-page is admin 0x02"
        );
        assert!(t.check(&probe(1, 2)).is_some());
        let t = FaultTable::new(1);
        t.add("op=0x02,never").unwrap();
        assert!(t.check(&probe(0, 2)).is_some());
        assert!(t.check(&probe(1, 2)).is_some());
    }

    #[test]
    fn add_refuses_missing_controller_and_remove_empties() {
        let t = FaultTable::new(2);
        assert!(matches!(
            t.add("ctrl=2,never"),
            Err(RuleError::NoController { .. })
        ));
        assert!(t.is_empty());
        let id = t.add("never").unwrap();
        assert!(!t.is_empty());
        assert!(t.remove(id));
        assert!(!t.remove(id));
        assert!(t.is_empty());
    }
}
