//! The socket and the serve loop: one client at a time, reconnects, stop.

use crate::conn::{Conn, Defect, Received};
use crate::handle;
use crate::requests::ClientRequests;
use crate::wire::{cmd, flags, Header};
use crate::Backend;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL_MS: i32 = 100;

/// Errors of the listening socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another live process accepts connections on the path.
    #[error("socket {0} is busy: another process serves it; pick another path")]
    Busy(PathBuf),
    /// A stale socket file could not be removed.
    #[error("cannot remove stale socket {path}: {source}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// bind/listen failed.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed the socket (perhaps in the middle of a message).
    Closed,
    /// The server's stop flag was raised.
    Stopped,
    /// A socket error or a header the stream cannot recover from.
    Error(String),
}

/// What one connection did: for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Requests received per command number (index 0: unknown numbers).
    pub requests: [u64; cmd::COUNT],
    /// Requests answered with an error (or dropped, for NO_REPLY ones).
    pub refused: u64,
    /// How it ended.
    pub end: End,
}

/// A handle that stops [`Server::serve`] (and its connection) within
/// about 100 ms.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the server to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A vfio-user server listening on a unix socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Listens on `path`. A socket file nobody answers on (left by a dead
    /// process) is replaced; one a live process serves is refused.
    pub fn bind(path: impl AsRef<Path>) -> Result<Server, Error> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(Error::Busy(path));
            }
            std::fs::remove_file(&path).map_err(|source| Error::RemoveStale {
                path: path.clone(),
                source,
            })?;
        }
        let listener = UnixListener::bind(&path).map_err(|source| Error::Listen {
            path: path.clone(),
            source,
        })?;
        Ok(Server {
            listener,
            path,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle to stop [`Server::serve`] from another thread or a signal
    /// handler's flag watcher.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Serves clients one after the other until stopped. Each client's
    /// messages are handled until it disconnects; then
    /// `backend.disconnected()` runs and the next client is accepted.
    pub fn serve<B: Backend + ?Sized>(&self, backend: &mut B) -> Result<(), Error> {
        while let Some(s) = self.serve_one(backend)? {
            log::info!(
                "vfio-user {}: client gone ({:?}); {} requests, {} refused",
                self.path.display(),
                s.end,
                s.requests.iter().sum::<u64>(),
                s.refused
            );
            if s.end == End::Stopped {
                break;
            }
        }
        Ok(())
    }

    /// Waits for one client and serves it until it goes (then
    /// `backend.disconnected()` has run); `None` if stopped while waiting.
    pub fn serve_one<B: Backend + ?Sized>(
        &self,
        backend: &mut B,
    ) -> Result<Option<Summary>, Error> {
        Ok(self
            .accept()?
            .map(|stream| serve_connection_until(stream, backend, &self.stop)))
    }

    /// Waits for the next client; `None` once stopped. A failed accept
    /// (out of fds or memory, a client gone before it was taken) is
    /// logged and retried: the socket keeps listening for the next client.
    fn accept(&self) -> Result<Option<UnixStream>, Error> {
        let mut failures = 0u64;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let mut p = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ACCEPT_POLL_MS) };
            if r <= 0 {
                continue; // timeout, EINTR, or a transient poll failure
            }
            match self.listener.accept() {
                Ok((s, _)) => return Ok(Some(s)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        log::warn!(
                            "vfio-user {}: accepting a client failed ({e}); retrying ({failures} so far)",
                            self.path.display()
                        );
                    }
                    // Out of fds, the pending client stays queued: wait
                    // rather than spin.
                    std::thread::sleep(std::time::Duration::from_millis(ACCEPT_POLL_MS as u64));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves one client on a connected stream (e.g. one end of a socketpair)
/// until it disconnects, then calls `backend.disconnected()`.
pub fn serve_connection<B: Backend + ?Sized>(stream: UnixStream, backend: &mut B) -> Summary {
    serve_connection_until(stream, backend, &AtomicBool::new(false))
}

/// [`serve_connection`] that also returns (within about 100 ms) once `stop`
/// is raised.
pub fn serve_connection_until<B: Backend + ?Sized>(
    stream: UnixStream,
    backend: &mut B,
    stop: &AtomicBool,
) -> Summary {
    let mut summary = Summary {
        requests: [0; cmd::COUNT],
        refused: 0,
        end: End::Closed,
    };
    summary.end = match Conn::new(stream, stop) {
        Ok(mut conn) => {
            let requests = ClientRequests::new(conn.writer());
            backend.connected(requests.clone());
            let end = run(&mut conn, backend, &requests, &mut summary);
            requests.close();
            end
        }
        Err(e) => End::Error(e.to_string()),
    };
    backend.disconnected();
    summary
}

fn run<B: Backend + ?Sized>(
    conn: &mut Conn,
    backend: &mut B,
    requests: &ClientRequests,
    summary: &mut Summary,
) -> End {
    loop {
        let msg = match conn.receive() {
            Ok(Received::Message(m)) => m,
            Ok(Received::Closed) => return End::Closed,
            Ok(Received::Stopped) => return End::Stopped,
            Err(e) => {
                log::debug!("vfio-user: closing the connection: {e}");
                return End::Error(e.to_string());
            }
        };
        let h = msg.header;
        let slot = usize::from(h.command);
        summary.requests[if slot < cmd::COUNT { slot } else { 0 }] += 1;
        if h.flags & flags::TYPE_MASK != flags::REQUEST {
            // A reply to one of our DMA_READ/DMA_WRITE requests goes to the
            // thread waiting for it; anything else (late, unasked, another
            // type) is dropped: answering it would confuse the client.
            let ours = h.flags & flags::TYPE_MASK == flags::REPLY
                && msg.defect.is_none()
                && requests.answer(h, msg.payload);
            if !ours {
                log::debug!(
                    "vfio-user: dropped message {} command {}: type {:#x} is not a request nor an awaited reply",
                    h.msg_id,
                    h.command,
                    h.flags & flags::TYPE_MASK
                );
                summary.refused += 1;
            }
            continue;
        }
        let result = match msg.defect {
            Some(Defect::TooLarge) => Err(crate::validate::Refusal {
                errno: libc::E2BIG,
                why: format!("message_size {} above the maximum", h.message_size),
            }),
            Some(Defect::TooManyFds) => Err(crate::validate::Refusal {
                errno: libc::EINVAL,
                why: "more fds than max_msg_fds".into(),
            }),
            None => handle::request(backend, h.command, &msg.payload, msg.fds),
        };
        let no_reply = h.flags & flags::NO_REPLY != 0;
        let sent = match result {
            Ok(reply) if !no_reply => {
                let fds: Vec<_> = reply.fd.into_iter().collect();
                conn.send(
                    &Header::reply_to(&h, reply.payload.len()),
                    &reply.payload,
                    &fds,
                )
            }
            Ok(_) => Ok(()),
            Err(r) => {
                summary.refused += 1;
                log::debug!(
                    "vfio-user: refused message {} command {} with errno {}: {}",
                    h.msg_id,
                    h.command,
                    r.errno,
                    r.why
                );
                if no_reply {
                    Ok(())
                } else {
                    conn.send(&Header::error_to(&h, r.errno), &[], &[])
                }
            }
        };
        if let Err(e) = sent {
            log::debug!("vfio-user: cannot reply: {e}");
            return End::Error(e.to_string());
        }
    }
}
