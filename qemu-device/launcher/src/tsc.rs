//! The host's TSC rate, for the guest kernel's `lpj=`: under TCG the
//! guest's TSC is the host's, and a kernel told its loops per jiffy skips
//! calibrating the delay loop on each secondary CPU (about 0.15 s of a
//! 2.5 s boot, and it often fails: "calibrate_delay_direct() failed").

use std::time::{Duration, Instant};

/// TSC ticks per second of the host, measured against the monotonic
/// clock over a few milliseconds; None where the TSC is not constant
/// (its rate then says nothing) or not x86.
pub fn host_tsc_hz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    if !flags.split_whitespace().any(|f| f == "constant_tsc") {
        return None;
    }
    measure(Duration::from_millis(5))
}

#[cfg(target_arch = "x86_64")]
fn measure(span: Duration) -> Option<u64> {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), tsc());
    while t0.elapsed() < span {
        std::hint::spin_loop();
    }
    let (t1, c1) = (Instant::now(), tsc());
    let ns = (t1 - t0).as_nanos() as u64;
    (ns > 0).then(|| c1.wrapping_sub(c0).saturating_mul(1_000_000_000) / ns)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure(_span: Duration) -> Option<u64> {
    None
}

/// The kernel's `lpj=` for a TSC of `tsc_hz` and a kernel of `hz` ticks
/// per second (x86 delays count TSC ticks: loops per jiffy = TSC / HZ).
pub fn lpj(tsc_hz: u64, hz: u32) -> Option<u64> {
    tsc_hz.checked_div(u64::from(hz)).filter(|&l| l > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_per_jiffy_are_tsc_ticks_per_tick() {
        assert_eq!(lpj(2_300_000_000, 250), Some(9_200_000));
        assert_eq!(lpj(2_300_000_000, 0), None);
        assert_eq!(lpj(0, 250), None);
    }

    #[test]
    fn the_hosts_tsc_runs_at_a_plausible_rate() {
        if let Some(hz) = host_tsc_hz() {
            assert!((100_000_000..10_000_000_000).contains(&hz), "{hz}");
        }
    }
}
