//! The plugin's arguments (`-plugin FILE,sock=PATH,out=PATH,arm=...`),
//! read with the project's one key=value parser.

use p2pnvme_docs::kv::{self, Key};
use std::path::PathBuf;

/// Plugin arguments.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Args {
    /// `sock=PATH`: the control socket.
    pub sock: Option<PathBuf>,
    /// `out=PATH`: the whole run's report, written at exit.
    pub out: Option<PathBuf>,
    /// `arm=always`: memory callbacks from the start.
    pub always: bool,
}

/// The keys `-plugin FILE,...` takes.
const KEYS: &[Key] = &[Key::value("sock"), Key::value("out"), Key::value("arm")];

/// Parses the plugin's arguments. QEMU has already split its `-plugin`
/// option at single commas (a doubled comma is a comma in a value) and hands
/// one `key=value` per argument, so each is read on its own with its commas
/// kept literal.
pub(crate) fn parse_args(args: &[String]) -> Result<Args, String> {
    let list: Vec<String> = args.iter().map(|a| kv::escape(a)).collect();
    let items = kv::parse(&list.join(","), KEYS).map_err(|e| format!("plugin argument: {e}"))?;
    let mut a = Args::default();
    for item in items {
        let value = item.value.unwrap_or_default();
        let bad = |expected: &str| format!("plugin argument: '{}' {expected}", item.key);
        match (item.key.as_str(), value.as_str()) {
            (_, "") => return Err(bad("needs a value (key=value)")),
            ("sock", p) => a.sock = Some(p.into()),
            ("out", p) => a.out = Some(p.into()),
            ("arm", "always") => a.always = true,
            ("arm", "windows") => a.always = false,
            ("arm", v) => return Err(bad(&format!("takes windows or always, not '{v}'"))),
            (k, _) => return Err(format!("plugin argument: unknown key '{k}'")),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_sock_out_and_arm_only() {
        let a = parse_args(&["sock=/t/s".into(), "out=/t/o".into()]).unwrap();
        assert_eq!(a.sock, Some("/t/s".into()));
        assert_eq!(a.out, Some("/t/o".into()));
        assert!(!a.always);
        assert!(parse_args(&["arm=always".into()]).unwrap().always);
        assert!(parse_args(&["arm=sometimes".into()]).is_err());
        assert!(parse_args(&["sock=".into()]).is_err());
        assert!(parse_args(&["verbose".into()]).is_err());
    }

    #[test]
    fn arguments_keep_commas_and_equals_signs_in_paths() {
        // QEMU turned `sock=/t/a,,b=c` into the argument `sock=/t/a,b=c`.
        let a = parse_args(&["sock=/t/a,b=c:d".into(), "out=/t/o, x".into()]).unwrap();
        assert_eq!(a.sock, Some("/t/a,b=c:d".into()));
        assert_eq!(a.out, Some("/t/o, x".into()));
    }

    #[test]
    fn a_bad_argument_is_refused_naming_the_key_and_what_it_takes() {
        let e = parse_args(&["verbose=on".into()]).unwrap_err();
        assert_eq!(
            e,
            "plugin argument: unknown key 'verbose': use one of sock=, out=, arm="
        );
        let e = parse_args(&["sock=/a".into(), "sock=/b".into()]).unwrap_err();
        assert!(e.contains("'sock' is given twice"), "{e}");
        let e = parse_args(&["arm=sometimes".into()]).unwrap_err();
        assert!(e.contains("'arm' takes windows or always"), "{e}");
    }
}
