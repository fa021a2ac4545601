//! Bring your own files, module and command: shared folders,
//! `module build`, `run --prove` for any command, exit statuses, bad input.

use p2pnvme_ci::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2pnvme-byok-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sample_module(dst: &Path, name: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-modules/p2pread");
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("p2pread.c"), dst.join(format!("{name}.c"))).unwrap();
    std::fs::write(dst.join("Makefile"), format!("obj-m := {name}.o\n")).unwrap();
}

#[test]
fn shared_folder_carries_changes_both_ways_while_the_guest_runs() {
    let dir = scratch("share");
    std::fs::write(dir.join("from-host"), "host-1\n").unwrap();
    // The guest writes, then waits for the host's answer to appear. It
    // publishes its file by rename: a file written in place exists (empty)
    // before its bytes arrive, and the host may read it in between.
    let cmd = "cat /mnt/share-test/from-host && echo guest-1 > /mnt/share-test/.from-guest && \
               mv /mnt/share-test/.from-guest /mnt/share-test/from-guest && \
               i=0; while [ ! -e /mnt/share-test/answer ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
               cat /mnt/share-test/answer";
    let share = format!("{}:/mnt/share-test", dir.display());
    let child = Command::new(p2pnvme_bin())
        .args(["run", "--share", &share, "--", cmd])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !dir.join("from-guest").exists() {
        assert!(
            Instant::now() < deadline,
            "the guest's file never reached the host"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("from-guest")).unwrap(),
        "guest-1\n"
    );
    std::fs::write(dir.join("answer"), "host-2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!(s, "host-1\nhost-2\n");
}

/// Builds ci/guest-tools/p2pdd.c statically in the root filesystem into a
/// fresh folder to share with the guest.
fn p2pdd() -> PathBuf {
    let dir = scratch("p2pdd");
    let root = image_rootfs();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-tools/p2pdd.c");
    let inside = format!("tmp/p2pdd-test-{}", std::process::id());
    std::fs::create_dir_all(root.join(&inside)).unwrap();
    std::fs::copy(&src, root.join(&inside).join("p2pdd.c")).unwrap();
    let ok = Command::new("chroot")
        .arg(&root)
        .args(["gcc", "-O2", "-Wall", "-static", "-o"])
        .arg(format!("/{inside}/p2pdd"))
        .arg(format!("/{inside}/p2pdd.c"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "p2pdd did not build");
    std::fs::copy(root.join(&inside).join("p2pdd"), dir.join("p2pdd")).unwrap();
    let _ = std::fs::remove_dir_all(root.join(&inside));
    dir
}

#[test]
fn prove_passes_a_dd_through_p2pmem_and_fails_one_through_ram() {
    let tool = p2pdd();
    let share = format!("{}:/opt/tool", tool.display());
    let base = [
        "--nvme",
        "2",
        "--share",
        &share,
        "--prove",
        "p2p0n1:4M",
        "--prove-dst",
        "p2p1n1",
        "--require-bypass",
    ];
    let dd = "/opt/tool/p2pdd $P2PNVME_PROVE_SRC $P2PNVME_PROVE_OFF $P2PNVME_PROVE_DST $P2PNVME_PROVE_DST_OFF $P2PNVME_PROVE_LEN";
    let via_p2pmem = format!(
        "{dd} $(basename $(readlink -f /sys/block/${{P2PNVME_PROVE_DST#/dev/}}/device/device))"
    );
    let (code, r) = prove(&base, &via_p2pmem);
    assert_eq!(code, Some(0), "{r:?}");
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(r.bypassed_system_memory, Some(true), "{r:?}");
    assert_eq!(r.guest_ram_data_bytes, Some(0));
    assert_eq!(r.ram_dump_hits, 0);
    assert_eq!(r.dst_match, Some(true));
    assert_eq!(
        r.cmb_data_bytes.unwrap() + r.peer_data_bytes.unwrap(),
        2 * (4 << 20)
    );

    let (code, r) = prove(&base, &format!("{dd} ram"));
    assert_eq!(
        code,
        Some(1),
        "--require-bypass fails a copy through RAM: {r:?}"
    );
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert_eq!(r.bypassed_system_memory, Some(false), "{r:?}");
    assert_eq!(r.guest_ram_data_bytes, Some(2 * (4 << 20)));
    assert!(r.ram_dump_hits > 0, "{r:?}");
    assert_eq!(r.dst_match, Some(true));
    assert!(
        r.reasons.iter().any(|x| x.contains("through guest RAM")),
        "{r:?}"
    );
}

/// The README's "Develop your own driver" commands, run as written on the
/// sample module (renamed mydrv), with the module's own read under --prove.
#[test]
fn readme_develop_your_own_driver_loop_works_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("## Develop your own driver")
        .nth(1)
        .expect("README has a Develop your own driver section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in that section");
    let work = scratch("mydrv");
    sample_module(&work.join("mydrv"), "mydrv");
    let bin_dir = p2pnvme_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let commands: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("p2pnvme "))
        .collect();
    assert_eq!(commands.len(), 3, "{block}");
    let mut outputs = vec![];
    for c in commands {
        let out = Command::new("sh")
            .args(["-c", c])
            .current_dir(&work)
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("$ {c}\n{text}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{c}");
        outputs.push(text);
    }
    assert!(
        outputs[0].trim().ends_with("mydrv/mydrv.ko"),
        "{}",
        outputs[0]
    );
    assert!(outputs[1].contains("into P2P memory of"), "{}", outputs[1]);
    assert!(outputs[2].contains("PASS:"), "{}", outputs[2]);
    assert!(
        outputs[2].contains("bypassed system memory: yes"),
        "{}",
        outputs[2]
    );
}

#[test]
fn module_that_does_not_compile_fails_with_the_compilers_messages() {
    let dir = scratch("broken").join("broken");
    sample_module(&dir, "broken");
    std::fs::write(
        dir.join("broken.c"),
        "int broken(void) { return undeclared_thing; }\n",
    )
    .unwrap();
    let out = p2pnvme(&["module", "build", dir.to_str().unwrap()]);
    let err = stderr_of_exit(&out, 2);
    assert!(err.contains("undeclared_thing"), "{err}");
    assert!(
        err.lines().next().unwrap().contains("did not build"),
        "{err}"
    );
}

/// ci/guest-modules/oops built against the default guest kernel in a
/// scratch folder; returns the folder.
fn oops_module(name: &str) -> PathBuf {
    let dir = scratch(name).join("oops");
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-modules/oops");
    for f in ["Makefile", "oops.c"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let out = p2pnvme(&["module", "build", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    dir
}

/// The panic comes from an oops under `oops=panic`, not from
/// /proc/sysrq-trigger: the minimal kernel has no MAGIC_SYSRQ.
#[test]
fn kernel_panic_under_the_command_exits_255_with_the_report() {
    let dir = oops_module("panic");
    let share = format!("{}:/mnt/oops", dir.display());
    let out = p2pnvme(&[
        "run",
        "--append",
        "oops=panic",
        "--share",
        &share,
        "--",
        "insmod /mnt/oops/oops.ko; sleep 30",
    ]);
    let err = stderr_of_exit(&out, 255);
    assert!(err.contains("Kernel panic"), "{err}");
    assert!(
        err.contains("without reporting an exit status"),
        "the guest died under the command: {err}"
    );
}

/// An oops under a command that is not the last one of the run: the run
/// goes on and its last command succeeds, but the kernel did not stay
/// healthy, so the run exits 3 with the oops.
#[test]
fn kernel_oops_in_the_middle_of_a_run_exits_3_with_the_oops() {
    let dir = oops_module("oops");
    let share = format!("{}:/mnt/oops", dir.display());
    let out = p2pnvme(&[
        "run",
        "--share",
        &share,
        "--",
        "insmod /mnt/oops/oops.ko; echo after",
    ]);
    let err = stderr_of_exit(&out, 3);
    assert!(err.contains("reported an error"), "{err}");
    assert!(err.contains("NULL pointer"), "the oops is printed: {err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
}

#[test]
fn bad_input_is_refused_before_boot_with_one_line() {
    let marker = unique_marker("byok-bad");
    let not_kernel = scratch("notkernel").join("README");
    std::fs::write(&not_kernel, "not a kernel\n").unwrap();
    let nk = not_kernel.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["run", "--share", "/no/such/folder", "--", "true"],
            "does not exist",
        ),
        (
            vec!["run", "--nvme", "1", "--prove", "p2p3n1:1M", "--", "true"],
            "does not have",
        ),
        (
            vec!["run", "--nvme", "1", "--prove", "p2p0n1:300M", "--", "true"],
            "past the namespace's end",
        ),
        (
            vec!["run", "--kernel", "/no/such/kernel", "--", "true"],
            "--kernel",
        ),
        (vec!["run", "--kernel", nk, "--", "true"], "not a kernel"),
        (vec!["module", "build", "/no/such/module"], "does not exist"),
    ] {
        let mut a = args.clone();
        a.splice(1..1, ["--append", marker.as_str()]);
        if a[0] == "module" {
            a = args.clone();
        }
        let out = p2pnvme(&a);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 3, "{args:?}: {err}");
        assert!(
            processes_mentioning(&marker).is_empty(),
            "{args:?} left a process"
        );
    }
}
