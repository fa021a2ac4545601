//! The TCG witness end to end: what the guest CPU itself touched
//! during copies, classified by guest physical address.
//!
//! The bound for p2p and bounce copies: the CPU stores nothing of the data
//! into a CMB; what it does store there are the submission queue entries the
//! stock driver keeps in the CMB (64 bytes per NVMe command, one read and
//! one write per chunk), so CPU bytes in all CMB windows stay at or below
//! 64 x 2 x chunks; with 256 KiB chunks that is size / 2048, checked as
//! size / 1024. The counterfactual (the CPU copying every byte into the CMB)
//! puts about the copy size there, so the check can fail.

use p2pnvme_ci::*;
use p2pnvme_docs::witness::{WindowReport, WitnessReport, CLASS_RAM};
use serde_json::Value;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn read_report(path: &Path) -> WitnessReport {
    serde_json::from_slice(&std::fs::read(path).expect("the --witness file"))
        .expect("a witness report")
}

/// CPU bytes in every CMB window, and trapped accesses to them.
fn cmb(w: &WindowReport) -> (u64, u64) {
    let cmbs = w.classes.iter().filter(|c| c.class.ends_with("/cmb"));
    cmbs.fold((0, 0), |(b, t), c| {
        (b + c.total.bytes(), t + c.total.trapped())
    })
}

fn healthy(w: &WindowReport) {
    assert_eq!(w.health.userdata_mismatches, 0, "{:?}", w.health);
    assert_eq!(w.health.dropped, 0, "{:?}", w.health);
    assert!(w.instructions > 0);
}

fn demo_with_witness(mode: &str) -> (Value, WindowReport) {
    let dir = tempfile_dir();
    let file = dir.join("witness.json");
    let size = 16 * MIB;
    let out = p2pnvme(&[
        "demo",
        "--json",
        "--nvme",
        "2",
        "--size",
        "16M",
        "--mode",
        mode,
        "--witness",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "demo --mode {mode} failed");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("demo JSON");
    let report = read_report(&file);
    // The same report is the `witness` object of --json.
    let embedded: WitnessReport = serde_json::from_value(doc["witness"].clone()).unwrap();
    assert_eq!(embedded, report);
    let copy = report.window("copy").expect("the copy's window").clone();
    healthy(&copy);
    assert!(
        report.window("run").is_some(),
        "the whole run is reported too"
    );
    let (cmb_bytes, cmb_trapped) = cmb(&copy);
    let ram = copy.class(CLASS_RAM).unwrap().total;
    eprintln!(
        "{mode}: CPU bytes in CMBs {cmb_bytes} ({cmb_trapped} trapped), in guest RAM {} (loads {} stores {}), {} instructions",
        ram.bytes(),
        ram.load_bytes,
        ram.store_bytes,
        copy.instructions
    );
    assert!(
        cmb_bytes <= size / 1024,
        "{mode}: the CPU moved {cmb_bytes} bytes in CMBs during a {size}-byte copy"
    );
    // The project's CMBs are mapped into the guest: never trapped.
    assert_eq!(cmb_trapped, 0);
    // Doorbells: the controllers' register BARs trap.
    assert!(copy.sum_prefix("p2pnvme-0/").trapped() > 0);
    (doc, copy)
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("p2pnvme-witness-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn p2p_copy_leaves_the_data_to_the_devices() {
    let (doc, _) = demo_with_witness("p2p");
    assert_eq!(doc["mode"], "p2p");
}

#[test]
fn bounce_copy_leaves_the_data_to_the_devices_too() {
    let (doc, _) = demo_with_witness("bounce");
    assert_eq!(doc["mode"], "bounce");
}

#[test]
fn a_cpu_copy_into_the_cmb_is_caught() {
    let file = tempfile_dir().join("cpu-copy.json");
    let mib = 8;
    let size = mib * MIB;
    guest_ok(
        &["--nvme", "1", "--witness", file.to_str().unwrap()],
        &format!("sh /opt/p2pnvme/ci/witness-cpu-copy.sh {mib}"),
    );
    let r = read_report(&file);
    // O_DIRECT into the CMB mapping: the controller moves the data.
    let dma = r.window("p2p-read").unwrap();
    healthy(dma);
    let (dma_bytes, _) = cmb(dma);
    assert!(
        dma_bytes <= size / 1024,
        "DMA read: CPU bytes in CMB {dma_bytes}"
    );
    // Buffered read into the same mapping: the CPU copies every byte.
    let cpu = r.window("cpu-copy").unwrap();
    healthy(cpu);
    let c = cpu.class("p2pnvme-0/cmb").unwrap().total;
    let ram = cpu.class(CLASS_RAM).unwrap().total;
    eprintln!(
        "cpu-copy: CPU stored {} bytes into the CMB ({} trapped); guest RAM bytes {} (O_DIRECT read: {})",
        c.store_bytes,
        c.trapped(),
        ram.bytes(),
        dma.class(CLASS_RAM).unwrap().total.bytes()
    );
    assert!(
        c.store_bytes >= size && c.store_bytes <= size + size / 8,
        "CPU bytes into the CMB {} for a {size}-byte copy",
        c.store_bytes
    );
    assert!(
        ram.load_bytes >= size,
        "the copy's source is the page cache"
    );
    assert_eq!(c.trapped(), 0, "the project's CMB is mapped, not trapped");
}

#[test]
fn guest_window_requests_without_witness_fail_clearly() {
    let out = guest_ok(&[], "p2pnvme-host witness-start x 2>&1; echo rc=$?");
    assert!(out.contains("no witness in this run"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
}

/// A shared object exporting `qemu_plugin_version = VERSION`, built with cc.
fn fake_plugin(version: i32) -> std::path::PathBuf {
    let dir = tempfile_dir();
    let c = dir.join(format!("v{version}.c"));
    let so = dir.join(format!("libv{version}.so"));
    std::fs::write(&c, format!("int qemu_plugin_version = {version};\n")).unwrap();
    let ok = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .status()
        .expect("running cc")
        .success();
    assert!(ok, "cc failed");
    so
}

#[test]
fn the_launcher_refuses_a_witness_built_for_another_api_version() {
    let so = fake_plugin(6);
    let out = std::process::Command::new(p2pnvme_bin())
        .env("P2PNVME_WITNESS_PLUGIN", &so)
        .args(["run", "--witness", "/dev/null", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("plugin API 6") && err.contains("accepts only 7"),
        "{err}"
    );

    let out = std::process::Command::new(p2pnvme_bin())
        .env("P2PNVME_WITNESS_PLUGIN", so.with_file_name("absent.so"))
        .args(["run", "--witness", "/dev/null", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a file"));
}

#[test]
fn our_cmb_is_mapped_while_qemus_nvme_cmb_traps() {
    let file = tempfile_dir().join("cmb-traps.json");
    guest_ok(
        &[
            "--nvme",
            "1",
            "--qemu-nvme",
            "1",
            "--witness",
            file.to_str().unwrap(),
        ],
        "a=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1) && b=$(sh /opt/p2pnvme/ci/nvme-dev.sh qemu-nvme-0 1) && \
         p2pnvme-host witness-start io && \
         dd if=$a of=/dev/null bs=4k count=256 iflag=direct 2>/dev/null && \
         dd if=$b of=/dev/null bs=4k count=256 iflag=direct 2>/dev/null && \
         p2pnvme-host witness-stop",
    );
    let r = read_report(&file);
    let w = r.window("io").unwrap();
    healthy(w);
    // The stock driver writes its submission queue entries into both CMBs.
    let ours = w.class("p2pnvme-0/cmb").unwrap().total;
    let qemus = w.class("qemu-nvme-0/cmb").unwrap().total;
    eprintln!("CPU accesses to the CMB: ours {ours:?}, QEMU's {qemus:?}");
    assert!(ours.stores > 0 && ours.trapped() == 0, "{ours:?}");
    assert!(
        qemus.stores > 0 && qemus.trapped() == qemus.loads + qemus.stores,
        "{qemus:?}"
    );
    // Doorbells trap on both.
    assert!(w.class("p2pnvme-0/regs").unwrap().total.trapped_stores > 0);
    assert!(w.class("qemu-nvme-0/regs").unwrap().total.trapped_stores > 0);
}

#[test]
fn a_launcher_without_its_witness_says_how_to_build_it() {
    let dir = tempfile_dir().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("p2pnvme");
    std::fs::copy(p2pnvme_bin(), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .env_remove("P2PNVME_WITNESS_PLUGIN")
        .args(["run", "--witness", "/dev/null", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("no witness plugin at")
            && err.contains("cargo build --release -p p2pnvme-witness"),
        "{err}"
    );
}

#[test]
fn prove_json_carries_the_witness_of_the_whole_command() {
    let file = tempfile_dir().join("prove.json");
    let (code, r) = prove(
        &[
            "--nvme",
            "2",
            "--prove",
            "p2p0n1:1M",
            "--prove-dst",
            "p2p1n1",
            "--witness",
            file.to_str().unwrap(),
        ],
        "b=$((P2PNVME_PROVE_OFF / 4096)); \
         dd if=$P2PNVME_PROVE_SRC of=$P2PNVME_PROVE_DST bs=4k skip=$b seek=$b count=256 iflag=direct oflag=direct 2>/dev/null && \
         p2pnvme-host witness-start inner && true && p2pnvme-host witness-stop",
    );
    assert_eq!(code, Some(0), "{r:?}");
    assert_eq!(r.dst_match, Some(true), "{r:?}");
    let w = r.witness.expect("the witness object of --prove --json");
    assert_eq!(w, read_report(&file), "the same report as the file");
    // Inner windows close first, then the command's, then the whole run.
    let names: Vec<_> = w.windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["inner", "command", "run"]);
    let (inner, command) = (&w.windows[0], &w.windows[1]);
    healthy(inner);
    healthy(command);
    assert!(command.instructions > inner.instructions);
    let ram = command.class(CLASS_RAM).unwrap().total;
    assert!(ram.loads > 0 && ram.stores > 0, "{ram:?}");
    // dd's O_DIRECT I/O rings the doorbells of both controllers.
    assert!(command.sum_prefix("p2pnvme-0/").trapped() > 0);
    assert!(command.sum_prefix("p2pnvme-1/").trapped() > 0);
}
