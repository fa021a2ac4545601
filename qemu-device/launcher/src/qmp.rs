//! QEMU's machine protocol (QMP) over the run's unix socket: the few
//! commands the launcher needs.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A negotiated QMP connection.
pub struct Qmp {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects and leaves capability negotiation mode.
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let s = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QMP {}", socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut q = Qmp {
            w: s.try_clone()?,
            r: BufReader::new(s),
        };
        q.reply()?; // greeting
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn reply(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                bail!("QMP closed the connection");
            }
            let v: Value = serde_json::from_str(&line)?;
            if v.get("event").is_none() {
                return Ok(v);
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

/// Saves guest physical memory [0, len) to `file`.
pub fn pmemsave(socket: &Path, len: u64, file: &Path) -> Result<()> {
    Qmp::connect(socket)?.execute(
        "pmemsave",
        json!({"val": 0, "size": len, "filename": file.display().to_string()}),
    )?;
    Ok(())
}
