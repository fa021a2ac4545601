//! The control endpoint on the stats socket: `get` and `reset` (the stats
//! document), and JSON requests (`p2pnvme_docs::control`) that add, list
//! and remove fault rules, toggle the trace and take the launcher's events.

use crate::faults::FaultTable;
use crate::stats::Counters;
use crate::trace::Tracer;
use p2pnvme_docs::control::{Reply, Request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

/// Longest request line read (a rule is short; this bounds a bad client).
const MAX_LINE: u64 = 64 << 10;

/// What the endpoint serves.
#[derive(Clone)]
pub struct Control {
    /// Every controller's counters.
    pub stats: Vec<Arc<Counters>>,
    /// The process's fault rules.
    pub faults: Arc<FaultTable>,
    /// The process's trace.
    pub trace: Arc<Tracer>,
}

impl Control {
    /// The reply to one request line (never fails: errors are replies).
    pub fn answer(&self, line: &str) -> String {
        let doc = |d| serde_json::to_string(&d).unwrap_or_default();
        match line.trim() {
            "get" => doc(self.document()),
            "reset" => {
                let d = self.document();
                self.stats.iter().for_each(|c| c.reset());
                doc(d)
            }
            l if l.starts_with('{') => {
                let reply = match serde_json::from_str::<Request>(l) {
                    Ok(r) => self.request(r),
                    Err(e) => Reply::error(format!("bad request ({e}): see the device README")),
                };
                serde_json::to_string(&reply).unwrap_or_default()
            }
            other => serde_json::json!({
                "ok": false,
                "error": format!("unknown request '{other}': use get, reset or a JSON request"),
            })
            .to_string(),
        }
    }

    /// The stats document: every controller's counters with the fault
    /// rules that can match it, and the trace's drops.
    fn document(&self) -> p2pnvme_docs::stats::StatsDoc {
        p2pnvme_docs::stats::StatsDoc {
            controllers: self
                .stats
                .iter()
                .map(|c| p2pnvme_docs::stats::ControllerStats {
                    faults: self.faults.counts_of(c.ctrl),
                    ..c.snapshot()
                })
                .collect(),
            trace_dropped: self.trace.dropped(),
        }
    }

    fn request(&self, r: Request) -> Reply {
        match r {
            Request::FaultAdd { rule } => match self.faults.add(&rule) {
                Ok(id) => Reply {
                    id: Some(id),
                    ..Reply::ok()
                },
                Err(e) => Reply::error(e),
            },
            Request::FaultList => Reply {
                rules: Some(self.faults.list()),
                ..Reply::ok()
            },
            Request::FaultDel { id } => match self.faults.remove(id) {
                true => Reply::ok(),
                false => Reply::error(format!("no fault rule {id}")),
            },
            Request::Trace { on: true, file } => match self.trace.start(file.as_deref()) {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::error(format!("trace: {e}")),
            },
            Request::Trace { on: false, .. } => {
                self.trace.stop();
                Reply::ok()
            }
            Request::Events => Reply {
                events: Some(self.faults.take_events()),
                ..Reply::ok()
            },
        }
    }

    fn connection(&self, conn: UnixStream) {
        let mut r = BufReader::new(&conn);
        loop {
            let mut line = String::new();
            match (&mut r).take(MAX_LINE).read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let reply = self.answer(&line);
            if (&conn).write_all(format!("{reply}\n").as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Serves the endpoint on `path`: one request per line, one reply per line,
/// a thread per connection.
pub fn serve(path: &Path, control: Control) -> std::io::Result<()> {
    let listener = UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let c = control.clone();
            std::thread::spawn(move || c.connection(conn));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pnvme_docs::stats::StatsDoc;

    fn control(n: usize) -> Control {
        Control {
            stats: (0..n).map(|i| Arc::new(Counters::new(i, "s"))).collect(),
            faults: Arc::new(FaultTable::new(n)),
            trace: Arc::default(),
        }
    }

    fn ask(c: &Control, req: &str) -> Reply {
        serde_json::from_str(&c.answer(req)).unwrap()
    }

    #[test]
    fn fault_add_list_del() {
        let c = control(2);
        let r = ask(
            &c,
            r#"{"op":"fault-add","rule":"op=read,nth=10,status=0x281"}"#,
        );
        assert!(r.ok);
        let id = r.id.unwrap();
        let rules = ask(&c, r#"{"op":"fault-list"}"#).rules.unwrap();
        assert_eq!(
            (rules[0].id, rules[0].rule.as_str()),
            (id, "op=read,nth=10,status=0x281")
        );
        let doc: StatsDoc = serde_json::from_str(&c.answer("get")).unwrap();
        assert_eq!(doc.controllers[1].faults[0].id, id, "listed per controller");
        assert!(ask(&c, &format!(r#"{{"op":"fault-del","id":{id}}}"#)).ok);
        assert!(!ask(&c, &format!(r#"{{"op":"fault-del","id":{id}}}"#)).ok);
        assert!(c.faults.is_empty());
    }

    #[test]
    fn bad_requests_get_ok_false() {
        let c = control(1);
        for bad in [
            r#"{"op":"fault-add","rule":"op=bogus,never"}"#,
            r#"{"op":"fault-add","rule":"ctrl=1,never"}"#,
            r#"{"op":"fault-add"}"#,
            r#"{"op":"nope"}"#,
            r#"{not json"#,
            r#"{"op":"trace","on":true}"#,
        ] {
            let r = ask(&c, bad);
            assert!(!r.ok, "{bad}");
            let e = r.error.unwrap();
            assert!(!e.contains('\n'), "{e}");
        }
        let e = ask(&c, r#"{"op":"fault-add","rule":"ctrl=1,never"}"#)
            .error
            .unwrap();
        assert!(e.contains("ctrl=1"), "{e}");
        let v: serde_json::Value = serde_json::from_str(&c.answer("bogus")).unwrap();
        assert_eq!(v["ok"], false);
    }

    #[test]
    fn events_are_returned_once() {
        let c = control(1);
        c.faults
            .push_event(p2pnvme_docs::control::EventKind::Remove, 0, 3, Some(2000));
        let ev = ask(&c, r#"{"op":"events"}"#).events.unwrap();
        assert_eq!(
            (ev[0].ctrl, ev[0].rule, ev[0].replug_ms),
            (0, 3, Some(2000))
        );
        assert!(ask(&c, r#"{"op":"events"}"#).events.unwrap().is_empty());
    }

    #[test]
    fn socket_serves_several_requests_per_connection() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        serve(&p, control(1)).unwrap();
        let s = UnixStream::connect(&p).unwrap();
        (&s).write_all(b"{\"op\":\"fault-add\",\"rule\":\"never\"}\nget\n")
            .unwrap();
        let mut r = BufReader::new(&s);
        let mut a = String::new();
        r.read_line(&mut a).unwrap();
        assert_eq!(a.trim(), r#"{"ok":true,"id":1}"#);
        let mut b = String::new();
        r.read_line(&mut b).unwrap();
        let doc: StatsDoc = serde_json::from_str(&b).unwrap();
        assert_eq!(doc.controllers[0].faults[0].rule, "never");
    }
}
