//! p2pcopy: drive the p2pcopy kernel module (copy offload through PCI P2P
//! memory) from the guest's shell.

mod uapi {
    #![allow(non_camel_case_types, non_upper_case_globals, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "p2pcopy",
    version,
    about = "Copy between block devices through PCI P2P memory"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    P2p,
    Bounce,
    Auto,
}

#[derive(Subcommand)]
enum Cmd {
    /// Copy LEN bytes from SRC to DST.
    Copy {
        /// Source block device, optionally with a byte offset: /dev/nvme0n1:1M
        #[arg(long)]
        src: String,
        /// Destination block device, optionally with a byte offset.
        #[arg(long)]
        dst: String,
        /// Bytes to copy (K/M/G suffixes).
        #[arg(long)]
        len: String,
        #[arg(long, value_enum, default_value = "p2p")]
        mode: Mode,
        /// Bytes per buffer (default 256K).
        #[arg(long)]
        chunk: Option<String>,
        /// Buffers in flight (default 4).
        #[arg(long)]
        depth: Option<u32>,
        /// P2P memory provider (PCI address, e.g. 0000:03:00.0).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// P2P memory providers and their route to each NVMe namespace.
    Providers {
        #[arg(long)]
        json: bool,
    },
    /// Read LEN bytes of DEV (O_DIRECT) into P2P memory mapped from a
    /// provider's p2pmem/allocate (the user-space P2PDMA path), and print a
    /// checksum of what arrived.
    P2pmemRead {
        /// Block device, optionally with a byte offset.
        #[arg(long)]
        dev: String,
        /// Provider PCI address (its /sys/bus/pci/devices/<bdf>/p2pmem/allocate).
        #[arg(long)]
        provider: String,
        #[arg(long)]
        len: String,
    },
    /// Cumulative statistics of the module.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

const DEV: &str = "/dev/p2pcopy";

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size '{s}': use a number with an optional K, M or G suffix"))
}

/// The kernel's new_encode_dev() of a block device node.
fn block_dev(path: &str) -> Result<u32, String> {
    let md = fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if !md.file_type().is_block_device() {
        return Err(format!("{path} is not a block device"));
    }
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

fn dev_and_offset(s: &str) -> Result<(String, u32, u64), String> {
    let (path, off) = match s.rsplit_once(':') {
        Some((p, o)) if p.starts_with('/') => (p, parse_size(o)?),
        _ => (s, 0),
    };
    Ok((path.to_string(), block_dev(path)?, off))
}

fn cstr(buf: &[std::os::raw::c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn map_name(m: u32) -> &'static str {
    match m {
        uapi::P2PCOPY_MAP_NONE => "none",
        uapi::P2PCOPY_MAP_NOT_SUPPORTED => "not supported",
        uapi::P2PCOPY_MAP_BUS_ADDR => "bus address",
        uapi::P2PCOPY_MAP_THRU_HOST_BRIDGE => "through host bridge",
        _ => "unknown",
    }
}

fn fallback_name(f: u32) -> Option<&'static str> {
    match f {
        uapi::P2PCOPY_FALLBACK_NO_P2PDMA => Some("a device's queue does not accept P2P memory"),
        uapi::P2PCOPY_FALLBACK_DISTANCE => {
            Some("no P2P memory provider is reachable by both devices")
        }
        uapi::P2PCOPY_FALLBACK_NO_MEMORY => Some("the provider has not enough free P2P memory"),
        _ => None,
    }
}

/// What each errno of the copy ioctl means.
fn explain(errno: i32) -> String {
    match errno {
        libc::EINVAL => "offsets, length or chunk are not aligned to the logical block size (or chunk/depth out of range)".into(),
        libc::ERANGE => "the range runs past the end of a device".into(),
        libc::EBUSY => "source and destination ranges overlap on the same device".into(),
        libc::EOPNOTSUPP => "a device does not support P2PDMA (its queue does not accept P2P memory); use --mode bounce or auto".into(),
        libc::EXDEV => "the devices cannot do peer-to-peer with any provider (e.g. separate root ports on an Intel-like host); use --mode auto or bounce".into(),
        libc::ENOSPC => "the P2P memory provider has not enough free memory for chunk x depth; lower --chunk or --depth".into(),
        libc::ENODEV => "no such PCI device for --provider".into(),
        libc::EINTR => "interrupted by a signal".into(),
        libc::EIO => "an I/O error on a device".into(),
        libc::ENOENT => format!("{DEV} is missing: load the module (insmod p2pcopy.ko)"),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

fn ioctl<T>(req: libc::c_ulong, arg: &mut T) -> Result<(), i32> {
    let f = File::options()
        .read(true)
        .write(true)
        .open(DEV)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
    // SAFETY: the request number and argument type come from the UAPI header.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

// _IOWR/_IOR encodings of the header's request numbers (bindgen does not
// expand function-like macros).
const fn ioc(dir: u64, nr: u64, size: usize) -> libc::c_ulong {
    (dir << 30 | (size as u64) << 16 | (uapi::P2PCOPY_IOC_MAGIC as u64) << 8 | nr) as libc::c_ulong
}
const IOC_COPY: libc::c_ulong = ioc(3, 1, std::mem::size_of::<uapi::p2pcopy_req>());
const IOC_ROUTE: libc::c_ulong = ioc(3, 2, std::mem::size_of::<uapi::p2pcopy_route>());
const IOC_STATS: libc::c_ulong = ioc(2, 3, std::mem::size_of::<uapi::p2pcopy_stats>());

fn fail(json: bool, msg: String, extra: Value) -> ExitCode {
    if json {
        let mut doc = json!({"error": msg});
        if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
            d.extend(e);
        }
        println!("{doc}");
    }
    eprintln!("p2pcopy: {msg}");
    ExitCode::from(1)
}

#[allow(clippy::too_many_arguments)]
fn copy(
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
    let res = ioctl(IOC_COPY, &mut req);
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

fn read_trim(p: &std::path::Path) -> String {
    fs::read_to_string(p).unwrap_or_default().trim().to_string()
}

fn providers(json: bool) -> ExitCode {
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
            match ioctl(IOC_ROUTE, &mut r) {
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

fn stats(json: bool) -> ExitCode {
    let mut s = uapi::p2pcopy_stats::default();
    if let Err(e) = ioctl(IOC_STATS, &mut s) {
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

/// FNV-1a, enough to compare buffers across paths without extra crates.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn p2pmem_read(dev: &str, provider: &str, len: &str) -> ExitCode {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let run = || -> Result<String, String> {
        let (path, _, off) = dev_and_offset(dev)?;
        let len = parse_size(len)? as usize;
        let alloc = format!("/sys/bus/pci/devices/{provider}/p2pmem/allocate");
        let a = File::options()
            .read(true)
            .write(true)
            .open(&alloc)
            .map_err(|e| format!("{alloc}: {e}"))?;
        // SAFETY: mapping a file we opened; checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                a.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {alloc}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: p maps len bytes of P2P memory until munmap below.
        let buf = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
        let d = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| format!("{path}: {e}"))?;
        let r = d
            .read_exact_at(buf, off)
            .map_err(|e| format!("O_DIRECT read into P2P memory: {e}"));
        let sum = fnv1a(buf);
        // SAFETY: unmapping our mapping.
        unsafe { libc::munmap(p, len) };
        r.map(|_| {
            format!("{len} bytes of {path} read into {provider} P2P memory, fnv1a {sum:016x}")
        })
    };
    match run() {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(false, e, json!({})),
    }
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Copy {
            src,
            dst,
            len,
            mode,
            chunk,
            depth,
            provider,
            json,
        } => copy(&src, &dst, &len, mode, chunk, depth, provider, json),
        Cmd::Providers { json } => providers(json),
        Cmd::Stats { json } => stats(json),
        Cmd::P2pmemRead { dev, provider, len } => p2pmem_read(&dev, &provider, &len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_encoding() {
        // _IOWR(0xb7, 1, struct of N bytes) = 0xc000_0000 | N << 16 | 0xb7 << 8 | 1
        let n = std::mem::size_of::<uapi::p2pcopy_req>() as u64;
        assert_eq!(IOC_COPY, 0xc000_0000 | n << 16 | 0xb7 << 8 | 1);
        assert_eq!(IOC_STATS >> 30, 2);
        assert_eq!(
            std::mem::size_of::<uapi::p2pcopy_req>(),
            4 * 2 + 8 * 3 + 4 * 4 + 32 + 8 * 2 + 4 * 4 + 32
        );
    }

    #[test]
    fn sizes_and_offsets() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert!(parse_size("x").is_err());
        assert!(dev_and_offset("/nonexistent:1M").is_err());
    }
}
