//! NVMe wire structures as typed `repr(C)` layouts: every multi-byte field
//! is a little-endian zerocopy type (alignment 1), so the structures have no
//! padding and their byte images are exactly the spec's. Each has a
//! compile-time size check; the tests pin key fields to the spec's offsets.

mod identify;
mod log;
mod registers;

pub use identify::*;
pub use log::*;
pub use registers::*;

pub use zerocopy::little_endian::{U128, U16, U32, U64};
pub use zerocopy::{FromZeros, IntoBytes};

use zerocopy::{FromBytes, Immutable, KnownLayout};

/// A 16-byte completion queue entry.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Cqe {
    /// Command specific result (DW0).
    pub result: U32,
    /// DW1, reserved for the commands this controller implements.
    pub dw1: U32,
    /// Submission queue head pointer.
    pub sq_head: U16,
    /// Submission queue identifier.
    pub sqid: U16,
    /// Command identifier.
    pub cid: U16,
    /// Status field (bits 15:1) and phase tag (bit 0).
    pub status_phase: U16,
}
const _: () = assert!(size_of::<Cqe>() == 16);

/// Fills a fixed-width ASCII field: `s`, truncated or padded with spaces.
pub fn ascii<const N: usize>(s: &str) -> [u8; N] {
    let mut f = [b' '; N];
    let n = s.len().min(N);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

/// Copies `s` into a zero-filled field, keeping the last byte for the NUL
/// (NQNs are NUL terminated, not padded).
pub fn nul_padded<const N: usize>(s: &str) -> [u8; N] {
    let mut f = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

#[cfg(test)]
mod tests;
