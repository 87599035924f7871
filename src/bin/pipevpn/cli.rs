//! Command line. The doc comments below are the `--help` text.

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use pipevpn::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "pipevpn",
    version,
    about = "A point-to-point VPN speaking the WireGuard protocol, run as a threaded packet pipeline"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new base64 private key (like `wg genkey`)
    Genkey,
    /// Read a base64 private key on stdin, print its public key (like `wg pubkey`)
    Pubkey,
    /// Bring a tunnel up in the foreground until SIGINT, SIGTERM or SIGQUIT;
    /// SIGHUP re-reads the config file and applies it live (as `wg syncconf`)
    ///
    /// It holds CAP_NET_ADMIN alone, with no_new_privs, from the start, and so
    /// do its hooks and resolvconf (enough for ip, nft, sysctl under net; not
    /// for ping, sudo, ip netns); a ListenPort below 1024 is refused.
    Up {
        /// wg-quick style configuration file (one [Interface], any number of [Peer]s)
        config: PathBuf,
        /// Interface name [default: the config file name without its extension]
        #[arg(long, short)]
        interface: Option<String>,
        /// Threads sealing outbound packets in parallel beside the encryptor,
        /// and as many opening inbound ones beside the decryptor, 0 to 64; 0:
        /// the two do it themselves [default: none up to 2 usable cores, else
        /// half of them]
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u8).range(0..=pipevpn::pipeline::MAX_CRYPTO_WORKERS as i64))]
        crypto_workers: Option<u8>,
    },
    /// Show running interfaces as `wg show` does, plus each pipeline stage's
    /// figures, read from their control sockets (root)
    Show {
        /// The interface [default: every interface with a control socket]
        interface: Option<String>,
        /// What to print: `wg show`'s text and the stage table, one JSON
        /// object, or the Prometheus text format for node-exporter's textfile
        /// collector (field and metric names in the README)
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Short for --format json
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Redraw every second with per-second rates, until Ctrl-C (text or json)
        #[arg(long)]
        watch: bool,
    },
    /// Run two peers in throw-away network namespaces and show live figures (root)
    Demo(crate::demo::DemoArgs),
    /// Write the man pages into DIR (for the package build)
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
    /// Print the completion script for SHELL (for the package build)
    #[command(hide = true)]
    GenerateCompletions { shell: pipevpn::docs::Shell },
}

/// What `pipevpn show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Prometheus,
}

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_NAME: usize = 15;

/// The interface name: `flag` if given, else the config file's stem, as
/// wg-quick does (`wg0.conf` -> `wg0`). Checked against wg-quick's rule:
/// 1 to 15 characters from `a-z A-Z 0-9 _ = + . -`.
pub fn interface_name(config: &Path, flag: Option<&str>) -> Result<String> {
    let (name, origin) = match flag {
        Some(name) => (name.to_string(), ""),
        None => (
            config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            " (taken from the config file name; choose one with --interface)",
        ),
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_=+.-".contains(c);
    // The kernel also refuses "." and "..", which wg-quick's pattern lets through.
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name.chars().all(allowed)
        && name != "."
        && name != "..";
    if valid {
        Ok(name)
    } else {
        Err(Error::Input(format!(
            "bad interface name '{name}'{origin}: use 1 to {MAX_NAME} characters from a-z A-Z 0-9 _ = + . -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `show`'s format: text unless asked, `--json` short for `--format
    /// json` and not beside it.
    #[test]
    fn show_formats() {
        let format = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Show { format, json, .. },
                ..
            }) => Ok((format, json)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(format(&["pipevpn", "show"]), Ok((Format::Text, false)));
        assert_eq!(
            format(&["pipevpn", "show", "--json"]),
            Ok((Format::Text, true))
        );
        assert_eq!(
            format(&["pipevpn", "show", "wg0", "--format", "prometheus"]),
            Ok((Format::Prometheus, false))
        );
        assert_eq!(
            format(&["pipevpn", "show", "--json", "--format", "text"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            format(&["pipevpn", "show", "--format", "xml"]),
            Err(clap::error::ErrorKind::InvalidValue)
        );
    }

    #[test]
    fn crypto_workers_from_0_to_64() {
        let workers = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Up { crypto_workers, .. },
                ..
            }) => Ok(crypto_workers),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(workers(&["pipevpn", "up", "wg0.conf"]), Ok(None));
        for n in [0, 64] {
            let arg = n.to_string();
            let got = workers(&["pipevpn", "up", "wg0.conf", "--crypto-workers", &arg]);
            assert_eq!(got, Ok(Some(n)));
        }
        for bad in ["65", "many"] {
            let err = workers(&["pipevpn", "up", "x.conf", "--crypto-workers", bad]).unwrap_err();
            assert!(err.contains("--crypto-workers"), "{bad}: {err}");
        }
    }

    #[test]
    fn name_from_flag_or_file_stem() {
        let conf = Path::new("/etc/pipevpn/wg0.conf");
        assert_eq!(interface_name(conf, None).unwrap(), "wg0");
        assert_eq!(interface_name(conf, Some("tun-a.1")).unwrap(), "tun-a.1");
        assert_eq!(
            interface_name(Path::new("x_=+.-Y9.conf"), None).unwrap(),
            "x_=+.-Y9"
        );
        assert_eq!(
            interface_name(conf, Some("fifteen-chars-x")).unwrap(),
            "fifteen-chars-x"
        );
    }

    #[test]
    fn bad_names_are_refused_and_named() {
        let conf = Path::new("wg0.conf");
        for bad in [
            "",
            "sixteen-chars-xy",
            "has space",
            "a/b",
            "a:b",
            "é",
            ".",
            "..",
        ] {
            match interface_name(conf, Some(bad)) {
                Err(Error::Input(msg)) => {
                    assert!(msg.contains(&format!("'{bad}'")), "{msg}");
                    assert!(!msg.contains("--interface"), "{msg}");
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
        match interface_name(Path::new("/tmp/my tunnel.conf"), None) {
            Err(Error::Input(msg)) => {
                assert!(
                    msg.contains("'my tunnel'") && msg.contains("--interface"),
                    "{msg}"
                )
            }
            other => panic!("accepted: {other:?}"),
        }
    }
}
