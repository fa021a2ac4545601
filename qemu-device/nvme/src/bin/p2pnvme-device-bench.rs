//! Host-side device benchmark through the in-process test host: commands per
//! second and throughput as a fraction of this machine's single-core memcpy
//! bandwidth, measured in the same run. Usage: p2pnvme-device-bench [SECONDS]
//! [trace] (`trace`: only the cost of the command trace and of fault rules,
//! as ratios of one run). Commands run through `testhost::TestHost`, which
//! drives the same controller worker and DMA routing as the vfio-user
//! adapter, without a socket.

use p2pnvme_device::testhost::{command, rw_command, Sqe, TestHost, RAM_BASE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: u64 = 256 << 20;
const READ: u8 = 0x02;
const WRITE: u8 = 0x01;

/// memcpy of `len`-byte pieces cycling through `span` bytes (a span larger
/// than the caches gives DRAM bandwidth, as the device sees it).
fn memcpy_gbps(len: usize, span: usize, secs: f64) -> f64 {
    let src = vec![1u8; span];
    let mut dst = vec![0u8; span];
    let (t, mut n) = (Instant::now(), 0usize);
    while t.elapsed().as_secs_f64() < secs {
        let off = (n * len) % (span - len + 1);
        dst[off..off + len].copy_from_slice(std::hint::black_box(&src[off..off + len]));
        std::hint::black_box(&mut dst);
        n += 1;
    }
    n as f64 * len as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// 128 KiB pread and pwrite bandwidth (GB/s) over a namespace-sized file.
fn file_ceiling_gbps(dir: &std::path::Path, secs: f64) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("ceiling"))
        .unwrap();
    let mut buf = vec![7u8; 128 << 10];
    let pieces = NS / (128 << 10);
    for i in 0..pieces {
        f.write_all_at(&buf, i * (128 << 10)).unwrap();
    }
    let w = rate(secs, |i| {
        f.write_all_at(&buf, (i % pieces) * (128 << 10)).unwrap()
    });
    let r = rate(secs, |i| {
        f.read_exact_at(&mut buf, (i % pieces) * (128 << 10))
            .unwrap()
    });
    let gbps = |ops: f64| ops * (128 << 10) as f64 / 1e9;
    (gbps(r), gbps(w))
}

/// This thread's CPU time (what "one core" can do, whatever else runs).
fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of every thread of this process.
fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` repeatedly for `secs`; returns operations per second of wall
/// time and per second of this thread's CPU time.
fn rate_cpu(secs: f64, f: impl FnMut(u64)) -> (f64, f64) {
    let c = thread_cpu();
    let t = Instant::now();
    let wall = rate(secs, f);
    let ops = wall * t.elapsed().as_secs_f64();
    (wall, ops / (thread_cpu() - c).as_secs_f64().max(1e-9))
}

/// Runs `f` repeatedly for `secs`; returns operations per second.
fn rate(secs: f64, mut f: impl FnMut(u64)) -> f64 {
    let (t, mut n) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs_f64(secs) {
        f(n);
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    // `commands`: only the 4 KiB command rates (QD1, QD32, workers).
    let commands_only = std::env::args().nth(2).as_deref() == Some("commands");
    let dir = tempfile::tempdir().unwrap();
    if std::env::args().any(|a| a == "trace") {
        return trace_and_fault_cost(dir.path(), secs);
    }
    let reg = TestHost::registry();
    let mut h = TestHost::new(dir.path(), 0, reg.clone(), 64, 64, NS);
    let mut peer = TestHost::new(dir.path(), 1, reg, 64, 16, NS);
    h.enable();
    peer.enable();
    h.create_io_queue(1, 1024, None);
    let blocks = NS / 512;
    // Fill the namespace so reads hit allocated blocks.
    let buf = h.alloc(128 << 10);
    let list = h.prp_list(buf, 128 << 10);
    for i in 0..NS / (128 << 10) {
        assert!(h.rw(1, WRITE, i * 256, 256, buf, list).ok());
    }
    let mc4 = memcpy_gbps(4096, 256 << 20, secs);
    if commands_only {
        command_rates(&mut h, blocks, secs, mc4);
        parallel_queues(dir.path(), secs);
        return;
    }
    let mc128 = memcpy_gbps(128 << 10, 256 << 20, secs);
    let hot = memcpy_gbps(128 << 10, 128 << 10, secs);
    println!(
        "single-core memcpy over 256 MiB: {mc4:.2} GB/s (4 KiB pieces), {mc128:.2} GB/s (128 KiB pieces); cache-hot 128 KiB: {hot:.2} GB/s"
    );

    // What the host kernel itself allows: positioned reads and writes of
    // 128 KiB between a user buffer and a file on the same filesystem.
    let ceiling = file_ceiling_gbps(dir.path(), secs);
    println!(
        "host file I/O ceiling, 128 KiB pread/pwrite on {}: read {:.2} GB/s, write {:.2} GB/s",
        dir.path().display(),
        ceiling.0,
        ceiling.1
    );

    command_rates(&mut h, blocks, secs, mc4);
    for (name, op) in [("read", READ), ("write", WRITE)] {
        let r = rate(secs, |i| {
            let lba = (i * 256) % (blocks - 256);
            assert!(h.rw(1, op, lba, 256, buf, list).ok());
        });
        let gbps = r * (128 << 10) as f64 / 1e9;
        let ceil = if op == READ { ceiling.0 } else { ceiling.1 };
        println!(
            "128 KiB {name}s to/from guest RAM: {gbps:.2} GB/s = {:.0}% of memcpy, {:.0}% of p{name}",
            gbps / mc128 * 100.0,
            gbps / ceil * 100.0
        );
    }
    // CMB <-> namespace (own CMB) and namespace -> peer CMB.
    let cba = 0xfe00_0000u64;
    let pcba = 0xfd00_0000u64;
    h.write64(0x50, cba | 3);
    peer.write64(0x50, pcba | 3);
    let entries = |base: u64| -> Vec<u8> {
        (1..32u64)
            .flat_map(|i| (base + i * 4096).to_le_bytes())
            .collect()
    };
    let own_list = h.alloc(4096);
    h.write_mem(own_list, &entries(cba));
    let peer_list = h.alloc(4096);
    h.write_mem(peer_list, &entries(pcba));
    for (name, op, base, l) in [
        ("own CMB -> namespace (write)", WRITE, cba, own_list),
        ("namespace -> own CMB (read)", READ, cba, own_list),
        ("namespace -> peer CMB (read)", READ, pcba, peer_list),
    ] {
        let r = rate(secs, |i| {
            let lba = (i * 256) % (blocks - 256);
            assert!(h.rw(1, op, lba, 256, base, l).ok());
        });
        let gbps = r * (128 << 10) as f64 / 1e9;
        let ceil = if op == READ { ceiling.0 } else { ceiling.1 };
        println!(
            "128 KiB {name}: {gbps:.2} GB/s = {:.0}% of memcpy, {:.0}% of the file I/O ceiling",
            gbps / mc128 * 100.0,
            gbps / ceil * 100.0
        );
    }
    let _ = RAM_BASE;
    bar0_latency_under_writes(dir.path(), secs);
    parallel_queues(dir.path(), secs);
}

/// 4 KiB reads stepped on this thread (one core for host and device): QD1
/// without and with shadow doorbells, then QD32 (32 entries, one doorbell).
fn command_rates(h: &mut TestHost, blocks: u64, secs: f64, mc4: f64) {
    let b4 = h.alloc(4096);
    for shadow in [false, true] {
        if shadow {
            assert!(h.enable_shadow_doorbells().ok());
        }
        let (writes, mut n) = (h.doorbell_writes, 0u64);
        let (iops, cpu) = rate_cpu(secs, |i| {
            let lba = (i * 8 * 7919) % (blocks - 8);
            assert!(h.rw(1, READ, lba, 8, b4, 0).ok());
            n += 1;
        });
        println!(
            "4 KiB random reads, QD1, one core, {} shadow doorbells: {:.0} commands/s ({:.0} per CPU second; {:.2} GB/s = {:.0}% of 4 KiB memcpy); {:.2} doorbell register writes per command",
            if shadow { "with" } else { "without" },
            iops,
            cpu,
            iops * 4096.0 / 1e9,
            iops * 4096.0 / 1e9 / mc4 * 100.0,
            (h.doorbell_writes - writes) as f64 / n as f64
        );
    }
    {
        // 32 commands in flight: submit a batch, then reap it.
        let mut n = 0u64;
        h.take_interrupts();
        let (iops, cpu) = rate_cpu(secs, |i| {
            // The worker runs once all 32 are in the queue, as when a
            // driver rings once for a batch.
            h.manual = true;
            for k in 0..32u64 {
                let lba = ((i * 32 + k) * 8 * 7919) % (blocks - 8);
                let mut c = command(READ, 1);
                c.dw[6] = b4 as u32;
                c.dw[7] = (b4 >> 32) as u32;
                c.dw[10] = lba as u32;
                c.dw[11] = (lba >> 32) as u32;
                c.dw[12] = 7;
                h.submit_no_reap(1, c);
            }
            h.manual = false;
            h.run_worker();
            let mut done = 0;
            while done < 32 {
                let c = h.reap(1).expect("the worker completed the batch");
                assert!(c.ok());
                done += 1;
            }
            h.run_worker();
            n += 32;
        });
        let (iops, cpu) = (iops * 32.0, cpu * 32.0);
        println!(
            "4 KiB random reads, QD32, one queue, one core: {iops:.0} commands/s ({cpu:.0} per CPU second; {:.2} GB/s = {:.0}% of 4 KiB memcpy); {:.2} interrupts per command",
            iops * 4096.0 / 1e9,
            iops * 4096.0 / 1e9 / mc4 * 100.0,
            h.take_interrupts() as f64 / n as f64
        );
        // Every command copies 4 KiB out of a namespace larger than the
        // caches: no device does more commands per second on one core than
        // this machine's memcpy does 4 KiB copies.
        println!(
            "ceiling: single-core 4 KiB memcpy over 256 MiB = {:.0} copies/s",
            mc4 * 1e9 / 4096.0
        );
    }
}

/// A controller on its own worker thread with I/O queue 1 of 1024 entries.
fn remote(dir: &std::path::Path, id: usize) -> (TestHost, u64, u64) {
    let mut h = TestHost::new(dir, id, TestHost::registry(), 16, 64, NS);
    h.enable();
    h.create_io_queue(1, 1024, None);
    let buf = h.alloc(64 << 10);
    let list = h.prp_list(buf, 64 << 10);
    (h, buf, list)
}

/// BAR0 register reads (as the vfio-user thread answers them) while the
/// host keeps 256 FUA writes of 64 KiB in flight on the worker thread.
fn bar0_latency_under_writes(dir: &std::path::Path, secs: f64) {
    let (h, buf, list) = remote(dir, 10);
    let mut r = h.into_remote(1);
    let regs = r.registers();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut n, mut lba) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Sqe> = (0..256)
                    .map(|i| {
                        rw_command(
                            WRITE,
                            (lba + i * 128) % (NS / 512 - 128),
                            128,
                            buf,
                            list,
                            true,
                        )
                    })
                    .collect();
                lba += 256 * 128;
                r.submit(&batch);
                assert!(r.wait_all().iter().all(|c| c.ok()));
                n += 256;
            }
            n
        })
    };
    let mut lat = vec![];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let s = Instant::now();
        let mut v = [0u8; 4];
        regs.read(0x1c, &mut v);
        std::hint::black_box(v);
        lat.push(s.elapsed());
        std::thread::sleep(Duration::from_micros(20));
    }
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().unwrap();
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "BAR0 read latency under saturating 64 KiB FUA writes ({:.0} writes/s, {} reads): p50 {:?}, p99.9 {:?}, max {:?}",
        writes as f64 / t.elapsed().as_secs_f64(),
        lat.len(),
        p(0.5),
        p(0.999),
        lat[lat.len() - 1]
    );
}

/// 4 KiB reads at QD1 and QD32 on one controller's worker thread, then on
/// two controllers' workers at once (one queue each, one host thread per
/// queue): commands per second and the scaling ratio, and commands per
/// CPU second of the whole process (host threads included). Two host
/// threads and two workers share this machine's cores, so the wall-clock
/// ratio is bounded by the cores; the CPU-second ratio shows whether a
/// second worker costs more per command (contention) or scales.
fn parallel_queues(dir: &std::path::Path, secs: f64) {
    let run = |n: usize, depth: u64| -> (f64, f64) {
        let hosts: Vec<_> = (0..n).map(|i| remote(dir, 20 + i)).collect();
        let (t, cpu) = (Instant::now(), process_cpu());
        let threads: Vec<_> = hosts
            .into_iter()
            .map(|(h, buf, _)| {
                let mut r = h.into_remote(1);
                std::thread::spawn(move || {
                    let (t, mut done, mut i) = (Instant::now(), 0u64, 0u64);
                    while t.elapsed().as_secs_f64() < secs {
                        let batch: Vec<Sqe> = (0..depth)
                            .map(|k| {
                                rw_command(
                                    READ,
                                    ((i + k) * 8 * 7919) % (NS / 512 - 8),
                                    8,
                                    buf,
                                    0,
                                    false,
                                )
                            })
                            .collect();
                        i += depth;
                        r.submit(&batch);
                        assert!(r.wait_all().iter().all(|c| c.ok()));
                        done += depth;
                    }
                    done
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let cpu = (process_cpu() - cpu).as_secs_f64().max(1e-9);
        (total as f64 / t.elapsed().as_secs_f64(), total as f64 / cpu)
    };
    for depth in [1, 32] {
        let (one, one_cpu) = run(1, depth);
        let (two, two_cpu) = run(2, depth);
        println!(
            "4 KiB reads QD{depth} through worker threads: 1 queue/1 worker {one:.0} commands/s ({one_cpu:.0} per CPU second), 2 queues/2 workers {two:.0} commands/s ({two_cpu:.0} per CPU second): scaling {:.2}x, per CPU second {:.2}x",
            two / one,
            two_cpu / one_cpu
        );
    }
}

/// QD1 4 KiB reads (the hottest path per command) with the trace off and
/// on, and with no fault rule and one that never matches: many short rounds
/// of each, interleaved, and the median of the per-round ratios, so a
/// neighbour's CPU burst skews one round, not the result.
fn trace_and_fault_cost(dir: &std::path::Path, secs: f64) {
    let mut h = TestHost::new(dir, 0, TestHost::registry(), 16, 64, NS);
    h.enable();
    h.create_io_queue(1, 1024, None);
    let b4 = h.alloc(4096);
    let blocks = NS / 512;
    let trace = dir.join("bench-trace.jsonl");
    const ROUNDS: usize = 21;
    let slice = secs / ROUNDS as f64 / 3.0;
    let measure = |h: &mut TestHost| {
        rate(slice, |i| {
            let lba = (i * 8 * 7919) % (blocks - 8);
            assert!(h.rw(1, READ, lba, 8, b4, 0).ok());
        })
    };
    let (mut base, mut traced, mut ruled) = (vec![], vec![], vec![]);
    let mut records = 0;
    for _ in 0..ROUNDS {
        base.push(measure(&mut h));
        h.ctrl.trace.start(Some(&trace)).unwrap();
        traced.push(measure(&mut h));
        h.ctrl.trace.stop();
        records += std::fs::read_to_string(&trace)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let id = h.fault("op=write,status=0x281"); // never matches a read
        ruled.push(measure(&mut h));
        h.ctrl.faults.remove(id);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let (on_off, rule_none) = (ratio(&traced, &base), ratio(&ruled, &base));
    let (base, traced, ruled) = (median(base), median(traced), median(ruled));
    println!(
        "4 KiB random reads, QD1, {ROUNDS} interleaved rounds (medians): trace off {base:.0} commands/s, trace on {traced:.0} commands/s ({records} records written): on/off = {on_off:.3}"
    );
    println!(
        "4 KiB random reads, QD1, same rounds: no fault rule {base:.0} commands/s, one non-matching rule {ruled:.0} commands/s: rule/none = {rule_none:.3}"
    );
}
