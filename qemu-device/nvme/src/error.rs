//! The library's errors.

use std::path::PathBuf;

/// What went wrong starting or querying the device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line or configuration; the message says what to fix.
    #[error("{0}")]
    Config(String),
    /// A system call on a file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The vfio-user server could not listen on a controller's socket.
    #[error("cannot serve {}: {source}", socket.display())]
    Serve {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: p2pnvme_vfio_user::Error,
    },
    /// The stats socket answered something that is not a stats document.
    #[error("{0}")]
    Stats(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An `Error::Io` with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Returns an `Error::Config` built like `format!`.
macro_rules! config_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Config(format!($($arg)*)))
    };
}
pub(crate) use config_bail;
