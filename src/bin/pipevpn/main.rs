//! The `pipevpn` command. Entry point: parse the command line ([`cli`]),
//! run, and turn an error into one line on stderr and an exit code. Nothing
//! else prints errors. [`demo`] is the `pipevpn demo` command; the rest is
//! the library.

mod cli;
mod demo;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, Format};
use pipevpn::config::Config;
use pipevpn::protocol::keys::PrivateKey;
use pipevpn::{control, docs, show, up, Error, Result};
use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
            crypto_workers,
        } => {
            let loaded = Config::load(&config)?;
            let interface = cli::interface_name(&config, interface.as_deref())?;
            let crypto_workers =
                crypto_workers.map_or_else(pipevpn::pipeline::default_crypto_workers, usize::from);
            up::run(
                loaded,
                up::UpOptions {
                    interface,
                    crypto_workers,
                },
            )
        }
        Command::Show {
            interface,
            format,
            json,
            watch,
        } => {
            let format = if json { Format::Json } else { format };
            show(interface.as_deref(), format, watch)
        }
        Command::Demo(args) => demo::run(&args),
        Command::GenerateMan { dir } => docs::write_man_pages(Cli::command(), &dir),
        Command::GenerateCompletions { shell } => {
            docs::write_completions(Cli::command(), shell, &mut io::stdout())
        }
    }
}

/// `pipevpn show`: one frame, or with `--watch` one a second until
/// interrupted (SIGINT's default action ends the process). On a terminal
/// each frame replaces the last; elsewhere frames follow each other,
/// without escape codes. The Prometheus format is one reading only: frames
/// one after another would not be one valid exposition.
fn show(interface: Option<&str>, format: Format, watch: bool) -> Result<()> {
    if watch && format == Format::Prometheus {
        return Err(Error::Input(
            "show: --watch redraws text or json; --format prometheus prints one reading (run it again for the next)".into(),
        ));
    }
    if pipevpn::sys::effective_uid() != 0 {
        return Err(Error::Input(
            "show reads the control sockets, which only root may reach: run it as root".into(),
        ));
    }
    let names = match interface {
        Some(name) => vec![name.to_string()],
        None => control::client::interfaces()?,
    };
    let terminal = io::stdout().is_terminal();
    let mut watches: Vec<show::Watch> = names.iter().map(|_| show::Watch::default()).collect();
    loop {
        let mut frame = String::new();
        let mut objects = serde_json::Map::new();
        let mut devices = Vec::new();
        for (name, watch) in names.iter().zip(&mut watches) {
            let dev = control::client::device(name)?;
            let rates = watch.next(&dev, Instant::now());
            match format {
                Format::Json => {
                    objects.insert(name.clone(), show::json(&dev, rates.as_ref()));
                }
                Format::Text => {
                    if !frame.is_empty() {
                        frame.push('\n');
                    }
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    frame.push_str(&show::text(&dev, now, rates.as_ref()));
                }
                Format::Prometheus => devices.push(dev),
            }
        }
        match format {
            Format::Json => {
                // One interface named: its object; else one object by name.
                let value = match (interface, objects.len()) {
                    (Some(_), 1) => objects
                        .into_iter()
                        .next()
                        .map(|(_, v)| v)
                        .unwrap_or_default(),
                    _ => serde_json::Value::Object(objects),
                };
                frame = format!("{value}\n");
            }
            Format::Prometheus => frame = show::prometheus(&devices),
            Format::Text => {}
        }
        if watch && terminal {
            // Home and clear the screen, then the frame.
            frame.insert_str(0, "\x1b[H\x1b[2J");
        }
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::sys("writing to stdout", e))?;
        if !watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Writes a key as `wg` does: base64 and a newline. A closed stdout is an
/// error, not a panic.
fn print_key(text: &str) -> Result<()> {
    writeln!(io::stdout(), "{text}").map_err(|e| Error::sys("writing to stdout", e))
}
