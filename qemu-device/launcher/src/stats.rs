//! Reading the device's stats document (see qemu-device/nvme/README.md).

use anyhow::{Context, Result};
use serde_json::Value;

/// Data bytes (I/O command payload) of all controllers, by where the memory was.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DataRoutes {
    pub guest_ram: u64,
    pub own_cmb: u64,
    pub peer_cmb: u64,
}

impl DataRoutes {
    pub fn from_stats(doc: &Value) -> Result<DataRoutes> {
        let ctrls = doc["controllers"]
            .as_array()
            .context("stats document without controllers")?;
        let mut r = DataRoutes::default();
        for c in ctrls {
            let both = |k: &str| -> Result<u64> {
                let v = &c["data"][k];
                let n = |d: &str| {
                    v[d].as_u64()
                        .with_context(|| format!("stats: data.{k}.{d} missing"))
                };
                Ok(n("read")? + n("written")?)
            };
            r.guest_ram += both("guest_ram")?;
            r.own_cmb += both("own_cmb")?;
            r.peer_cmb += both("peer_cmb")?;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sums_over_controllers_and_directions() {
        let rw = |r: u64, w: u64| json!({"read": r, "written": w});
        let doc = json!({"controllers": [
            {"data": {"guest_ram": rw(0, 0), "own_cmb": rw(0, 0), "peer_cmb": rw(0, 10)}},
            {"data": {"guest_ram": rw(1, 2), "own_cmb": rw(10, 0), "peer_cmb": rw(0, 0)}},
        ]});
        assert_eq!(
            DataRoutes::from_stats(&doc).unwrap(),
            DataRoutes {
                guest_ram: 3,
                own_cmb: 10,
                peer_cmb: 10
            }
        );
        assert!(DataRoutes::from_stats(&json!({})).is_err());
    }
}
