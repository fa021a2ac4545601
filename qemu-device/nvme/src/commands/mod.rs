//! Command execution: admin commands (queues, identify, features, log
//! pages) and I/O commands, as methods of the controller.

pub mod admin;
pub mod features;
mod identify;
pub mod io;
pub mod log_pages;
pub mod table;

/// Copies `v` into `b` at `off` (wire structures built in place).
pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

pub(crate) fn ascii(b: &mut [u8], off: usize, len: usize, s: &str) {
    let mut f = vec![b' '; len];
    let n = s.len().min(len);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    put(b, off, &f);
}
