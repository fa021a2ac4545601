//! Kernel health of a run: what the guest's init reports after the command
//! (its exit status, the kernel taint before and after, the kernel log since
//! the command started, the NVMe controllers it sees) and the judgement of
//! it. Any Oops, BUG, KASAN, UBSAN, lockdep or hung-task report, or a taint
//! flag the command added (other than an out-of-tree or unsigned module),
//! fails the run with exit 3; a WARNING does too unless `--allow-warn`.

use crate::exit;
use p2pnvme_docs::verdict::KernelHealth;

/// Exit status of a run whose kernel did not stay healthy.
pub const KERNEL_UNHEALTHY: u8 = 3;

/// Taint flags by bit, as /proc/sys/kernel/tainted numbers them.
const TAINT_LETTERS: &[u8] = b"PFSRMBUDAWCIOELKXTNJ";
/// W: a WARNING was raised.
const TAINT_WARN: u32 = 9;
/// O and E: an out-of-tree, unsigned module was loaded (expected here).
const TAINT_EXPECTED: u64 = (1 << 12) | (1 << 13);
/// Kernel log lines shown when a taint came without a report line.
const TAIL_LINES: usize = 15;

/// One NVMe controller as the guest saw it when the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCtrl {
    pub serial: String,
    /// PCI address (`0000:03:00.0`).
    pub pci: String,
    /// The driver's state (`live`, `resetting`, `dead`, ...).
    pub state: String,
    /// The guest's name for it (`nvme1`), which follows probe order.
    pub guest_name: String,
}

/// What the guest's init reports on the status port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestReport {
    pub status: i32,
    pub tainted_before: Option<u64>,
    pub tainted_after: Option<u64>,
    pub controllers: Vec<GuestCtrl>,
    /// Kernel log lines from the command's start on.
    pub kmsg: Vec<String>,
}

impl GuestReport {
    /// Parses the status port's text; None without a `status N` line (the
    /// guest died before it got there).
    pub fn parse(text: &str) -> Option<GuestReport> {
        let mut r = GuestReport::default();
        let mut status = None;
        for line in text.lines() {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "status" => status = rest.trim().parse().ok(),
                "tainted-before" => r.tainted_before = rest.trim().parse().ok(),
                "tainted-after" => r.tainted_after = rest.trim().parse().ok(),
                "kmsg" => r.kmsg.push(rest.to_string()),
                "ctrl" => {
                    let w: Vec<&str> = rest.split_whitespace().collect();
                    if let [serial, pci, state, name] = w[..] {
                        r.controllers.push(GuestCtrl {
                            serial: serial.into(),
                            pci: pci.into(),
                            state: state.into(),
                            guest_name: name.into(),
                        });
                    }
                }
                _ => {}
            }
        }
        r.status = status?;
        Some(r)
    }

    /// Judges the kernel log and taint of the command.
    pub fn kernel_health(&self, allow_warn: bool) -> KernelHealth {
        let mut h = KernelHealth {
            allow_warn,
            ..Default::default()
        };
        for line in &self.kmsg {
            match classify(line) {
                Some(Finding::Error) => h.errors.push(strip_time(line).to_string()),
                Some(Finding::Warning) => h.warnings.push(strip_time(line).to_string()),
                None => {}
            }
        }
        match (self.tainted_before, self.tainted_after) {
            (Some(before), Some(after)) => {
                let new = after & !before & !TAINT_EXPECTED;
                for bit in (0..64u32).filter(|b| new & (1 << b) != 0) {
                    let letter = TAINT_LETTERS.get(bit as usize).map_or('?', |&c| c as char);
                    let line =
                        format!("kernel taint {letter} (bit {bit}) set while the command ran");
                    if bit == TAINT_WARN {
                        h.warnings.push(line);
                    } else {
                        h.errors.push(line);
                    }
                }
            }
            _ => h
                .errors
                .push("the guest did not report the kernel's taint flags".into()),
        }
        h
    }

    /// The first lines of the first report that fails the run (for the
    /// message of exit 3).
    pub fn first_report(&self, h: &KernelHealth) -> String {
        let fails = |l: &String| match classify(l) {
            Some(Finding::Error) => true,
            Some(Finding::Warning) => !h.allow_warn,
            None => false,
        };
        let mut lines: Vec<&str> = match self.kmsg.iter().position(fails) {
            Some(at) => self.kmsg[at..]
                .iter()
                .take(20)
                .map(|l| strip_time(l))
                .collect(),
            // A taint without its report: show what the log did say, so the
            // cause is still visible (or that the guest sent no log at all).
            None if self.kmsg.is_empty() => {
                vec!["(the guest sent no kernel log lines for the command)"]
            }
            None => {
                let from = self.kmsg.len().saturating_sub(TAIL_LINES);
                let mut tail = vec!["(no report line in the kernel log; its last lines:)"];
                tail.extend(self.kmsg[from..].iter().map(|l| strip_time(l)));
                tail
            }
        };
        let taint: Vec<&str> = h
            .errors
            .iter()
            .chain(&h.warnings)
            .filter(|l| l.starts_with("kernel taint") || l.starts_with("the guest did not"))
            .map(String::as_str)
            .collect();
        lines.extend(taint);
        lines.join("\n")
    }
}

/// Exit 3 with the first lines of the kernel's report, when the kernel did
/// not stay healthy.
pub fn enforce(r: &GuestReport, h: &KernelHealth) -> anyhow::Result<()> {
    if h.healthy() {
        return Ok(());
    }
    let warn_only = h.errors.is_empty();
    Err(exit::with(
        KERNEL_UNHEALTHY,
        format!(
            "the guest kernel reported {} while the command ran (command exit {}){}:\n{}",
            if warn_only { "a WARNING" } else { "an error" },
            r.status,
            if warn_only {
                "; --allow-warn lets WARNINGs pass"
            } else {
                ""
            },
            r.first_report(h)
        ),
    ))
}

enum Finding {
    Error,
    Warning,
}

/// `[   12.345678] text` -> `text`.
fn strip_time(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((_, text)) => text,
        None => line,
    }
}

fn classify(line: &str) -> Option<Finding> {
    const ERRORS: [&str; 18] = [
        "Oops:",
        "BUG:",
        "kernel BUG at",
        "general protection fault",
        "Kernel panic",
        "KASAN:",
        "UBSAN:",
        "possible circular locking dependency",
        "possible recursive locking",
        "inconsistent lock state",
        "suspicious RCU usage",
        "bad unlock balance",
        "lock held when returning to user space",
        "possible irq lock inversion",
        "held lock freed",
        "blocked for more than",
        "detected stalls on CPUs",
        "soft lockup",
    ];
    let text = strip_time(line);
    // A user process's fault ("traps: bash[75] general protection fault
    // ...", "bash[76]: segfault at ...") is that process's, not the
    // kernel's: the command's exit status says it.
    if text.starts_with("traps: ") {
        return None;
    }
    if ERRORS.iter().any(|m| text.contains(m)) {
        Some(Finding::Error)
    } else if text.starts_with("WARNING:") || text.contains("] WARNING:") {
        Some(Finding::Warning)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kmsg: &[&str], before: u64, after: u64) -> GuestReport {
        let mut t = format!("tainted-before {before}\ntainted-after {after}\n");
        t += "ctrl p2pnvme-0 0000:03:00.0 live nvme1\n";
        for l in kmsg {
            t += &format!("kmsg {l}\n");
        }
        GuestReport::parse(&(t + "status 0\n")).unwrap()
    }

    #[test]
    fn parses_the_status_port_and_needs_a_status_line() {
        let r = report(&["[    1.000000] hello"], 4096, 4096);
        assert_eq!(r.status, 0);
        assert_eq!(r.controllers[0].pci, "0000:03:00.0");
        assert_eq!(r.kmsg, vec!["[    1.000000] hello"]);
        assert!(GuestReport::parse("tainted-before 0\n").is_none());
    }

    #[test]
    fn oops_kasan_ubsan_lockdep_and_hung_tasks_fail_even_with_allow_warn() {
        for l in [
            "[    5.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[    5.1] BUG: KASAN: slab-out-of-bounds in foo+0x10/0x20",
            "[    5.1] UBSAN: array-index-out-of-bounds in drivers/x.c:10:5",
            "[    5.1] WARNING: possible circular locking dependency detected",
            "[  125.0] INFO: task dd:123 blocked for more than 120 seconds.",
            "[    5.1] kernel BUG at mm/slub.c:100!",
        ] {
            let h = report(&[l], 0, 0).kernel_health(true);
            assert!(!h.healthy() && h.errors.len() == 1, "{l}: {h:?}");
        }
        let h = report(&["[ 1.0] nvme nvme0: 2/0/0 default/read/poll queues"], 0, 0)
            .kernel_health(false);
        assert!(h.healthy(), "{h:?}");
    }

    #[test]
    fn a_user_process_fault_is_not_a_kernel_error_but_a_kernel_gpf_is() {
        let h = report(
            &[
                "[ 2.4] traps: bash[75] general protection fault ip:7f39 sp:7fff error:0 in ld-linux-x86-64.so.2[c158,7f39+28000]",
                "[ 2.5] bash[76]: segfault at 130 ip 00007f22 sp 00007ffd error 4 in ld-linux-x86-64.so.2",
            ],
            0,
            0,
        )
        .kernel_health(false);
        assert!(h.healthy(), "{h:?}");
        let h = report(
            &["[ 2.4] Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP"],
            0,
            0,
        )
        .kernel_health(true);
        assert!(!h.healthy(), "{h:?}");
    }

    #[test]
    fn warnings_fail_unless_allowed_and_stay_listed() {
        let r = report(
            &["[ 3.2] WARNING: CPU: 0 PID: 90 at warn_init+0x5/0x10 [warn]"],
            4096,
            4096 | 512,
        );
        let h = r.kernel_health(false);
        assert!(!h.healthy());
        assert_eq!(h.warnings.len(), 2, "the line and taint W: {h:?}");
        let msg = enforce(&r, &h).unwrap_err().to_string();
        assert!(
            msg.contains("--allow-warn") && msg.contains("warn_init"),
            "{msg}"
        );
        assert_eq!(exit::code_of(&enforce(&r, &h).unwrap_err()), 3);
        let h = r.kernel_health(true);
        assert!(h.healthy() && h.warnings.len() == 2, "{h:?}");
    }

    #[test]
    fn a_taint_the_command_added_fails_but_loading_a_module_does_not() {
        // O|E: an out-of-tree, unsigned module.
        assert!(report(&[], 0, (1 << 12) | (1 << 13))
            .kernel_health(false)
            .healthy());
        // D: the kernel died (oopsed) even if the log line was lost.
        let h = report(&[], 0, 1 << 7).kernel_health(true);
        assert_eq!(
            h.errors,
            vec!["kernel taint D (bit 7) set while the command ran"]
        );
        // Without its report line, the message shows the log's last lines.
        let r = report(&["[ 4.0] uaf: read 68 after free"], 0, 1 << 5);
        let msg = r.first_report(&r.kernel_health(false));
        assert!(
            msg.contains("uaf: read 68") && msg.contains("taint B"),
            "{msg}"
        );
        let r = report(&[], 0, 1 << 5);
        let msg = r.first_report(&r.kernel_health(false));
        assert!(msg.contains("no kernel log lines"), "{msg}");
        // Set before the command: not the command's doing.
        assert!(report(&[], 1 << 7, 1 << 7).kernel_health(false).healthy());
        let mut r = report(&[], 0, 0);
        r.tainted_after = None;
        assert!(
            !r.kernel_health(true).healthy(),
            "missing evidence is not health"
        );
    }
}
