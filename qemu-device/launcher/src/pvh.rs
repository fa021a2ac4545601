//! Which image QEMU boots: a kernel tree's ELF `vmlinux` when it has the
//! PVH entry point (CONFIG_PVH: QEMU jumps straight into the uncompressed
//! kernel, skipping the bzImage's decompressor, about 0.15 s under TCG),
//! else its bzImage. A KASAN kernel boots its bzImage: its PVH entry calls
//! instrumented C (memcmp of the hypervisor's CPUID signature) before the
//! early shadow is mapped, and the guest triple-faults before any output.

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, ReadCache};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// ELF note type of the PVH 32-bit entry point (XEN_ELFNOTE_PHYS32_ENTRY).
const PHYS32_ENTRY: u32 = 18;

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

/// Whether `path` is a 64-bit ELF file whose notes hold the PVH entry (name
/// "Xen", type [`PHYS32_ENTRY`]); false for anything else (missing,
/// truncated, not ELF, malformed notes). Only the headers and the note
/// segments are read.
pub fn has_pvh_entry(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let data = ReadCache::new(file);
    let Ok(elf) = ElfFile64::<Endianness, _>::parse(&data) else {
        return false;
    };
    let endian = elf.endian();
    elf.elf_program_headers().iter().any(|ph| {
        let Ok(Some(mut notes)) = ph.notes(endian, &data) else {
            return false;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == PHYS32_ENTRY {
                return true;
            }
        }
        false
    })
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
        v[4] = 2; // ELFCLASS64
        v[5] = 1; // ELFDATA2LSB
        v[6] = 1; // EV_CURRENT
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
