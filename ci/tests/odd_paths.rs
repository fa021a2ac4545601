//! Paths a user picks may hold any character: a `--backing-dir` whose name
//! has a comma, a space, '=' and ':' reaches the device process intact
//! (it travels in the device's JSON configuration, not in `k=v` text), the
//! guest boots, and its reads and writes hit the files in that directory.

use p2pnvme_ci::*;
use std::os::unix::fs::FileExt;

const DEV0: &str = "$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1)";

#[test]
fn a_backing_dir_with_comma_space_equals_colon_serves_the_namespace() {
    let base = std::env::temp_dir().join(format!("p2pnvme-test-odd-{}", std::process::id()));
    let dir = base.join("ns, a=b:c");
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("nvme0n1.img");
    // The launcher keeps an existing backing file's data: the guest must
    // read this marker from block 0.
    let f = std::fs::File::create(&img).unwrap();
    f.write_all_at(b"odd-path-marker\n", 0).unwrap();
    drop(f);
    let s = guest_ok(
        &[
            "--nvme",
            "1",
            "--ns-size",
            "16M",
            "--backing-dir",
            dir.to_str().unwrap(),
        ],
        &format!(
            "D={DEV0}; dd if=$D bs=512 count=1 iflag=direct 2>/dev/null | head -c 16; \
             printf guest-wrote-this | dd of=$D bs=512 seek=1 conv=sync oflag=direct 2>/dev/null; \
             echo wrote"
        ),
    );
    assert!(s.contains("odd-path-marker"), "{s}");
    assert!(s.contains("wrote"), "{s}");
    let mut back = [0u8; 16];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut back, 512)
        .unwrap();
    assert_eq!(&back, b"guest-wrote-this");
    let _ = std::fs::remove_dir_all(&base);
}
