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

impl IrqMode {
    /// Parses the `irq=` value of a `--controller` spec.
    pub fn parse(s: &str) -> Option<IrqMode> {
        match s {
            "msix" => Some(IrqMode::Msix),
            "msi" => Some(IrqMode::Msi),
            _ => None,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_two_modes() {
        assert_eq!(IrqMode::parse("msix"), Some(IrqMode::Msix));
        assert_eq!(IrqMode::parse("msi"), Some(IrqMode::Msi));
        assert_eq!(IrqMode::parse("intx"), None);
        assert_eq!(IrqMode::parse("MSI"), None);
        assert_eq!(IrqMode::default(), IrqMode::Msix);
    }
}
