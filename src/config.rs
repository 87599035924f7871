//! The configuration file: wg-quick's INI format, restricted to one
//! `[Interface]` and one `[Peer]`, turned into plain validated data.
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! Address = 10.96.0.1/24, fd96::1/64
//! ListenPort = 51820            # optional, 0 = random
//! MTU = 1420                    # optional, 576..=9000
//!
//! [Peer]
//! PublicKey = <base64>
//! PresharedKey = <base64>       # optional
//! Endpoint = peer.example:51820 # optional, resolved when the tunnel starts
//! AllowedIPs = 10.96.0.2/32
//! PersistentKeepalive = 25      # optional, seconds or "off"
//! ```
//!
//! Keys and section names are case-insensitive, as in wg-quick. Every error
//! names the file, the line and the problem.

use crate::cidr::Cidr;
use crate::protocol::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const DEFAULT_MTU: u16 = 1420;
const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from, for messages about it later (e.g. endpoint resolution).
    pub path: PathBuf,
    pub interface: InterfaceConfig,
    pub peer: PeerConfig,
}

#[derive(Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub private_key: PrivateKey,
    pub addresses: Vec<Cidr>,
    /// `None`: let the kernel pick a port (absent or `0`).
    pub listen_port: Option<u16>,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<Endpoint>,
    /// Stored with host bits cleared, as `wg` does, so routes can use them as is.
    pub allowed_ips: Vec<Cidr>,
    /// Seconds; `None` when absent, `0` or `off`.
    pub persistent_keepalive: Option<u16>,
}

/// A peer address as written; names are resolved only when the tunnel starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address (IPv6 without brackets) or a host name.
    pub host: String,
    pub port: u16,
    /// Line of the `Endpoint` key, for resolution errors.
    pub line: usize,
}

// Secrets stay out of debug output, which may end up in logs.
impl fmt::Debug for InterfaceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterfaceConfig")
            .field("private_key", &"<hidden>")
            .field("addresses", &self.addresses)
            .field("listen_port", &self.listen_port)
            .field("mtu", &self.mtu)
            .finish()
    }
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("public_key", &self.public_key)
            .field("preshared_key", &self.preshared_key)
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Endpoint {
    /// Resolves the host (first address returned); `file` is the config path
    /// so the error can point at the `Endpoint` line.
    pub fn resolve(&self, file: &Path) -> Result<SocketAddr> {
        let fail = |why: String| Error::Config {
            file: file.to_path_buf(),
            line: self.line,
            msg: format!("Endpoint host '{}' does not resolve: {why}", self.host),
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no addresses".into()))
    }
}

/// The largest config file [`Config::load`] accepts: far above any real one
/// (10 000 IPv6 AllowedIPs, one line each, take about 400 KiB), and small enough that
/// `/dev/zero` or an endless FIFO cannot fill memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and parses a file; a read error names the path. At most one byte
    /// more than [`MAX_CONFIG_BYTES`] is read, so a larger or endless file is
    /// refused without being read whole. Like wg-quick, warns when others may
    /// access the file, which holds the private key (here group too). The
    /// text holds that key in base64, so it is wiped once parsed.
    pub fn load(path: &Path) -> Result<Config> {
        let cannot_read =
            |e: std::io::Error| Error::Input(format!("{}: cannot read: {e}", path.display()));
        let file = File::open(path).map_err(cannot_read)?;
        let meta = file.metadata().map_err(cannot_read)?;
        let mode = meta.permissions().mode();
        // Room for the whole file up front, so that no reallocation leaves an
        // unwiped copy of the key behind.
        let room = meta.len().min(MAX_CONFIG_BYTES) + 1;
        let mut bytes = Zeroizing::new(Vec::with_capacity(room as usize));
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::Input(format!(
                "{}: larger than {MAX_CONFIG_BYTES} bytes (1 MiB), too large for a config file",
                path.display()
            )));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::Input(format!("{}: cannot read: not UTF-8 text", path.display()))
        })?;
        let config = Config::parse(path, text)?;
        if mode & 0o077 != 0 {
            log::warn!(
                "{} holds a PrivateKey and is accessible by group or others (mode {:04o}): chmod 600 it",
                path.display(),
                mode & 0o7777
            );
        }
        Ok(config)
    }

    /// Parses file content; `path` is only used in errors and kept in the result.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let err = |line: usize, msg: String| Error::Config {
            file: path.to_path_buf(),
            line,
            msg,
        };
        let mut interface: Option<Section<InterfaceDraft>> = None;
        let mut peer: Option<Section<PeerDraft>> = None;
        let mut current: Option<SectionKind> = None;

        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if let Some(name) = content.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                let kind = match name.trim().to_ascii_lowercase().as_str() {
                    "interface" => SectionKind::Interface,
                    "peer" => SectionKind::Peer,
                    _ => {
                        return Err(err(
                            line,
                            format!("unknown section '{content}' (expected [Interface] or [Peer])"),
                        ))
                    }
                };
                let first = match kind {
                    SectionKind::Interface => open(&mut interface, line),
                    SectionKind::Peer => open(&mut peer, line),
                };
                if let Some(first) = first {
                    let msg = match kind {
                        SectionKind::Interface => "only one [Interface] section is allowed",
                        SectionKind::Peer => "only one [Peer] is supported",
                    };
                    return Err(err(line, format!("{msg} (the first is at line {first})")));
                }
                current = Some(kind);
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(err(
                    line,
                    format!("expected 'Key = Value' or a [Section] header, found '{content}'"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            let result = match (current, &mut interface, &mut peer) {
                (Some(SectionKind::Interface), Some(section), _) => section.set(key, value, line),
                (Some(SectionKind::Peer), _, Some(section)) => section.set(key, value, line),
                _ => Err(format!(
                    "'{key}' appears before any [Interface] or [Peer] section"
                )),
            };
            result.map_err(|msg| err(line, msg))?;
        }

        let end = text.lines().count().max(1);
        let interface = interface
            .ok_or_else(|| err(end, "missing [Interface] section".into()))?
            .finish()
            .map_err(|(line, msg)| err(line, msg))?;
        let peer = peer
            .ok_or_else(|| {
                err(
                    end,
                    "missing [Peer] section (exactly one is required)".into(),
                )
            })?
            .finish()
            .map_err(|(line, msg)| err(line, msg))?;
        Ok(Config {
            path: path.to_path_buf(),
            interface,
            peer,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum SectionKind {
    Interface,
    Peer,
}

/// Starts a section unless one was already started; returns the line of
/// the earlier one if so.
fn open<D: Draft>(slot: &mut Option<Section<D>>, line: usize) -> Option<usize> {
    match slot {
        Some(section) => Some(section.header),
        None => {
            *slot = Some(Section {
                header: line,
                seen: HashMap::new(),
                draft: D::default(),
            });
            None
        }
    }
}

/// wg-quick keys that pipevpn deliberately does not implement.
const UNSUPPORTED: &[&str] = &[
    "DNS",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
    "FwMark",
];

/// Keys that may appear more than once; their lists accumulate.
const REPEATABLE: &[&str] = &["Address", "AllowedIPs"];

/// One section's values as they are read, before required keys are checked.
trait Draft: Default {
    const NAME: &'static str;
    /// Canonical spellings of the keys this section accepts.
    const KEYS: &'static [&'static str];
    /// The section other keys belong to, for a helpful message.
    const OTHER: (&'static str, &'static [&'static str]);
    type Output;
    /// Stores one value; `key` is canonical and `value` non-empty.
    fn set(
        &mut self,
        key: &'static str,
        value: &str,
        line: usize,
    ) -> std::result::Result<(), String>;
    /// The validated section, or the name of a missing required key.
    fn finish(self) -> std::result::Result<Self::Output, &'static str>;
}

struct Section<D> {
    header: usize,
    /// Canonical key -> line it was first set on.
    seen: HashMap<&'static str, usize>,
    draft: D,
}

impl<D: Draft> Section<D> {
    fn set(&mut self, key: &str, value: &str, line: usize) -> std::result::Result<(), String> {
        let Some(&canonical) = D::KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
            return Err(unknown_key::<D>(key));
        };
        if let Some(first) = self.seen.insert(canonical, line) {
            if !REPEATABLE.contains(&canonical) {
                return Err(format!(
                    "duplicate key '{canonical}' (first set at line {first})"
                ));
            }
            self.seen.insert(canonical, first);
        }
        if value.is_empty() {
            return Err(format!("'{canonical}' has no value"));
        }
        self.draft.set(canonical, value, line)
    }

    fn finish(self) -> std::result::Result<D::Output, (usize, String)> {
        let header = self.header;
        self.draft.finish().map_err(|key| {
            (
                header,
                format!("[{}] is missing the required key '{key}'", D::NAME),
            )
        })
    }
}

fn unknown_key<D: Draft>(key: &str) -> String {
    let (other, other_keys) = D::OTHER;
    if let Some(k) = other_keys.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        format!("'{k}' belongs in the [{other}] section, not [{}]", D::NAME)
    } else if let Some(k) = UNSUPPORTED.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        format!("'{k}' is a wg-quick key not supported by pipevpn")
    } else {
        format!("unknown key '{key}' in [{}]", D::NAME)
    }
}

const INTERFACE_KEYS: &[&str] = &["PrivateKey", "Address", "ListenPort", "MTU"];
const PEER_KEYS: &[&str] = &[
    "PublicKey",
    "PresharedKey",
    "Endpoint",
    "AllowedIPs",
    "PersistentKeepalive",
];

#[derive(Default)]
struct InterfaceDraft {
    private_key: Option<PrivateKey>,
    addresses: Vec<Cidr>,
    listen_port: Option<u16>,
    mtu: Option<u16>,
}

impl Draft for InterfaceDraft {
    const NAME: &'static str = "Interface";
    const KEYS: &'static [&'static str] = INTERFACE_KEYS;
    const OTHER: (&'static str, &'static [&'static str]) = ("Peer", PEER_KEYS);
    type Output = InterfaceConfig;

    fn set(
        &mut self,
        key: &'static str,
        value: &str,
        _line: usize,
    ) -> std::result::Result<(), String> {
        match key {
            // The value is a secret: describe the problem without echoing it.
            "PrivateKey" => {
                self.private_key =
                    Some(PrivateKey::decode(value).map_err(|e| format!("PrivateKey: {e}"))?)
            }
            "Address" => self.addresses.extend(cidr_list(key, value)?),
            "ListenPort" => {
                let port = number::<u16>(key, value, "a port number (0-65535)")?;
                self.listen_port = (port != 0).then_some(port);
            }
            "MTU" => {
                let mtu = number::<u32>(key, value, "a number")?;
                if !MTU_RANGE.contains(&mtu) {
                    return Err(format!(
                        "MTU {mtu} is out of range ({}-{})",
                        MTU_RANGE.start(),
                        MTU_RANGE.end()
                    ));
                }
                self.mtu = Some(mtu as u16);
            }
            _ => unreachable!("key {key} is listed in INTERFACE_KEYS"),
        }
        Ok(())
    }

    fn finish(self) -> std::result::Result<InterfaceConfig, &'static str> {
        if self.addresses.is_empty() {
            return Err("Address");
        }
        Ok(InterfaceConfig {
            private_key: self.private_key.ok_or("PrivateKey")?,
            addresses: self.addresses,
            listen_port: self.listen_port,
            mtu: self.mtu.unwrap_or(DEFAULT_MTU),
        })
    }
}

#[derive(Default)]
struct PeerDraft {
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<Endpoint>,
    allowed_ips: Vec<Cidr>,
    persistent_keepalive: Option<u16>,
}

impl Draft for PeerDraft {
    const NAME: &'static str = "Peer";
    const KEYS: &'static [&'static str] = PEER_KEYS;
    const OTHER: (&'static str, &'static [&'static str]) = ("Interface", INTERFACE_KEYS);
    type Output = PeerConfig;

    fn set(
        &mut self,
        key: &'static str,
        value: &str,
        line: usize,
    ) -> std::result::Result<(), String> {
        match key {
            "PublicKey" => {
                let public =
                    PublicKey::decode(value).map_err(|e| format!("PublicKey '{value}': {e}"))?;
                if public.is_low_order() {
                    return Err(format!(
                        "PublicKey '{value}' is a low-order point; no secure session is possible with it"
                    ));
                }
                self.public_key = Some(public);
            }
            "PresharedKey" => {
                self.preshared_key =
                    Some(PresharedKey::decode(value).map_err(|e| format!("PresharedKey: {e}"))?)
            }
            "Endpoint" => self.endpoint = Some(endpoint(value, line)?),
            "AllowedIPs" => self
                .allowed_ips
                .extend(cidr_list(key, value)?.iter().map(Cidr::network)),
            "PersistentKeepalive" => {
                let seconds = if value.eq_ignore_ascii_case("off") {
                    0
                } else {
                    number::<u16>(key, value, "a number of seconds (0-65535) or 'off'")?
                };
                self.persistent_keepalive = (seconds != 0).then_some(seconds);
            }
            _ => unreachable!("key {key} is listed in PEER_KEYS"),
        }
        Ok(())
    }

    fn finish(self) -> std::result::Result<PeerConfig, &'static str> {
        if self.allowed_ips.is_empty() {
            return Err("AllowedIPs");
        }
        Ok(PeerConfig {
            public_key: self.public_key.ok_or("PublicKey")?,
            preshared_key: self.preshared_key,
            endpoint: self.endpoint,
            allowed_ips: self.allowed_ips,
            persistent_keepalive: self.persistent_keepalive,
        })
    }
}

fn number<T: std::str::FromStr>(
    key: &str,
    value: &str,
    what: &str,
) -> std::result::Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key} '{value}' is not {what}"))
}

fn cidr_list(key: &str, value: &str) -> std::result::Result<Vec<Cidr>, String> {
    value
        .split(',')
        .map(str::trim)
        .map(|item| {
            if item.is_empty() {
                return Err(format!("{key} '{value}' has an empty entry"));
            }
            item.parse::<Cidr>().map_err(|e| format!("{key}: {e}"))
        })
        .collect()
}

/// `host:port` or `[v6addr]:port`. A bare IPv6 address is refused because
/// its last group cannot be told apart from a port.
fn endpoint(value: &str, line: usize) -> std::result::Result<Endpoint, String> {
    let bad = |why: &str| format!("Endpoint '{value}': {why} (expected host:port or [IPv6]:port)");
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("brackets must hold an IPv6 address"));
        }
        let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
        (host, port)
    } else {
        let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if host.contains(':') {
            return Err(bad("write an IPv6 address in brackets"));
        }
        (host, port)
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("bad host"));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(bad(&format!("bad port '{port}'"))),
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PUBLIC: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const PSK: &str = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=";

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("t.conf"), text)
    }

    fn minimal() -> String {
        format!(
            "[Interface]\nPrivateKey = {PRIVATE}\nAddress = 10.0.0.1/24\n\
             [Peer]\nPublicKey = {PUBLIC}\nAllowedIPs = 10.0.0.2/32\n"
        )
    }

    /// Asserts that `text` fails at `line` with a message containing `part`.
    #[track_caller]
    fn fails(text: &str, line: usize, part: &str) {
        match parse(text) {
            Err(Error::Config { file, line: l, msg }) => {
                assert_eq!(file, Path::new("t.conf"));
                assert_eq!(l, line, "wrong line for error '{msg}'");
                assert!(msg.contains(part), "'{msg}' does not contain '{part}'");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn full_config_with_every_key() {
        let text = format!(
            "# a comment\n\
             [interface]\n\
             privatekey={PRIVATE}   # trailing comment\n\
             Address = 10.0.0.1/24, fd00::1/64\n\
             \n\
             Address = 10.1.0.1/16\n\
             ListenPort = 51820\n\
             MTU = 1380\n\
             [Peer]\n\
             PublicKey = {PUBLIC}\n\
             PresharedKey = {PSK}\n\
             Endpoint = vpn.example.org:51821\n\
             AllowedIPs = 10.0.0.2/32, 192.168.7.9/24\n\
             ALLOWEDIPS = ::/0\n\
             PersistentKeepalive = 25\n"
        );
        let c = parse(&text).unwrap();
        let cidrs =
            |list: &[&str]| -> Vec<Cidr> { list.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            c,
            Config {
                path: "t.conf".into(),
                interface: InterfaceConfig {
                    private_key: PrivateKey::decode(PRIVATE).unwrap(),
                    addresses: cidrs(&["10.0.0.1/24", "fd00::1/64", "10.1.0.1/16"]),
                    listen_port: Some(51820),
                    mtu: 1380,
                },
                peer: PeerConfig {
                    public_key: PublicKey::decode(PUBLIC).unwrap(),
                    preshared_key: Some(PresharedKey::decode(PSK).unwrap()),
                    endpoint: Some(Endpoint {
                        host: "vpn.example.org".into(),
                        port: 51821,
                        line: 12,
                    }),
                    allowed_ips: cidrs(&["10.0.0.2/32", "192.168.7.0/24", "::/0"]),
                    persistent_keepalive: Some(25),
                },
            }
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains(PRIVATE) && !debug.contains(PSK), "{debug}");
    }

    #[test]
    fn defaults_and_zero_values() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.interface.mtu, DEFAULT_MTU);
        assert_eq!(c.interface.listen_port, None);
        assert_eq!(c.peer.endpoint, None);
        assert_eq!(c.peer.preshared_key, None);
        assert_eq!(c.peer.persistent_keepalive, None);

        let c = parse(&minimal().replace("[Peer]", "ListenPort = 0\n[Peer]")).unwrap();
        assert_eq!(c.interface.listen_port, None);
        for off in ["0", "off", "OFF"] {
            let c = parse(&format!("{}PersistentKeepalive = {off}\n", minimal())).unwrap();
            assert_eq!(c.peer.persistent_keepalive, None, "{off}");
        }
    }

    #[test]
    fn endpoints() {
        let at = |value: &str| endpoint(value, 7);
        let e = at("[fd00::2]:51820").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.line), ("fd00::2", 51820, 7));
        assert_eq!(e.to_string(), "[fd00::2]:51820");
        assert_eq!(at("192.0.2.1:1").unwrap().to_string(), "192.0.2.1:1");
        for (bad, why) in [
            ("192.0.2.1", "missing port"),
            ("host:", "bad port ''"),
            ("host:0", "bad port '0'"),
            ("host:65536", "bad port '65536'"),
            ("[fd00::2]", "missing port"),
            ("[fd00::2:51820", "missing ']'"),
            ("fd00::2:51820", "brackets"),
            (":51820", "bad host"),
        ] {
            let msg = at(bad).unwrap_err();
            assert!(msg.contains(why) && msg.contains(bad), "{bad}: {msg}");
        }
    }

    #[test]
    fn endpoint_resolution() {
        let file = Path::new("t.conf");
        let e = endpoint("127.0.0.1:9", 3).unwrap();
        assert_eq!(e.resolve(file).unwrap(), "127.0.0.1:9".parse().unwrap());
        let e = endpoint("[::1]:9", 3).unwrap();
        assert_eq!(e.resolve(file).unwrap(), "[::1]:9".parse().unwrap());
        // A host name goes through the resolver (here /etc/hosts).
        let e = endpoint("localhost:9", 3).unwrap();
        let got = e.resolve(file).unwrap();
        assert!(got.ip().is_loopback() && got.port() == 9, "{got}");
        // .invalid is reserved never to resolve (RFC 6761).
        let e = endpoint("no-such-host.invalid:9", 3).unwrap();
        match e.resolve(file) {
            Err(Error::Config { line: 3, msg, .. }) => {
                assert!(
                    msg.contains("'no-such-host.invalid' does not resolve"),
                    "{msg}"
                )
            }
            other => panic!("expected a resolution error, got {other:?}"),
        }
    }

    #[test]
    fn bad_base64() {
        fails(
            &minimal().replace(PUBLIC, "not*base64"),
            5,
            "PublicKey 'not*base64': bad base64",
        );
        fails(
            &minimal().replace(PRIVATE, "not*base64"),
            2,
            "PrivateKey: bad base64",
        );
    }

    #[test]
    fn short_key() {
        fails(&minimal().replace(PRIVATE, "AAAA"), 2, "32 bytes");
        fails(
            &format!("{}PresharedKey = AAAA\n", minimal()),
            7,
            "PresharedKey: a key is 32 bytes",
        );
    }

    #[test]
    fn bad_cidr() {
        fails(
            &minimal().replace("10.0.0.1/24", "10.0.0.1/24, 10.0.0.300/24"),
            3,
            "Address: '10.0.0.300/24'",
        );
        fails(
            &minimal().replace("10.0.0.2/32", "10.0.0.2/33"),
            6,
            "AllowedIPs: '10.0.0.2/33'",
        );
        fails(
            &minimal().replace("10.0.0.2/32", "10.0.0.2/32,"),
            6,
            "empty entry",
        );
    }

    #[test]
    fn missing_required_keys_point_at_the_section() {
        fails(
            &minimal().replace(&format!("PrivateKey = {PRIVATE}\n"), ""),
            1,
            "missing the required key 'PrivateKey'",
        );
        fails(
            &minimal().replace("Address = 10.0.0.1/24\n", ""),
            1,
            "missing the required key 'Address'",
        );
        fails(
            &minimal().replace(&format!("PublicKey = {PUBLIC}\n"), ""),
            4,
            "missing the required key 'PublicKey'",
        );
        fails(
            &minimal().replace("AllowedIPs = 10.0.0.2/32\n", ""),
            4,
            "missing the required key 'AllowedIPs'",
        );
    }

    #[test]
    fn missing_sections() {
        fails("", 1, "missing [Interface]");
        fails(
            &format!("[Interface]\nPrivateKey = {PRIVATE}\nAddress = 10.0.0.1/24\n"),
            3,
            "missing [Peer]",
        );
    }

    #[test]
    fn unknown_key() {
        fails(
            &format!("{}Colour = blue\n", minimal()),
            7,
            "unknown key 'Colour' in [Peer]",
        );
        fails(
            &minimal().replace("[Peer]", "DNS = 1.1.1.1\n[Peer]"),
            4,
            "'DNS' is a wg-quick key not supported by pipevpn",
        );
        fails(
            &minimal().replace("[Peer]", "postup = echo hi\n[Peer]"),
            4,
            "'PostUp' is a wg-quick key not supported",
        );
        fails(
            &format!("{}ListenPort = 1\n", minimal()),
            7,
            "'ListenPort' belongs in the [Interface] section",
        );
    }

    #[test]
    fn unknown_section() {
        fails(
            &format!("{}[Peers]\n", minimal()),
            7,
            "unknown section '[Peers]'",
        );
    }

    #[test]
    fn second_peer() {
        fails(
            &format!("{}\n[peer]\n", minimal()),
            8,
            "only one [Peer] is supported (the first is at line 4)",
        );
        fails(
            &format!("{}[Interface]\n", minimal()),
            7,
            "only one [Interface]",
        );
    }

    #[test]
    fn duplicate_key() {
        fails(
            &minimal().replace("[Peer]", "MTU = 1400\nmtu = 1300\n[Peer]"),
            5,
            "duplicate key 'MTU' (first set at line 4)",
        );
        fails(
            &format!("{}PublicKey = {PUBLIC}\n", minimal()),
            7,
            "duplicate key 'PublicKey'",
        );
    }

    #[test]
    fn bad_port() {
        fails(
            &minimal().replace("[Peer]", "ListenPort = 70000\n[Peer]"),
            4,
            "ListenPort '70000' is not a port number",
        );
        fails(
            &format!("{}Endpoint = 192.0.2.1\n", minimal()),
            7,
            "Endpoint '192.0.2.1': missing port",
        );
        fails(
            &format!("{}Endpoint = 192.0.2.1:x\n", minimal()),
            7,
            "bad port 'x'",
        );
        fails(
            &format!("{}PersistentKeepalive = never\n", minimal()),
            7,
            "PersistentKeepalive 'never'",
        );
    }

    #[test]
    fn bad_mtu() {
        fails(
            &minimal().replace("[Peer]", "MTU = 575\n[Peer]"),
            4,
            "MTU 575 is out of range (576-9000)",
        );
        fails(
            &minimal().replace("[Peer]", "MTU = 9001\n[Peer]"),
            4,
            "MTU 9001 is out of range",
        );
        fails(
            &minimal().replace("[Peer]", "MTU = big\n[Peer]"),
            4,
            "MTU 'big' is not a number",
        );
    }

    #[test]
    fn low_order_key() {
        let zero = PublicKey::from_bytes([0; 32]).to_string();
        fails(&minimal().replace(PUBLIC, &zero), 5, "low-order");
    }

    #[test]
    fn junk_lines() {
        fails(
            &minimal().replace("[Peer]", "just words\n[Peer]"),
            4,
            "expected 'Key = Value' or a [Section] header, found 'just words'",
        );
        fails(
            &format!("PrivateKey = {PRIVATE}\n{}", minimal()),
            1,
            "before any [Interface] or [Peer] section",
        );
        fails(&minimal().replace("[Peer]", "[Peer"), 4, "found '[Peer'");
        fails(
            &minimal().replace("Address = 10.0.0.1/24", "Address ="),
            3,
            "'Address' has no value",
        );
    }
}
