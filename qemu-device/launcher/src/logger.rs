//! The launcher's log output: progress and warnings on stderr, one line each,
//! prefixed with the program's name (info and above; `-v` adds debug).

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            match r.level() {
                Level::Warn => eprintln!("p2pnvme: warning: {}", r.args()),
                Level::Error => eprintln!("p2pnvme: error: {}", r.args()),
                _ => eprintln!("p2pnvme: {}", r.args()),
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the logger; `quiet` keeps only warnings and errors.
pub fn init(quiet: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if quiet {
        LevelFilter::Warn
    } else {
        LevelFilter::Info
    });
}
