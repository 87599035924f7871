//! The one error type. Every variant carries enough context (file and line,
//! syscall and object) for `main` to print a message an operator can act on.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration file content: which file, which line, what is wrong.
    #[error("{}:{line}: {msg}", file.display())]
    Config {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// Bad input that is not tied to a file line (a key on stdin, a CLI value).
    #[error("{0}")]
    Input(String),
    /// A system call failed: what we were doing, on what.
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: io::Error,
    },
    /// A pipeline stage stopped with an error or a panic.
    #[error("stage {stage} failed: {msg}")]
    Stage { stage: &'static str, msg: String },
}

impl Error {
    /// Wraps an `io::Error` with a description of the operation that failed.
    pub fn sys(op: impl Into<String>, source: io::Error) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }

    /// Exit code `main` uses: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. } | Error::Input(_) => 2,
            Error::Sys { .. } | Error::Stage { .. } => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
