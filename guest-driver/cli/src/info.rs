//! What the module and the kernel report: P2P memory providers with their
//! route to each NVMe namespace (`providers`), and the module's cumulative
//! counters (`stats`).

use crate::args::block_dev;
use crate::fail;
use crate::names::{explain, map_name};
use crate::sys::{ioctl, uapi};
use serde_json::{json, Value};
use std::fs;
use std::process::ExitCode;

fn read_trim(p: &std::path::Path) -> String {
    fs::read_to_string(p).unwrap_or_default().trim().to_string()
}

/// `p2pcopy providers`.
pub fn providers(json: bool) -> ExitCode {
    let mut out = vec![];
    let mut blocks: Vec<String> = fs::read_dir("/sys/block")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    blocks.retain(|b| b.starts_with("nvme"));
    blocks.sort();
    let mut pcis: Vec<_> = fs::read_dir("/sys/bus/pci/devices")
        .map(|d| d.flatten().collect())
        .unwrap_or_else(|_| vec![]);
    pcis.sort_by_key(|e| e.file_name());
    for e in pcis {
        let p2p = e.path().join("p2pmem");
        if !p2p.exists() {
            continue;
        }
        let bdf = e.file_name().to_string_lossy().into_owned();
        let mut routes = vec![];
        for b in &blocks {
            let path = format!("/dev/{b}");
            let Ok(dev) = block_dev(&path) else { continue };
            let mut r = uapi::p2pcopy_route {
                dev,
                ..Default::default()
            };
            for (d, s) in r.provider.iter_mut().zip(bdf.bytes()) {
                *d = s as std::os::raw::c_char;
            }
            match ioctl(&mut r) {
                Ok(()) => routes.push(json!({"device": path, "distance": r.distance,
                    "map_type": map_name(r.map), "queue_p2pdma": r.queue_p2pdma != 0})),
                Err(e) => routes.push(json!({"device": path, "error": explain(e)})),
            }
        }
        let num = |f: &str| read_trim(&p2p.join(f)).parse::<u64>().unwrap_or(0);
        out.push(
            json!({"provider": bdf, "size": num("size"), "available": num("available"),
            "published": num("published") == 1, "routes": routes}),
        );
    }
    if json {
        println!("{}", Value::Array(out));
    } else {
        if out.is_empty() {
            println!("no P2P memory providers");
        }
        for p in &out {
            println!(
                "{} size {} available {} published {}",
                p["provider"].as_str().unwrap_or(""),
                p["size"],
                p["available"],
                p["published"]
            );
            for r in p["routes"].as_array().into_iter().flatten() {
                match r.get("error") {
                    Some(e) => println!("  {}: {}", r["device"].as_str().unwrap_or(""), e),
                    None => println!(
                        "  {}: distance {} map {}{}",
                        r["device"].as_str().unwrap_or(""),
                        r["distance"],
                        r["map_type"].as_str().unwrap_or(""),
                        if r["queue_p2pdma"] == true {
                            ""
                        } else {
                            " (queue does not accept P2P memory)"
                        }
                    ),
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// `p2pcopy stats`.
pub fn stats(json: bool) -> ExitCode {
    let mut s = uapi::p2pcopy_stats::default();
    if let Err(e) = ioctl(&mut s) {
        return fail(json, explain(e), json!({}));
    }
    let doc = json!({"copies": s.copies, "p2p_copies": s.p2p_copies, "bounce_copies": s.bounce_copies,
        "failed": s.failed, "p2p_bytes": s.p2p_bytes, "bounce_bytes": s.bounce_bytes, "fallbacks": s.fallbacks});
    if json {
        println!("{doc}");
    } else {
        for (k, v) in doc.as_object().unwrap() {
            println!("{k:<14} {v}");
        }
    }
    ExitCode::SUCCESS
}
