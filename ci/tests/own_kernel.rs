//! `--kernel DIR --build`: a clean kernel source tree (the root filesystem's
//! linux-source, standing in for the user's) is configured with what the
//! guest needs, built out of tree and booted; a second build is incremental.
//! The first run on a machine compiles the whole kernel (about 15 minutes on
//! 2 shared cores); later runs rebuild nothing.

use p2pnvme_ci::*;
use std::path::Path;
use std::time::Instant;

#[test]
fn a_source_tree_is_built_out_of_tree_booted_and_rebuilt_incrementally() {
    let tree = fixture_tree("linux-source-tree.sh");
    let tree = tree.to_str().unwrap();
    let cmd = "uname -r; cat /sys/bus/pci/devices/*/p2pmem/size; lsmod | grep -c '^p2pcopy'";
    let args = ["run", "--kernel", tree, "--build", "--nvme", "1", "--", cmd];
    let first = p2pnvme(&args);
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        "7.3.4-p2pnvme\n16777216\n1\n",
        "the built kernel boots, publishes the CMB and loads p2pcopy"
    );
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(err.contains("[kernel] configuring"), "{err}");
    assert!(
        !Path::new(tree).join(".config").exists(),
        "the source tree was written"
    );
    let t = Instant::now();
    let second = p2pnvme(&args);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(second.status.code(), Some(0));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("[kernel] up to date: nothing to rebuild"),
        "{err}"
    );
    assert!(
        secs < 90.0,
        "an unchanged tree took {secs:.0} s (boot included)"
    );
}

#[test]
fn a_tree_with_an_in_tree_build_is_refused_in_one_line() {
    let dir = tempfile_dir("in-tree-build");
    std::fs::write(dir.join("Makefile"), "").unwrap();
    std::fs::write(dir.join("Kconfig"), "").unwrap();
    std::fs::write(dir.join(".config"), "CONFIG_PCI=y\n").unwrap();
    let out = p2pnvme(&[
        "run",
        "--kernel",
        dir.to_str().unwrap(),
        "--build",
        "--",
        "true",
    ]);
    let err = stderr_of_exit(&out, 2);
    assert!(err.contains("make mrproper"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = p2pnvme(&["run", "--build", "--", "true"]);
    let err = stderr_of_exit(&out, 2);
    assert!(err.contains("--kernel"), "{err}");
}
