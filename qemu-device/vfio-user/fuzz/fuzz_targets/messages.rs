//! Raw vfio-user messages (with eventfds, memfds and a pipe attached by the
//! input's prefix) against the server and a backend that panics on any
//! breach of the contract. Format: p2pnvme_vfio_user::fuzzing.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2pnvme_vfio_user::fuzzing::run(data);
});
