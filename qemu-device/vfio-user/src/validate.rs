//! Checks of client requests against the contract in lib.rs, before the
//! backend sees them. Every value from the socket is untrusted: checked
//! arithmetic, no loop or allocation sized by an unchecked count.

use crate::wire::{dma, irq, DmaMapMsg, DmaUnmapMsg, IrqSetMsg, PAGE_SIZE};
use crate::{DmaMap, IrqInfo, IrqSet, RegionInfo, MAX_DATA_XFER};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use vmm_sys_util::eventfd::EventFd;

/// A refused request: the errno for the reply and why, for the log.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub errno: i32,
    pub why: String,
}

pub(crate) fn refuse<T>(errno: i32, why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        errno,
        why: why.into(),
    })
}

/// A region read or write: region exists, has the access right, and
/// `offset + count` fits in it without wrapping.
pub(crate) fn region_access(
    regions: &[RegionInfo],
    index: u32,
    offset: u64,
    count: u32,
    write: bool,
) -> Result<(), Refusal> {
    let Some(r) = regions.get(index as usize) else {
        return refuse(libc::EINVAL, format!("region {index} does not exist"));
    };
    if count == 0 {
        return refuse(libc::EINVAL, "zero-length region access");
    }
    if count as usize > MAX_DATA_XFER {
        return refuse(
            libc::EINVAL,
            format!("count {count} above max_data_xfer_size {MAX_DATA_XFER}"),
        );
    }
    let end = offset.checked_add(u64::from(count));
    if end.is_none_or(|e| e > r.size) {
        return refuse(
            libc::EINVAL,
            format!(
                "region {index} access {offset:#x}+{count} outside its {:#x} bytes",
                r.size
            ),
        );
    }
    if write && !r.writable || !write && !r.readable {
        let what = if write { "writable" } else { "readable" };
        return refuse(libc::EACCES, format!("region {index} is not {what}"));
    }
    Ok(())
}

fn page_aligned(v: u64) -> bool {
    v.is_multiple_of(PAGE_SIZE)
}

/// DMA_MAP: flags known, size non-zero, iova+size without overflow, page
/// aligned, and the fd (if any) a file at least `offset + size` long.
pub(crate) fn dma_map(m: &DmaMapMsg, mut fds: Vec<OwnedFd>) -> Result<DmaMap, Refusal> {
    if m.flags & !(dma::READ | dma::WRITE) != 0 {
        return refuse(
            libc::EINVAL,
            format!("unknown DMA_MAP flags {:#x}", m.flags),
        );
    }
    if fds.len() > 1 {
        return refuse(libc::EINVAL, format!("DMA_MAP with {} fds", fds.len()));
    }
    if m.size == 0 {
        return refuse(libc::EINVAL, "DMA_MAP of size 0");
    }
    if m.iova.checked_add(m.size).is_none() {
        return refuse(
            libc::EINVAL,
            format!("DMA_MAP iova {:#x} + size {:#x} overflows", m.iova, m.size),
        );
    }
    if !page_aligned(m.iova) || !page_aligned(m.size) || !page_aligned(m.offset) {
        return refuse(
            libc::EINVAL,
            format!(
                "DMA_MAP iova {:#x} size {:#x} offset {:#x} not page aligned",
                m.iova, m.size, m.offset
            ),
        );
    }
    let fd = match fds.pop() {
        None => None,
        Some(fd) => {
            let file = File::from(fd);
            let meta = match file.metadata() {
                Ok(meta) => meta,
                Err(e) => return refuse(libc::EINVAL, format!("DMA_MAP fd: fstat failed: {e}")),
            };
            if !meta.file_type().is_file() {
                return refuse(libc::EINVAL, "DMA_MAP fd is not a regular file or memfd");
            }
            let end = m.offset.checked_add(m.size);
            if end.is_none_or(|e| e > meta.len()) {
                return refuse(
                    libc::EINVAL,
                    format!(
                        "DMA_MAP fd is {:#x} bytes, shorter than offset {:#x} + size {:#x}",
                        meta.len(),
                        m.offset,
                        m.size
                    ),
                );
            }
            Some((file, m.offset))
        }
    };
    Ok(DmaMap {
        iova: m.iova,
        size: m.size,
        readable: m.flags & dma::READ != 0,
        writable: m.flags & dma::WRITE != 0,
        fd,
    })
}

/// DMA_UNMAP: `None` for "unmap all" (flag bit 1, iova and size 0),
/// otherwise a non-empty, aligned, non-wrapping range.
pub(crate) fn dma_unmap(m: &DmaUnmapMsg) -> Result<Option<(u64, u64)>, Refusal> {
    if m.flags & dma::UNMAP_GET_DIRTY_BITMAP != 0 {
        return refuse(libc::ENOTSUP, "DMA_UNMAP dirty bitmap not supported");
    }
    if m.flags & !dma::UNMAP_ALL != 0 {
        return refuse(
            libc::EINVAL,
            format!("unknown DMA_UNMAP flags {:#x}", m.flags),
        );
    }
    if m.flags & dma::UNMAP_ALL != 0 {
        if m.iova != 0 || m.size != 0 {
            return refuse(libc::EINVAL, "DMA_UNMAP all with a non-zero range");
        }
        return Ok(None);
    }
    if m.size == 0 || m.iova.checked_add(m.size).is_none() {
        return refuse(
            libc::EINVAL,
            format!("DMA_UNMAP range {:#x}+{:#x} empty or wraps", m.iova, m.size),
        );
    }
    if !page_aligned(m.iova) || !page_aligned(m.size) {
        return refuse(libc::EINVAL, "DMA_UNMAP range not page aligned");
    }
    Ok(Some((m.iova, m.size)))
}

/// DEVICE_SET_IRQS: one data type and one action, a valid index, `start +
/// count` within the index (checked), fds consistent with the count, and
/// every fd an eventfd (made non-blocking).
pub(crate) fn set_irqs(
    m: &IrqSetMsg,
    irqs: &[IrqInfo],
    fds: Vec<OwnedFd>,
) -> Result<IrqSet, Refusal> {
    let data = m.flags & irq::DATA_MASK;
    let action = m.flags & irq::ACTION_MASK_ALL;
    if m.flags & !(irq::DATA_MASK | irq::ACTION_MASK_ALL) != 0
        || data.count_ones() != 1
        || action.count_ones() != 1
    {
        return refuse(
            libc::EINVAL,
            format!("SET_IRQS flags {:#x} invalid", m.flags),
        );
    }
    let Some(info) = irqs.get(m.index as usize).filter(|i| i.count > 0) else {
        return refuse(libc::EINVAL, format!("irq index {} not supported", m.index));
    };
    if data == irq::DATA_EVENTFD && action != irq::ACTION_TRIGGER
        || data != irq::DATA_EVENTFD && !fds.is_empty()
    {
        return refuse(
            libc::EINVAL,
            format!("SET_IRQS flags {:#x} with {} fds", m.flags, fds.len()),
        );
    }
    if data == irq::DATA_BOOL {
        return refuse(libc::ENOTSUP, "SET_IRQS DATA_BOOL not supported");
    }
    if data == irq::DATA_NONE && action == irq::ACTION_TRIGGER && m.count == 0 {
        return Ok(IrqSet::DisableAll);
    }
    if m.count == 0 {
        return refuse(libc::EINVAL, "SET_IRQS with count 0");
    }
    let end = m.start.checked_add(m.count);
    if end.is_none_or(|e| e > info.count) {
        return refuse(
            libc::EINVAL,
            format!(
                "SET_IRQS vectors {}+{} outside index {} ({} vectors)",
                m.start, m.count, m.index, info.count
            ),
        );
    }
    match (data, action) {
        (irq::DATA_EVENTFD, _) => {
            if fds.is_empty() {
                // A count and no fds: deassign those vectors.
                let n = m.count as usize; // <= info.count, bounded by the backend
                return Ok(IrqSet::Eventfds {
                    start: m.start,
                    fds: (0..n).map(|_| None).collect(),
                });
            }
            if fds.len() != m.count as usize {
                return refuse(
                    libc::EINVAL,
                    format!("SET_IRQS count {} with {} fds", m.count, fds.len()),
                );
            }
            let mut out = Vec::with_capacity(fds.len());
            for fd in fds {
                out.push(Some(eventfd(fd)?));
            }
            Ok(IrqSet::Eventfds {
                start: m.start,
                fds: out,
            })
        }
        (_, irq::ACTION_TRIGGER) => Ok(IrqSet::Trigger {
            start: m.start,
            count: m.count,
        }),
        (_, a) => Ok(IrqSet::Mask {
            start: m.start,
            count: m.count,
            masked: a == irq::ACTION_MASK,
        }),
    }
}

/// An fd accepted as an interrupt only if the kernel says it is an eventfd;
/// it is set O_NONBLOCK so signalling can never block the device.
pub(crate) fn eventfd(fd: OwnedFd) -> Result<EventFd, Refusal> {
    let raw = fd.as_raw_fd();
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}"));
    if !link.is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]") {
        return refuse(
            libc::EINVAL,
            format!("interrupt fd {raw} is not an eventfd"),
        );
    }
    // SAFETY: fcntl on an fd this function owns.
    let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return refuse(
            libc::EINVAL,
            "cannot make the interrupt eventfd non-blocking",
        );
    }
    // SAFETY: ownership of the fd moves into the EventFd.
    Ok(unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) })
}
