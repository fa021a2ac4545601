//! What a DMA moved and where: the vocabulary shared by DMA resolution
//! (`mem`) and the counters (`stats`), so neither depends on the other's
//! internals.

/// Where a DMA address resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Guest memory the client mapped with DMA_MAP.
    GuestRam,
    /// This controller's CMB.
    OwnCmb,
    /// The CMB of controller `n` of the same peer group.
    PeerCmb(usize),
}

/// What the bytes were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// I/O command payload.
    Data,
    /// Queue entries, PRP/SGL lists, admin and DSM/Copy payloads.
    Meta,
}

/// Which way the bytes went, seen from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The device read memory (e.g. the payload of a Write command).
    Read,
    /// The device wrote memory (e.g. the payload of a Read command).
    Written,
}

/// A class of DMA targets, as fault rules name them (`ram`, `cmb`, `peer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetClass {
    /// Guest RAM.
    Ram,
    /// The controller's own CMB.
    Cmb,
    /// Any peer controller's CMB.
    Peer,
}

impl TargetClass {
    /// Whether `t` is of this class.
    pub fn holds(self, t: Target) -> bool {
        matches!(
            (self, t),
            (TargetClass::Ram, Target::GuestRam)
                | (TargetClass::Cmb, Target::OwnCmb)
                | (TargetClass::Peer, Target::PeerCmb(_))
        )
    }
}
