//! The module's ioctl ABI: the types bindgen generates from
//! `module/uapi/p2pcopy.h` and its request numbers, declared with
//! vmm-sys-util's ioctl macros (bindgen does not expand `_IOWR`), and the
//! one place the CLI calls into the kernel through them.

/// Bindings generated from the UAPI header, the ABI's one definition.
pub mod uapi {
    #![allow(non_camel_case_types, non_upper_case_globals, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

use std::fs::File;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::{ioctl_ior_nr, ioctl_iowr_nr};

/// The module's character device.
pub const DEV: &str = "/dev/p2pcopy";

ioctl_iowr_nr!(
    P2PCOPY_IOC_COPY,
    uapi::P2PCOPY_IOC_MAGIC,
    1,
    uapi::p2pcopy_req
);
ioctl_iowr_nr!(
    P2PCOPY_IOC_ROUTE,
    uapi::P2PCOPY_IOC_MAGIC,
    2,
    uapi::p2pcopy_route
);
ioctl_ior_nr!(
    P2PCOPY_IOC_STATS,
    uapi::P2PCOPY_IOC_MAGIC,
    3,
    uapi::p2pcopy_stats
);

/// An argument of one of the module's ioctls, with its request number.
pub trait Request {
    /// The request number this argument type goes with.
    fn request() -> std::os::raw::c_ulong;
}

impl Request for uapi::p2pcopy_req {
    fn request() -> std::os::raw::c_ulong {
        P2PCOPY_IOC_COPY()
    }
}

impl Request for uapi::p2pcopy_route {
    fn request() -> std::os::raw::c_ulong {
        P2PCOPY_IOC_ROUTE()
    }
}

impl Request for uapi::p2pcopy_stats {
    fn request() -> std::os::raw::c_ulong {
        P2PCOPY_IOC_STATS()
    }
}

/// Runs the ioctl that goes with `arg` on the module's device; the errno
/// on failure (ENOENT when the module is not loaded).
pub fn ioctl<T: Request>(arg: &mut T) -> Result<(), i32> {
    let f = File::options()
        .read(true)
        .write(true)
        .open(DEV)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
    // SAFETY: T's request number is the header's for exactly this argument
    // type (the Request impls above), and the result is checked.
    let r = unsafe { ioctl_with_mut_ref(&f, T::request(), arg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_encoding() {
        // _IOWR(0xb7, 1, struct of N bytes) = 0xc000_0000 | N << 16 | 0xb7 << 8 | 1
        let n = std::mem::size_of::<uapi::p2pcopy_req>() as u64;
        assert_eq!(P2PCOPY_IOC_COPY(), 0xc000_0000 | n << 16 | 0xb7 << 8 | 1);
        let n = std::mem::size_of::<uapi::p2pcopy_route>() as u64;
        assert_eq!(P2PCOPY_IOC_ROUTE(), 0xc000_0000 | n << 16 | 0xb7 << 8 | 2);
        // _IOR: direction 2 (read) only.
        let n = std::mem::size_of::<uapi::p2pcopy_stats>() as u64;
        assert_eq!(P2PCOPY_IOC_STATS(), 0x8000_0000 | n << 16 | 0xb7 << 8 | 3);
        assert_eq!(
            std::mem::size_of::<uapi::p2pcopy_req>(),
            4 * 2 + 8 * 3 + 4 * 4 + 32 + 8 * 2 + 4 * 4 + 32
        );
    }
}
