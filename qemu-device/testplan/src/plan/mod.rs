//! Reading test files: `[defaults]` and `[[case]]` tables. Every key other
//! than `name`, `command`, `expect` and `matrix` is a run option by its flag
//! name (`nvme = 2` is `--nvme 2`); `matrix` expands a case into one per
//! combination of its values, named `name[key=value,...]`.

use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::{Spanned, Value};

/// Keys of a case that are not run options.
const CASE_KEYS: [&str; 4] = ["name", "command", "expect", "matrix"];

/// What a case must end as to count as met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// The run passes (the default).
    #[default]
    Pass,
    /// The run fails (a negative test: the check must catch the fault).
    Fail,
}

/// How the runner takes an option, so a value can be checked before boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// A switch (`--prove`): `true` or `false`.
    Switch,
    /// One value (`--nvme 2`).
    Value,
    /// A repeatable option (`--fault R`): a value or an array of them.
    Repeated,
}

/// An option's value as the runner passes it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionValue {
    /// A switch, on or off.
    Switch(bool),
    /// Values in order (one unless the option repeats).
    Values(Vec<String>),
}

/// One case, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Unique name, with the matrix values of this combination.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Shell command run in the guest.
    pub command: String,
    /// The outcome that meets the case.
    pub expect: Expect,
    /// Run options (flag name without `--`), defaults first.
    pub options: Vec<(String, OptionValue)>,
}

impl Case {
    /// The options as command-line arguments (`--nvme 2 --prove`).
    pub fn args(&self) -> Vec<String> {
        let mut out = vec![];
        for (key, value) in &self.options {
            match value {
                OptionValue::Switch(true) => out.push(format!("--{key}")),
                OptionValue::Switch(false) => {}
                OptionValue::Values(vs) => {
                    for v in vs {
                        out.push(format!("--{key}"));
                        out.push(v.clone());
                    }
                }
            }
        }
        out
    }

    /// The file's stem (a JUnit class name).
    pub fn suite(&self) -> String {
        self.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Why a test file was refused; every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a table other than `defaults` and `case`.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What the parser said (one line).
        message: String,
    },
    /// A key that is neither a case key nor a run option.
    #[error("{file}:{line}: unknown key '{key}': not a case key (name, command, expect, matrix) nor a `p2pnvme run` option")]
    UnknownKey {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
    },
    /// A value of the wrong type or a missing key.
    #[error("{file}:{line}: {message}")]
    Value {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong and what to write instead.
        message: String,
    },
}

type Table = IndexMap<Spanned<String>, Spanned<Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Table,
    #[serde(default)]
    case: Vec<Spanned<Table>>,
}

/// Where a byte offset lies, for error messages.
struct Source<'a> {
    file: String,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn value_error(&self, offset: usize, message: String) -> PlanError {
        PlanError::Value {
            file: self.file.clone(),
            line: self.line(offset),
            message,
        }
    }
}

/// Reads one test file; `option` says how the runner takes a flag name
/// (None: no such option).
pub fn load(
    path: &Path,
    option: &dyn Fn(&str) -> Option<OptionKind>,
) -> Result<Vec<Case>, PlanError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        file: file.clone(),
        source,
    })?;
    parse(path, &text, option)
}

/// Parses a test file's text (see [`load`]).
pub fn parse(
    path: &Path,
    text: &str,
    option: &dyn Fn(&str) -> Option<OptionKind>,
) -> Result<Vec<Case>, PlanError> {
    let src = Source {
        file: path.display().to_string(),
        text,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| PlanError::Syntax {
        file: src.file.clone(),
        line: e.span().map(|s| src.line(s.start)).unwrap_or(1),
        message: e.message().replace('\n', " "),
    })?;
    let defaults = options(&src, &raw.defaults, option, true)?;
    let mut out: Vec<Case> = vec![];
    for case in &raw.case {
        let table = case.get_ref();
        let at = case.span().start;
        let name = string(&src, table, "name")?
            .ok_or_else(|| src.value_error(at, "a case needs name = \"...\"".into()))?;
        let command = string(&src, table, "command")?
            .ok_or_else(|| src.value_error(at, format!("case '{name}' needs command = \"...\"")))?;
        let expect = match string(&src, table, "expect")?.as_deref() {
            None | Some("pass") => Expect::Pass,
            Some("fail") => Expect::Fail,
            Some(other) => {
                return Err(src.value_error(
                    span_of(table, "expect").unwrap_or(at),
                    format!("expect = \"{other}\": use \"pass\" or \"fail\""),
                ))
            }
        };
        let own = options(&src, table, option, false)?;
        for (suffix, combo) in matrix(&src, table, option)? {
            let mut opts = defaults.clone();
            for (k, v) in own.iter().chain(combo.iter()) {
                opts.retain(|(dk, _)| dk != k);
                opts.push((k.clone(), v.clone()));
            }
            let case = Case {
                name: format!("{name}{suffix}"),
                file: path.to_path_buf(),
                command: command.clone(),
                expect,
                options: opts,
            };
            if out.iter().any(|c| c.name == case.name) {
                return Err(src.value_error(
                    at,
                    format!("two cases are named '{}': names must be unique", case.name),
                ));
            }
            out.push(case);
        }
    }
    Ok(out)
}

fn span_of(table: &Table, key: &str) -> Option<usize> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(k, _)| k.span().start)
}

fn string(src: &Source, table: &Table, key: &str) -> Result<Option<String>, PlanError> {
    let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == key) else {
        return Ok(None);
    };
    match v.get_ref() {
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(src.value_error(k.span().start, format!("{key} must be a string"))),
    }
}

/// The run options of a table (case keys skipped unless `defaults`, where
/// they are refused).
fn options(
    src: &Source,
    table: &Table,
    option: &dyn Fn(&str) -> Option<OptionKind>,
    defaults: bool,
) -> Result<Vec<(String, OptionValue)>, PlanError> {
    let mut out = vec![];
    for (k, v) in table {
        let key = k.get_ref();
        if CASE_KEYS.contains(&key.as_str()) {
            if defaults {
                return Err(src.value_error(
                    k.span().start,
                    format!("'{key}' belongs in a [[case]], not in [defaults]"),
                ));
            }
            continue;
        }
        out.push((key.clone(), value(src, k, v.get_ref(), option)?));
    }
    Ok(out)
}

fn value(
    src: &Source,
    key: &Spanned<String>,
    v: &Value,
    option: &dyn Fn(&str) -> Option<OptionKind>,
) -> Result<OptionValue, PlanError> {
    let name = key.get_ref();
    let at = key.span().start;
    let Some(kind) = option(name) else {
        return Err(PlanError::UnknownKey {
            file: src.file.clone(),
            line: src.line(at),
            key: name.clone(),
        });
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(src.value_error(at, format!("{name} takes a string or a number"))),
    };
    match (kind, v) {
        (OptionKind::Switch, Value::Boolean(b)) => Ok(OptionValue::Switch(*b)),
        (OptionKind::Switch, _) => Err(src.value_error(
            at,
            format!("{name} is a switch: write {name} = true or false"),
        )),
        (OptionKind::Repeated, Value::Array(items)) => Ok(OptionValue::Values(
            items.iter().map(scalar).collect::<Result<_, _>>()?,
        )),
        (OptionKind::Value, Value::Array(_)) => Err(src.value_error(
            at,
            format!("{name} takes one value (use matrix = {{ {name} = [...] }} for several runs)"),
        )),
        (_, v) => Ok(OptionValue::Values(vec![scalar(v)?])),
    }
}

/// The combinations of a case's `matrix` (one empty one without), each with
/// its name suffix.
type Combination = (String, Vec<(String, OptionValue)>);

fn matrix(
    src: &Source,
    table: &Table,
    option: &dyn Fn(&str) -> Option<OptionKind>,
) -> Result<Vec<Combination>, PlanError> {
    let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == "matrix") else {
        return Ok(vec![(String::new(), vec![])]);
    };
    let at = k.span().start;
    let Value::Table(axes) = v.get_ref() else {
        return Err(src.value_error(
            at,
            "matrix must be a table of arrays, e.g. matrix = { topology = [\"switch\", \"root-ports\"] }".into(),
        ));
    };
    let mut combos: Vec<Combination> = vec![(String::new(), vec![])];
    for (axis, values) in axes {
        let Value::Array(values) = values else {
            return Err(src.value_error(at, format!("matrix {axis} must be an array")));
        };
        if values.is_empty() {
            return Err(src.value_error(at, format!("matrix {axis} is empty")));
        }
        let key = Spanned::new(at..at, axis.clone());
        let mut next = vec![];
        for (suffix, opts) in &combos {
            for v in values {
                let value = value(src, &key, v, option)?;
                let shown = match &value {
                    OptionValue::Switch(b) => b.to_string(),
                    OptionValue::Values(vs) => vs.join(" "),
                };
                let mut opts = opts.clone();
                opts.push((axis.clone(), value));
                next.push((format!("{suffix},{axis}={shown}"), opts));
            }
        }
        combos = next;
    }
    Ok(combos
        .into_iter()
        .map(|(s, o)| (format!("[{}]", s.trim_start_matches(',')), o))
        .collect())
}

#[cfg(test)]
mod tests;
