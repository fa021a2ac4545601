//! Host-side names of controllers and namespaces, spelled so they cannot be
//! taken for guest device names: `p2p<C>n<N>` is the project's controller C
//! (0-based, in `--nvme` order), namespace N; `qemu<C>n1` is QEMU's
//! controller C. The guest's `/dev/nvmeXnY` numbers follow probe order and
//! differ whenever both kinds are present.

/// Which kind of controller a name means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The project's vfio-user controller (`--nvme`).
    P2p,
    /// QEMU's built-in nvme (`--qemu-nvme`).
    Qemu,
}

/// A namespace named by identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsName {
    pub kind: Kind,
    /// Controller index within its kind.
    pub ctrl: usize,
    /// Namespace id (1-based).
    pub nsid: usize,
}

impl NsName {
    /// Parses `p2p<C>n<N>` or `qemu<C>n<N>`; the old spelling `nvme<C>n<N>`
    /// still means the project's controller C, with a deprecation note
    /// (the second value) to print.
    pub fn parse(s: &str) -> Result<(NsName, Option<String>), String> {
        let split = |rest: &str| -> Option<(usize, usize)> {
            let (c, n) = rest.split_once('n')?;
            let all_digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
            if !all_digits(c) || !all_digits(n) {
                return None;
            }
            Some((c.parse().ok()?, n.parse().ok()?))
        };
        let (kind, rest, old) = if let Some(r) = s.strip_prefix("p2p") {
            (Kind::P2p, r, false)
        } else if let Some(r) = s.strip_prefix("qemu") {
            (Kind::Qemu, r, false)
        } else if let Some(r) = s.strip_prefix("nvme") {
            (Kind::P2p, r, true)
        } else {
            (Kind::P2p, "", false)
        };
        let Some((ctrl, nsid)) = split(rest).filter(|&(_, n)| n >= 1) else {
            return Err(format!(
                "'{s}' is not a namespace name: use p2p<C>n<N> (the project's controller C, namespace N) or qemu<C>n1"
            ));
        };
        let name = NsName { kind, ctrl, nsid };
        let note = old.then(|| {
            format!(
                "'{s}' is the old spelling of {name}, the project's controller {ctrl} on the host side (in the guest it can be another /dev/nvme*): write {name}"
            )
        });
        Ok((name, note))
    }

    /// The controller's host-side name (`p2p0`, `qemu1`).
    pub fn controller(&self) -> String {
        controller_name(self.kind, self.ctrl)
    }
}

impl std::fmt::Display for NsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}n{}", self.controller(), self.nsid)
    }
}

/// The host-side name of controller `ctrl` of `kind`.
pub fn controller_name(kind: Kind, ctrl: usize) -> String {
    match kind {
        Kind::P2p => format!("p2p{ctrl}"),
        Kind::Qemu => format!("qemu{ctrl}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_side_names_are_distinct_from_guest_device_names() {
        let (n, note) = NsName::parse("p2p0n1").unwrap();
        assert_eq!((n.kind, n.ctrl, n.nsid, note), (Kind::P2p, 0, 1, None));
        assert_eq!(n.to_string(), "p2p0n1");
        let (n, _) = NsName::parse("qemu12n1").unwrap();
        assert_eq!(
            (n.kind, n.ctrl, n.controller()),
            (Kind::Qemu, 12, "qemu12".into())
        );
        for bad in ["nvme0", "p2p0n0", "p2pxn1", "sda", "p2p0n1x", "p2p-1n1", ""] {
            assert!(NsName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_old_nvme_spelling_still_works_with_a_deprecation_note() {
        let (n, note) = NsName::parse("nvme1n2").unwrap();
        assert_eq!(n.to_string(), "p2p1n2");
        let note = note.unwrap();
        assert!(
            note.contains("old spelling") && note.contains("write p2p1n2"),
            "{note}"
        );
    }
}
