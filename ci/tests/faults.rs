//! Fault injection (issue 12), guest side: each scenario boots a guest with
//! `--fault` rules and checks what the nvme driver and `p2pcopy` did (exit
//! status, errno, bytes done, P2P memory, kernel log), with a control in the
//! same guest so that no check passes by itself. Guest scripts:
//! ci/guest/fault-*.sh; they print `key=value` lines.

use p2pnvme_ci::*;
use p2pnvme_docs::trace::{SegmentTarget, TraceRecord};
use std::collections::HashMap;
use std::path::Path;

/// Where the faulted copies start, and the LBA range a rule limits itself
/// to (512-byte LBAs), so that the guest's boot-time reads never match.
const OFF: u64 = 64 << 20;
/// A control range of the same size outside the rule's LBAs.
const CONTROL: u64 = 128 << 20;
/// Bytes each copy moves: 8 MiB = 32 chunks of 256 KiB, 4 per wave.
const LEN: u64 = 8 << 20;
/// Bytes of one p2pcopy wave (default chunk 256 KiB x depth 4).
const WAVE: u64 = 1 << 20;
const EIO: i64 = 5;

fn lbas(off: u64, len: u64) -> String {
    format!("lba={}-{}", off / 512, (off + len) / 512 - 1)
}

/// What a guest script printed: the last value of each key, and every
/// `dmesg=` line.
struct Kv {
    map: HashMap<String, String>,
    dmesg: Vec<String>,
}

impl Kv {
    fn parse(out: &str) -> Kv {
        let mut map = HashMap::new();
        let mut dmesg = vec![];
        for line in out.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k == "dmesg" {
                    dmesg.push(v.to_string());
                } else {
                    map.insert(k.to_string(), v.to_string());
                }
            }
        }
        Kv { map, dmesg }
    }

    fn get(&self, k: &str) -> &str {
        self.map
            .get(k)
            .unwrap_or_else(|| panic!("the guest printed no {k}"))
    }

    fn num(&self, k: &str) -> i64 {
        self.get(k)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{k}={} ({e})", self.get(k)))
    }

    fn json(&self, k: &str) -> serde_json::Value {
        serde_json::from_str(self.get(k)).unwrap_or_else(|e| panic!("{k}: {e}"))
    }

    /// Kernel log lines containing every one of `words`.
    fn log(&self, words: &[&str]) -> Vec<&str> {
        self.dmesg
            .iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(|l| l.as_str())
            .collect()
    }

    /// Kernel timestamp (s) of the first log line containing `what`.
    fn time(&self, what: &str) -> Option<f64> {
        let l = self.log(&[what]).into_iter().next()?;
        let t = l.trim_start().strip_prefix('[')?.split(']').next()?;
        t.trim().parse().ok()
    }
}

/// The guest kernel a scenario boots.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Debian,
    Minimal,
}

/// What one scenario left: the launcher's exit status and stderr, what the
/// guest script printed, the device's final counters and its trace.
struct Run {
    code: Option<i32>,
    kv: Kv,
    stats: StatsDoc,
    stderr: String,
    trace: Vec<TraceRecord>,
}

/// Boots `--nvme 2` with `rules` (and `--trace`), runs `script`.
fn scenario(k: Kernel, rules: &[String], extra: &[&str], script: &str) -> Run {
    let dir = std::env::temp_dir().join(format!("p2pnvme-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (stats, trace) = (dir.join("stats.json"), dir.join("trace.jsonl"));
    let (stats_arg, trace_arg) = (stats.display().to_string(), trace.display().to_string());
    let mut a = vec!["run", "--nvme", "2", "--timeout", "900"];
    // Named on both: the default kernel is the minimal one once built.
    a.extend_from_slice(&[
        "--guest-kernel",
        match k {
            Kernel::Debian => "debian",
            Kernel::Minimal => "minimal",
        },
    ]);
    for r in rules {
        a.extend_from_slice(&["--fault", r]);
    }
    a.extend_from_slice(extra);
    a.extend_from_slice(&[
        "--trace",
        &trace_arg,
        "--stats-json",
        &stats_arg,
        "--",
        script,
    ]);
    let out = p2pnvme(&a);
    let run = Run {
        code: out.status.code(),
        kv: Kv::parse(&String::from_utf8_lossy(&out.stdout)),
        stats: read_stats(&stats),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        trace: read_trace(&trace),
    };
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn read_trace(p: &Path) -> Vec<TraceRecord> {
    std::fs::read_to_string(p)
        .expect("the trace file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn read_stats(p: &Path) -> StatsDoc {
    let text = std::fs::read_to_string(p).expect("--stats-json was written");
    serde_json::from_str(&text).expect("a stats document")
}

/// How often the rule `text` fired on controller `ctrl`.
fn fired(doc: &StatsDoc, ctrl: usize, text: &str) -> u64 {
    doc.controllers[ctrl]
        .faults
        .iter()
        .find(|f| f.rule == text)
        .unwrap_or_else(|| panic!("rule {text} is not in the stats of controller {ctrl}"))
        .fired
}

/// A p2p copy that `rule` breaks part-way: the copy fails with EIO after
/// some whole waves, P2P memory comes back, the control copy and the same
/// copy again succeed, and the module unloads.
fn broken_copy(k: Kernel, rule: &str, status: u16) -> Run {
    let rules = vec![rule.to_string()];
    let run = scenario(
        k,
        &rules,
        &[],
        &format!("sh /opt/p2pnvme/ci/fault-copy.sh {OFF} {CONTROL} {LEN}"),
    );
    let (kv, doc) = (&run.kv, &run.stats);
    assert_eq!(run.code, Some(0), "the guest script ran to its end");
    // The control: the same copy elsewhere, and the same range once the
    // rule has fired, succeed in full.
    assert_eq!(kv.num("control_rc"), 0);
    assert_eq!(kv.json("control_json")["bytes_done"], LEN);
    assert_eq!(kv.num("again_rc"), 0, "the copy works after the fault");
    assert_eq!(kv.json("again_json")["bytes_done"], LEN);
    // The faulted copy: EIO, some but not all bytes, whole waves only.
    assert_ne!(kv.num("fault_rc"), 0);
    let f = kv.json("fault_json");
    assert_eq!(f["errno"], EIO, "{f}");
    let done = f["bytes_done"].as_u64().unwrap();
    assert!(done > 0 && done < LEN, "bytes done {done} of {LEN}");
    assert_eq!(done % WAVE, 0, "bytes done count whole waves: {done}");
    // P2P memory: every byte is back after the failure.
    assert_eq!(kv.num("avail_after_fault"), kv.num("avail_before"));
    assert_eq!(kv.num("avail_after"), kv.num("avail_before"));
    assert_eq!(kv.num("rmmod_rc"), 0, "the module unloads");
    assert_eq!(kv.num("loaded"), 0);
    assert_eq!(fired(doc, 0, rule), 1, "the rule fired once");
    // The kernel log names the device whose read failed.
    let src = kv.get("src");
    let line = kv.log(&["p2pcopy: ", &format!("read of {src} failed")]);
    assert_eq!(
        line.len(),
        1,
        "one p2pcopy line naming {src}: {:?}",
        kv.dmesg
    );
    assert!(line[0].contains(kv.get("provider")), "{}", line[0]);
    assert!(
        line[0].contains(&format!("after {done} bytes")),
        "{}",
        line[0]
    );
    // The device's trace: one faulted command, a read with that status.
    let hit: Vec<_> = run.trace.iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(hit.len(), 1, "{hit:?}");
    assert_eq!(
        (hit[0].op.as_str(), hit[0].status),
        ("read", status),
        "{hit:?}"
    );
    run
}

#[test]
fn media_error_mid_copy_fails_with_eio_and_frees_p2p_memory() {
    let rule = format!("ctrl=0,op=read,{},nth=10,status=0x281", lbas(OFF, LEN));
    let run = broken_copy(Kernel::Debian, &rule, 0x281);
    let kv = &run.kv;
    // The nvme driver reports the media error (SCT 2h SC 81h, no retry:
    // DNR) on the source's read (opcode 2); the block layer calls it
    // ENODATA, p2pcopy returns EIO (its ABI; the errno check above guards it).
    let src = kv.get("src");
    assert!(
        !kv.log(&[&format!("{src}: I/O Cmd(0x2)"), "sct 0x2 / sc 0x81", "DNR"])
            .is_empty(),
        "{:?}",
        kv.dmesg
    );
}

fn peer_dma_fault(k: Kernel) {
    let rule = format!(
        "ctrl=0,target=peer,op=read,{},nth=10,dma-fail=65536",
        lbas(OFF, LEN)
    );
    let run = broken_copy(k, &rule, 0x004);
    let kv = &run.kv;
    let (src, dst) = (kv.get("src"), kv.get("dst"));
    // The failed read's data was going to the peer's CMB (controller 1).
    let hit = run.trace.iter().find(|r| r.fault.is_some()).unwrap();
    assert!(
        hit.segments
            .iter()
            .any(|s| s.target == SegmentTarget::Peer && s.peer == Some(1)),
        "{hit:?}"
    );
    // The driver's line names the source controller's namespace and the
    // Data Transfer Error; nothing blames the destination.
    assert!(
        !kv.log(&[&format!("{src}: I/O Cmd(0x2)"), "sct 0x0 / sc 0x4)", "DNR"])
            .is_empty(),
        "{:?}",
        kv.dmesg
    );
    assert!(kv.log(&[&format!("of {dst} failed")]).is_empty());
}

#[test]
fn peer_cmb_dma_fault_mid_copy_names_the_failing_device() {
    peer_dma_fault(Kernel::Debian);
}

#[test]
fn minimal_kernel_peer_cmb_dma_fault_mid_copy_names_the_failing_device() {
    peer_dma_fault(Kernel::Minimal);
}

/// I/O timeout (s) the stuck-command scenarios give the nvme driver.
const IO_TIMEOUT: &str = "nvme_core.io_timeout=5";

/// A read the controller never finishes: the driver times out, resets,
/// and I/O and a verify pass afterwards. Returns what the guest printed.
fn stuck_read(k: Kernel, action: &str) -> Run {
    let rule = format!("ctrl=0,op=read,{},nth=1,{action}", lbas(OFF, 4096));
    let run = scenario(
        k,
        std::slice::from_ref(&rule),
        &["--append", IO_TIMEOUT],
        &format!("sh /opt/p2pnvme/ci/fault-timeout.sh {OFF}"),
    );
    let (kv, doc) = (&run.kv, &run.stats);
    assert_eq!(run.code, Some(0), "the guest script ran to its end");
    assert_eq!(kv.num("io_timeout"), 5, "the short timeout took effect");
    assert_eq!(fired(doc, 0, &rule), 1, "the rule fired once");
    // The stuck read comes back: the driver retried it after the reset.
    assert_eq!(kv.num("read_rc"), 0, "{:?}", kv.dmesg);
    assert_eq!(kv.num("second_read_rc"), 0);
    assert_eq!(kv.get("state"), "live");
    assert_eq!(kv.num("verify_rc"), 0, "fio verify after the reset");
    run
}

/// Seconds from the stuck read to `what` in the kernel log.
fn since_start(kv: &Kv, what: &str) -> f64 {
    let t0 = kv.time("p2pnvme-fault: read-start").expect("start mark");
    let t = kv
        .time(what)
        .unwrap_or_else(|| panic!("no '{what}' in the kernel log: {:?}", kv.dmesg));
    t - t0
}

/// Device clock: (injected command fetched, dropped by the reset, first
/// successful I/O completed after that), in seconds from the injection.
fn device_times(trace: &[TraceRecord]) -> (f64, f64) {
    let stuck = trace
        .iter()
        .find(|r| r.fault.is_some())
        .expect("the injected command is in the trace");
    assert!(stuck.dropped, "the reset dropped it: {stuck:?}");
    let fetched = stuck.t_us - stuck.latency_us;
    let good = trace
        .iter()
        .filter(|r| r.q > 0 && r.status == 0 && !r.dropped && r.t_us > stuck.t_us)
        .map(|r| r.t_us)
        .min()
        .expect("a successful I/O after the reset");
    let s = |t: u64| (t - fetched) as f64 / 1e6;
    (s(stuck.t_us), s(good))
}

#[test]
fn a_completion_that_never_comes_times_out_aborts_resets_and_io_resumes() {
    never_completes(Kernel::Debian);
}

/// Also checks that `nvme_core.io_timeout=` reaches a built-in nvme driver.
#[test]
fn minimal_kernel_a_completion_that_never_comes_times_out_aborts_resets_and_io_resumes() {
    never_completes(Kernel::Minimal);
}

fn never_completes(k: Kernel) {
    let run = stuck_read(k, "never");
    let kv = &run.kv;
    let dev = kv.get("dev");
    let ctrl = &dev[..dev.rfind('n').expect("a namespace name")];
    let abort = since_start(kv, "timeout, aborting");
    let reset = since_start(kv, "timeout, reset controller");
    let back = since_start(kv, "p2pnvme-fault: read-done rc=0");
    assert!(
        !kv.log(&[&format!("{ctrl}: "), "timeout, reset controller"])
            .is_empty(),
        "the reset names the controller {ctrl}: {:?}",
        kv.dmesg
    );
    // One timeout to the Abort, a second one (the command is still not
    // back) to the reset.
    assert!(
        abort >= 4.0 && abort < reset && reset <= back,
        "{abort} {reset} {back}"
    );
    assert!(!kv.log(&[&format!("{ctrl}: Abort status")]).is_empty());
    let (dropped, good) = device_times(&run.trace);
    assert!(dropped >= 2.0 * 4.0 && dropped <= good, "{dropped} {good}");
    println!(
        "{k:?} kernel, never-completing read, io_timeout=5: guest clock: timeout and Abort after {abort:.2} s, \
         controller reset after {reset:.2} s, the read back (retried) after {back:.2} s; \
         device clock: command dropped by the reset after {dropped:.2} s, first successful I/O after {good:.2} s"
    );
}

#[test]
fn controller_fatal_status_resets_the_controller_and_io_resumes() {
    let run = stuck_read(Kernel::Debian, "cfs");
    let kv = &run.kv;
    // The timeout handler reads CSTS, sees CFS (bit 1) with RDY, resets at
    // once (no Abort first).
    let reset = since_start(kv, "controller is down; will reset: CSTS=0x3");
    let back = since_start(kv, "p2pnvme-fault: read-done rc=0");
    assert!(reset >= 4.0 && reset <= back, "{reset} {back}");
    assert!(kv.log(&["timeout, aborting"]).is_empty(), "{:?}", kv.dmesg);
    let (dropped, good) = device_times(&run.trace);
    assert!(dropped >= 4.0 && dropped <= good, "{dropped} {good}");
}

#[test]
fn surprise_removal_during_a_copy_fails_it_cleanly_and_replug_works() {
    surprise_removal(Kernel::Debian);
}

/// Regression: with QEMU's default ACPI hotplug the minimal kernel (no
/// acpiphp, and _OSC withheld native hotplug) never acted on `device_del`.
#[test]
fn minimal_kernel_surprise_removal_during_a_copy_fails_it_cleanly_and_replug_works() {
    surprise_removal(Kernel::Minimal);
}

/// The launcher starts the removable controller with MSI (QEMU 11.1.3
/// aborts freeing an unplugged vfio-user-pci device that has MSI-X).
fn surprise_removal(k: Kernel) {
    let rule = format!(
        "ctrl=0,op=read,{},nth=10,remove,replug-ms=2000",
        lbas(OFF, LEN)
    );
    let run = scenario(
        k,
        std::slice::from_ref(&rule),
        &["--append", IO_TIMEOUT],
        &format!("sh /opt/p2pnvme/ci/fault-remove.sh {OFF} {LEN}"),
    );
    let (kv, stderr) = (&run.kv, &run.stderr);
    // 255 would be a guest kernel oops under the command; a QEMU abort
    // (its unplug of an MSI-X vfio-user-pci device) would end the run early.
    assert_eq!(run.code, Some(0), "the guest script ran to its end");
    assert!(
        stderr.contains("controller 0 (p2p_nvme0) removed"),
        "{stderr}"
    );
    assert!(stderr.contains("plugged back"), "{stderr}");
    // Only the controller the rule can remove does without MSI-X.
    assert!(
        stderr.contains("controller(s) [0] use MSI instead of MSI-X"),
        "{stderr}"
    );
    assert_eq!(kv.get("irq").trim(), "MSI: Enable+");
    assert_eq!(kv.get("irq_back").trim(), "MSI: Enable+");
    assert_eq!(kv.get("peer_irq").trim(), "MSI-X: Enable+");
    let f = kv.json("fault_json");
    assert_ne!(kv.num("fault_rc"), 0);
    assert_eq!(f["errno"], EIO, "{f}");
    let done = f["bytes_done"].as_u64().unwrap();
    assert!(done > 0 && done < LEN, "bytes done {done}");
    assert_eq!(kv.num("gone_rc"), 0, "the controller left the guest");
    assert_eq!(kv.num("back_rc"), 0, "the controller came back");
    // The removed provider's memory was all returned: its PCI device (and
    // p2pmem) went away, which the kernel finishes only once every P2P page
    // is back (QEMU's DEVICE_DELETED, "removed" above, comes after that).
    // The re-plugged provider is a new one with as much free as the old one
    // had before the copy (the nvme driver's CMB queues take the rest).
    assert_eq!(
        kv.num("p2pmem_gone_rc"),
        0,
        "p2pmem of the removed provider"
    );
    assert_eq!(kv.num("size_back"), kv.num("size"));
    assert_eq!(kv.num("avail_back"), kv.num("avail_before"));
    assert_eq!(kv.num("peer_avail_after"), kv.num("peer_avail_before"));
    assert_eq!(kv.num("nvme_list_has_it"), 1);
    assert_eq!(kv.num("read_rc"), 0);
    assert_eq!(kv.num("again_rc"), 0, "a copy through the new provider");
    assert_eq!(kv.json("again_json")["bytes_done"], LEN);
    assert_eq!(kv.num("rmmod_rc"), 0);
    assert_eq!(kv.num("oopses"), 0, "{:?}", kv.log(&[""]));
    // The native PCIe hotplug driver took the slot down and up, as on
    // real hardware.
    assert!(
        !kv.log(&["pciehp", "will power off"]).is_empty(),
        "{:?}",
        kv.log(&[""])
    );
    assert!(
        !kv.log(&["pciehp", "Link Up"]).is_empty(),
        "{:?}",
        kv.log(&[""])
    );
}

#[test]
fn trace_of_a_fio_read_has_its_reads_and_bytes() {
    let dir = std::env::temp_dir().join(format!("p2pnvme-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.jsonl");
    let t = trace.display().to_string();
    let cmd = format!(
        "A=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1); \
         fio --name=r --filename=$A --offset={OFF} --size=1M --rw=read --bs=64k --direct=1 --ioengine=psync >/dev/null"
    );
    let s = guest_ok(&["--nvme", "1", "--trace", &t], &cmd);
    let _ = s;
    let records = read_trace(&trace);
    let _ = std::fs::remove_dir_all(&dir);
    let (first, last) = (OFF / 512, (OFF + (1 << 20)) / 512);
    let here = |r: &&TraceRecord| r.q > 0 && r.slba.is_some_and(|l| (first..last).contains(&l));
    let reads: Vec<_> = records
        .iter()
        .filter(here)
        .filter(|r| r.op == "read")
        .collect();
    // fio's 1 MiB in 64 KiB reads: 16 commands of 128 blocks each, into RAM.
    assert_eq!(reads.len(), 16, "{reads:?}");
    for r in &reads {
        assert_eq!(
            (r.nlb, r.bytes, r.status, r.ctrl),
            (Some(128), 65536, 0, 0),
            "{r:?}"
        );
        assert!(r.fault.is_none() && !r.dropped, "{r:?}");
        assert!(
            r.segments.iter().all(|s| s.target == SegmentTarget::Ram),
            "{r:?}"
        );
        assert_eq!(
            r.segments.iter().map(|s| s.bytes).sum::<u64>(),
            65536,
            "{r:?}"
        );
    }
    let total: u64 = reads.iter().map(|r| r.bytes).sum();
    assert_eq!(total, 1 << 20);
    // fio only read there.
    assert_eq!(records.iter().filter(here).count(), 16);
}

#[test]
fn bad_fault_rules_are_refused_before_boot_in_one_line() {
    for (rule, want) in [
        ("op=read,foo=1,never", "foo"),
        ("op=bogus,never", "bogus"),
        ("op=read,nth=10", "no action"),
        ("ctrl=2,op=read,never", "ctrl=2: no such controller"),
    ] {
        let out = p2pnvme(&["run", "--nvme", "2", "--fault", rule, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{rule}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{rule}: {err}");
    }
    // The control: a good rule on an existing controller boots.
    let s = guest_ok(
        &[
            "--nvme",
            "2",
            "--fault",
            "ctrl=1,op=read,lba=400000-400001,never",
        ],
        "echo booted",
    );
    assert!(s.contains("booted"));
}
