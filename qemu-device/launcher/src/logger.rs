//! The launcher's log output (and the device process's, which runs in this
//! binary): env_logger behind `log`, one line each on stderr.

use log::{Level, LevelFilter};
use std::io::Write;

/// Installs the logger: info and above, or only warnings and errors when
/// `quiet`; `RUST_LOG` (env_logger's syntax, e.g. `debug` for the device's
/// per-command lines) overrides both.
pub fn init(quiet: bool) {
    let level = if quiet {
        LevelFilter::Warn
    } else {
        LevelFilter::Info
    };
    let _ = builder(level).parse_default_env().try_init();
}

/// env_logger at `level` with the launcher's line format.
fn builder(level: LevelFilter) -> env_logger::Builder {
    let mut b = env_logger::Builder::new();
    // What env_logger's default format cannot give: the program's name as the
    // prefix and no time stamp or module path, so that warnings read like
    // the error line `main` prints and scripts can match `p2pnvme: warning:`.
    b.filter_level(level).format(|buf, r| {
        let what = match r.level() {
            Level::Warn => "warning: ",
            Level::Error => "error: ",
            _ => "",
        };
        writeln!(buf, "p2pnvme: {what}{}", r.args())
    });
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::sync::{Arc, Mutex};

    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_the_program_name_and_the_level_word_and_debug_is_off() {
        let out = Arc::new(Mutex::new(vec![]));
        let logger = builder(LevelFilter::Info)
            .target(env_logger::Target::Pipe(Box::new(Buf(out.clone()))))
            .build();
        for (level, msg) in [
            (Level::Warn, "w"),
            (Level::Error, "e"),
            (Level::Info, "i"),
            (Level::Debug, "d"),
        ] {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .args(format_args!("{msg}"))
                    .build(),
            );
        }
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "p2pnvme: warning: w\np2pnvme: error: e\np2pnvme: i\n");
    }
}
