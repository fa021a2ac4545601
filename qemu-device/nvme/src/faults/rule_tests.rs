use super::*;
use crate::faults::RuleError;

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
        "dma-stall-ms=500",
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
        "fault rule 'op=read,foo=1,status=0x281': unknown key 'foo': use one of ctrl=, q=, op=, \
         class=, ns=, lba=, target=, nth=, every=, first=, prob=, seed=, dnr=, replug-ms=, status=, \
         delay-ms=, never, dma-fail=, dma-stall-ms=, no-irq, cfs, aen=, cmb-revoke=, remove"
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
        ("dma-stall-ms=60001", "dma-stall-ms"),
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
        "no action (one of status, delay-ms, never, dma-fail, dma-stall-ms, no-irq, cfs, aen, cmb-revoke, remove)"
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
