//! How a controller interrupts the host: MSI-X (the default) or plain MSI.
//! MSI exists because QEMU 11.1's vfio-user-pci aborts when it frees an
//! unplugged device that has an MSI-X capability (its PBA teardown runs
//! after the PCI core already removed the MSI-X regions); a device without
//! MSI-X can be hot-unplugged.

use crate::limits::{MSIX_VECTORS, MSI_VECTORS};

/// The interrupt capability a controller offers (exactly one of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqMode {
    /// MSI-X with `MSIX_VECTORS` vectors.
    #[default]
    Msix,
    /// MSI, 64-bit address, `MSI_VECTORS` vector(s), no per-vector masking.
    Msi,
}

impl From<p2pnvme_docs::device_config::Irq> for IrqMode {
    fn from(irq: p2pnvme_docs::device_config::Irq) -> IrqMode {
        match irq {
            p2pnvme_docs::device_config::Irq::Msix => IrqMode::Msix,
            p2pnvme_docs::device_config::Irq::Msi => IrqMode::Msi,
        }
    }
}

impl IrqMode {
    /// Interrupt vectors the controller has; an interrupt vector at or
    /// beyond this is invalid.
    pub fn vectors(self) -> usize {
        match self {
            IrqMode::Msix => MSIX_VECTORS,
            IrqMode::Msi => MSI_VECTORS,
        }
    }

    /// The vfio-pci irq index of this capability (VFIO_PCI_MSI_IRQ_INDEX 1,
    /// VFIO_PCI_MSIX_IRQ_INDEX 2).
    pub fn vfio_index(self) -> u32 {
        match self {
            IrqMode::Msix => 2,
            IrqMode::Msi => 1,
        }
    }
}
