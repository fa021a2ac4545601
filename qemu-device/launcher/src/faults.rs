//! `--fault RULE`: rules are checked before boot (the device crate's parser
//! decides what is valid; the launcher adds what only it knows, how many
//! controllers there are), and a rule with `remove` makes the launcher
//! carry out the surprise removal the device asks for (see hotplug.rs).

use anyhow::{bail, Result};
use p2pnvme_device::faults::{Action, Rule};

/// Parses every rule; the first bad one is refused in one line (the
/// parser's, naming the bad key), as is one for a controller this run does
/// not have.
pub fn check(rules: &[String], controllers: usize) -> Result<()> {
    if !rules.is_empty() && controllers == 0 {
        bail!("--fault injects faults into the project's controllers: add --nvme N");
    }
    for text in rules {
        let rule = Rule::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        rule.check_controllers(text, controllers)
            .map_err(|e| anyhow::anyhow!("{e}: raise --nvme or lower ctrl"))?;
    }
    Ok(())
}

/// Whether any rule may ask for a surprise removal.
pub fn wants_removal(rules: &[String]) -> bool {
    remove_rules(rules).next().is_some()
}

/// The controllers (of `controllers`) a `remove` rule may unplug: the one
/// its `ctrl` names, or every one for a rule without `ctrl`.
pub fn removable(rules: &[String], controllers: usize) -> Vec<usize> {
    (0..controllers)
        .filter(|&i| remove_rules(rules).any(|r| r.ctrl.is_none_or(|c| c == i)))
        .collect()
}

/// Whether the rule `text` takes its controller down when it fires (a
/// controller fatal status, or a surprise removal): a run in which it fired
/// has a failed controller by design.
pub fn breaks_controller(text: &str) -> bool {
    Rule::parse(text).is_ok_and(|r| matches!(r.action, Action::Cfs | Action::Remove { .. }))
}

fn remove_rules(rules: &[String]) -> impl Iterator<Item = Rule> + '_ {
    rules
        .iter()
        .filter_map(|r| Rule::parse(r).ok())
        .filter(|r| matches!(r.action, Action::Remove { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(rules: &[&str], controllers: usize) -> String {
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        let e = check(&rules, controllers).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        e
    }

    #[test]
    fn a_bad_rule_is_refused_naming_the_bad_key() {
        let e = refusal(&["op=read,nth=10,status=0x281", "op=read,foo=1,never"], 2);
        assert!(e.contains("foo"), "{e}");
        let e = refusal(&["op=bogus,never"], 1);
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn a_rule_on_a_missing_controller_is_refused() {
        let e = refusal(&["ctrl=2,op=read,never"], 2);
        assert!(e.contains("ctrl=2: no such controller"), "{e}");
        let rules = vec!["ctrl=1,op=read,never".to_string()];
        check(&rules, 2).unwrap();
        let e = refusal(&["op=read,never"], 0);
        assert!(e.contains("--nvme"), "{e}");
    }

    #[test]
    fn only_remove_rules_start_the_removal_watch() {
        let r = |s: &str| vec![s.to_string()];
        assert!(wants_removal(&r("op=read,nth=10,remove,replug-ms=2000")));
        assert!(!wants_removal(&r("op=read,nth=10,status=0x281")));
        assert!(!wants_removal(&[]));
    }

    #[test]
    fn removable_controllers_are_those_a_remove_rule_can_match() {
        let r = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(removable(&r(&["op=read,nth=10,remove"]), 3), [0, 1, 2]);
        assert_eq!(
            removable(&r(&["ctrl=1,op=read,remove,replug-ms=5"]), 3),
            [1]
        );
        let mixed = r(&[
            "ctrl=0,op=read,nth=1,status=0x281",
            "ctrl=2,op=write,remove",
        ]);
        assert_eq!(removable(&mixed, 3), [2]);
        assert!(removable(&r(&["op=read,never"]), 2).is_empty());
    }
}
