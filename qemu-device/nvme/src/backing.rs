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
}

impl Namespace {
    /// Opens (or creates, sparse) a backing file of `size` bytes.
    pub fn open(path: &Path, size: u64, lba: u32) -> anyhow::Result<Namespace> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open namespace file {}: {e}", path.display()))?;
        let len = file.metadata()?.len();
        if len == 0 {
            file.set_len(size)?;
        } else if len < size {
            anyhow::bail!(
                "namespace file {} has {len} bytes, less than size={size}: pick a smaller size or a new file",
                path.display()
            );
        }
        Ok(Namespace {
            file,
            lba_shift: lba.trailing_zeros(),
            nlbas: size >> lba.trailing_zeros(),
        })
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }

    pub fn flush(&self) -> io::Result<()> {
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
