//! Exit statuses a CI can trust: the guest command's own status, 124 for a
//! timeout, 255 for a guest kernel that died under the command, 2 for a
//! refusal before boot (any other error).

use std::fmt;

/// The guest did not finish in time.
pub const TIMEOUT: u8 = 124;
/// The guest kernel panicked or oopsed under the command.
pub const KERNEL_DIED: u8 = 255;
/// Bad input or a refusal before boot (and every other launcher error).
pub const REFUSED: u8 = 2;

/// An error that asks for a particular exit status.
#[derive(Debug)]
pub struct ExitWith {
    /// Exit status of the launcher.
    pub code: u8,
    /// What happened (printed as the error).
    pub msg: String,
}

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ExitWith {}

/// An error with exit status `code`.
pub fn with(code: u8, msg: String) -> anyhow::Error {
    ExitWith { code, msg }.into()
}

/// The exit status an error maps to.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<ExitWith>())
        .map_or(REFUSED, |x| x.code)
}
