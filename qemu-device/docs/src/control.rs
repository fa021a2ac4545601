//! The device's control endpoint (the stats socket): one JSON request per
//! line, one JSON reply per line. Plain `get` and `reset` keep answering
//! with the stats document.

use crate::stats::FaultCounts;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Installs a fault rule (the rule grammar of the device's README).
    FaultAdd {
        /// The rule, e.g. `op=read,nth=10,status=0x281`.
        rule: String,
    },
    /// Lists the installed rules with their counts.
    FaultList,
    /// Removes a rule.
    FaultDel {
        /// Its id, as `fault-add` returned it.
        id: u64,
    },
    /// Starts or stops the command trace.
    Trace {
        /// On or off.
        on: bool,
        /// Where to write (created or truncated); without it, `on` resumes
        /// the last file, appending.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
    },
    /// Takes the events the device queued for the launcher (returned once).
    Events,
}

/// One reply: `ok`, and what the request asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The request was carried out.
    pub ok: bool,
    /// Why not (one line), when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The id of a rule `fault-add` installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Every installed rule (`fault-list`), counts over all controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<FaultCounts>>,
    /// Events since the last `events` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

impl Reply {
    /// A plain success.
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// A refusal with a one-line reason.
    pub fn error(e: impl ToString) -> Reply {
        Reply {
            ok: false,
            error: Some(e.to_string()),
            ..Reply::default()
        }
    }
}

/// What an event asks of the launcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Surprise removal of the controller (QMP `device_del`).
    Remove,
}

/// An event the device queued for the launcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What to do.
    pub kind: EventKind,
    /// Controller index.
    pub ctrl: usize,
    /// The rule that fired.
    pub rule: u64,
    /// Plug the controller back this many ms after it is gone.
    #[serde(default)]
    pub replug_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_the_documented_shape() {
        let r: Request =
            serde_json::from_str(r#"{"op":"fault-add","rule":"op=read,nth=10,status=0x281"}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::FaultAdd {
                rule: "op=read,nth=10,status=0x281".into()
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"fault-del","id":3}"#).unwrap();
        assert_eq!(r, Request::FaultDel { id: 3 });
        let r: Request = serde_json::from_str(r#"{"op":"trace","on":false}"#).unwrap();
        assert_eq!(
            r,
            Request::Trace {
                on: false,
                file: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"fault-list"}"#).is_ok());
        assert!(serde_json::from_str::<Request>(r#"{"op":"events"}"#).is_ok());
        assert!(serde_json::from_str::<Request>(r#"{"op":"bogus"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"fault-del"}"#).is_err());
    }

    #[test]
    fn replies_omit_what_was_not_asked() {
        assert_eq!(
            serde_json::to_string(&Reply::ok()).unwrap(),
            r#"{"ok":true}"#
        );
        let e = Event {
            kind: EventKind::Remove,
            ctrl: 0,
            rule: 3,
            replug_ms: Some(2000),
        };
        let r = Reply {
            events: Some(vec![e]),
            ..Reply::ok()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ok":true,"events":[{"kind":"remove","ctrl":0,"rule":3,"replug_ms":2000}]}"#
        );
        let back: Reply = serde_json::from_str(r#"{"ok":false,"error":"x"}"#).unwrap();
        assert_eq!(back, Reply::error("x"));
    }
}
