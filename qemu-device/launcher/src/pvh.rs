//! Which image QEMU boots: a kernel tree's ELF `vmlinux` when it has the
//! PVH entry point (CONFIG_PVH: QEMU jumps straight into the uncompressed
//! kernel, skipping the bzImage's decompressor, about 0.15 s under TCG),
//! else its bzImage. A KASAN kernel boots its bzImage: its PVH entry calls
//! instrumented C (memcmp of the hypervisor's CPUID signature) before the
//! early shadow is mapped, and the guest triple-faults before any output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// ELF note type of the PVH 32-bit entry point (XEN_ELFNOTE_PHYS32_ENTRY).
const PHYS32_ENTRY: u32 = 18;
/// PT_NOTE program headers larger than this are not read.
const MAX_NOTES: u64 = 1 << 20;

/// The file to hand QEMU's `-kernel` for a kernel with this parsed
/// configuration: a tree's `vmlinux` when it has the PVH entry and no KASAN,
/// else the bzImage (a packaged kernel, without a tree, always).
pub fn boot_file(bzimage: &Path, tree: Option<&Path>, cfg: &BTreeMap<String, String>) -> PathBuf {
    let kasan = cfg.get("KASAN").is_some_and(|v| v == "y");
    match tree.map(|t| t.join("vmlinux")) {
        Some(vmlinux) if !kasan && has_pvh_entry(&vmlinux) => vmlinux,
        _ => bzimage.to_path_buf(),
    }
}

/// Whether `path` is a 64-bit little-endian ELF file with the PVH entry
/// note; false for anything else (missing, truncated, not ELF).
pub fn has_pvh_entry(path: &Path) -> bool {
    File::open(path)
        .ok()
        .and_then(|mut f| pvh_note(&mut f))
        .unwrap_or(false)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn pvh_note(f: &mut File) -> Option<bool> {
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Some(false);
    }
    let phoff = u64_at(&eh, 0x20)?;
    let phentsize = u64::from(u16_at(&eh, 0x36)?);
    let phnum = u64::from(u16_at(&eh, 0x38)?);
    if phentsize < 0x28 {
        return Some(false);
    }
    for i in 0..phnum {
        let mut ph = [0u8; 0x28];
        f.seek(SeekFrom::Start(
            phoff.checked_add(i.checked_mul(phentsize)?)?,
        ))
        .ok()?;
        f.read_exact(&mut ph).ok()?;
        // PT_NOTE
        if u32_at(&ph, 0)? != 4 {
            continue;
        }
        let (offset, size) = (u64_at(&ph, 0x08)?, u64_at(&ph, 0x20)?);
        if size > MAX_NOTES {
            continue;
        }
        let mut notes = vec![0u8; usize::try_from(size).ok()?];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut notes).ok()?;
        if notes_have_pvh(&notes) {
            return Some(true);
        }
    }
    Some(false)
}

/// Walks the notes of one PT_NOTE segment (4-byte aligned name and
/// description) for name "Xen", type [`PHYS32_ENTRY`].
fn notes_have_pvh(notes: &[u8]) -> bool {
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    let mut at = 0usize;
    while let (Some(namesz), Some(descsz), Some(kind)) = (
        u32_at(notes, at),
        u32_at(notes, at + 4),
        u32_at(notes, at + 8),
    ) {
        let name_at = at + 12;
        let Some(name_end) = name_at.checked_add(namesz as usize) else {
            return false;
        };
        let name = notes.get(name_at..name_end).unwrap_or_default();
        if kind == PHYS32_ENTRY && name == b"Xen\0" {
            return true;
        }
        let next = align4(name_end)
            .and_then(|d| d.checked_add(descsz as usize))
            .and_then(align4);
        match next {
            Some(n) if n > at && n <= notes.len() => at = n,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = vec![];
        v.extend((name.len() as u32).to_le_bytes());
        v.extend((desc.len() as u32).to_le_bytes());
        v.extend(kind.to_le_bytes());
        v.extend(name);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v.extend(desc);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }

    /// A minimal ELF64 file with one PT_NOTE segment holding `notes`.
    fn elf(notes: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 64 + 0x38];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        v[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        v[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        v[64..68].copy_from_slice(&4u32.to_le_bytes());
        v[64 + 0x08..64 + 0x10].copy_from_slice(&(120u64).to_le_bytes());
        v[64 + 0x20..64 + 0x28].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        v.extend(notes);
        v
    }

    #[test]
    fn a_tree_boots_its_pvh_vmlinux_unless_it_is_built_with_kasan() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().to_path_buf();
        let pvh = note(b"Xen\0", PHYS32_ENTRY, &0x100_0000u64.to_le_bytes());
        std::fs::write(tree.join("vmlinux"), elf(&pvh)).unwrap();
        let cfg = crate::kconfig::parse_config;
        // The image's packaged kernel: its bzImage, whatever lies around.
        let packaged = tree.join("vmlinuz");
        assert_eq!(boot_file(&packaged, None, &cfg("CONFIG_PVH=y\n")), packaged);
        let bz = tree.join("arch/x86/boot/bzImage");
        let pvh_only = cfg("CONFIG_PVH=y\n");
        assert_eq!(boot_file(&bz, Some(&tree), &pvh_only), tree.join("vmlinux"));
        let kasan = cfg("CONFIG_PVH=y\nCONFIG_KASAN=y\n");
        assert_eq!(boot_file(&bz, Some(&tree), &kasan), bz);
    }

    fn check(bytes: &[u8]) -> bool {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmlinux");
        std::fs::write(&p, bytes).unwrap();
        has_pvh_entry(&p)
    }

    #[test]
    fn a_vmlinux_with_the_pvh_entry_note_is_recognised_among_other_notes() {
        let mut notes = note(b"Xen\0", 6, b"linux\0");
        notes.extend(note(b"Xen\0", PHYS32_ENTRY, &0x100_0000u64.to_le_bytes()));
        assert!(check(&elf(&notes)));
    }

    #[test]
    fn other_notes_bad_sizes_and_non_elf_files_are_not_pvh() {
        assert!(!check(&elf(&note(b"GNU\0", PHYS32_ENTRY, b"abcd"))));
        assert!(!check(&elf(&note(b"Xen\0", 6, b"linux\0"))));
        // A name size running past the segment.
        let mut bad = note(b"Xen\0", PHYS32_ENTRY, b"");
        bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!check(&elf(&bad)));
        assert!(!check(
            b"MZ not an ELF file at all, just bytes....................................."
        ));
        assert!(!check(b"\x7fELF"));
        assert!(!has_pvh_entry(Path::new("/nonexistent/vmlinux")));
    }
}
