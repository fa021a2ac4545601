//! p2pcopy: drive the p2pcopy kernel module (copy offload through PCI P2P
//! memory) from the guest's shell.
//!
//! Modules, top down: this file parses the command line and dispatches;
//! `copy` (one copy), `info` (providers and routes, module counters) and
//! `p2pmem` (user-space P2PDMA read) are the subcommands; `args` parses
//! sizes and devices, `names` puts the module's codes into words, and `sys`
//! is the ioctl ABI (bindgen types from module/uapi/p2pcopy.h, request
//! numbers from vmm-sys-util's macros).
//!
//! Data path of `p2pcopy copy`: arguments -> `p2pcopy_req` (copy.rs) ->
//! `P2PCOPY_IOC_COPY` on /dev/p2pcopy (sys.rs) -> the module copies between
//! the block devices through P2P memory -> the filled-in request -> a line
//! or JSON (copy.rs, names.rs).

mod args;
mod copy;
mod info;
mod names;
mod p2pmem;
mod sys;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
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

/// How `copy` moves the data.
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

/// Prints `msg` (and, with `json`, a JSON error document with `extra`'s
/// fields) and returns the failure exit status.
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
        } => copy::copy(&src, &dst, &len, mode, chunk, depth, provider, json),
        Cmd::Providers { json } => info::providers(json),
        Cmd::Stats { json } => info::stats(json),
        Cmd::P2pmemRead { dev, provider, len } => p2pmem::p2pmem_read(&dev, &provider, &len),
    }
}
