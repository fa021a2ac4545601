//! The controller registers at the start of BAR0.

use super::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Controller registers (BAR0 0x00-0x5f), the layout the offsets in
/// [`crate::controller::reg`] are taken from.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ControllerRegisters {
    /// Controller capabilities.
    pub cap: U64,
    /// Version.
    pub vs: U32,
    /// Interrupt mask set.
    pub intms: U32,
    /// Interrupt mask clear.
    pub intmc: U32,
    /// Controller configuration.
    pub cc: U32,
    /// Reserved.
    pub rsvd18: U32,
    /// Controller status.
    pub csts: U32,
    /// NVM subsystem reset.
    pub nssr: U32,
    /// Admin queue attributes.
    pub aqa: U32,
    /// Admin submission queue base address.
    pub asq: U64,
    /// Admin completion queue base address.
    pub acq: U64,
    /// Controller memory buffer location.
    pub cmbloc: U32,
    /// Controller memory buffer size.
    pub cmbsz: U32,
    /// Boot partition information.
    pub bpinfo: U32,
    /// Boot partition read select.
    pub bprsel: U32,
    /// Boot partition memory buffer location.
    pub bpmbl: U64,
    /// Controller memory buffer memory space control.
    pub cmbmsc: U64,
    /// Controller memory buffer status.
    pub cmbsts: U32,
    /// Controller memory buffer elasticity buffer size.
    pub cmbebs: U32,
}
const _: () = assert!(size_of::<ControllerRegisters>() == 0x60);
