//! Turns a command's data pointer (PRP entries/lists or SGL descriptors) into
//! the list of memory segments to transfer. List pages are read through DMA
//! and counted as metadata.

use crate::dma::route::{Dir, Kind};
use crate::dma::{Dma, Resolved, Target};
use crate::nvme::{Sqe, Status};

pub const PAGE: u64 = 4096;

/// (address, length) pieces of a transfer, in order; bit-bucket pieces have
/// no address (reads discard them).
pub type Segments = Vec<(Option<u64>, usize)>;

fn read_list(dma: &Dma, addr: u64, buf: &mut [u8]) -> Result<Target, Status> {
    dma.read(Kind::Meta, addr, buf)
        .map_err(|_| Status::DATA_TRANSFER_ERROR)
}

/// Segments for `len` bytes described by the command's data pointer.
pub fn segments(sqe: &Sqe, len: usize, dma: &Dma) -> Result<Segments, Status> {
    match sqe.psdt() {
        0 => prps(sqe.dptr1(), sqe.dptr2(), len, dma),
        1 => sgl(sqe.sgl(), len, dma),
        _ => Err(Status::INVALID_FIELD),
    }
}

fn prps(prp1: u64, prp2: u64, len: usize, dma: &Dma) -> Result<Segments, Status> {
    let mut segs: Segments = vec![];
    if len == 0 {
        return Ok(segs);
    }
    let first = ((PAGE - (prp1 & (PAGE - 1))) as usize).min(len);
    segs.push((Some(prp1), first));
    let mut left = len - first;
    if left == 0 {
        return Ok(segs);
    }
    if left <= PAGE as usize {
        if prp2 & (PAGE - 1) != 0 {
            return Err(Status::INVALID_PRP_OFFSET);
        }
        segs.push((Some(prp2), left));
        return Ok(segs);
    }
    // PRP2 points to a list; its last entry chains to the next list page
    // when more entries remain than fit.
    if prp2 & 7 != 0 {
        return Err(Status::INVALID_PRP_OFFSET);
    }
    let mut list = prp2;
    while left > 0 {
        let pages = left.div_ceil(PAGE as usize);
        let slots = ((PAGE - (list & (PAGE - 1))) / 8) as usize;
        let chained = pages > slots;
        if chained && slots < 2 {
            // A list page holding only a chain pointer would never progress.
            return Err(Status::INVALID_PRP_OFFSET);
        }
        let mut raw = vec![0u8; pages.min(slots) * 8];
        read_list(dma, list, &mut raw)?;
        let entries: Vec<u64> = raw
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
            .collect();
        let data = if chained {
            &entries[..slots - 1]
        } else {
            &entries[..]
        };
        for &e in data {
            if e & (PAGE - 1) != 0 {
                return Err(Status::INVALID_PRP_OFFSET);
            }
            let n = left.min(PAGE as usize);
            segs.push((Some(e), n));
            left -= n;
        }
        if chained {
            list = entries[slots - 1];
            if list & 7 != 0 {
                return Err(Status::INVALID_PRP_OFFSET);
            }
        }
    }
    Ok(segs)
}

const SGL_DATA: u8 = 0x0;
const SGL_BIT_BUCKET: u8 = 0x1;
const SGL_SEGMENT: u8 = 0x2;
const SGL_LAST_SEGMENT: u8 = 0x3;
const MAX_SGL_DESCRIPTORS: usize = 4096;

fn sgl(first: [u8; 16], len: usize, dma: &Dma) -> Result<Segments, Status> {
    let mut segs: Segments = vec![];
    let mut total = 0usize;
    let mut pending: Vec<[u8; 16]> = vec![first];
    let mut seen = 0;
    let mut last_segment = false;
    while let Some(d) = pending.pop() {
        seen += 1;
        if seen > MAX_SGL_DESCRIPTORS {
            return Err(Status::SGL_COUNT_INVALID);
        }
        let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
        let dlen = u32::from_le_bytes(d[8..12].try_into().unwrap()) as usize;
        match d[15] >> 4 {
            SGL_DATA | SGL_BIT_BUCKET => {
                if d[15] & 0xf != 0 {
                    return Err(Status::SGL_TYPE_INVALID);
                }
                let a = (d[15] >> 4 == SGL_DATA).then_some(addr);
                // A list may describe more than the transfer (Identify
                // SGLS bit 18, as Linux's passthrough path sends): the
                // transfer takes its first `len` bytes, the rest is unused.
                let take = dlen.min(len - total);
                if take > 0 {
                    segs.push((a, take));
                }
                total += take;
                if total == len {
                    return Ok(segs);
                }
            }
            t @ (SGL_SEGMENT | SGL_LAST_SEGMENT) => {
                if last_segment
                    || dlen == 0
                    || !dlen.is_multiple_of(16)
                    || dlen > 16 * MAX_SGL_DESCRIPTORS
                    || !pending.is_empty()
                {
                    return Err(Status::SGL_SEGMENT_INVALID);
                }
                last_segment = t == SGL_LAST_SEGMENT;
                let mut raw = vec![0u8; dlen];
                read_list(dma, addr, &mut raw)?;
                let descs: Vec<[u8; 16]> = raw
                    .chunks_exact(16)
                    .map(|c| c.try_into().unwrap())
                    .collect();
                // Only the last descriptor of a segment may point to another segment.
                for (i, c) in descs.iter().enumerate() {
                    let ty = c[15] >> 4;
                    if (ty == SGL_SEGMENT || ty == SGL_LAST_SEGMENT)
                        && (i + 1 != descs.len() || last_segment)
                    {
                        return Err(Status::SGL_SEGMENT_INVALID);
                    }
                }
                pending.extend(descs.into_iter().rev());
            }
            _ => return Err(Status::SGL_TYPE_INVALID),
        }
    }
    if total < len {
        return Err(Status::SGL_LENGTH_INVALID);
    }
    Ok(segs)
}

/// The command's data pointer resolved to memory, piece by piece.
pub fn transfer<'a>(
    sqe: &Sqe,
    len: usize,
    dma: &Dma<'a>,
    kind: Kind,
    dir: Dir,
) -> Result<Resolved<'a>, Status> {
    let segs = segments(sqe, len, dma)?;
    dma.resolve(&segs, kind, dir)
        .map_err(|_| Status::DATA_TRANSFER_ERROR)
}
