//! The guest's serial console log and the files its virtio-serial ports
//! write: following them, and reporting what a failed guest printed.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Lines that start a kernel report (a panic prints its own cause last).
const OOPS_MARKERS: [&str; 5] = [
    "BUG:",
    "Oops:",
    "general protection fault",
    "WARNING:",
    "Kernel panic",
];

/// Follows a file the guest writes through a virtio-serial port.
pub struct Tail {
    path: PathBuf,
    file: Option<fs::File>,
    forward: bool,
    to_stderr: bool,
    /// Everything read so far.
    pub captured: Vec<u8>,
}

impl Tail {
    /// Follows `path`; with `forward`, copies what arrives to our stdout or stderr.
    pub fn new(path: PathBuf, forward: bool, to_stderr: bool) -> Self {
        Tail {
            path,
            file: None,
            forward,
            to_stderr,
            captured: vec![],
        }
    }

    /// Reads what arrived since the last call.
    pub fn pump(&mut self) {
        if self.file.is_none() {
            self.file = fs::File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return;
        }
        if self.forward {
            if self.to_stderr {
                let _ = std::io::stderr().write_all(&buf);
            } else {
                let mut o = std::io::stdout();
                let _ = o.write_all(&buf);
                let _ = o.flush();
            }
        }
        self.captured.extend_from_slice(&buf);
    }
}

/// The last `lines` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    let mut s = v[v.len().saturating_sub(lines)..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// The console's tail, preceded by the start of the first kernel report
/// when the tail alone would hide it.
pub fn report(path: &Path) -> String {
    const TAIL: usize = 15;
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail_from = lines.len().saturating_sub(TAIL);
    let oops = lines
        .iter()
        .position(|l| OOPS_MARKERS.iter().any(|m| l.contains(m)));
    let mut s = String::new();
    if let Some(at) = oops.filter(|&at| at < tail_from) {
        let end = (at + 25).min(tail_from);
        s += "-- first kernel report\n";
        s += &lines[at..end].join("\n");
        s += "\n-- console tail\n";
    }
    s + &tail(path, TAIL)
}

/// Keeps a console log past the run directory's removal.
pub fn save_log(console: &Path) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("p2pnvme-console-{}.log", std::process::id()));
    let _ = fs::copy(console, &dst);
    dst
}
