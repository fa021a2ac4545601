//! Guest RAM that vanishes under a copy. A client can shrink (ftruncate) the
//! file it passed in DMA_MAP; the next CPU copy into the lost pages raises
//! SIGBUS, whose default action kills the process and every VM it serves.
//!
//! Promise: a copy run through [`guarded`] never kills the process. While a
//! thread is inside it, a SIGBUS on that thread maps an anonymous page over
//! the faulting page (so the copy finishes, moving junk) and the copy
//! reports [`Lost`]; the caller fails the command and marks the client's
//! memory lost. A SIGBUS outside a guarded copy goes to the handler that was
//! there before (Rust's stack-overflow check, or the default: a crash, as a
//! bug should). System calls on such memory (preadv/pwritev) get EFAULT,
//! not a signal. Cost: two thread-local stores per copy.
//!
//! Also the process's mmap/munmap of guest RAM: the one place for the
//! unsafe calls of guest RAM.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

thread_local! {
    /// This thread is inside a guarded copy.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// A SIGBUS hit the guarded copy.
    static FAULTED: Cell<bool> = const { Cell::new(false) };
}

/// The handler that was installed before ours (for faults we do not own).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The copy touched memory the client had taken away.
#[derive(Debug, PartialEq, Eq)]
pub struct Lost;

/// Runs `copy` (CPU accesses to guest RAM) so that a SIGBUS in it is
/// survived and reported as [`Lost`].
pub fn guarded<R>(copy: impl FnOnce() -> R) -> Result<R, Lost> {
    install();
    GUARDED.with(|g| g.set(true));
    FAULTED.with(|f| f.set(false));
    let r = copy();
    GUARDED.with(|g| g.set(false));
    if FAULTED.with(|f| f.replace(false)) {
        return Err(Lost);
    }
    Ok(r)
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if GUARDED.with(|g| g.get()) {
        // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
        let addr = unsafe { (*info).si_addr() } as usize;
        let page = addr & !(page_size() - 1);
        // SAFETY: replaces one page of a guest RAM mapping this thread is
        // copying (no Rust reference points into it) with anonymous memory;
        // mmap is a plain system call, safe in a signal handler.
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            FAULTED.with(|f| f.set(true));
            return; // the faulting access runs again, on the new page
        }
    }
    // Not ours: put the previous handler back; the access faults again and
    // goes to it.
    if let Some(prev) = PREVIOUS.get() {
        // SAFETY: restores a sigaction the kernel gave us.
        unsafe { libc::sigaction(sig, prev, std::ptr::null_mut()) };
    }
}

fn page_size() -> usize {
    4096
}

/// Installs the SIGBUS handler once per process. Hand-written on purpose:
/// the handler must read `si_addr`, map a page over the faulting one and
/// return so the faulting copy resumes; signal-hook's safe API only runs
/// code after the signal (flags, pipes, iterators), never a fix-up that the
/// faulting instruction depends on.
fn install() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: zeroed sigaction is a valid "no handler" value, filled in
        // below; the handler only touches thread-locals and calls mmap.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, &sa, &mut old);
            old
        }
    });
}

/// Maps `len` bytes of `file` from `offset`, shared; writable only if
/// `write` (a read-only DMA map stays read-only in this process too).
pub fn map_shared(file: &File, offset: u64, len: usize, write: bool) -> std::io::Result<*mut u8> {
    install();
    let off = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new shared mapping chosen by the kernel; fd and length
    // checked by the caller, result checked here.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// Maps private anonymous memory over `len` bytes at `ptr` (a mapping made
/// by [`map_shared`]) in one step: accesses in flight land there from now on,
/// never in the file. [`unmap`] still releases the range.
pub fn replace_with_junk(ptr: *mut u8, len: usize) -> std::io::Result<()> {
    // SAFETY: replaces a whole mapping this process made; the DMAs that
    // still hold raw pointers into it keep a mapped (junk) range.
    let p = unsafe {
        libc::mmap(
            ptr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Unmaps a mapping made by [`map_shared`].
pub fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: called once, by the owner of the mapping, when nothing uses it.
    unsafe { libc::munmap(ptr.cast(), len) };
}
