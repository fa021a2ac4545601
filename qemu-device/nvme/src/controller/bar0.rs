//! The controller's BAR0 register values (CC, CSTS, AQA, ASQ, ACQ,
//! INTMS/INTMC, CMBMSC, CMBSTS) and the typed accessors the controller uses
//! on them. This part only stores and decodes: a write returns what the
//! controller must do ([`Write`]), and the controller applies it to its
//! other parts (queues, CMB).
//!
//! Invariants: AQA keeps only its two 12-bit sizes; ASQ and ACQ are page
//! aligned; CMBMSC keeps only its base, CRE and CMSE.

use super::reg;
use super::regs::RegMirror;
use crate::limits::NVME_VERSION;

const CC_EN: u32 = 1;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 2;
const CSTS_SHST: u32 = 3 << 2;
const CSTS_SHST_OCCURRING: u32 = 1 << 2;
const CSTS_SHST_COMPLETE: u32 = 2 << 2;
/// CMBMSC Capabilities Registers Enabled.
pub const CMBMSC_CRE: u64 = 1;
/// CMBMSC Controller Memory Space Enable.
pub const CMBMSC_CMSE: u64 = 2;

/// The register values.
#[derive(Default)]
pub struct Registers {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
    cmbmsc: u64,
    cmbsts: u32,
}

/// What a register write asks of the controller.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// Nothing beyond the stored value.
    Stored,
    /// CC was written: the old and new values.
    Cc {
        /// CC before.
        was: u32,
        /// CC now.
        now: u32,
    },
    /// CMBMSC was written with this value (the controller checks it
    /// against its CMB, then calls [`Registers::set_cmb`]).
    Cmbmsc(u64),
}

/// The admin queues as AQA, ASQ and ACQ give them.
pub struct AdminQueues {
    /// Admin SQ entries (ASQS + 1).
    pub sq_entries: u16,
    /// Admin CQ entries (ACQS + 1).
    pub cq_entries: u16,
    /// ASQ.
    pub sq_base: u64,
    /// ACQ.
    pub cq_base: u64,
}

impl Registers {
    /// Stores a write of `data` at `off` (below the doorbells).
    pub fn write(&mut self, off: u64, data: &[u8]) -> Write {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v64 = u64::from_le_bytes(b);
        let v = v64 as u32;
        let set_half = |old: u64| -> u64 {
            if n == 8 {
                v64
            } else if off & 4 == 0 {
                (old & !0xffff_ffff) | v as u64
            } else {
                (old & 0xffff_ffff) | (v as u64) << 32
            }
        };
        match off & !3 {
            reg::INTMS => self.intms |= v,
            reg::INTMC => self.intms &= !v,
            reg::CC => {
                let was = std::mem::replace(&mut self.cc, v);
                return Write::Cc { was, now: v };
            }
            reg::NSSR => {} // NVM subsystem reset is not supported (CAP.NSSRS 0)
            reg::AQA => self.aqa = v & 0x0fff_0fff,
            o if o & !7 == reg::ASQ => self.asq = set_half(self.asq) & !0xfff,
            o if o & !7 == reg::ACQ => self.acq = set_half(self.acq) & !0xfff,
            o if o & !7 == reg::CMBMSC => return Write::Cmbmsc(set_half(self.cmbmsc)),
            _ => {}
        }
        Write::Stored
    }

    /// CC.EN is set.
    pub fn enabled(cc: u32) -> bool {
        cc & CC_EN != 0
    }

    /// CC.SHN of `cc`.
    pub fn shutdown_notification(cc: u32) -> u32 {
        (cc >> 14) & 3
    }

    /// CC.MPS and CC.CSS are what this controller supports (4 KiB pages,
    /// the NVM command set).
    pub fn cc_supported(&self) -> bool {
        (self.cc >> 7) & 0xf == 0 && (self.cc >> 4) & 7 == 0
    }

    /// The admin queues the host configured.
    pub fn admin_queues(&self) -> AdminQueues {
        AdminQueues {
            sq_entries: (self.aqa & 0xfff) as u16 + 1,
            cq_entries: ((self.aqa >> 16) & 0xfff) as u16 + 1,
            sq_base: self.asq,
            cq_base: self.acq,
        }
    }

    /// CSTS.RDY.
    pub fn ready(&self) -> bool {
        self.csts & CSTS_RDY != 0
    }

    /// CSTS.CFS.
    pub fn fatal(&self) -> bool {
        self.csts & CSTS_CFS != 0
    }

    /// Sets CSTS.RDY.
    pub fn set_ready(&mut self) {
        self.csts |= CSTS_RDY;
    }

    /// Sets CSTS.CFS.
    pub fn set_fatal(&mut self) {
        self.csts |= CSTS_CFS;
    }

    /// A controller reset clears CSTS.RDY and CSTS.CFS.
    pub fn clear_ready_and_fatal(&mut self) {
        self.csts &= !(CSTS_RDY | CSTS_CFS);
    }

    /// CSTS.SHST: shutdown processing occurring.
    pub fn shutdown_occurring(&mut self) {
        self.csts = (self.csts & !CSTS_SHST) | CSTS_SHST_OCCURRING;
    }

    /// CSTS.SHST: shutdown processing complete.
    pub fn shutdown_complete(&mut self) {
        self.csts = (self.csts & !CSTS_SHST) | CSTS_SHST_COMPLETE;
    }

    /// CSTS.SHST: no shutdown.
    pub fn clear_shutdown(&mut self) {
        self.csts &= !CSTS_SHST;
    }

    /// CMBMSC.
    pub fn cmbmsc(&self) -> u64 {
        self.cmbmsc
    }

    /// Stores CMBMSC (masked to its fields) and CMBSTS.CBAI.
    pub fn set_cmb(&mut self, cmbmsc: u64, base_invalid: bool) {
        self.cmbmsc = cmbmsc & (!0xfff | CMBMSC_CRE | CMBMSC_CMSE);
        self.cmbsts = base_invalid as u32;
    }

    /// Power-on values (DEVICE_RESET).
    pub fn power_on(&mut self) {
        *self = Registers::default();
    }

    /// Copies the registers into the lock-free mirror, with CAP and CMBSZ
    /// as the controller computes them.
    pub fn publish(&self, r: &RegMirror, cap: u64, cmbsz: u32) {
        r.set64(reg::CAP, cap);
        r.set64(reg::ASQ, self.asq);
        r.set64(reg::ACQ, self.acq);
        r.set64(reg::CMBMSC, self.cmbmsc);
        r.set(reg::VS, NVME_VERSION);
        r.set(reg::INTMS, self.intms);
        r.set(reg::INTMC, self.intms);
        r.set(reg::CC, self.cc);
        r.set(reg::CSTS, self.csts);
        r.set(reg::AQA, self.aqa);
        // CMBLOC: BIR 2, offset 0, once the CMB is enabled.
        r.set(
            reg::CMBLOC,
            if self.cmbmsc & CMBMSC_CRE != 0 { 2 } else { 0 },
        );
        r.set(reg::CMBSZ, cmbsz);
        r.set(reg::CMBSTS, self.cmbsts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keep_only_the_fields_and_report_cc_and_cmbmsc() {
        let mut r = Registers::default();
        assert_eq!(
            r.write(reg::AQA, &0xffff_ffffu32.to_le_bytes()),
            Write::Stored
        );
        assert_eq!(
            r.write(reg::ASQ, &0x1234_5678u32.to_le_bytes()),
            Write::Stored
        );
        assert_eq!(r.write(reg::ASQ + 4, &1u32.to_le_bytes()), Write::Stored);
        let q = r.admin_queues();
        assert_eq!(
            (q.sq_entries, q.cq_entries, q.sq_base),
            (4096, 4096, 0x1_1234_5000)
        );
        assert_eq!(
            r.write(reg::CC, &1u32.to_le_bytes()),
            Write::Cc { was: 0, now: 1 }
        );
        assert_eq!(
            r.write(reg::CMBMSC, &0xfe00_0003u64.to_le_bytes()),
            Write::Cmbmsc(0xfe00_0003)
        );
        r.set_fatal();
        r.set_ready();
        assert!(r.fatal() && r.ready());
        r.clear_ready_and_fatal();
        assert!(!r.fatal() && !r.ready());
    }
}
