//! The controller's interrupt vectors (MSI-X or MSI): the eventfd each one
//! signals, and its mask. An interrupt raised on a masked vector is kept
//! pending and delivered on unmask.
//!
//! Invariant: the number of vectors is fixed at creation (the capability's
//! size); requests for a vector beyond it are ignored.

use vmm_sys_util::eventfd::EventFd;

/// One vector's routing.
#[derive(Default)]
struct Vector {
    fd: Option<EventFd>,
    masked: bool,
    pending: bool,
}

/// All vectors of one controller.
pub struct Vectors {
    list: Vec<Vector>,
}

impl Vectors {
    /// `n` vectors, none routed.
    pub fn new(n: usize) -> Vectors {
        Vectors {
            list: (0..n).map(|_| Vector::default()).collect(),
        }
    }

    /// How many there are.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// Routes `vector` to an eventfd (None: deassigned).
    pub fn route(&mut self, vector: usize, fd: Option<EventFd>) {
        if let Some(v) = self.list.get_mut(vector) {
            v.fd = fd;
        }
    }

    /// Masks or unmasks `vector`; true when unmasking released a pending
    /// interrupt, which the caller then raises.
    pub fn mask(&mut self, vector: usize, masked: bool) -> bool {
        let Some(v) = self.list.get_mut(vector) else {
            return false;
        };
        v.masked = masked;
        !masked && std::mem::take(&mut v.pending)
    }

    /// Raises `vector`: true when an eventfd was signalled (false: masked,
    /// so pending, or not routed).
    pub fn raise(&mut self, vector: usize) -> bool {
        let Some(v) = self.list.get_mut(vector) else {
            return false;
        };
        if v.masked {
            v.pending = true;
            return false;
        }
        match &v.fd {
            // Non-blocking: a full counter already means "interrupt".
            Some(fd) => {
                let _ = fd.write(1);
                true
            }
            None => false,
        }
    }

    /// A new client: nothing routed, nothing masked or pending.
    pub fn clear(&mut self) {
        self.list.iter_mut().for_each(|v| *v = Vector::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_vector_keeps_its_interrupt_until_unmasked() {
        let mut v = Vectors::new(2);
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        v.route(1, Some(fd.try_clone().unwrap()));
        assert!(v.raise(1));
        assert_eq!(fd.read().unwrap(), 1);
        assert!(!v.mask(1, true));
        assert!(!v.raise(1), "masked: pending");
        assert!(v.mask(1, false), "unmask releases it");
        assert!(!v.raise(5), "no such vector");
        v.clear();
        assert!(!v.raise(1), "not routed after a new client");
    }
}
