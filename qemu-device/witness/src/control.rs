//! The plugin's control socket: a unix socket (path given as a plugin
//! argument) served by the plugin's own thread, one connection at a time,
//! one request line and one reply line each:
//!
//! - `ping` → `pong`
//! - `windows JSON` (an array of `AddrWindow`) → `ok`
//! - `start NAME` → `ok` (opens a measurement window; windows nest)
//! - `stop` → the innermost open window's report as one line of JSON
//! - `report` → everything since QEMU started, as one line of JSON
//!
//! Errors are `error MESSAGE`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Longest request accepted (a window list of every controller fits easily).
const MAX_LINE: usize = 64 * 1024;

/// Answers one request line.
pub trait Handler: Sync {
    fn handle(&self, request: &str) -> String;
}

/// Binds `path` and serves it on a new thread for the life of the process.
pub fn spawn(path: &Path, handler: &'static dyn Handler) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("witness-ctl".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = serve(conn, handler) {
                    log::warn!("control connection: {e}");
                }
            }
        })?;
    Ok(())
}

fn serve(conn: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        let n = r.by_ref().take(MAX_LINE as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        let reply = if line.ends_with('\n') {
            handler.handle(line.trim())
        } else {
            // Over-long: answer, then drop the connection (its rest is garbage).
            w.write_all(format!("error request longer than {MAX_LINE} bytes\n").as_bytes())?;
            return Ok(());
        };
        w.write_all(format!("{}\n", reply.replace('\n', " ")).as_bytes())?;
    }
}
