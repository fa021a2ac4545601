//! What a guest script printed, read on the host: the scripts under
//! ci/guest print one `key=value` a line (kernel log lines as `dmesg=...`).

use std::collections::HashMap;

/// What a guest script printed: the last value of each key, and every
/// `dmesg=` line.
pub struct GuestOutput {
    /// The last value of each key.
    pub map: HashMap<String, String>,
    /// Every `dmesg=` line, in order.
    pub dmesg: Vec<String>,
}

impl GuestOutput {
    /// Reads a script's stdout: `key=value` lines (a line format, split at
    /// the first `=`; values may hold commas and `=`), others ignored.
    pub fn parse(out: &str) -> GuestOutput {
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
        GuestOutput { map, dmesg }
    }

    /// The value of `k`; panics naming it when the guest printed none.
    pub fn get(&self, k: &str) -> &str {
        self.map
            .get(k)
            .unwrap_or_else(|| panic!("the guest printed no {k}"))
    }

    /// The value of `k` as a number; panics naming it otherwise.
    pub fn num(&self, k: &str) -> i64 {
        self.get(k)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{k}={} ({e})", self.get(k)))
    }

    /// The value of `k` as JSON; panics naming it otherwise.
    pub fn json(&self, k: &str) -> serde_json::Value {
        serde_json::from_str(self.get(k)).unwrap_or_else(|e| panic!("{k}: {e}"))
    }

    /// Kernel log lines containing every one of `words`.
    pub fn log(&self, words: &[&str]) -> Vec<&str> {
        self.dmesg
            .iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(|l| l.as_str())
            .collect()
    }

    /// Kernel timestamp (s) of the first log line containing `what`.
    pub fn time(&self, what: &str) -> Option<f64> {
        let l = self.log(&[what]).into_iter().next()?;
        let t = l.trim_start().strip_prefix('[')?.split(']').next()?;
        t.trim().parse().ok()
    }
}
