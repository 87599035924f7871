//! The `pipevpnd` command, with wireguard-go's calling convention, so that
//! `WG_QUICK_USERSPACE_IMPLEMENTATION=pipevpnd wg-quick up wg0` runs it:
//! `pipevpnd -f IFACE` runs the tunnel ([`pipevpn::daemon`]) in the
//! foreground, its log on stderr; `pipevpnd IFACE` starts that again in a
//! session of its own, its log appended to `/run/pipevpn/<netns>/IFACE.log`,
//! and returns once it serves the control socket, or with its failure.
//! Nothing else prints errors.

use clap::{ArgAction, CommandFactory, Parser};
use pipevpn::rundir::{self, RUN_DIR};
use pipevpn::sys::{iface, process};
use pipevpn::{daemon, docs, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

#[derive(Debug, Parser)]
#[command(
    name = "pipevpnd",
    version,
    about = "Run a pipevpn interface configured over its control socket, as wireguard-go is (for wg-quick)"
)]
struct Cli {
    /// Stay in the foreground, logging to stderr
    #[arg(short, long)]
    foreground: bool,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
    /// The interface to create (its control socket: /var/run/wireguard/IFACE.sock)
    // Required, shown so in --help; the exclusive --generate-* lift that.
    #[arg(value_name = "IFACE", required = true)]
    interface: Option<String>,
    /// Write one byte to this inherited pipe once the control socket serves
    /// (how the background start learns that the daemon is up)
    #[arg(long, hide = true, requires = "foreground")]
    ready_fd: Option<i32>,
    /// Write the man page into DIR (for the package build)
    #[arg(long, hide = true, value_name = "DIR", exclusive = true)]
    generate_man: Option<PathBuf>,
    /// Print the completion script for SHELL (for the package build)
    #[arg(long, hide = true, value_name = "SHELL", exclusive = true)]
    generate_completions: Option<docs::Shell>,
}

/// How many lines of a failed start's log are shown.
const LOG_TAIL: usize = 10;

fn main() -> ExitCode {
    // Usage errors and --help/--version exit here, with clap's codes (2 / 0).
    let cli = Cli::parse();
    pipevpn::logging::init("pipevpnd", cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            pipevpn::logging::print_error("pipevpnd", &err);
            // As wireguard-go: every failure is status 1.
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    if let Some(dir) = &cli.generate_man {
        return docs::write_man_pages(Cli::command(), dir);
    }
    if let Some(shell) = cli.generate_completions {
        return docs::write_completions(Cli::command(), shell, &mut std::io::stdout());
    }
    // clap requires IFACE without a --generate-* option.
    let name = cli
        .interface
        .as_deref()
        .ok_or_else(|| Error::Input("no interface named".into()))?;
    if !cli.foreground {
        return start_in_background(cli, name);
    }
    let ready = cli.ready_fd.map(process::inherited_pipe).transpose()?;
    daemon::run(name, || match ready {
        Some(mut pipe) => pipe
            .write_all(b"1")
            .map_err(|e| Error::sys("telling the starting pipevpnd that the socket serves", e)),
        None => Ok(()),
    })
}

/// Starts `pipevpnd -f` in a new session and waits for its byte on a pipe:
/// it comes once the control socket serves; end of file instead means the
/// daemon exited, and its status and last log lines make the error.
fn start_in_background(cli: &Cli, name: &str) -> Result<()> {
    // Checked here too, so that these refusals leave no log file.
    iface::validate_name(name)?;
    if pipevpn::sys::effective_uid() != 0 {
        return Err(Error::Input(format!(
            "must run as root: it creates the interface {name} and its control socket"
        )));
    }
    let log_path = rundir::netns_dir(Path::new(RUN_DIR))?.join(format!("{name}.log"));
    let open_failed = |e| Error::sys(format!("opening {}", log_path.display()), e);
    // Appended to: a daemon of that name may still be logging there.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(open_failed)?;
    let log_start = log.metadata().map_err(open_failed)?.len();
    let log_out = log.try_clone().map_err(open_failed)?;
    let (ready, ready_in_child) = process::pipe()?;
    let exe = std::env::current_exe().map_err(|e| Error::sys("finding our own executable", e))?;
    let mut command = Command::new(&exe);
    command
        .arg("--foreground")
        .arg(format!("--ready-fd={}", ready_in_child.as_raw_fd()));
    command.args((0..cli.verbose).map(|_| "-v"));
    command
        .arg("--")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(log);
    let mut child = process::spawn_in_new_session(&mut command, ready_in_child.as_fd())
        .map_err(|e| Error::sys(format!("starting {} -f {name}", exe.display()), e))?;
    // Ours closed, so the pipe's end of file means the daemon's is too.
    drop(ready_in_child);
    let mut byte = [0u8; 1];
    if matches!(File::from(ready).read(&mut byte), Ok(1)) {
        return Ok(());
    }
    let status = child
        .wait()
        .map_err(|e| Error::sys("waiting for pipevpnd -f", e))?;
    let tail = log_tail(&log_path, log_start);
    // A log that held only this failure goes with it.
    if log_start == 0 {
        let _ = fs::remove_file(&log_path);
    }
    Err(Error::Input(format!(
        "{name}: the daemon exited ({status}) before its control socket served; its log:\n{tail}"
    )))
}

/// The last [`LOG_TAIL`] lines written to the log at `path` after offset
/// `start`, indented; what went wrong reading it, if it cannot be read.
fn log_tail(path: &Path, start: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(start))?;
        f.take(1 << 20).read_to_string(&mut text)
    });
    if let Err(e) = read {
        return format!("  (cannot read {}: {e})", path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wireguard_go_calling_convention() {
        let cli = Cli::try_parse_from(["pipevpnd", "-f", "wg0"]).unwrap();
        assert!(cli.foreground && cli.interface.as_deref() == Some("wg0"));
        assert!(cli.ready_fd.is_none());
        let cli = Cli::try_parse_from(["pipevpnd", "--foreground", "wg0"]).unwrap();
        assert!(cli.foreground);
        let cli = Cli::try_parse_from(["pipevpnd", "wg0"]).unwrap();
        assert!(!cli.foreground);
        // The pipe is the background start's, for a foreground daemon only.
        assert!(Cli::try_parse_from(["pipevpnd", "--ready-fd=3", "wg0"]).is_err());
        assert!(Cli::try_parse_from(["pipevpnd"]).is_err());
        // The package build's generators stand alone.
        let cli = Cli::try_parse_from(["pipevpnd", "--generate-man", "d"]).unwrap();
        assert!(cli.interface.is_none());
        assert!(Cli::try_parse_from(["pipevpnd", "--generate-man", "d", "wg0"]).is_err());
        assert!(Cli::try_parse_from(["pipevpnd", "-f", "--generate-completions", "bash"]).is_err());
    }
}
