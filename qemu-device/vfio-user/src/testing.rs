//! For tests and fuzzing: a fake PCI backend that records every call and
//! panics on any breach of the contract in lib.rs.

use crate::wire::PAGE_SIZE;
use crate::{Backend, DmaMap, Errno, IrqInfo, IrqSet, RegionInfo, RegionMmap, MAX_DATA_XFER};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// Vendor id in the fake's config space.
pub const VENDOR_ID: u16 = 0x1234;
/// Device id in the fake's config space.
pub const DEVICE_ID: u16 = 0x5a5a;
/// BAR0: 4 KiB, trapped.
pub const BAR0_SIZE: u64 = 4096;
/// BAR2: 64 KiB, mmapped from a memfd.
pub const BAR2_SIZE: u64 = 64 * 1024;
/// The vfio-pci index of the config region.
pub const CONFIG_INDEX: u32 = 7;
/// Config space size.
pub const CONFIG_SIZE: u64 = 256;

/// What a recorded SET_IRQS keeps of its eventfds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdSummary {
    /// Vectors given an eventfd.
    pub assigned: usize,
    /// Vectors deassigned.
    pub deassigned: usize,
}

/// A recorded SET_IRQS (eventfds are summarised, not kept).
pub type IrqCall = IrqSet<FdSummary>;

/// One backend call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// region_read.
    Read {
        /// Region.
        index: u32,
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
    },
    /// region_write.
    Write {
        /// Region.
        index: u32,
        /// Offset.
        offset: u64,
        /// The data.
        data: Vec<u8>,
    },
    /// dma_map.
    DmaMap {
        /// iova.
        iova: u64,
        /// Length.
        size: u64,
        /// Whether an fd came with it.
        has_fd: bool,
    },
    /// dma_unmap.
    DmaUnmap(Option<(u64, u64)>),
    /// set_irqs.
    SetIrqs {
        /// Irq index.
        index: u32,
        /// What.
        set: IrqCall,
    },
    /// reset.
    Reset,
    /// disconnected.
    Disconnected,
}

/// A small PCI function: config space with ids, BAR0 trapped, BAR2 mapped
/// from a memfd, INTx only. Panics when the server breaks the contract.
pub struct FakeBackend {
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// If set, every fallible call fails with this errno.
    pub fail_with: Option<Errno>,
    /// The current client's request handle (set by `connected`).
    pub requests: std::sync::Arc<std::sync::Mutex<Option<crate::ClientRequests>>>,
    bar0: Vec<u8>,
    bar2: File,
    config: Vec<u8>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"p2pnvme-fake-bar".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: a fresh fd we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).expect("memfd set_len");
    f
}

impl FakeBackend {
    /// A fresh device.
    pub fn new() -> Self {
        let mut config = vec![0u8; CONFIG_SIZE as usize];
        config[0..2].copy_from_slice(&VENDOR_ID.to_le_bytes());
        config[2..4].copy_from_slice(&DEVICE_ID.to_le_bytes());
        config[0x0b] = 0xff; // class: unassigned
        config[0x18] = 0x0c; // BAR2: 64-bit prefetchable memory
        config[0x3d] = 1; // INTx pin A
        FakeBackend {
            calls: Vec::new(),
            fail_with: None,
            requests: Default::default(),
            bar0: vec![0; BAR0_SIZE as usize],
            bar2: memfd(BAR2_SIZE),
            config,
        }
    }

    fn check_access(&self, index: u32, offset: u64, len: usize) {
        let regions = self.regions();
        let r = regions
            .get(index as usize)
            .unwrap_or_else(|| panic!("contract: region {index} does not exist"));
        assert!(len <= MAX_DATA_XFER, "contract: access of {len} bytes");
        let end = offset.checked_add(len as u64);
        assert!(
            end.is_some_and(|e| e <= r.size),
            "contract: region {index} access {offset:#x}+{len} outside {:#x}",
            r.size
        );
    }

    fn fail(&self) -> Result<(), Errno> {
        self.fail_with.map_or(Ok(()), Err)
    }
}

impl Backend for FakeBackend {
    fn regions(&self) -> Vec<RegionInfo> {
        let absent = || RegionInfo {
            size: 0,
            readable: false,
            writable: false,
            mmap: None,
        };
        let mut v: Vec<RegionInfo> = (0..9).map(|_| absent()).collect();
        v[0] = RegionInfo {
            size: BAR0_SIZE,
            readable: true,
            writable: true,
            mmap: None,
        };
        v[2] = RegionInfo {
            size: BAR2_SIZE,
            readable: true,
            writable: true,
            mmap: Some(RegionMmap {
                fd: self.bar2.as_raw_fd(),
                areas: vec![(0, BAR2_SIZE)],
            }),
        };
        v[CONFIG_INDEX as usize] = RegionInfo {
            size: CONFIG_SIZE,
            readable: true,
            writable: true,
            mmap: None,
        };
        v
    }

    fn irqs(&self) -> Vec<IrqInfo> {
        [1, 0, 0, 0, 0].map(|count| IrqInfo { count }).to_vec()
    }

    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno> {
        self.check_access(index, offset, data.len());
        self.calls.push(Call::Read {
            index,
            offset,
            len: data.len(),
        });
        self.fail()?;
        let o = offset as usize;
        match index {
            0 => data.copy_from_slice(&self.bar0[o..o + data.len()]),
            2 => self
                .bar2
                .read_exact_at(data, offset)
                .map_err(|_| Errno(libc::EIO))?,
            CONFIG_INDEX => data.copy_from_slice(&self.config[o..o + data.len()]),
            _ => unreachable!("size-0 regions cannot pass the checks"),
        }
        Ok(())
    }

    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.check_access(index, offset, data.len());
        self.calls.push(Call::Write {
            index,
            offset,
            data: data.to_vec(),
        });
        self.fail()?;
        let o = offset as usize;
        match index {
            0 => self.bar0[o..o + data.len()].copy_from_slice(data),
            2 => self
                .bar2
                .write_all_at(data, offset)
                .map_err(|_| Errno(libc::EIO))?,
            _ => {} // config writes (BAR sizing, command register) are ignored
        }
        Ok(())
    }

    fn dma_map(&mut self, map: DmaMap) -> Result<(), Errno> {
        assert!(map.size > 0, "contract: DMA_MAP of size 0");
        assert!(
            map.iova.checked_add(map.size).is_some(),
            "contract: iova+size wraps"
        );
        assert!(
            map.iova.is_multiple_of(PAGE_SIZE) && map.size.is_multiple_of(PAGE_SIZE),
            "contract: unaligned map"
        );
        if let Some((f, off)) = &map.fd {
            assert!(
                off.is_multiple_of(PAGE_SIZE),
                "contract: unaligned fd offset"
            );
            let len = f.metadata().expect("fstat").len();
            assert!(
                off.checked_add(map.size).is_some_and(|e| e <= len),
                "contract: fd of {len} bytes shorter than {off:#x}+{:#x}",
                map.size
            );
        }
        self.calls.push(Call::DmaMap {
            iova: map.iova,
            size: map.size,
            has_fd: map.fd.is_some(),
        });
        self.fail()
    }

    fn dma_unmap(&mut self, range: Option<(u64, u64)>) -> Result<(), Errno> {
        if let Some((iova, size)) = range {
            assert!(
                size > 0 && iova.checked_add(size).is_some(),
                "contract: bad unmap"
            );
        }
        self.calls.push(Call::DmaUnmap(range));
        self.fail()
    }

    fn set_irqs(&mut self, index: u32, set: IrqSet) -> Result<(), Errno> {
        let total = self
            .irqs()
            .get(index as usize)
            .unwrap_or_else(|| panic!("contract: irq index {index}"))
            .count;
        let within = |start: u32, n: usize| {
            let end = u64::from(start) + n as u64;
            assert!(
                end <= u64::from(total),
                "contract: vectors {start}+{n} > {total}"
            );
        };
        let (start, n) = match &set {
            IrqSet::Eventfds { start, fds } => (*start, fds.len()),
            IrqSet::DisableAll => (0, 0),
            IrqSet::Mask { start, count, .. } | IrqSet::Trigger { start, count } => {
                (*start, *count as usize)
            }
        };
        within(start, n);
        let call = set.map_fds(|fds| {
            for e in fds.iter().flatten() {
                assert_is_nonblocking_eventfd(e.as_raw_fd());
            }
            let assigned = fds.iter().filter(|f| f.is_some()).count();
            FdSummary {
                assigned,
                deassigned: fds.len() - assigned,
            }
        });
        self.calls.push(Call::SetIrqs { index, set: call });
        self.fail()
    }

    fn reset(&mut self) -> Result<(), Errno> {
        self.calls.push(Call::Reset);
        self.fail()
    }

    fn connected(&mut self, requests: crate::ClientRequests) {
        *self.requests.lock().unwrap() = Some(requests);
    }

    fn disconnected(&mut self) {
        self.calls.push(Call::Disconnected);
    }
}

/// Panics unless `fd` is an eventfd with O_NONBLOCK set.
pub fn assert_is_nonblocking_eventfd(fd: RawFd) {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("readlink");
    assert_eq!(
        link.to_str(),
        Some("anon_inode:[eventfd]"),
        "contract: not an eventfd"
    );
    // SAFETY: F_GETFL on a live fd.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(fl & libc::O_NONBLOCK != 0, "contract: eventfd blocking");
}
