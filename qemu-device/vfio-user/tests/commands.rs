//! Happy path of every command, over a socketpair with hand-built messages.

mod common;

use common::*;
use p2pnvme_vfio_user::testing::{
    assert_is_nonblocking_eventfd, Call, FdSummary, IrqCall, BAR0_SIZE, BAR2_SIZE, CONFIG_INDEX,
    VENDOR_ID,
};
use p2pnvme_vfio_user::wire::*;
use p2pnvme_vfio_user::{Errno, MAX_DATA_XFER};
use std::os::fd::AsRawFd;

#[test]
fn version_reply_advertises_capabilities_as_nul_terminated_json() {
    let mut p = pair();
    let r = p.client.call(
        cmd::VERSION,
        &version(b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}\0"),
        &[],
    );
    assert_eq!(r.errno(), 0);
    let v = Version::parse(&r.payload).unwrap();
    assert_eq!((v.major, v.minor), (0, 0));
    let json = &r.payload[Version::SIZE..];
    assert_eq!(json.last(), Some(&0), "JSON must be NUL-terminated");
    let caps: serde_json::Value = serde_json::from_slice(&json[..json.len() - 1]).unwrap();
    let c = &caps["capabilities"];
    assert_eq!(c["max_msg_fds"], MAX_MSG_FDS);
    assert_eq!(c["max_data_xfer_size"], MAX_DATA_XFER);
    assert_eq!(c["pgsizes"], 4096);
    assert!(c.get("migration").is_none(), "no migration support");
    p.finish();
}

#[test]
fn dma_map_with_and_without_fd_reaches_the_backend() {
    let mut p = pair();
    let mem = memfd(0x10000);
    let r = p.client.call(
        cmd::DMA_MAP,
        &dma_map(0x100000, 0x8000, 0x8000, dma::READ | dma::WRITE),
        &[mem.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0);
    let r = p.client.call(
        cmd::DMA_MAP,
        &dma_map(0xfe000000, 0x4000, 0, dma::READ),
        &[],
    );
    assert_eq!(r.errno(), 0);
    let (be, _) = p.finish();
    assert_eq!(
        be.calls[..2],
        [
            Call::DmaMap {
                iova: 0x100000,
                size: 0x8000,
                has_fd: true
            },
            Call::DmaMap {
                iova: 0xfe000000,
                size: 0x4000,
                has_fd: false
            }
        ]
    );
}

#[test]
fn dma_unmap_range_and_unmap_all_is_flag_bit_1() {
    let mut p = pair();
    let r = p
        .client
        .call(cmd::DMA_UNMAP, &dma_unmap(0x1000, 0x2000, 0), &[]);
    assert_eq!(r.errno(), 0);
    let echo = DmaUnmapMsg::parse(&r.payload).unwrap();
    assert_eq!((echo.iova, echo.size), (0x1000, 0x2000));
    let r = p.client.call(cmd::DMA_UNMAP, &dma_unmap(0, 0, 2), &[]);
    assert_eq!(r.errno(), 0);
    // Bit 0 asks for a dirty bitmap: not supported, not "unmap all".
    let r = p.client.call(cmd::DMA_UNMAP, &dma_unmap(0, 0, 1), &[]);
    assert_eq!(r.errno(), libc::ENOTSUP as u32);
    let (be, _) = p.finish();
    assert_eq!(
        be.calls[..2],
        [Call::DmaUnmap(Some((0x1000, 0x2000))), Call::DmaUnmap(None)]
    );
}

#[test]
fn device_get_info_reports_regions_irqs_and_reset() {
    let mut p = pair();
    let mut req = Vec::new();
    DeviceInfo {
        argsz: 16,
        ..Default::default()
    }
    .write(&mut req);
    let r = p.client.call(cmd::DEVICE_GET_INFO, &req, &[]);
    let i = DeviceInfo::parse(&r.payload).unwrap();
    assert_eq!((i.num_regions, i.num_irqs), (9, 5));
    assert_eq!(i.flags, info::DEVICE_RESET | info::DEVICE_PCI);
    p.finish();
}

#[test]
fn region_info_of_a_mapped_bar_has_sparse_areas_and_its_fd() {
    let mut p = pair();
    // First with the bare struct size: the server says how much it needs.
    let r = p
        .client
        .call(cmd::DEVICE_GET_REGION_INFO, &region_info(2, 32), &[]);
    let short = RegionInfoMsg::parse(&r.payload).unwrap();
    assert_eq!(r.payload.len(), 32);
    assert_eq!(short.argsz, 64);
    assert_eq!(short.flags & info::REGION_CAPS, 0);
    assert!(r.fds.is_empty());
    let r = p
        .client
        .call(cmd::DEVICE_GET_REGION_INFO, &region_info(2, 64), &[]);
    let full = RegionInfoMsg::parse(&r.payload).unwrap();
    assert_eq!(full.size, BAR2_SIZE);
    assert_eq!(
        full.flags,
        info::REGION_READ | info::REGION_WRITE | info::REGION_MMAP | info::REGION_CAPS
    );
    assert_eq!(full.cap_offset, 32);
    let cap = SparseMmapCap::parse(&r.payload[32..]).unwrap();
    assert_eq!((cap.id, cap.nr_areas), (info::CAP_SPARSE_MMAP, 1));
    let area = SparseArea::parse(&r.payload[48..]).unwrap();
    assert_eq!((area.offset, area.size), (0, BAR2_SIZE));
    assert_eq!(r.fds.len(), 1, "the mmap fd comes with the reply");
    // A trapped region: no mmap, no fd; an absent one: size 0.
    let r = p
        .client
        .call(cmd::DEVICE_GET_REGION_INFO, &region_info(0, 32), &[]);
    let bar0 = RegionInfoMsg::parse(&r.payload).unwrap();
    assert_eq!(
        (bar0.size, bar0.flags),
        (BAR0_SIZE, info::REGION_READ | info::REGION_WRITE)
    );
    assert!(r.fds.is_empty());
    let r = p
        .client
        .call(cmd::DEVICE_GET_REGION_INFO, &region_info(1, 32), &[]);
    assert_eq!(RegionInfoMsg::parse(&r.payload).unwrap().size, 0);
    let r = p
        .client
        .call(cmd::DEVICE_GET_REGION_INFO, &region_info(9, 32), &[]);
    assert_eq!(r.errno(), libc::EINVAL as u32);
    p.finish();
}

#[test]
fn irq_info_reports_counts_and_flags() {
    let mut p = pair();
    let req = |index| {
        let mut v = Vec::new();
        IrqInfoMsg {
            argsz: 16,
            index,
            ..Default::default()
        }
        .write(&mut v);
        v
    };
    let r = p.client.call(cmd::DEVICE_GET_IRQ_INFO, &req(0), &[]);
    let i = IrqInfoMsg::parse(&r.payload).unwrap();
    assert_eq!(i.count, 1);
    assert_ne!(i.flags & info::IRQ_EVENTFD, 0);
    let r = p.client.call(cmd::DEVICE_GET_IRQ_INFO, &req(2), &[]);
    assert_eq!(IrqInfoMsg::parse(&r.payload).unwrap().count, 0);
    let r = p.client.call(cmd::DEVICE_GET_IRQ_INFO, &req(5), &[]);
    assert_eq!(r.errno(), libc::EINVAL as u32);
    p.finish();
}

#[test]
fn set_irqs_assigns_deassigns_disables_masks_and_triggers() {
    let mut p = pair();
    let efd = eventfd();
    let ev = irq::DATA_EVENTFD | irq::ACTION_TRIGGER;
    let calls: [(Vec<u8>, Vec<i32>); 6] = [
        (irq_set(ev, 0, 0, 1), vec![efd.as_raw_fd()]),
        (irq_set(ev, 0, 0, 1), vec![]),
        (
            irq_set(irq::DATA_NONE | irq::ACTION_TRIGGER, 0, 0, 0),
            vec![],
        ),
        (irq_set(irq::DATA_NONE | irq::ACTION_MASK, 0, 0, 1), vec![]),
        (
            irq_set(irq::DATA_NONE | irq::ACTION_UNMASK, 0, 0, 1),
            vec![],
        ),
        (
            irq_set(irq::DATA_NONE | irq::ACTION_TRIGGER, 0, 0, 1),
            vec![],
        ),
    ];
    for (msg, fds) in &calls {
        assert_eq!(p.client.call(cmd::DEVICE_SET_IRQS, msg, fds).errno(), 0);
    }
    let (be, _) = p.finish();
    let sets: Vec<_> = be
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::SetIrqs { index: 0, set } => Some(set.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets,
        [
            IrqCall::Eventfds {
                start: 0,
                fds: FdSummary {
                    assigned: 1,
                    deassigned: 0
                }
            },
            IrqCall::Eventfds {
                start: 0,
                fds: FdSummary {
                    assigned: 0,
                    deassigned: 1
                }
            },
            IrqCall::DisableAll,
            IrqCall::Mask {
                start: 0,
                count: 1,
                masked: true
            },
            IrqCall::Mask {
                start: 0,
                count: 1,
                masked: false
            },
            IrqCall::Trigger { start: 0, count: 1 },
        ]
    );
}

#[test]
fn interrupt_eventfds_arrive_non_blocking() {
    let mut p = pair();
    let efd = eventfd();
    // The fake backend asserts O_NONBLOCK on every eventfd it receives.
    let r = p.client.call(
        cmd::DEVICE_SET_IRQS,
        &irq_set(irq::DATA_EVENTFD | irq::ACTION_TRIGGER, 0, 0, 1),
        &[efd.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0);
    // The flag lives on the open file description, shared with ours.
    assert_is_nonblocking_eventfd(efd.as_raw_fd());
    p.finish();
}

#[test]
fn region_read_and_write_reach_the_backend() {
    let mut p = pair();
    let r = p
        .client
        .call(cmd::REGION_READ, &region_rw(CONFIG_INDEX, 0, 4, &[]), &[]);
    assert_eq!(r.errno(), 0);
    let head = RegionAccess::parse(&r.payload).unwrap();
    assert_eq!(head.count, 4);
    assert_eq!(&r.payload[16..18], &VENDOR_ID.to_le_bytes());
    let r = p
        .client
        .call(cmd::REGION_WRITE, &region_rw(0, 8, 4, &[1, 2, 3, 4]), &[]);
    assert_eq!(r.errno(), 0);
    assert_eq!(RegionAccess::parse(&r.payload).unwrap().count, 4);
    let r = p
        .client
        .call(cmd::REGION_READ, &region_rw(0, 8, 4, &[]), &[]);
    assert_eq!(&r.payload[16..], &[1, 2, 3, 4]);
    // Writes to a read-only or absent region are refused.
    let r = p
        .client
        .call(cmd::REGION_WRITE, &region_rw(1, 0, 1, &[0]), &[]);
    assert_eq!(r.errno(), libc::EINVAL as u32);
    p.finish();
}

#[test]
fn posted_write_with_no_reply_flag_gets_no_reply() {
    let mut p = pair();
    p.client.send(
        &p2pnvme_vfio_user::build::message(
            77,
            cmd::REGION_WRITE,
            flags::NO_REPLY,
            &region_rw(0, 0, 1, &[9]),
        ),
        &[],
    );
    // The next reply is for the next request, not for the posted write.
    let r = p
        .client
        .call(cmd::REGION_READ, &region_rw(0, 0, 1, &[]), &[]);
    assert_eq!(r.payload[16], 9);
    p.finish();
}

#[test]
fn device_reset_reaches_the_backend() {
    let mut p = pair();
    assert_eq!(p.client.call(cmd::DEVICE_RESET, &[], &[]).errno(), 0);
    let (be, _) = p.finish();
    assert_eq!(be.calls, [Call::Reset, Call::Disconnected]);
}

#[test]
fn backend_errors_reach_the_client_as_their_errno_and_never_as_zero() {
    let mut be = p2pnvme_vfio_user::testing::FakeBackend::new();
    be.fail_with = Some(Errno(libc::EBUSY));
    let mut p = serve(be);
    assert_eq!(
        p.client.call(cmd::DEVICE_RESET, &[], &[]).errno(),
        libc::EBUSY as u32
    );
    let (_, s) = p.finish();
    assert_eq!(s.refused, 1);
    let mut be = p2pnvme_vfio_user::testing::FakeBackend::new();
    be.fail_with = Some(Errno(0));
    let mut p = serve(be);
    assert_eq!(
        p.client.call(cmd::DEVICE_RESET, &[], &[]).errno(),
        libc::EIO as u32
    );
    p.finish();
}
