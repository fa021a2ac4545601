//! Test files as users write them, and the errors they get.

use super::*;

fn option(name: &str) -> Option<OptionKind> {
    match name {
        "prove" | "allow-warn" => Some(OptionKind::Switch),
        "fault" => Some(OptionKind::Repeated),
        "nvme" | "topology" | "timeout" | "iommu" => Some(OptionKind::Value),
        _ => None,
    }
}

fn cases(text: &str) -> Result<Vec<Case>, PlanError> {
    parse(Path::new("suite.toml"), text, &option)
}

#[test]
fn defaults_merge_and_a_matrix_expands_into_named_combinations() {
    let c = cases(
        r#"
[defaults]
nvme = 2
timeout = "120s"

[[case]]
name = "copy"
command = "p2pcopy"
prove = true
nvme = 3
matrix = { topology = ["switch", "root-ports"], iommu = ["none", "intel"] }

[[case]]
name = "negative"
command = "false"
expect = "fail"
fault = ["op=read,nth=1", "op=write,nth=2"]
"#,
    )
    .unwrap();
    let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "copy[topology=switch,iommu=none]",
            "copy[topology=switch,iommu=intel]",
            "copy[topology=root-ports,iommu=none]",
            "copy[topology=root-ports,iommu=intel]",
            "negative"
        ]
    );
    assert_eq!(
        c[1].args(),
        [
            "--timeout",
            "120s",
            "--prove",
            "--nvme",
            "3",
            "--topology",
            "switch",
            "--iommu",
            "intel"
        ]
    );
    assert_eq!(c[4].expect, Expect::Fail);
    assert_eq!(
        c[4].args(),
        [
            "--nvme",
            "2",
            "--timeout",
            "120s",
            "--fault",
            "op=read,nth=1",
            "--fault",
            "op=write,nth=2"
        ]
    );
    assert_eq!(c[0].suite(), "suite");
}

#[test]
fn an_unknown_key_is_one_line_naming_the_key_and_its_line() {
    let e = cases("[[case]]\nname = \"a\"\ncommand = \"true\"\nnvmee = 2\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "suite.toml:4: unknown key 'nvmee': not a case key (name, command, expect, matrix) nor a `p2pnvme run` option"
    );
    let e = cases("[default]\nnvme = 2\n").unwrap_err().to_string();
    assert!(
        e.starts_with("suite.toml:1: unknown field `default`"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let e =
        cases("[[case]]\nname = \"a\"\ncommand = \"x\"\nmatrix = { nvmee = [1] }\n").unwrap_err();
    assert!(e.to_string().contains("unknown key 'nvmee'"), "{e}");
}

#[test]
fn bad_values_say_what_to_write() {
    let e = cases("[[case]]\nname = \"a\"\ncommand = \"x\"\nprove = 1\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "suite.toml:4: prove is a switch: write prove = true or false"
    );
    let e = cases("[[case]]\nname = \"a\"\ncommand = \"x\"\nexpect = \"maybe\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "suite.toml:4: expect = \"maybe\": use \"pass\" or \"fail\""
    );
    let e = cases("[[case]]\nname = \"a\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "suite.toml:1: case 'a' needs command = \"...\""
    );
    let e =
        cases("[[case]]\nname = \"a\"\ncommand = \"x\"\n[[case]]\nname = \"a\"\ncommand = \"y\"\n")
            .unwrap_err();
    assert!(e.to_string().contains("two cases are named 'a'"), "{e}");
    let e = cases("[defaults]\ncommand = \"x\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "suite.toml:2: 'command' belongs in a [[case]], not in [defaults]"
    );
}
