//! NVMe wire formats: submission entries, status codes, completion entries.

use crate::wire::{Cqe, U16, U32};

/// A 64-byte submission queue entry.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Sqe {
    /// The 16 command dwords.
    pub dw: [u32; 16],
}

const _: () = assert!(std::mem::size_of::<Sqe>() == 64);

impl Sqe {
    /// An entry as fetched from a submission queue.
    pub fn from_bytes(b: &[u8; 64]) -> Sqe {
        let mut dw = [0u32; 16];
        for (i, d) in dw.iter_mut().enumerate() {
            *d = u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        }
        Sqe { dw }
    }
    /// CDW0 bits 7:0.
    pub fn opcode(&self) -> u8 {
        self.dw[0] as u8
    }
    /// PRP or SGL data pointer selection (CDW0 bits 15:14).
    /// PRP or SGL for Data Transfer (CDW0 bits 15:14).
    pub fn psdt(&self) -> u32 {
        (self.dw[0] >> 14) & 3
    }
    /// Command identifier.
    pub fn cid(&self) -> u16 {
        (self.dw[0] >> 16) as u16
    }
    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.dw[1]
    }
    /// Data pointer, first half (PRP1).
    pub fn dptr1(&self) -> u64 {
        self.dw[6] as u64 | (self.dw[7] as u64) << 32
    }
    /// Data pointer, second half (PRP2).
    pub fn dptr2(&self) -> u64 {
        self.dw[8] as u64 | (self.dw[9] as u64) << 32
    }
    /// The 16-byte SGL descriptor in DPTR.
    /// The data pointer as an SGL descriptor.
    pub fn sgl(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&self.dw[6 + i].to_le_bytes());
        }
        b
    }
    /// Command dword `n`.
    pub fn cdw(&self, n: usize) -> u32 {
        self.dw[n]
    }
    /// Starting LBA (CDW10/11).
    pub fn slba(&self) -> u64 {
        self.dw[10] as u64 | (self.dw[11] as u64) << 32
    }
    /// Number of logical blocks, 1-based.
    pub fn nlb(&self) -> u64 {
        (self.dw[12] & 0xffff) as u64 + 1
    }
}

/// Status: code type, code, and do-not-retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub sct: u8,
    pub sc: u8,
    pub dnr: bool,
}

impl Status {
    pub const SUCCESS: Status = Status::new(0, 0x00, false);
    pub const INVALID_OPCODE: Status = Status::new(0, 0x01, true);
    pub const INVALID_FIELD: Status = Status::new(0, 0x02, true);
    pub const DATA_TRANSFER_ERROR: Status = Status::new(0, 0x04, true);
    pub const INTERNAL_ERROR: Status = Status::new(0, 0x06, false);
    pub const INVALID_NAMESPACE: Status = Status::new(0, 0x0b, true);
    pub const SGL_SEGMENT_INVALID: Status = Status::new(0, 0x0d, true);
    pub const SGL_COUNT_INVALID: Status = Status::new(0, 0x0e, true);
    pub const SGL_LENGTH_INVALID: Status = Status::new(0, 0x0f, true);
    pub const SGL_TYPE_INVALID: Status = Status::new(0, 0x11, true);
    pub const INVALID_CMB_USE: Status = Status::new(0, 0x12, true);
    pub const INVALID_PRP_OFFSET: Status = Status::new(0, 0x13, true);
    pub const LBA_OUT_OF_RANGE: Status = Status::new(0, 0x80, true);
    pub const INVALID_CQ: Status = Status::new(1, 0x00, true);
    pub const INVALID_QID: Status = Status::new(1, 0x01, true);
    pub const INVALID_QSIZE: Status = Status::new(1, 0x02, true);
    pub const AER_LIMIT: Status = Status::new(1, 0x05, true);
    pub const INVALID_VECTOR: Status = Status::new(1, 0x08, true);
    pub const INVALID_LOG_PAGE: Status = Status::new(1, 0x09, true);
    pub const INVALID_QUEUE_DELETION: Status = Status::new(1, 0x0c, true);
    pub const FEATURE_NOT_SAVEABLE: Status = Status::new(1, 0x0d, true);
    pub const CMD_SIZE_LIMIT: Status = Status::new(1, 0x83, true);
    pub const COMPARE_FAILURE: Status = Status::new(2, 0x85, true);

    pub const fn new(sct: u8, sc: u8, dnr: bool) -> Status {
        Status { sct, sc, dnr }
    }

    /// The status field (CQE DW3 bits 31:17), without the phase bit.
    pub fn field(&self) -> u16 {
        (self.dnr as u16) << 15 | (self.sct as u16 & 7) << 9 | (self.sc as u16) << 1
    }
}

pub type CmdResult = Result<u32, Status>;

/// Builds a 16-byte completion queue entry.
pub fn cqe(result: u32, sq_head: u16, sqid: u16, cid: u16, status: u16, phase: bool) -> Cqe {
    Cqe {
        result: U32::new(result),
        dw1: U32::new(0),
        sq_head: U16::new(sq_head),
        sqid: U16::new(sqid),
        cid: U16::new(cid),
        status_phase: U16::new(status | phase as u16),
    }
}

pub mod admin {
    pub const DELETE_SQ: u8 = 0x00;
    pub const CREATE_SQ: u8 = 0x01;
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const DELETE_CQ: u8 = 0x04;
    pub const CREATE_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0a;
    pub const ASYNC_EVENT: u8 = 0x0c;
    pub const KEEP_ALIVE: u8 = 0x18;
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
}

/// Feature identifiers (Get / Set Features CDW10 bits 7:0).
pub mod fid {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    pub const WRITE_ATOMICITY: u8 = 0x0a;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    pub const TIMESTAMP: u8 = 0x0e;
}

pub mod io {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const COMPARE: u8 = 0x05;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DSM: u8 = 0x09;
    pub const COPY: u8 = 0x19;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_layout() {
        assert_eq!(Status::INVALID_OPCODE.field(), 0x8000 | 0x01 << 1);
        assert_eq!(Status::INVALID_QID.field(), 0x8000 | 1 << 9 | 0x01 << 1);
        let e = cqe(7, 3, 1, 0x1234, Status::LBA_OUT_OF_RANGE.field(), true);
        let e = zerocopy::IntoBytes::as_bytes(&e);
        assert_eq!(u16::from_le_bytes([e[14], e[15]]), 0x8000 | 0x80 << 1 | 1);
        assert_eq!(u16::from_le_bytes([e[12], e[13]]), 0x1234);
    }
}
