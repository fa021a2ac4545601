//! The one parser for `key=value,key=value` lists in the project (device
//! controllers and namespaces, fault rules, plugin arguments). As in QEMU's
//! option lists, a doubled comma `,,` is a literal comma inside a value, so
//! any path can be written.

use std::fmt;

/// One item of a list: `key=value`, or a bare `key` (a flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The key, trimmed.
    pub key: String,
    /// The value, trimmed; `None` for a bare key.
    pub value: Option<String>,
}

/// What is wrong with a list; every variant names the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// A key the list does not take.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys it takes, comma-separated.
        accepted: String,
    },
    /// A key that needs a value came bare, or a flag came with one.
    Value {
        /// The key.
        key: String,
        /// What the key takes instead.
        expected: String,
    },
    /// A key that may appear once appeared again.
    Repeated {
        /// The key.
        key: String,
    },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::UnknownKey { key, accepted } => {
                write!(f, "unknown key '{key}': use one of {accepted}")
            }
            KvError::Value { key, expected } => write!(f, "'{key}' {expected}"),
            KvError::Repeated { key } => write!(f, "'{key}' is given twice: give it once"),
        }
    }
}

impl std::error::Error for KvError {}

/// A key a list takes.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Its name.
    pub name: &'static str,
    /// A flag takes no value; other keys need one.
    pub flag: bool,
    /// May the key appear more than once (`ns=` of a controller)?
    pub repeats: bool,
}

impl Key {
    /// A key that takes a value, once.
    pub const fn value(name: &'static str) -> Key {
        Key {
            name,
            flag: false,
            repeats: false,
        }
    }

    /// A key that takes a value and may repeat.
    pub const fn repeated(name: &'static str) -> Key {
        Key {
            name,
            flag: false,
            repeats: true,
        }
    }

    /// A bare key without a value, once.
    pub const fn flag(name: &'static str) -> Key {
        Key {
            name,
            flag: true,
            repeats: false,
        }
    }
}

/// Splits `text` at single commas (`,,` is a literal comma), drops empty
/// items, and checks every key against `keys`.
pub fn parse(text: &str, keys: &[Key]) -> Result<Vec<Item>, KvError> {
    let mut out: Vec<Item> = vec![];
    for raw in split(text) {
        let item = match raw.split_once('=') {
            Some((k, v)) => Item {
                key: k.trim().to_string(),
                value: Some(v.trim().to_string()),
            },
            None => Item {
                key: raw.trim().to_string(),
                value: None,
            },
        };
        if item.key.is_empty() && item.value.is_none() {
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.name == item.key) else {
            return Err(KvError::UnknownKey {
                key: item.key,
                accepted: accepted(keys),
            });
        };
        match (key.flag, &item.value) {
            (true, Some(_)) => {
                return Err(KvError::Value {
                    key: item.key,
                    expected: "takes no value".into(),
                })
            }
            (false, None) => {
                return Err(KvError::Value {
                    key: item.key,
                    expected: "needs a value (key=value)".into(),
                })
            }
            _ => {}
        }
        if !key.repeats && out.iter().any(|o| o.key == item.key) {
            return Err(KvError::Repeated { key: item.key });
        }
        out.push(item);
    }
    Ok(out)
}

/// The keys of a list as its errors name them (`a=, b=, never`).
pub fn accepted(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| {
            if k.flag {
                k.name.to_string()
            } else {
                format!("{}=", k.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes a value so that `parse` reads it back (commas doubled).
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn split(text: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                items.last_mut().expect("never empty").push(',');
            }
            ',' => items.push(String::new()),
            c => items.last_mut().expect("never empty").push(c),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[Key::value("file"), Key::repeated("ns"), Key::flag("never")];

    #[test]
    fn doubled_commas_are_a_comma_inside_a_value() {
        let items = parse("file=/tmp/a,,b=c:d.img,never", KEYS).unwrap();
        assert_eq!(items[0].value.as_deref(), Some("/tmp/a,b=c:d.img"));
        assert_eq!(items[1].key, "never");
        let path = "/x,y z=w:v";
        let items = parse(&format!("file={}", escape(path)), KEYS).unwrap();
        assert_eq!(items[0].value.as_deref(), Some(path));
    }

    #[test]
    fn errors_name_the_key_and_what_it_takes() {
        let e = parse("size=1", KEYS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown key 'size': use one of file=, ns=, never"
        );
        let e = parse("never=1", KEYS).unwrap_err();
        assert_eq!(e.to_string(), "'never' takes no value");
        let e = parse("file", KEYS).unwrap_err();
        assert_eq!(e.to_string(), "'file' needs a value (key=value)");
        let e = parse("file=a,file=b", KEYS).unwrap_err();
        assert_eq!(e.to_string(), "'file' is given twice: give it once");
        assert_eq!(parse("ns=a,ns=b,", KEYS).unwrap().len(), 2);
    }
}
