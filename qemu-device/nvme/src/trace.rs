//! The command trace: one JSON line per completed (or dropped) command
//! (`p2pnvme_docs::trace::TraceRecord`), shared by the controllers of the
//! process. Promises: recording never blocks a controller, whatever the
//! consumer does (a FIFO nobody reads, a slow disk): records go to a
//! bounded buffer that a writer thread of its own drains, and records that
//! do not fit are dropped and counted ([`Tracer::dropped`], reported in the
//! stats document). Off, it costs one relaxed load per command. A write
//! error stops it with one warning, never the device. The file is opened
//! without following a symbolic link (a FIFO is fine).

use p2pnvme_docs::trace::TraceRecord;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Records waiting for the writer, in bytes: beyond this they are dropped.
const BUFFER: usize = 1 << 20;
/// How long `stop` waits for the writer to drain (a stalled consumer must
/// not hold up the caller, e.g. the process exiting on SIGTERM).
const STOP_WAIT: Duration = Duration::from_millis(500);

/// What the writer thread and the recorders share.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    wake: Condvar,
}

#[derive(Default)]
struct PipeState {
    /// Serialized records not yet written.
    buf: Vec<u8>,
    /// No more records: write what is left and end.
    closed: bool,
    /// The writer ended (done or failed).
    finished: bool,
}

/// The current trace file.
struct Sink {
    /// The file the trace goes (or last went) to.
    path: Option<PathBuf>,
    pipe: Option<Arc<Pipe>>,
}

/// The process's trace.
pub struct Tracer {
    on: Arc<AtomicBool>,
    start: Instant,
    sink: Mutex<Sink>,
    dropped: AtomicU64,
}

impl Default for Tracer {
    fn default() -> Tracer {
        Tracer {
            on: Arc::default(),
            start: Instant::now(),
            sink: Mutex::new(Sink {
                path: None,
                pipe: None,
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

/// How a trace file is opened: never through a symbolic link, and without
/// waiting for a FIFO's reader (the writer thread waits instead).
enum Opened {
    File(File),
    /// A FIFO with no reader yet.
    Fifo,
}

fn open(path: &Path, append: bool) -> std::io::Result<Opened> {
    let mut o = OpenOptions::new();
    o.write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    if append {
        o.append(true);
    } else {
        o.truncate(true);
    }
    match o.open(path) {
        Ok(f) => {
            // Blocking writes from here on: only the writer thread waits.
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let fl = libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETFL);
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    libc::F_SETFL,
                    fl & !libc::O_NONBLOCK,
                );
            }
            Ok(Opened::File(f))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(Opened::Fifo),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link: give the path of a regular file or FIFO",
                path.display()
            ),
        )),
        Err(e) => Err(e),
    }
}

impl Tracer {
    /// Tracing (one relaxed load: the hot path's check).
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Records dropped because the consumer did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// µs since the device started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracing to `file` (created or truncated; not through a
    /// symbolic link); without a file, resumes the last one, appending.
    pub fn start(&self, file: Option<&Path>) -> std::io::Result<()> {
        let path = match (file, &self.sink().path) {
            (Some(f), _) => f.to_path_buf(),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no trace file yet: give \"file\"",
                ))
            }
        };
        let opened = open(&path, file.is_none())?;
        self.stop();
        let pipe = Arc::new(Pipe::default());
        let (p, on, at) = (pipe.clone(), self.on.clone(), path.clone());
        std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || write_out(&p, opened, &at, &on))?;
        let mut s = self.sink();
        s.pipe = Some(pipe);
        s.path = Some(path);
        self.on.store(true, Relaxed);
        Ok(())
    }

    /// Stops tracing; what was recorded goes to the file, unless the
    /// consumer stalls: then the rest is dropped after a short wait.
    pub fn stop(&self) {
        let pipe = {
            let mut s = self.sink();
            self.on.store(false, Relaxed);
            s.pipe.take()
        };
        let Some(pipe) = pipe else { return };
        let mut st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        pipe.wake.notify_all();
        let deadline = Instant::now() + STOP_WAIT;
        while !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("trace: the consumer does not read; the last records are lost");
                return;
            }
            st = pipe
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wakes the writer (records reach the file at most this late).
    pub fn flush(&self) {
        if let Some(p) = &self.sink().pipe {
            p.wake.notify_all();
        }
    }

    /// Appends one record; never waits for the consumer.
    pub fn record(&self, r: &TraceRecord) {
        let Some(pipe) = self.sink().pipe.clone() else {
            return;
        };
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let mut st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed || st.buf.len() + line.len() > BUFFER {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(&line);
        drop(st);
        if was_empty {
            pipe.wake.notify_all();
        }
    }
}

/// The writer thread: waits for a FIFO's reader if need be, then writes
/// whatever the recorders buffered until the pipe closes or a write fails.
fn write_out(pipe: &Pipe, opened: Opened, path: &Path, on: &AtomicBool) {
    let result = (|| -> std::io::Result<()> {
        let mut f = match opened {
            Opened::File(f) => f,
            Opened::Fifo => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)?,
        };
        loop {
            let (chunk, last) = {
                let mut st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
                while st.buf.is_empty() && !st.closed {
                    st = pipe.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                (std::mem::take(&mut st.buf), st.closed)
            };
            f.write_all(&chunk)?;
            if last {
                return Ok(());
            }
        }
    })();
    if let Err(e) = result {
        // Tracing stops; the device goes on.
        on.store(false, Relaxed);
        log::warn!(
            "trace {}: {e}: tracing stopped (the device goes on)",
            path.display()
        );
    }
    let mut st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
    st.closed = true;
    st.buf = Vec::new();
    st.finished = true;
    pipe.wake.notify_all();
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

    /// Waits (bounded) for `cond`.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn full_disk_stops_tracing_not_the_caller() {
        let t = Tracer::default();
        t.start(Some(Path::new("/dev/full"))).unwrap();
        t.record(&rec(1));
        assert!(eventually(|| !t.on()), "tracing stopped on ENOSPC");
        t.record(&rec(0)); // no panic, nothing happens
        t.start(Some(Path::new("/dev/full"))).unwrap();
        t.record(&rec(1));
        t.flush();
        assert!(eventually(|| !t.on()), "stopped again");
        t.stop();
    }

    #[test]
    fn a_fifo_nobody_reads_never_blocks_recording_or_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("t.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A reader that opened the FIFO and never reads.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let t = Arc::new(Tracer::default());
        t.start(Some(&fifo)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let (t2, d2) = (t.clone(), done.clone());
        // Far more than the pipe and the buffer hold.
        let n = 3 * BUFFER / 200;
        std::thread::spawn(move || {
            for i in 0..n {
                t2.record(&rec(i as u16));
            }
            t2.stop();
            d2.store(true, Relaxed);
        });
        assert!(
            eventually(|| done.load(Relaxed)),
            "recording or stopping waited for the consumer"
        );
        assert!(t.dropped() > 0, "the records that did not fit are counted");
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("trace.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let t = Tracer::default();
        let e = t.start(Some(&link)).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!t.on());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
}
