//! A thin safe layer over [`crate::sys`]: handles that can only be used while
//! QEMU hands them to a callback, and userdata that lives as long as QEMU.

use crate::sys::{self, Api, MemInfo, PluginId, RawHwaddr, RawInsn, RawTb};
use std::ffi::{c_void, CString};
use std::sync::OnceLock;

static API: OnceLock<Api> = OnceLock::new();

/// Resolves QEMU's functions once; later calls return the same table.
pub fn init() -> Result<&'static Api, String> {
    if let Some(a) = API.get() {
        return Ok(a);
    }
    let a = Api::resolve()?;
    Ok(API.get_or_init(|| a))
}

/// The resolved functions; None before [`init`] (callbacks never run then).
pub fn api() -> Option<&'static Api> {
    API.get()
}

/// Prints a line on QEMU's log output (stderr unless `-D`).
pub fn outs(msg: &str) {
    let Some(a) = api() else { return };
    if let Ok(c) = CString::new(format!("p2pnvme-witness: {msg}\n")) {
        // SAFETY: NUL-terminated string, QEMU copies it.
        unsafe { (a.outs)(c.as_ptr()) }
    }
}

/// `userdata` for callbacks: a pointer QEMU hands back unchanged.
pub fn userdata<T: Sync>(v: &'static T) -> *mut c_void {
    v as *const T as *mut c_void
}

/// A translation block, valid during the translation callback.
pub struct Tb<'a> {
    raw: *mut RawTb,
    api: &'a Api,
}

impl<'a> Tb<'a> {
    /// # Safety
    /// `raw` must be the block QEMU passed to the running translation callback.
    pub unsafe fn from_raw(raw: *mut RawTb, api: &'a Api) -> Self {
        Tb { raw, api }
    }

    /// Instructions in the block.
    pub fn n_insns(&self) -> usize {
        // SAFETY: a live block (from_raw's contract).
        unsafe { (self.api.tb_n_insns)(self.raw) }
    }

    /// Instruction `i` (< n_insns).
    pub fn insn(&self, i: usize) -> Insn<'a> {
        // SAFETY: a live block and an index below n_insns.
        let raw = unsafe { (self.api.tb_get_insn)(self.raw, i) };
        Insn { raw, api: self.api }
    }

    /// Calls `cb` each time the block is executed.
    pub fn on_exec<T: Sync>(&self, cb: sys::VcpuUdataCb, ud: &'static T) {
        // SAFETY: a live block; userdata outlives QEMU.
        unsafe { (self.api.register_vcpu_tb_exec_cb)(self.raw, cb, sys::CB_NO_REGS, userdata(ud)) }
    }
}

/// One instruction of a block being translated.
pub struct Insn<'a> {
    raw: *mut RawInsn,
    api: &'a Api,
}

impl Insn<'_> {
    /// Calls `load` for every load and `store` for every store the
    /// instruction performs (QEMU picks the callback when it translates, so
    /// neither has to ask which direction it is).
    pub fn on_mem<T: Sync>(&self, load: sys::MemCb, store: sys::MemCb, ud: &'static T) {
        if self.raw.is_null() {
            return;
        }
        for (cb, rw) in [(load, sys::MEM_R), (store, sys::MEM_W)] {
            // SAFETY: a live instruction; userdata outlives QEMU.
            unsafe {
                (self.api.register_vcpu_mem_cb)(self.raw, cb, sys::CB_NO_REGS, rw, userdata(ud))
            }
        }
    }
}

/// One memory access, valid during the memory callback.
#[derive(Clone, Copy)]
pub struct MemAccess<'a> {
    pub info: MemInfo,
    pub vaddr: u64,
    pub api: &'a Api,
}

/// Where an access went.
pub struct Phys {
    pub addr: u64,
    /// QEMU emulated it (MMIO) instead of reaching host memory directly.
    pub is_io: bool,
}

impl MemAccess<'_> {
    /// Bytes accessed.
    pub fn size(&self) -> u64 {
        // SAFETY: pure decoding of the info word.
        1u64 << unsafe { (self.api.mem_size_shift)(self.info) }.min(6)
    }

    /// The guest physical address, if QEMU can tell.
    pub fn phys(&self) -> Option<Phys> {
        // SAFETY: called within the memory callback of this access.
        let h: *const RawHwaddr = unsafe { (self.api.get_hwaddr)(self.info, self.vaddr) };
        if h.is_null() {
            return None;
        }
        // SAFETY: a non-null hwaddr QEMU just returned.
        unsafe {
            Some(Phys {
                addr: (self.api.hwaddr_phys_addr)(h),
                is_io: (self.api.hwaddr_is_io)(h),
            })
        }
    }
}

/// A plugin being installed.
pub struct Plugin {
    pub id: PluginId,
    pub api: &'static Api,
}

impl Plugin {
    /// Calls `cb` for every translation block QEMU translates.
    pub fn on_tb_trans<T: Sync>(&self, cb: sys::TbTransCb, ud: &'static T) {
        // SAFETY: our id, a callback of the API-7 signature, lasting userdata.
        unsafe { (self.api.register_vcpu_tb_trans_cb)(self.id, cb, userdata(ud)) }
    }

    /// Unregisters every callback of the plugin, flushes all translated code
    /// (in a safe point where every vCPU is stopped) and then calls `cb`,
    /// which registers callbacks anew. Must run on a vCPU thread: from any
    /// other thread QEMU would skip the flush.
    pub fn reset(&self, cb: sys::SimpleCb) {
        // SAFETY: our id and a callback of the simple signature.
        unsafe { (self.api.reset)(self.id, cb) }
    }

    /// Calls `cb` once as QEMU exits.
    pub fn on_exit<T: Sync>(&self, cb: sys::AtexitCb, ud: &'static T) {
        // SAFETY: as above.
        unsafe { (self.api.register_atexit_cb)(self.id, cb, userdata(ud)) }
    }
}
