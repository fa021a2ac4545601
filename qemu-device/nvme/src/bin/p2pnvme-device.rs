//! The device server alone: `p2pnvme device` without the launcher, for
//! raw vfio-user clients (the isolation tests) and hand-started devices.
//! Same options as `p2pnvme device` (the hand flags or `--config FILE`),
//! plus the per-client limits. This file only parses them and sets up the
//! logger; `p2pnvme_device::run_limited` builds the configuration document,
//! validates it and serves it (its crate docs map the data path).

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

/// NVMe controllers with a CMB, served over vfio-user.
#[derive(Parser)]
#[command(name = "p2pnvme-device")]
struct Cli {
    #[command(flatten)]
    args: p2pnvme_device::DeviceArgs,
    #[command(flatten)]
    limits: p2pnvme_device::Limits,
    /// More log lines (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_default_env()
        .format(|f, r| {
            let lvl = r.level().to_string().to_lowercase();
            writeln!(f, "p2pnvme-device: {lvl}: {}", r.args())
        })
        .init();
    match p2pnvme_device::run_limited(cli.args, cli.limits) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
