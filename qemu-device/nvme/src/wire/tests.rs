//! Key fields of each structure at the spec's byte offsets.

use super::*;
use std::mem::offset_of;

/// The byte image of `v` after setting one field: where it landed.
fn bytes<T: IntoBytes + zerocopy::Immutable>(v: &T) -> &[u8] {
    v.as_bytes()
}

#[test]
fn cqe_fields_at_spec_offsets() {
    let e = crate::nvme::cqe(0xdead_beef, 3, 1, 0x1234, 0x8000, true);
    let b = bytes(&e);
    assert_eq!(&b[0..4], &0xdead_beefu32.to_le_bytes());
    assert_eq!(&b[8..10], &3u16.to_le_bytes());
    assert_eq!(&b[10..12], &1u16.to_le_bytes());
    assert_eq!(&b[12..14], &0x1234u16.to_le_bytes());
    assert_eq!(&b[14..16], &0x8001u16.to_le_bytes());
}

#[test]
fn identify_controller_fields_at_spec_offsets() {
    type C = IdentifyController;
    assert_eq!(offset_of!(C, vid), 0);
    assert_eq!(offset_of!(C, sn), 4);
    assert_eq!(offset_of!(C, mn), 24);
    assert_eq!(offset_of!(C, fr), 64);
    assert_eq!(offset_of!(C, mdts), 77);
    assert_eq!(offset_of!(C, cntlid), 78);
    assert_eq!(offset_of!(C, ver), 80);
    assert_eq!(offset_of!(C, cntrltype), 111);
    assert_eq!(offset_of!(C, oacs), 256);
    assert_eq!(offset_of!(C, elpe), 262);
    assert_eq!(offset_of!(C, wctemp), 266);
    assert_eq!(offset_of!(C, sqes), 512);
    assert_eq!(offset_of!(C, maxcmd), 514);
    assert_eq!(offset_of!(C, nn), 516);
    assert_eq!(offset_of!(C, oncs), 520);
    assert_eq!(offset_of!(C, vwc), 525);
    assert_eq!(offset_of!(C, ocfs), 534);
    assert_eq!(offset_of!(C, sgls), 536);
    assert_eq!(offset_of!(C, subnqn), 768);
    assert_eq!(offset_of!(C, psd), 2048);
    let mut c = C::new_zeroed();
    c.nn = U32::new(0x0102_0304);
    assert_eq!(&bytes(&c)[516..520], &[4, 3, 2, 1]);
}

#[test]
fn identify_namespace_fields_at_spec_offsets() {
    type N = IdentifyNamespace;
    assert_eq!(offset_of!(N, nsze), 0);
    assert_eq!(offset_of!(N, ncap), 8);
    assert_eq!(offset_of!(N, nuse), 16);
    assert_eq!(offset_of!(N, flbas), 26);
    assert_eq!(offset_of!(N, dlfeat), 33);
    assert_eq!(offset_of!(N, mssrl), 74);
    assert_eq!(offset_of!(N, mcl), 76);
    assert_eq!(offset_of!(N, msrc), 80);
    assert_eq!(offset_of!(N, anagrpid), 92);
    assert_eq!(offset_of!(N, nguid), 104);
    assert_eq!(offset_of!(N, eui64), 120);
    assert_eq!(offset_of!(N, lbaf), 128);
    let mut n = N::new_zeroed();
    n.lbaf[1].lbads = 12;
    assert_eq!(bytes(&n)[128 + 4 + 2], 12);
}

#[test]
fn iocs_structures_and_lists_at_spec_offsets() {
    assert_eq!(offset_of!(IdentifyNamespaceNvm, pic), 8);
    assert_eq!(offset_of!(IdentifyNamespaceNvm, elbaf), 12);
    assert_eq!(offset_of!(IdentifyControllerNvm, dmrl), 3);
    assert_eq!(offset_of!(IdentifyControllerNvm, dmrsl), 4);
    assert_eq!(offset_of!(IdentifyControllerNvm, dmsl), 8);
    assert_eq!(offset_of!(NsIdDescriptorList, nguid), 4);
    assert_eq!(offset_of!(NsIdDescriptorList, csi_hdr), 20);
    assert_eq!(offset_of!(NsIdDescriptorList, csi), 24);
    let mut l = NsList::new_zeroed();
    l.ids[2] = U32::new(7);
    assert_eq!(&bytes(&l)[8..12], &7u32.to_le_bytes());
    let mut c = IoCommandSetCombinations::new_zeroed();
    c.combinations[1] = U64::new(5);
    assert_eq!(&bytes(&c)[8..16], &5u64.to_le_bytes());
}

#[test]
fn log_pages_fields_at_spec_offsets() {
    assert_eq!(offset_of!(ErrorLogEntry, sqid), 8);
    assert_eq!(offset_of!(ErrorLogEntry, cid), 10);
    assert_eq!(offset_of!(ErrorLogEntry, status), 12);
    assert_eq!(offset_of!(ErrorLogEntry, param_error_location), 14);
    assert_eq!(offset_of!(ErrorLogEntry, lba), 16);
    assert_eq!(offset_of!(ErrorLogEntry, nsid), 24);
    assert_eq!(offset_of!(ErrorLogEntry, csi), 32);
    assert_eq!(offset_of!(SmartLog, temperature), 1);
    assert_eq!(offset_of!(SmartLog, available_spare), 3);
    assert_eq!(offset_of!(SmartLog, data_units_read), 32);
    assert_eq!(offset_of!(SmartLog, data_units_written), 48);
    assert_eq!(offset_of!(SmartLog, host_reads), 64);
    assert_eq!(offset_of!(SmartLog, host_writes), 80);
    assert_eq!(offset_of!(SmartLog, error_log_entries), 176);
    assert_eq!(offset_of!(SmartLog, temp_sensors), 200);
    assert_eq!(offset_of!(FirmwareSlotLog, frs), 8);
    assert_eq!(offset_of!(CommandsEffectsLog, iocs), 1024);
    let mut e = CommandsEffectsLog::new_zeroed();
    e.iocs[2] = U32::new(1);
    assert_eq!(bytes(&e)[1024 + 8], 1);
    assert_eq!(offset_of!(DmaCountersLog, data), 16);
    assert_eq!(offset_of!(DmaCountersLog, meta), 64);
    assert_eq!(offset_of!(DmaKindCounters, peer_cmb_written), 40);
}

#[test]
fn controller_registers_at_spec_offsets() {
    use crate::controller::reg;
    let expect = [
        (reg::CAP, 0x00),
        (reg::VS, 0x08),
        (reg::INTMS, 0x0c),
        (reg::INTMC, 0x10),
        (reg::CC, 0x14),
        (reg::CSTS, 0x1c),
        (reg::NSSR, 0x20),
        (reg::AQA, 0x24),
        (reg::ASQ, 0x28),
        (reg::ACQ, 0x30),
        (reg::CMBLOC, 0x38),
        (reg::CMBSZ, 0x3c),
        (reg::CMBMSC, 0x50),
        (reg::CMBSTS, 0x58),
    ];
    for (got, want) in expect {
        assert_eq!(got, want);
    }
}

#[test]
fn ascii_fields_are_space_padded_and_nqns_nul_terminated() {
    assert_eq!(ascii::<4>("ab"), *b"ab  ");
    assert_eq!(ascii::<2>("abc"), *b"ab");
    assert_eq!(nul_padded::<4>("abcdef"), *b"abc\0");
}
