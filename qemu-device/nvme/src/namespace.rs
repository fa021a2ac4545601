//! Namespaces backed by raw files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub struct Namespace {
    pub file: File,
    pub lba_shift: u32,
    pub nlbas: u64,
    /// fdatasync calls so far (durability is observable in tests).
    pub flushes: std::sync::atomic::AtomicU64,
}

impl Namespace {
    /// Opens (or creates, sparse) a backing file of `size` bytes.
    pub fn open(path: &Path, size: u64, lba: u32) -> crate::error::Result<Namespace> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(crate::error::io(format!(
                "cannot open namespace file {}",
                path.display()
            )))?;
        let what = || format!("namespace file {}", path.display());
        let len = file.metadata().map_err(crate::error::io(what()))?.len();
        if len == 0 {
            file.set_len(size).map_err(crate::error::io(what()))?;
        } else if len < size {
            crate::error::config_bail!(
                "namespace file {} has {len} bytes, less than size={size}: pick a smaller size or a new file",
                path.display()
            );
        }
        Ok(Namespace {
            file,
            lba_shift: lba.trailing_zeros(),
            nlbas: size >> lba.trailing_zeros(),
            flushes: Default::default(),
        })
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }

    /// Reads file bytes at `off` straight into the memory `iov` describes.
    ///
    /// # Safety
    /// Every iovec must describe writable memory that stays mapped during the call.
    pub unsafe fn read_vectored_at(&self, iov: &mut [libc::iovec], off: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: the caller vouches for the memory; the fd is ours.
        vectored(iov, off, |v, n, o| unsafe { libc::preadv(fd, v, n, o) })
    }

    /// Writes the memory `iov` describes to the file at `off`.
    ///
    /// # Safety
    /// Every iovec must describe readable memory that stays mapped during the call.
    pub unsafe fn write_vectored_at(&self, iov: &mut [libc::iovec], off: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: as in read_vectored_at.
        vectored(iov, off, |v, n, o| unsafe { libc::pwritev(fd, v, n, o) })
    }

    pub fn flush(&self) -> io::Result<()> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.file.sync_data()
    }

    /// Deallocates a range: the file keeps its size, reads return zeros.
    pub fn punch_hole(&self, off: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on our own fd.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        if self.punch_hole(off, len).is_ok() {
            return Ok(());
        }
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], off + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Copies within the file, in the kernel where the filesystem allows.
    pub fn copy_within(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let (mut s, mut d, mut left) = (src as i64, dst as i64, len as usize);
        while left > 0 {
            // SAFETY: copy_file_range on our own fd with valid offsets.
            let n = unsafe { libc::copy_file_range(fd, &mut s, fd, &mut d, left, 0) };
            if n <= 0 {
                // Overlapping ranges or no support: fall back to a buffer.
                let mut buf = vec![0u8; left];
                self.read_at(&mut buf, s as u64)?;
                return self.write_at(&buf, d as u64);
            }
            left -= n as usize;
        }
        Ok(())
    }
}

/// Repeats a positioned vectored call until every iovec is done: at most
/// IOV_MAX vectors a call, resuming after short transfers and signals.
fn vectored(
    iov: &mut [libc::iovec],
    mut off: u64,
    call: impl Fn(*const libc::iovec, libc::c_int, libc::off_t) -> isize,
) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    let mut at = 0;
    loop {
        while at < iov.len() && iov[at].iov_len == 0 {
            at += 1;
        }
        if at == iov.len() {
            return Ok(());
        }
        let n = (iov.len() - at).min(IOV_MAX);
        let done = call(iov[at..].as_ptr(), n as libc::c_int, off as libc::off_t);
        if done < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if done == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        off += done as u64;
        let mut left = done as usize;
        while left > 0 {
            let v = &mut iov[at];
            let step = left.min(v.iov_len);
            // Pointer arithmetic only: the memory itself is never touched here.
            v.iov_base = v.iov_base.wrapping_byte_add(step);
            v.iov_len -= step;
            left -= step;
            if v.iov_len == 0 {
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_io_resumes_after_short_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::open(&dir.path().join("ns"), 1 << 20, 512).unwrap();
        let mut a = vec![1u8; 3000];
        let mut b = vec![2u8; 0];
        let mut c = vec![3u8; 5000];
        let mut iov: Vec<libc::iovec> = [&mut a, &mut b, &mut c]
            .iter_mut()
            .map(|v| libc::iovec {
                iov_base: v.as_mut_ptr().cast(),
                iov_len: v.len(),
            })
            .collect();
        // SAFETY: the vectors outlive the call.
        unsafe { ns.write_vectored_at(&mut iov, 4096) }.unwrap();
        let mut back = vec![0u8; 8000];
        ns.read_at(&mut back, 4096).unwrap();
        assert!(back[..3000].iter().all(|&x| x == 1));
        assert!(back[3000..].iter().all(|&x| x == 3));
        // A call that moves one byte at a time still finishes the whole list.
        let mut out = [0u8; 7];
        let mut iov = [
            libc::iovec {
                iov_base: out.as_mut_ptr().cast(),
                iov_len: 3,
            },
            libc::iovec {
                iov_base: out[3..].as_mut_ptr().cast(),
                iov_len: 4,
            },
        ];
        let calls = std::cell::Cell::new(0);
        vectored(&mut iov, 0, |v, _, _| {
            calls.set(calls.get() + 1);
            // SAFETY: v points at a live iovec whose base is inside `out`.
            unsafe { *((*v).iov_base as *mut u8) = calls.get() as u8 };
            1
        })
        .unwrap();
        assert_eq!(calls.get(), 7);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7]);
        // End of file is an error, not a loop.
        let mut iov = [libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: 7,
        }];
        assert!(vectored(&mut iov, 0, |_, _, _| 0).is_err());
    }
}
