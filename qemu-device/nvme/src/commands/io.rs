//! I/O commands: data moves between the backing file and the memory the
//! command points at (guest RAM, our CMB or a peer's CMB). They see the
//! controller only through [`IoCtx`].

use super::features::HostCounters;
use crate::dma::prp;
use crate::dma::{Dma, Resolved, Target};
use crate::limits::MAX_TRANSFER;
use crate::namespace::Namespace;
use crate::nvme::{CmdResult, Sqe, Status};
use crate::stats::{Dir, Kind};

/// What an I/O command needs from its controller, and nothing more.
pub struct IoCtx<'a> {
    /// The namespaces (NSID n is index n - 1).
    pub ns: &'a [Namespace],
    /// DMA to and from the command's memory.
    pub dma: Dma<'a>,
    /// Volatile write cache enabled (Set Features 06h): when clear, every
    /// change is durable before completion.
    pub vwc: bool,
    /// Counters the commands advance.
    pub counters: &'a mut HostCounters,
}

/// The namespace index of a command that needs one.
fn namespace(c: &IoCtx<'_>, sqe: &Sqe) -> Result<usize, Status> {
    let nsid = sqe.nsid();
    if nsid == 0 || nsid as usize > c.ns.len() {
        return Err(Status::INVALID_NAMESPACE);
    }
    Ok(nsid as usize - 1)
}

pub(super) fn flush(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let nsid = sqe.nsid();
    let all = nsid == 0xffff_ffff;
    if !all && (nsid == 0 || nsid as usize > c.ns.len()) {
        return Err(Status::INVALID_NAMESPACE);
    }
    for (i, ns) in c.ns.iter().enumerate() {
        if all || i + 1 == nsid as usize {
            ns.flush().map_err(|_| Status::INTERNAL_ERROR)?;
        }
    }
    Ok(0)
}

/// Byte range of an LBA range, checked against the namespace.
fn range(c: &IoCtx<'_>, ns: usize, slba: u64, nlb: u64) -> Result<(u64, u64), Status> {
    let n = &c.ns[ns];
    let end = slba.checked_add(nlb).ok_or(Status::LBA_OUT_OF_RANGE)?;
    if end > n.nlbas {
        return Err(Status::LBA_OUT_OF_RANGE);
    }
    Ok((slba << n.lba_shift, nlb << n.lba_shift))
}

/// A command's data resolved to memory, with the CMB rule: a command's data
/// is either all in our own CMB or all outside it.
/// Data the controller reads (`to_memory` false) may not come from a bit
/// bucket: that is an SGL Descriptor Type Invalid.
fn data<'a>(
    c: &IoCtx<'a>,
    sqe: &Sqe,
    len: usize,
    to_memory: bool,
    kind: Kind,
) -> Result<Resolved<'a>, Status> {
    if len > MAX_TRANSFER {
        return Err(Status::INVALID_FIELD);
    }
    let dir = if to_memory { Dir::Written } else { Dir::Read };
    let r = prp::transfer(sqe, len, &c.dma, kind, dir)?;
    let mut in_cmb = None;
    for (t, _) in r.targets() {
        let Some(t) = t else {
            if to_memory {
                continue;
            }
            return Err(Status::SGL_TYPE_INVALID);
        };
        let own = t == Target::OwnCmb;
        if *in_cmb.get_or_insert(own) != own {
            return Err(Status::INVALID_CMB_USE);
        }
    }
    Ok(r)
}

/// Moves a command's data between the backing file and memory in one
/// vectored call, without a bounce buffer (bit buckets: scratch bytes).
fn move_data(
    c: &IoCtx<'_>,
    ns: usize,
    sqe: &Sqe,
    off: u64,
    len: u64,
    to_memory: bool,
) -> CmdResult {
    let r = data(c, sqe, len as usize, to_memory, Kind::Data)?;
    let file = &c.ns[ns];
    let dir = if to_memory { Dir::Written } else { Dir::Read };
    r.vectored(dir, |iov| {
        // SAFETY: the vectors point into memory `r` keeps mapped, or into
        // its scratch bucket.
        unsafe {
            if to_memory {
                file.read_vectored_at(iov, off)
            } else {
                file.write_vectored_at(iov, off)
            }
        }
    })
    // EFAULT: guest RAM the client shrank away or a read-only map.
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EFAULT) => Status::DATA_TRANSFER_ERROR,
        _ => Status::INTERNAL_ERROR,
    })?;
    Ok(0)
}

pub(super) fn read(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let ns = namespace(c, sqe)?;
    let (off, len) = range(c, ns, sqe.slba(), sqe.nlb())?;
    move_data(c, ns, sqe, off, len, true)?;
    c.counters.reads += 1;
    c.counters.bytes_read += len;
    Ok(0)
}

pub(super) fn write(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let ns = namespace(c, sqe)?;
    let (off, len) = range(c, ns, sqe.slba(), sqe.nlb())?;
    move_data(c, ns, sqe, off, len, false)?;
    durable(c, ns, sqe, 12)?;
    c.counters.writes += 1;
    c.counters.bytes_written += len;
    Ok(0)
}

/// FUA (bit 30 of `fua_dw`), or no volatile write cache: the change must be
/// durable before the command completes.
fn durable(c: &IoCtx<'_>, ns: usize, sqe: &Sqe, fua_dw: usize) -> Result<(), Status> {
    if sqe.cdw(fua_dw) & (1 << 30) != 0 || !c.vwc {
        c.ns[ns].flush().map_err(|_| Status::INTERNAL_ERROR)?;
    }
    Ok(())
}

pub(super) fn compare(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let ns = namespace(c, sqe)?;
    let (off, len) = range(c, ns, sqe.slba(), sqe.nlb())?;
    let host = data(c, sqe, len as usize, false, Kind::Data)?
        .gather()
        .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
    // Compare counts as a host read command (SMART).
    c.counters.reads += 1;
    let mut media = vec![0u8; len as usize];
    c.ns[ns]
        .read_at(&mut media, off)
        .map_err(|_| Status::INTERNAL_ERROR)?;
    if host != media {
        return Err(Status::COMPARE_FAILURE);
    }
    Ok(0)
}

pub(super) fn write_zeroes(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let ns = namespace(c, sqe)?;
    let (off, len) = range(c, ns, sqe.slba(), sqe.nlb())?;
    c.ns[ns]
        .write_zeroes(off, len)
        .map_err(|_| Status::INTERNAL_ERROR)?;
    durable(c, ns, sqe, 12)?;
    Ok(0)
}

pub(super) fn dsm(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let ns = namespace(c, sqe)?;
    let nr = (sqe.cdw(10) & 0xff) as usize + 1;
    let deallocate = sqe.cdw(11) & (1 << 2) != 0;
    let ranges = data(c, sqe, nr * 16, false, Kind::Meta)?
        .gather()
        .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
    let mut checked = vec![];
    for r in ranges.chunks_exact(16) {
        let nlb = u32::from_le_bytes(r[4..8].try_into().unwrap()) as u64;
        let slba = u64::from_le_bytes(r[8..16].try_into().unwrap());
        checked.push(range(c, ns, slba, nlb)?);
    }
    if deallocate {
        for (off, len) in checked {
            if len > 0 {
                c.ns[ns]
                    .punch_hole(off, len)
                    .map_err(|_| Status::INTERNAL_ERROR)?;
            }
        }
        // DSM has no FUA bit; without a volatile cache it is durable now.
        durable(c, ns, sqe, 15)?;
    }
    Ok(0)
}

pub(super) fn copy(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    let ns = namespace(c, sqe)?;
    let sdlba = sqe.slba();
    let nr = (sqe.cdw(12) & 0xff) as usize + 1;
    let format = (sqe.cdw(12) >> 8) & 0xf;
    if format != 0 {
        return Err(Status::INVALID_FIELD);
    }
    if nr > 16 {
        return Err(Status::CMD_SIZE_LIMIT);
    }
    let raw = data(c, sqe, nr * 32, false, Kind::Meta)?
        .gather()
        .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
    let mut sources = vec![];
    let mut total = 0u64;
    for r in raw.chunks_exact(32) {
        let slba = u64::from_le_bytes(r[8..16].try_into().unwrap());
        let nlb = u16::from_le_bytes(r[16..18].try_into().unwrap()) as u64 + 1;
        if nlb > 1024 {
            return Err(Status::CMD_SIZE_LIMIT);
        }
        total += nlb;
        sources.push(range(c, ns, slba, nlb)?);
    }
    if total > 8192 {
        return Err(Status::CMD_SIZE_LIMIT);
    }
    let (mut dst, _) = range(c, ns, sdlba, total)?;
    for (off, len) in sources {
        c.ns[ns]
            .copy_within(off, dst, len)
            .map_err(|_| Status::INTERNAL_ERROR)?;
        dst += len;
    }
    durable(c, ns, sqe, 12)?;
    Ok(0)
}
