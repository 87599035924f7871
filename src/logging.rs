//! The log both commands write on stderr. Installed once by each binary's
//! `main`; the library only calls `log`.
//!
//! Two styles. On a terminal or into a file: `PROGRAM[LEVEL] message`
//! lines, as always. When stderr is the journal (systemd's `JOURNAL_STREAM`
//! names it): `<N>message` lines, N the syslog priority of the level, so
//! journald keeps the level (`journalctl -p`); journald adds the time and
//! the program's name itself. A child that merely inherited the variable,
//! with its stderr elsewhere (pipevpnd's background daemon, writing to its
//! log file), keeps the plain style: the variable names the stream by
//! device and inode, which systemd documents for exactly that check
//! (systemd.exec(5), `$JOURNAL_STREAM`).

use log::Level;
use std::fmt::Display;
use std::io::{self, Write};
use std::sync::OnceLock;

/// How the lines of this process are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// `PROGRAM[LEVEL] message`.
    Plain,
    /// `<N>message`, every line of a message.
    Journal,
}

impl Style {
    /// Journal if `JOURNAL_STREAM` holds the device and inode of our
    /// stderr, Plain otherwise (also when either cannot be read).
    fn detect() -> Style {
        let named = std::env::var("JOURNAL_STREAM").ok().and_then(|value| {
            crate::sys::stderr_identity().map(|(dev, ino)| names_stream(&value, dev, ino))
        });
        if named == Some(true) {
            Style::Journal
        } else {
            Style::Plain
        }
    }
}

/// The style of this process, decided on first use.
fn style() -> Style {
    static STYLE: OnceLock<Style> = OnceLock::new();
    *STYLE.get_or_init(Style::detect)
}

/// Whether `value`, as systemd sets `JOURNAL_STREAM` ("DEVICE:INODE", both
/// decimal), names the file with device `dev` and inode `ino`.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// The syslog priority journald reads from a `<N>` prefix (sd-daemon(3)):
/// err, warning, info, debug; trace has no level below debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `message` of `level` as `program` writes it in `style`, newline ended.
/// In the journal each line is an entry of its own, so each gets the prefix.
fn format(style: Style, program: &str, level: Level, message: &dyn Display) -> String {
    let text = message.to_string();
    match style {
        Style::Plain => format!("{program}[{level}] {text}\n"),
        Style::Journal => {
            let n = priority(level);
            text.split('\n')
                .map(|line| format!("<{n}>{line}\n"))
                .collect()
        }
    }
}

struct StderrLogger {
    program: &'static str,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format(style(), self.program, record.level(), record.args());
            // A log line lost to a closed stderr is not worth stopping for.
            let _ = io::stderr().lock().write_all(line.as_bytes());
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

/// The line a `main` ends with on failure: `PROGRAM: error` as always, or
/// the error at priority err in the journal.
pub fn print_error(program: &str, err: &dyn Display) {
    let text = match style() {
        Style::Plain => format!("{program}: {err}\n"),
        Style::Journal => format(Style::Journal, program, Level::Error, err),
    };
    // Nothing useful to do if stderr itself is gone.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_as_before() {
        assert_eq!(
            format(Style::Plain, "pipevpn", Level::Warn, &"a b"),
            "pipevpn[WARN] a b\n"
        );
        assert_eq!(
            format(Style::Plain, "pipevpnd", Level::Info, &"x\n  y"),
            "pipevpnd[INFO] x\n  y\n"
        );
    }

    #[test]
    fn journal_lines_carry_the_priority_and_nothing_else() {
        let cases = [
            (Level::Error, "<3>m\n"),
            (Level::Warn, "<4>m\n"),
            (Level::Info, "<6>m\n"),
            (Level::Debug, "<7>m\n"),
            (Level::Trace, "<7>m\n"),
        ];
        for (level, want) in cases {
            assert_eq!(format(Style::Journal, "pipevpn", level, &"m"), want);
        }
    }

    #[test]
    fn every_line_of_a_journal_message_keeps_its_priority() {
        assert_eq!(
            format(
                Style::Journal,
                "pipevpnd",
                Level::Error,
                &"failed; log:\n  a\n  b"
            ),
            "<3>failed; log:\n<3>  a\n<3>  b\n"
        );
    }

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(names_stream("64768:1234", 64768, 1234));
        assert!(names_stream("0:0", 0, 0));
        for other in [
            "64768:1235",
            "64769:1234",
            "1234:64768",
            "64768",
            "64768:",
            ":1234",
            "",
            " 64768:1234",
            "64768:1234\n",
            "64768:1234:5",
            "-1:1234",
            "0x10:1234",
            "99999999999999999999999:1234",
        ] {
            assert!(!names_stream(other, 64768, 1234), "{other:?} accepted");
        }
    }
}
