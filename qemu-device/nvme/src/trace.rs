//! The command trace: one JSON line per completed (or dropped) command
//! (`p2pnvme_docs::trace::TraceRecord`), through a buffered writer shared
//! by the controllers of the process. Off, it costs one relaxed load per
//! command; a write error stops it with one warning, never the device.

use p2pnvme_docs::trace::TraceRecord;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Buffer of the trace writer: records reach the file in large writes.
const BUFFER: usize = 256 << 10;

struct Sink {
    /// The file the trace goes (or last went) to.
    path: Option<PathBuf>,
    out: Option<BufWriter<File>>,
}

/// The process's trace.
pub struct Tracer {
    on: AtomicBool,
    start: Instant,
    sink: Mutex<Sink>,
}

impl Default for Tracer {
    fn default() -> Tracer {
        Tracer {
            on: AtomicBool::new(false),
            start: Instant::now(),
            sink: Mutex::new(Sink {
                path: None,
                out: None,
            }),
        }
    }
}

impl Tracer {
    /// Tracing (one relaxed load: the hot path's check).
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// µs since the device started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracing to `file` (created or truncated); without a file,
    /// resumes the last one, appending.
    pub fn start(&self, file: Option<&Path>) -> std::io::Result<()> {
        let mut s = self.sink();
        let path = match (file, &s.path) {
            (Some(f), _) => f.to_path_buf(),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no trace file yet: give \"file\"",
                ))
            }
        };
        let f = match file {
            Some(_) => File::create(&path)?,
            None => OpenOptions::new().append(true).create(true).open(&path)?,
        };
        finish(&mut s);
        s.out = Some(BufWriter::with_capacity(BUFFER, f));
        s.path = Some(path);
        self.on.store(true, Relaxed);
        Ok(())
    }

    /// Stops tracing; everything recorded so far is in the file.
    pub fn stop(&self) {
        let mut s = self.sink();
        self.on.store(false, Relaxed);
        finish(&mut s);
    }

    /// Pushes buffered records to the file (a periodic flush).
    pub fn flush(&self) {
        let mut s = self.sink();
        if let Some(out) = s.out.as_mut() {
            if let Err(e) = out.flush() {
                self.failed(&mut s, &e);
            }
        }
    }

    /// Appends one record.
    pub fn record(&self, r: &TraceRecord) {
        let mut s = self.sink();
        let Some(out) = s.out.as_mut() else { return };
        let res = serde_json::to_writer(&mut *out, r)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = res {
            self.failed(&mut s, &e);
        }
    }

    /// A write failed: tracing stops, the device goes on.
    fn failed(&self, s: &mut Sink, e: &std::io::Error) {
        self.on.store(false, Relaxed);
        s.out = None;
        log::warn!(
            "trace {}: {e}: tracing stopped (the device goes on)",
            s.path.as_deref().unwrap_or(Path::new("?")).display()
        );
    }
}

/// Flushes and closes the current file.
fn finish(s: &mut Sink) {
    if let Some(mut out) = s.out.take() {
        if let Err(e) = out.flush() {
            log::warn!(
                "trace {}: {e}: the last records are lost",
                s.path.as_deref().unwrap_or(Path::new("?")).display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cid: u16) -> TraceRecord {
        TraceRecord {
            t_us: 1,
            ctrl: 0,
            q: 1,
            cid,
            op: "read".into(),
            nsid: 1,
            slba: Some(0),
            nlb: Some(1),
            bytes: 512,
            segments: vec![],
            status: 0,
            latency_us: 3,
            fault: None,
            dropped: false,
        }
    }

    #[test]
    fn records_reach_the_file_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let t = Tracer::default();
        assert!(!t.on());
        assert!(t.start(None).is_err(), "no file yet");
        t.start(Some(&p)).unwrap();
        t.record(&rec(1));
        t.record(&rec(2));
        t.stop();
        t.record(&rec(3)); // off: dropped
        t.start(None).unwrap(); // resumes, appending
        t.record(&rec(4));
        t.stop();
        let lines: Vec<TraceRecord> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.iter().map(|r| r.cid).collect::<Vec<_>>(), [1, 2, 4]);
    }

    #[test]
    fn full_disk_stops_tracing_not_the_caller() {
        let t = Tracer::default();
        t.start(Some(Path::new("/dev/full"))).unwrap();
        // Enough records to overflow the buffer: the write fails inside record.
        for i in 0..(BUFFER / 100 + 10) {
            t.record(&rec(i as u16));
            if !t.on() {
                break;
            }
        }
        assert!(!t.on(), "tracing stopped on ENOSPC");
        t.record(&rec(0)); // no panic, nothing happens
        t.start(Some(Path::new("/dev/full"))).unwrap();
        t.record(&rec(1));
        t.flush(); // the flush fails: stopped again
        assert!(!t.on());
        t.stop();
    }
}
