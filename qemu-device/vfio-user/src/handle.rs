//! One request: parse its fixed part, validate, call the backend, build the
//! reply payload.

use crate::validate::{self, refuse, Refusal};
use crate::wire::{
    cmd, info, DeviceInfo, DmaMapMsg, DmaUnmapMsg, IrqInfoMsg, IrqSetMsg, RegionAccess,
    RegionInfoMsg, SparseArea, SparseMmapCap, Version, MAX_MSG_FDS, PAGE_SIZE,
};
use crate::{Backend, Errno, RegionInfo, MAX_DATA_XFER};
use std::os::fd::{OwnedFd, RawFd};

/// Most sparse-mmap areas listed for one region (keeps replies small).
const MAX_AREAS: usize = 16;

/// A successful reply: payload after the header, and an fd to pass.
pub(crate) struct Reply {
    pub payload: Vec<u8>,
    pub fd: Option<RawFd>,
}

impl Reply {
    fn empty() -> Self {
        Reply {
            payload: Vec::new(),
            fd: None,
        }
    }
    fn bytes(payload: Vec<u8>) -> Self {
        Reply { payload, fd: None }
    }
}

/// A backend error as a reply errno (never 0: the client would take it for
/// success).
fn backend_errno(e: Errno) -> Refusal {
    let errno = if e.0 > 0 { e.0 } else { libc::EIO };
    Refusal {
        errno,
        why: format!("backend refused with errno {}", e.0),
    }
}

/// Parses the fixed part `T` of a request whose first field is `argsz`,
/// which must cover the fixed part.
fn parse<T>(payload: &[u8], what: &str, p: fn(&[u8]) -> Option<T>) -> Result<T, Refusal> {
    match p(payload) {
        Some(v) => Ok(v),
        None => refuse(
            libc::EINVAL,
            format!("{what}: payload of {} bytes too short", payload.len()),
        ),
    }
}

fn argsz_covers(argsz: u32, size: usize, what: &str) -> Result<(), Refusal> {
    if (argsz as usize) < size {
        return refuse(libc::EINVAL, format!("{what}: argsz {argsz} below {size}"));
    }
    Ok(())
}

fn no_fds(fds: &[OwnedFd], what: &str) -> Result<(), Refusal> {
    if !fds.is_empty() {
        return refuse(
            libc::EINVAL,
            format!("{what} carries {} unexpected fds", fds.len()),
        );
    }
    Ok(())
}

/// Handles one request with its (already bounded) payload and fds.
pub(crate) fn request<B: Backend + ?Sized>(
    backend: &mut B,
    command: u16,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Reply, Refusal> {
    if command != cmd::DMA_MAP && command != cmd::DEVICE_SET_IRQS {
        no_fds(&fds, &format!("command {command}"))?;
    }
    match command {
        cmd::VERSION => version(payload).map(Reply::bytes),
        cmd::DMA_MAP => {
            let m = parse(payload, "DMA_MAP", DmaMapMsg::parse)?;
            argsz_covers(m.argsz, DmaMapMsg::SIZE, "DMA_MAP")?;
            let map = validate::dma_map(&m, fds)?;
            backend.dma_map(map).map_err(backend_errno)?;
            Ok(Reply::empty())
        }
        cmd::DMA_UNMAP => {
            let m = parse(payload, "DMA_UNMAP", DmaUnmapMsg::parse)?;
            argsz_covers(m.argsz, DmaUnmapMsg::SIZE, "DMA_UNMAP")?;
            let range = validate::dma_unmap(&m)?;
            backend.dma_unmap(range).map_err(backend_errno)?;
            let mut out = Vec::new();
            DmaUnmapMsg {
                argsz: DmaUnmapMsg::SIZE as u32,
                ..m
            }
            .write(&mut out);
            Ok(Reply::bytes(out))
        }
        cmd::DEVICE_GET_INFO => {
            let m = parse(payload, "DEVICE_GET_INFO", DeviceInfo::parse)?;
            argsz_covers(m.argsz, DeviceInfo::SIZE, "DEVICE_GET_INFO")?;
            let mut out = Vec::new();
            DeviceInfo {
                argsz: DeviceInfo::SIZE as u32,
                flags: info::DEVICE_RESET | info::DEVICE_PCI,
                num_regions: len_u32(backend.regions().len()),
                num_irqs: len_u32(backend.irqs().len()),
            }
            .write(&mut out);
            Ok(Reply::bytes(out))
        }
        cmd::DEVICE_GET_REGION_INFO => {
            let m = parse(payload, "DEVICE_GET_REGION_INFO", RegionInfoMsg::parse)?;
            argsz_covers(m.argsz, RegionInfoMsg::SIZE, "DEVICE_GET_REGION_INFO")?;
            let regions = backend.regions();
            let Some(r) = regions.get(m.index as usize) else {
                return refuse(libc::EINVAL, format!("region {} does not exist", m.index));
            };
            Ok(region_info(m.index, m.argsz, r))
        }
        cmd::DEVICE_GET_IRQ_INFO => {
            let m = parse(payload, "DEVICE_GET_IRQ_INFO", IrqInfoMsg::parse)?;
            argsz_covers(m.argsz, IrqInfoMsg::SIZE, "DEVICE_GET_IRQ_INFO")?;
            let irqs = backend.irqs();
            let Some(i) = irqs.get(m.index as usize) else {
                return refuse(
                    libc::EINVAL,
                    format!("irq index {} does not exist", m.index),
                );
            };
            let flags = if m.index == 0 {
                info::IRQ_EVENTFD | info::IRQ_MASKABLE | info::IRQ_AUTOMASKED
            } else {
                info::IRQ_EVENTFD | info::IRQ_NORESIZE
            };
            let mut out = Vec::new();
            IrqInfoMsg {
                argsz: IrqInfoMsg::SIZE as u32,
                flags,
                index: m.index,
                count: i.count,
            }
            .write(&mut out);
            Ok(Reply::bytes(out))
        }
        cmd::DEVICE_SET_IRQS => {
            let m = parse(payload, "DEVICE_SET_IRQS", IrqSetMsg::parse)?;
            argsz_covers(m.argsz, IrqSetMsg::SIZE, "DEVICE_SET_IRQS")?;
            let set = validate::set_irqs(&m, &backend.irqs(), fds)?;
            backend.set_irqs(m.index, set).map_err(backend_errno)?;
            Ok(Reply::empty())
        }
        cmd::REGION_READ => {
            let m = parse(payload, "REGION_READ", RegionAccess::parse)?;
            if payload.len() != RegionAccess::SIZE {
                return refuse(libc::EINVAL, "REGION_READ request carries data");
            }
            validate::region_access(&backend.regions(), m.region, m.offset, m.count, false)?;
            let mut out = Vec::with_capacity(RegionAccess::SIZE + m.count as usize);
            m.write(&mut out);
            out.resize(RegionAccess::SIZE + m.count as usize, 0);
            backend
                .region_read(m.region, m.offset, &mut out[RegionAccess::SIZE..])
                .map_err(backend_errno)?;
            Ok(Reply::bytes(out))
        }
        cmd::REGION_WRITE => {
            let m = parse(payload, "REGION_WRITE", RegionAccess::parse)?;
            let data = &payload[RegionAccess::SIZE..];
            if data.len() != m.count as usize {
                return refuse(
                    libc::EINVAL,
                    format!(
                        "REGION_WRITE count {} with {} data bytes",
                        m.count,
                        data.len()
                    ),
                );
            }
            validate::region_access(&backend.regions(), m.region, m.offset, m.count, true)?;
            backend
                .region_write(m.region, m.offset, data)
                .map_err(backend_errno)?;
            let mut out = Vec::new();
            m.write(&mut out);
            Ok(Reply::bytes(out))
        }
        cmd::DEVICE_RESET => {
            backend.reset().map_err(backend_errno)?;
            Ok(Reply::empty())
        }
        cmd::DEVICE_GET_REGION_IO_FDS
        | cmd::DMA_READ
        | cmd::DMA_WRITE
        | cmd::DIRTY_PAGES
        | cmd::REGION_WRITE_MULTI
        | cmd::MIG_DATA_READ
        | cmd::MIG_DATA_WRITE => refuse(libc::ENOTSUP, format!("command {command} not supported")),
        // The kernel's answer to a feature it lacks; QEMU then treats the
        // device as not migratable.
        cmd::DEVICE_FEATURE => refuse(libc::ENOTTY, "device features not supported"),
        _ => refuse(libc::ENOTSUP, format!("unknown command {command}")),
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// VERSION: major 0, NUL-terminated JSON object (or nothing) from the
/// client; the reply states this server's capabilities.
fn version(payload: &[u8]) -> Result<Vec<u8>, Refusal> {
    let v = parse(payload, "VERSION", Version::parse)?;
    if v.major != 0 {
        return refuse(
            libc::ENOTSUP,
            format!("VERSION major {} not supported", v.major),
        );
    }
    let caps = &payload[Version::SIZE..];
    if !caps.is_empty() {
        let Some(nul) = caps.iter().position(|&b| b == 0) else {
            return refuse(libc::EINVAL, "VERSION capabilities not NUL-terminated");
        };
        let json: serde_json::Value = match serde_json::from_slice(&caps[..nul]) {
            Ok(j) => j,
            Err(e) => return refuse(libc::EINVAL, format!("VERSION capabilities: {e}")),
        };
        let ok = json
            .as_object()
            .is_some_and(|o| o.get("capabilities").is_none_or(|c| c.is_object()));
        if !ok {
            return refuse(libc::EINVAL, "VERSION capabilities not a JSON object");
        }
    }
    let reply = serde_json::json!({
        "capabilities": {
            "max_msg_fds": MAX_MSG_FDS,
            "max_data_xfer_size": MAX_DATA_XFER,
            "pgsizes": PAGE_SIZE,
        }
    });
    let mut out = Vec::new();
    Version { major: 0, minor: 0 }.write(&mut out);
    out.extend_from_slice(reply.to_string().as_bytes());
    out.push(0);
    Ok(out)
}

/// The mmap areas to advertise, if the backend's are usable: non-empty,
/// page aligned, inside the region.
fn usable_areas(index: u32, r: &RegionInfo) -> Option<(RawFd, &[(u64, u64)])> {
    let m = r.mmap.as_ref()?;
    let fits = |&(off, len): &(u64, u64)| {
        len > 0
            && off.is_multiple_of(PAGE_SIZE)
            && len.is_multiple_of(PAGE_SIZE)
            && off.checked_add(len).is_some_and(|e| e <= r.size)
    };
    if m.areas.is_empty() || m.areas.len() > MAX_AREAS || !m.areas.iter().all(fits) {
        log::warn!(
            "region {index}: backend mmap areas {:?} unusable (empty, unaligned or outside {:#x} bytes); the region is trapped",
            m.areas,
            r.size
        );
        return None;
    }
    Some((m.fd, &m.areas))
}

/// DEVICE_GET_REGION_INFO reply. If the client's `argsz` is too small for
/// the capabilities, it gets the bare info with the `argsz` it needs and
/// asks again (no CAPS flag then: QEMU checks cap_offset whenever it is set).
fn region_info(index: u32, argsz: u32, r: &RegionInfo) -> Reply {
    let mut flags = 0;
    if r.readable {
        flags |= info::REGION_READ;
    }
    if r.writable {
        flags |= info::REGION_WRITE;
    }
    let mmap = usable_areas(index, r);
    let needed = match mmap {
        Some((_, areas)) => {
            flags |= info::REGION_MMAP;
            RegionInfoMsg::SIZE + SparseMmapCap::SIZE + areas.len() * SparseArea::SIZE
        }
        None => RegionInfoMsg::SIZE,
    };
    let fits = argsz as usize >= needed;
    let mut out = Vec::with_capacity(needed);
    RegionInfoMsg {
        argsz: needed as u32,
        flags: if mmap.is_some() && fits {
            flags | info::REGION_CAPS
        } else {
            flags
        },
        index,
        cap_offset: if mmap.is_some() && fits {
            RegionInfoMsg::SIZE as u32
        } else {
            0
        },
        size: r.size,
        offset: 0,
    }
    .write(&mut out);
    let mut fd = None;
    if let (Some((region_fd, areas)), true) = (mmap, fits) {
        SparseMmapCap {
            id: info::CAP_SPARSE_MMAP,
            version: 1,
            next: 0,
            nr_areas: areas.len() as u32,
            reserved: 0,
        }
        .write(&mut out);
        for &(offset, size) in areas {
            SparseArea { offset, size }.write(&mut out);
        }
        fd = Some(region_fd);
    }
    Reply { payload: out, fd }
}
