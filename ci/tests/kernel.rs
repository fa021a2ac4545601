//! `--kernel PATH`: a kernel tree boots with its own modules and
//! the project's module built against it; a kernel without P2PDMA is refused
//! before boot.

use p2pnvme_ci::*;
use std::path::Path;

#[test]
fn the_images_kernel_given_as_a_tree_boots_with_its_modules_and_p2pcopy() {
    let tree = fixture_tree("image-kernel-tree.sh");
    let t = tree.to_str().unwrap();
    // Modules build against the tree too.
    let m = std::env::temp_dir().join(format!("p2pnvme-kmod-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&m);
    std::fs::create_dir_all(&m).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-modules/p2pread");
    for f in ["Makefile", "p2pread.c"] {
        std::fs::copy(sample.join(f), m.join(f)).unwrap();
    }
    let out = p2pnvme(&["module", "build", m.to_str().unwrap(), "--kernel", t]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("p2pread.ko"));

    let s = guest_ok(
        &["--kernel", t, "--nvme", "1", "--modules", "null_blk"],
        "uname -r; lsmod | grep -c '^p2pcopy '; p2pcopy providers; modprobe null_blk && ls /dev/nullb0",
    );
    let release = std::fs::read_to_string(tree.join("include/config/kernel.release")).unwrap();
    assert!(s.starts_with(release.trim()), "{s}");
    assert!(s.contains("\n1\n"), "p2pcopy loaded: {s}");
    assert!(s.contains("published true"), "{s}");
    assert!(s.contains("/dev/nullb0"), "--modules null_blk: {s}");
}

#[test]
fn trixies_own_kernel_without_p2pdma_is_refused_before_boot() {
    let tree = fixture_tree("trixie-kernel.sh");
    let marker = unique_marker("no-p2pdma");
    for path in [tree.clone(), tree.join("arch/x86/boot/bzImage")] {
        let out = p2pnvme(&[
            "run",
            "--append",
            &marker,
            "--kernel",
            path.to_str().unwrap(),
            "--",
            "true",
        ]);
        let err = stderr_of_exit(&out, 2);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        if path == tree {
            assert!(err.contains("lacks CONFIG_PCI_P2PDMA"), "{err}");
            assert!(err.contains("6.12"), "{err}");
        } else {
            // Debian's bzImage carries no configuration (IKCONFIG=m).
            assert!(err.contains(".config"), "{err}");
        }
        assert!(processes_mentioning(&marker).is_empty());
    }
}
