//! QEMU's machine protocol (QMP) over the run's unix socket: the few
//! commands the launcher needs.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A negotiated QMP connection.
pub struct Qmp {
    w: UnixStream,
    r: BufReader<UnixStream>,
    /// Events that arrived while waiting for a reply.
    events: Vec<Value>,
}

impl Qmp {
    /// Connects and leaves capability negotiation mode.
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let s = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QMP {}", socket.display()))?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut q = Qmp {
            w: s.try_clone()?,
            r: BufReader::new(s),
            events: vec![],
        };
        q.reply()?; // greeting
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn reply(&mut self) -> Result<Value> {
        loop {
            let v = self.message()?;
            if v.get("event").is_none() {
                return Ok(v);
            }
            self.events.push(v);
        }
    }

    fn message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            bail!("QMP closed the connection");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Waits up to `limit` for the event `name` whose `data` has every
    /// field of `data` (events that came with earlier replies count too);
    /// None when it did not come in time.
    pub fn wait_event(
        &mut self,
        name: &str,
        data: &Value,
        limit: Duration,
    ) -> Result<Option<Value>> {
        let matches = |v: &Value| {
            v["event"] == name
                && data
                    .as_object()
                    .is_none_or(|d| d.iter().all(|(k, x)| &v["data"][k] == x))
        };
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(Some(self.events.remove(i)));
        }
        let found = self.read_until(matches, Instant::now() + limit);
        self.r.get_ref().set_read_timeout(Some(REPLY_TIMEOUT))?;
        found.with_context(|| format!("waiting for QMP event {name} {data}"))
    }

    fn read_until(
        &mut self,
        matches: impl Fn(&Value) -> bool,
        deadline: Instant,
    ) -> Result<Option<Value>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.r.get_ref().set_read_timeout(Some(left))?;
            match self.message() {
                Ok(v) if matches(&v) => return Ok(Some(v)),
                Ok(v) if v.get("event").is_some() => self.events.push(v),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs one command; its `return` value or its error.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        let req = json!({"execute": cmd, "arguments": args});
        self.w.write_all(format!("{req}\n").as_bytes())?;
        let v = self.reply()?;
        if let Some(e) = v.get("error") {
            bail!("QMP {cmd}: {e}");
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    })
}

/// Saves guest physical memory [0, len) to `file`.
pub fn pmemsave(socket: &Path, start: u64, len: u64, file: &Path) -> Result<()> {
    Qmp::connect(socket)?.execute(
        "pmemsave",
        json!({"val": start, "size": len, "filename": file.display().to_string()}),
    )?;
    Ok(())
}
