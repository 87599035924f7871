//! The `pipevpn` command. Entry point: parse the command line ([`cli`]),
//! run, and turn an error into one line on stderr and an exit code. Nothing
//! else prints errors. [`demo`] is the `pipevpn demo` command; the rest is
//! the library.

mod cli;
mod demo;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use pipevpn::config::Config;
use pipevpn::pipeline::stats::Snapshot;
use pipevpn::protocol::keys::PrivateKey;
use pipevpn::{docs, up, Error, Result};
use std::io::{self, Read, Write};
use std::process::ExitCode;
use zeroize::Zeroizing;

fn main() -> ExitCode {
    // Usage errors and --help/--version exit here, with clap's codes (2 / 0).
    let cli = Cli::parse();
    pipevpn::logging::init("pipevpn", cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            pipevpn::logging::print_error("pipevpn", &err);
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Genkey => {
            let private = PrivateKey::random_with(getrandom::getrandom).map_err(|e| {
                let source = e
                    .raw_os_error()
                    .map(io::Error::from_raw_os_error)
                    .unwrap_or_else(|| io::Error::other(e.to_string()));
                Error::sys("getrandom", source)
            })?;
            print_key(&private.to_base64())
        }
        Command::Pubkey => {
            // Room for a key and its newline, so the buffer holding the
            // private key is not reallocated and left behind unwiped.
            let mut input = Zeroizing::new(Vec::with_capacity(128));
            io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| Error::sys("reading stdin", e))?;
            let text = std::str::from_utf8(&input)
                .map_err(|_| Error::Input("stdin: not a base64 key (not text)".into()))?;
            let private =
                PrivateKey::decode(text).map_err(|e| Error::Input(format!("stdin: {e}")))?;
            print_key(&private.public_key().to_string())
        }
        Command::Up {
            config,
            interface,
            stats_file,
        } => {
            let loaded = Config::load(&config)?;
            let interface = cli::interface_name(&config, interface.as_deref())?;
            up::run(
                loaded,
                up::UpOptions {
                    interface,
                    stats_file,
                },
            )
        }
        Command::Demo(args) => demo::run(&args),
        Command::Stats { file } => {
            let snapshot = Snapshot::read(&file)?
                .ok_or_else(|| Error::Input(format!("{}: no such file", file.display())))?;
            write!(io::stdout(), "{}", snapshot.render())
                .map_err(|e| Error::sys("writing to stdout", e))
        }
        Command::GenerateMan { dir } => docs::write_man_pages(Cli::command(), &dir),
        Command::GenerateCompletions { shell } => {
            docs::write_completions(Cli::command(), shell, &mut io::stdout())
        }
    }
}

/// Writes a key as `wg` does: base64 and a newline. A closed stdout is an
/// error, not a panic.
fn print_key(text: &str) -> Result<()> {
    writeln!(io::stdout(), "{text}").map_err(|e| Error::sys("writing to stdout", e))
}
