//! `p2pcopy copy`: one copy through the module (P2P memory, bounce buffers,
//! or auto), reported as a line or a JSON document.

use crate::args::{dev_and_offset, parse_size};
use crate::fail;
use crate::names::{cstr, explain, fallback_name, map_name};
use crate::sys::{ioctl, uapi};
use crate::Mode;
use serde_json::{json, Value};
use std::process::ExitCode;

/// `p2pcopy copy`.
#[allow(clippy::too_many_arguments)]
pub fn copy(
    src: &str,
    dst: &str,
    len: &str,
    mode: Mode,
    chunk: Option<String>,
    depth: Option<u32>,
    provider: Option<String>,
    json: bool,
) -> ExitCode {
    let parsed = (|| -> Result<_, String> {
        let (sp, sd, so) = dev_and_offset(src)?;
        let (dp, dd, doff) = dev_and_offset(dst)?;
        let len = parse_size(len)?;
        let chunk = chunk.map(|c| parse_size(&c)).transpose()?.unwrap_or(0);
        if chunk > u32::MAX as u64 {
            return Err("--chunk is too large".into());
        }
        Ok((sp, sd, so, dp, dd, doff, len, chunk as u32))
    })();
    let (sp, sd, so, dp, dd, doff, len, chunk) = match parsed {
        Ok(v) => v,
        Err(e) => return fail(json, e, json!({})),
    };
    let mut req = uapi::p2pcopy_req {
        src_dev: sd,
        dst_dev: dd,
        src_off: so,
        dst_off: doff,
        len,
        mode: match mode {
            Mode::P2p => uapi::P2PCOPY_MODE_P2P,
            Mode::Bounce => uapi::P2PCOPY_MODE_BOUNCE,
            Mode::Auto => uapi::P2PCOPY_MODE_AUTO,
        },
        chunk,
        depth: depth.unwrap_or(0),
        ..Default::default()
    };
    if let Some(p) = &provider {
        if p.len() >= req.provider.len() {
            return fail(json, format!("--provider '{p}' is too long"), json!({}));
        }
        for (d, s) in req.provider.iter_mut().zip(p.bytes()) {
            *d = s as std::os::raw::c_char;
        }
    }
    let res = ioctl(&mut req);
    let used = if req.used_mode == uapi::P2PCOPY_MODE_P2P {
        "p2p"
    } else {
        "bounce"
    };
    let prov = cstr(&req.used_provider);
    let secs = req.elapsed_ns as f64 / 1e9;
    let map_type = if req.map_src == req.map_dst {
        map_name(req.map_src).to_string()
    } else {
        format!(
            "src: {}, dst: {}",
            map_name(req.map_src),
            map_name(req.map_dst)
        )
    };
    let doc = json!({
        "src": sp, "dst": dp, "src_offset": so, "dst_offset": doff,
        "bytes": len,
        "bytes_done": req.bytes_done,
        "elapsed_ns": req.elapsed_ns,
        "mb_per_s": if secs > 0.0 { req.bytes_done as f64 / secs / 1e6 } else { 0.0 },
        "mode": used,
        "provider": if prov.is_empty() { Value::Null } else { Value::String(prov.clone()) },
        "map_type": if req.used_mode == uapi::P2PCOPY_MODE_P2P { Value::String(map_type.clone()) } else { Value::Null },
        "map_src": map_name(req.map_src),
        "map_dst": map_name(req.map_dst),
        "fallback": fallback_name(req.fallback),
        "chunk": if chunk == 0 { 256 * 1024 } else { chunk },
        "depth": if req.depth == 0 { 4 } else { req.depth },
    });
    if let Err(errno) = res {
        return fail(
            json,
            format!(
                "copy failed after {} bytes: {}",
                req.bytes_done,
                explain(errno)
            ),
            json!({"errno": errno, "bytes_done": req.bytes_done}),
        );
    }
    if json {
        println!("{doc}");
    } else {
        println!(
            "copied {} bytes {} -> {} in {:.3} s ({:.1} MB/s), mode {}{}",
            req.bytes_done,
            sp,
            dp,
            secs,
            doc["mb_per_s"].as_f64().unwrap_or(0.0),
            used,
            if used == "p2p" {
                format!(" via {prov} ({map_type})")
            } else {
                String::new()
            }
        );
        if let Some(why) = fallback_name(req.fallback) {
            println!("auto mode fell back to bounce buffers: {why}");
        }
    }
    ExitCode::SUCCESS
}
