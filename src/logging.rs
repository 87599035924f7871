//! The log both commands write: `PROGRAM[LEVEL] message` lines on stderr.
//! Installed once by each binary's `main`; the library only calls `log`.

use std::io::{self, Write};

struct StderrLogger {
    program: &'static str,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            // A log line lost to a closed stderr is not worth stopping for.
            let _ = writeln!(
                io::stderr().lock(),
                "{}[{}] {}",
                self.program,
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Logs as `program` from now on: info and above, debug with `verbose` 1,
/// everything from 2.
pub fn init(program: &'static str, verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // set_boxed_logger fails only if a logger is already set, which no
    // main does twice.
    if log::set_boxed_logger(Box::new(StderrLogger { program })).is_ok() {
        log::set_max_level(level);
    }
}
