//! The part of QEMU 11.1's TCG plugin ABI (API version 7) the witness uses,
//! written from the facts verified against the QEMU 11.1.3 binary of the
//! toolchain root filesystem: the
//! signatures below were checked by disassembling QEMU's exported
//! `qemu_plugin_register_*` functions and by a test plugin.
//!
//! QEMU's functions are looked up in the running QEMU with `dlsym` at install
//! time instead of being linked: the crate then also builds as an ordinary
//! library (unit tests) and a missing symbol is a one-line error, not a
//! failed `dlopen`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// A plugin's handle, given to `qemu_plugin_install`.
pub type PluginId = u64;
/// Packed description of one memory access (size, direction, ...).
pub type MemInfo = u32;

/// `struct qemu_plugin_tb`: a translation block being translated.
#[repr(C)]
pub struct RawTb {
    _opaque: [u8; 0],
}
/// `struct qemu_plugin_insn`: one instruction of a translation block.
#[repr(C)]
pub struct RawInsn {
    _opaque: [u8; 0],
}
/// `struct qemu_plugin_hwaddr`: where an access went (system emulation).
#[repr(C)]
pub struct RawHwaddr {
    _opaque: [u8; 0],
}
/// `qemu_info_t` (system emulation's member of the union only).
#[repr(C)]
pub struct QemuInfo {
    pub target_name: *const c_char,
    pub version_min: c_int,
    pub version_cur: c_int,
    pub system_emulation: bool,
    pub smp_vcpus: c_int,
    pub max_vcpus: c_int,
}

/// `enum qemu_plugin_cb_flags`: the callback reads no guest registers.
pub const CB_NO_REGS: c_int = 0;
/// `enum qemu_plugin_mem_rw`: loads only.
pub const MEM_R: c_int = 1;
/// `enum qemu_plugin_mem_rw`: stores only.
pub const MEM_W: c_int = 2;

/// `cb(tb, userdata)` (API 7: no plugin id).
pub type TbTransCb = unsafe extern "C" fn(*mut RawTb, *mut c_void);
/// `cb(userdata)`.
pub type AtexitCb = unsafe extern "C" fn(*mut c_void);
/// `cb(id)`: `qemu_plugin_simple_cb_t`.
pub type SimpleCb = unsafe extern "C" fn(PluginId);
/// `cb(vcpu_index, userdata)`.
pub type VcpuUdataCb = unsafe extern "C" fn(c_uint, *mut c_void);
/// `cb(vcpu_index, info, vaddr, userdata)`.
pub type MemCb = unsafe extern "C" fn(c_uint, MemInfo, u64, *mut c_void);

fn symbol(name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        return Err(format!(
            "QEMU does not export {} (not QEMU 11.1 with TCG plugins?)",
            name.to_string_lossy()
        ));
    }
    Ok(p)
}

/// Declares [`Api`] (one field per function, named after it without the
/// `qemu_plugin_` prefix) and its resolver.
macro_rules! api {
    ($($field:ident: $ty:ty,)*) => {
        /// QEMU's exported plugin functions, resolved in the running QEMU.
        pub struct Api {
            $(pub $field: $ty,)*
        }

        impl Api {
            /// Looks every function up in the running QEMU.
            pub fn resolve() -> Result<Api, String> {
                Ok(Api {
                    $(
                        // SAFETY: the symbol is QEMU's function of that name,
                        // whose signature (API 7) is the field's type.
                        $field: unsafe {
                            std::mem::transmute::<*mut c_void, $ty>(symbol(
                                CStr::from_bytes_with_nul(
                                    concat!("qemu_plugin_", stringify!($field), "\0").as_bytes(),
                                )
                                .map_err(|e| e.to_string())?,
                            )?)
                        },
                    )*
                })
            }
        }
    };
}

api! {
    register_vcpu_tb_trans_cb: unsafe extern "C" fn(PluginId, TbTransCb, *mut c_void),
    register_atexit_cb: unsafe extern "C" fn(PluginId, AtexitCb, *mut c_void),
    register_vcpu_mem_cb: unsafe extern "C" fn(*mut RawInsn, MemCb, c_int, c_int, *mut c_void),
    register_vcpu_tb_exec_cb: unsafe extern "C" fn(*mut RawTb, VcpuUdataCb, c_int, *mut c_void),
    tb_n_insns: unsafe extern "C" fn(*const RawTb) -> usize,
    tb_get_insn: unsafe extern "C" fn(*const RawTb, usize) -> *mut RawInsn,
    get_hwaddr: unsafe extern "C" fn(MemInfo, u64) -> *mut RawHwaddr,
    hwaddr_is_io: unsafe extern "C" fn(*const RawHwaddr) -> bool,
    hwaddr_phys_addr: unsafe extern "C" fn(*const RawHwaddr) -> u64,
    mem_size_shift: unsafe extern "C" fn(MemInfo) -> c_uint,
    outs: unsafe extern "C" fn(*const c_char),
    reset: unsafe extern "C" fn(PluginId, SimpleCb),
}
