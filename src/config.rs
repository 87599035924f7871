//! The configuration file: wg-quick's INI format, one `[Interface]` and any
//! number of `[Peer]` sections, turned into plain validated data.
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! Address = 10.96.0.1/24, fd96::1/64
//! ListenPort = 51820            # optional, 0 = random
//! MTU = 1420                    # optional, 576..=9000
//! FwMark = 0x51                 # optional, decimal or 0x hex, 0 or "off" = none
//! DNS = 10.96.0.53, corp.example # optional, addresses and search domains
//! Table = off                   # optional: auto (default) = main table, off = no
//!                               # routes, N = AllowedIPs as written into table N
//! PreUp = echo %i coming up     # optional, repeatable, run by bash; %i = interface
//! PostUp = ...                  # likewise PreDown and PostDown
//! SaveConfig = true             # optional, write the file back on exit
//!
//! [Peer]                        # zero or more
//! PublicKey = <base64>
//! PresharedKey = <base64>       # optional
//! Endpoint = peer.example:51820 # optional, resolved when the tunnel starts
//! AllowedIPs = 10.96.0.2/32
//! PersistentKeepalive = 25      # optional, seconds or "off"
//! ```
//!
//! Keys and section names are case-insensitive, as in wg-quick. Every error
//! names the file, the line and the problem. A hook's command is the whole
//! rest of its line, `#` included, as wg-quick reads it. Two peers may not
//! share a public key, nor an AllowedIPs prefix (wg would merge the first and
//! give the second to the later peer; refusing says which lines clash).

use crate::cidr::Cidr;
use crate::protocol::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
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
    /// In file order; possibly none, as wg-quick accepts.
    pub peers: Vec<PeerConfig>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub private_key: PrivateKey,
    pub addresses: Vec<Cidr>,
    /// `None`: let the kernel pick a port (absent or `0`).
    pub listen_port: Option<u16>,
    pub mtu: u16,
    /// `None`: no `DNS` key, the resolver is left alone.
    pub dns: Option<Dns>,
    pub table: Table,
    /// Shell commands in file order, each key repeatable.
    pub pre_up: Vec<Hook>,
    pub post_up: Vec<Hook>,
    pub pre_down: Vec<Hook>,
    pub post_down: Vec<Hook>,
    pub save_config: bool,
    /// The mark set on the UDP socket's packets; `None` when absent, `0` or `off`.
    pub fw_mark: Option<u32>,
}

/// What `DNS` lists: as in wg-quick, an entry of digits and dots or with a
/// colon is a name server, anything else a search domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    /// Line of the first `DNS` key, for errors about applying it.
    pub line: usize,
}

/// Where the routes for AllowedIPs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The main table (absent or `auto`).
    Auto,
    /// No routes at all.
    Off,
    /// A routing table by number; `line` is the `Table` key's.
    Id { id: u32, line: usize },
}

/// One `PreUp`, `PostUp`, `PreDown` or `PostDown` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub command: String,
    pub line: usize,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Line of the `[Peer]` header.
    pub line: usize,
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
            .field("dns", &self.dns)
            .field("table", &self.table)
            .field("pre_up", &self.pre_up)
            .field("post_up", &self.post_up)
            .field("pre_down", &self.pre_down)
            .field("post_down", &self.post_down)
            .field("save_config", &self.save_config)
            .field("fw_mark", &self.fw_mark)
            .finish()
    }
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("line", &self.line)
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
/// (10 000 peers with a PresharedKey, an Endpoint and an IPv4 and an IPv6
/// AllowedIPs each take about 2.5 MiB), and small enough that `/dev/zero` or
/// an endless FIFO cannot fill memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

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
                "{}: larger than {MAX_CONFIG_BYTES} bytes ({} MiB), too large for a config file",
                path.display(),
                MAX_CONFIG_BYTES >> 20
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
        let mut peers: Vec<Section<PeerDraft>> = Vec::new();
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
                match kind {
                    SectionKind::Interface => {
                        if let Some(first) = &interface {
                            return Err(err(
                                line,
                                format!(
                                    "only one [Interface] section is allowed (the first is at line {})",
                                    first.header
                                ),
                            ));
                        }
                        interface = Some(Section::new(line));
                    }
                    SectionKind::Peer => peers.push(Section::new(line)),
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
            // The line without its comment cut off, for the keys that keep it.
            let unstripped = raw.split_once('=').map_or("", |(_, v)| v).trim();
            let value = Value {
                text: value.trim(),
                unstripped,
                line,
            };
            let key = key.trim();
            let result = match (current, &mut interface, peers.last_mut()) {
                (Some(SectionKind::Interface), Some(section), _) => section.set(key, value),
                (Some(SectionKind::Peer), _, Some(section)) => section.set(key, value),
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
        check_peers(&peers).map_err(|(line, msg)| err(line, msg))?;
        let peers = peers
            .into_iter()
            .map(Section::finish)
            .collect::<std::result::Result<_, _>>()
            .map_err(|(line, msg)| err(line, msg))?;
        Ok(Config {
            path: path.to_path_buf(),
            interface,
            peers,
        })
    }

    /// The configuration as a file [`Config::parse`] reads back to the same
    /// values: every key that is set, in a fixed order, without comments.
    /// It holds the private key, so it is wiped when dropped, and sized
    /// by a first pass so that no reallocation leaves an unwiped copy.
    pub fn render(&self) -> Zeroizing<String> {
        let mut size = Count(0);
        // Counting and writing to a String cannot fail.
        let _ = self.write_to(&mut size);
        let mut out = Zeroizing::new(String::with_capacity(size.0));
        let _ = self.write_to(&mut *out);
        out
    }

    fn write_to(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let i = &self.interface;
        let mut result = Ok(());
        let mut put = |key: &str, value: &dyn fmt::Display| {
            result = result.and_then(|()| writeln!(out, "{key} = {value}"));
        };
        put("[Interface]\nPrivateKey", &*i.private_key.to_base64());
        put("Address", &join(&i.addresses));
        if let Some(port) = i.listen_port {
            put("ListenPort", &port);
        }
        put("MTU", &i.mtu);
        if let Some(mark) = i.fw_mark {
            put("FwMark", &format_args!("{mark:#x}"));
        }
        if let Some(dns) = &i.dns {
            let servers = dns.servers.iter().map(ToString::to_string);
            put(
                "DNS",
                &servers
                    .chain(dns.search.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        match i.table {
            Table::Auto => {}
            Table::Off => put("Table", &"off"),
            Table::Id { id, .. } => put("Table", &id),
        }
        for (key, hooks) in [
            ("PreUp", &i.pre_up),
            ("PostUp", &i.post_up),
            ("PreDown", &i.pre_down),
            ("PostDown", &i.post_down),
        ] {
            for hook in hooks {
                put(key, &hook.command);
            }
        }
        if i.save_config {
            put("SaveConfig", &"true");
        }
        for peer in &self.peers {
            put("\n[Peer]\nPublicKey", &peer.public_key);
            if let Some(psk) = &peer.preshared_key {
                put("PresharedKey", &*psk.to_base64());
            }
            put("AllowedIPs", &join(&peer.allowed_ips));
            if let Some(endpoint) = &peer.endpoint {
                put("Endpoint", endpoint);
            }
            if let Some(seconds) = peer.persistent_keepalive {
                put("PersistentKeepalive", &seconds);
            }
        }
        result
    }
}

/// A `fmt::Write` that only counts the bytes written to it.
struct Count(usize);

impl fmt::Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn join(cidrs: &[Cidr]) -> String {
    let items: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// Refuses two peers with the same public key or the same AllowedIPs
/// prefix, at the later one's line, naming the earlier one's.
fn check_peers(peers: &[Section<PeerDraft>]) -> std::result::Result<(), (usize, String)> {
    let mut keys: Vec<(PublicKey, usize)> = Vec::new();
    let mut prefixes: HashMap<Cidr, (usize, usize)> = HashMap::new();
    for peer in peers {
        if let Some(key) = peer.draft.public_key {
            let line = peer.seen.get("PublicKey").copied().unwrap_or(peer.header);
            if let Some((_, first)) = keys.iter().find(|(k, _)| *k == key) {
                return Err((
                    line,
                    format!(
                        "PublicKey {key} is also the key of the [Peer] at line {first}; \
                         give each peer one section"
                    ),
                ));
            }
            keys.push((key, peer.header));
        }
        for &(cidr, line) in &peer.draft.allowed_ips {
            match prefixes.get(&cidr) {
                Some(&(header, first)) if header != peer.header => {
                    return Err((
                        line,
                        format!(
                            "AllowedIPs {cidr} is also given to the [Peer] at line {header} \
                             (line {first}); a prefix belongs to one peer"
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    prefixes.insert(cidr, (peer.header, line));
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum SectionKind {
    Interface,
    Peer,
}

/// Keys that may appear more than once; their lists accumulate.
const REPEATABLE: &[&str] = &[
    "Address",
    "AllowedIPs",
    "DNS",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
];

/// Keys whose value runs to the end of the line, `#` included (wg-quick's
/// hooks: a shell command may hold a `#`).
const UNSTRIPPED: &[&str] = &["PreUp", "PostUp", "PreDown", "PostDown"];

/// One `Key = Value` line's value.
#[derive(Clone, Copy)]
struct Value<'a> {
    /// Trimmed, without the comment.
    text: &'a str,
    /// Trimmed, with what follows a `#`.
    unstripped: &'a str,
    line: usize,
}

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
    /// The validated section, or the line and text of what is wrong with it
    /// as a whole; `header` is the line of its `[Section]` header.
    fn finish(self, header: usize) -> std::result::Result<Self::Output, (usize, String)>;
}

struct Section<D> {
    header: usize,
    /// Canonical key -> line it was first set on.
    seen: HashMap<&'static str, usize>,
    draft: D,
}

impl<D: Draft> Section<D> {
    fn new(header: usize) -> Section<D> {
        Section {
            header,
            seen: HashMap::new(),
            draft: D::default(),
        }
    }

    fn set(&mut self, key: &str, value: Value) -> std::result::Result<(), String> {
        let Some(&canonical) = D::KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
            return Err(unknown_key::<D>(key));
        };
        if let Some(first) = self.seen.insert(canonical, value.line) {
            if !REPEATABLE.contains(&canonical) {
                return Err(format!(
                    "duplicate key '{canonical}' (first set at line {first})"
                ));
            }
            self.seen.insert(canonical, first);
        }
        let text = match UNSTRIPPED.contains(&canonical) {
            true => value.unstripped,
            false => value.text,
        };
        if text.is_empty() {
            return Err(format!("'{canonical}' has no value"));
        }
        self.draft.set(canonical, text, value.line)
    }

    fn finish(self) -> std::result::Result<D::Output, (usize, String)> {
        self.draft.finish(self.header)
    }
}

/// The error of a section without the required `key`, at its header.
fn missing<D: Draft>(header: usize, key: &str) -> (usize, String) {
    (
        header,
        format!("[{}] is missing the required key '{key}'", D::NAME),
    )
}

fn unknown_key<D: Draft>(key: &str) -> String {
    let (other, other_keys) = D::OTHER;
    if let Some(k) = other_keys.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        format!("'{k}' belongs in the [{other}] section, not [{}]", D::NAME)
    } else {
        format!("unknown key '{key}' in [{}]", D::NAME)
    }
}

const INTERFACE_KEYS: &[&str] = &[
    "PrivateKey",
    "Address",
    "ListenPort",
    "MTU",
    "FwMark",
    "DNS",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
];
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
    dns: Option<Dns>,
    table: Option<Table>,
    pre_up: Vec<Hook>,
    post_up: Vec<Hook>,
    pre_down: Vec<Hook>,
    post_down: Vec<Hook>,
    save_config: bool,
    fw_mark: Option<u32>,
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
        line: usize,
    ) -> std::result::Result<(), String> {
        let hook = || Hook {
            command: value.to_string(),
            line,
        };
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
            "FwMark" => self.fw_mark = fw_mark(value)?,
            "DNS" => {
                let dns = self.dns.get_or_insert_with(|| Dns {
                    servers: Vec::new(),
                    search: Vec::new(),
                    line,
                });
                dns_entries(value, dns)?;
            }
            "Table" => self.table = Some(table(value, line)?),
            "PreUp" => self.pre_up.push(hook()),
            "PostUp" => self.post_up.push(hook()),
            "PreDown" => self.pre_down.push(hook()),
            "PostDown" => self.post_down.push(hook()),
            "SaveConfig" => {
                self.save_config = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("SaveConfig '{value}' is neither true nor false")),
                }
            }
            _ => unreachable!("key {key} is listed in INTERFACE_KEYS"),
        }
        Ok(())
    }

    fn finish(self, header: usize) -> std::result::Result<InterfaceConfig, (usize, String)> {
        if self.addresses.is_empty() {
            return Err(missing::<Self>(header, "Address"));
        }
        // wg-quick calls resolvconf only for name servers and would drop
        // search domains listed alone without a word.
        if let Some(dns) = self.dns.as_ref().filter(|d| d.servers.is_empty()) {
            return Err((
                dns.line,
                format!(
                    "DNS lists search domains ({}) but no name server address",
                    dns.search.join(", ")
                ),
            ));
        }
        Ok(InterfaceConfig {
            private_key: self
                .private_key
                .ok_or_else(|| missing::<Self>(header, "PrivateKey"))?,
            addresses: self.addresses,
            listen_port: self.listen_port,
            mtu: self.mtu.unwrap_or(DEFAULT_MTU),
            dns: self.dns,
            table: self.table.unwrap_or(Table::Auto),
            pre_up: self.pre_up,
            post_up: self.post_up,
            pre_down: self.pre_down,
            post_down: self.post_down,
            save_config: self.save_config,
            fw_mark: self.fw_mark,
        })
    }
}

#[derive(Default)]
struct PeerDraft {
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<Endpoint>,
    /// Each prefix with the line it is on, for [`check_peers`].
    allowed_ips: Vec<(Cidr, usize)>,
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
            "AllowedIPs" => self.allowed_ips.extend(
                cidr_list(key, value)?
                    .iter()
                    .map(|cidr| (cidr.network(), line)),
            ),
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

    fn finish(self, header: usize) -> std::result::Result<PeerConfig, (usize, String)> {
        if self.allowed_ips.is_empty() {
            return Err(missing::<Self>(header, "AllowedIPs"));
        }
        Ok(PeerConfig {
            line: header,
            public_key: self
                .public_key
                .ok_or_else(|| missing::<Self>(header, "PublicKey"))?,
            preshared_key: self.preshared_key,
            endpoint: self.endpoint,
            allowed_ips: self.allowed_ips.into_iter().map(|(cidr, _)| cidr).collect(),
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

/// `FwMark` as wg reads it: `off`, or a number in decimal or with `0x` in
/// hex, starting with a digit; 0 means none.
fn fw_mark(value: &str) -> std::result::Result<Option<u32>, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || format!("FwMark '{value}' is not a 32-bit number (decimal or 0x hex) or 'off'");
    let parsed = match value.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16)
        }
        Some(_) => return Err(bad()),
        None if value.bytes().all(|b| b.is_ascii_digit()) => value.parse(),
        None => return Err(bad()),
    };
    let mark = parsed.map_err(|_| bad())?;
    Ok((mark != 0).then_some(mark))
}

/// `Table`: `auto`, `off` or a table number. wg-quick also takes the names
/// of /etc/iproute2/rt_tables, which would tie the file to one machine's
/// list: refused, with the way out in the message.
fn table(value: &str, line: usize) -> std::result::Result<Table, String> {
    match value.to_ascii_lowercase().as_str() {
        "auto" => Ok(Table::Auto),
        "off" => Ok(Table::Off),
        _ if value.bytes().all(|b| b.is_ascii_digit()) => {
            let id = value.parse().map_err(|_| {
                format!(
                    "Table '{value}' is out of range (a table number is at most {})",
                    u32::MAX
                )
            })?;
            Ok(Table::Id { id, line })
        }
        _ => Err(format!(
            "Table '{value}' is not auto, off or a table number (table names are not supported; \
             'auto' routes into the main table)"
        )),
    }
}

/// Adds one `DNS` value's entries to `dns`. Entries are split at commas and
/// white space, as wg-quick splits them; an entry that looks like an
/// address must be one, and a search domain must look like a domain name.
fn dns_entries(value: &str, dns: &mut Dns) -> std::result::Result<(), String> {
    for entry in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
    {
        let address_like =
            entry.contains(':') || entry.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if address_like {
            let ip = entry
                .parse()
                .map_err(|_| format!("DNS '{entry}' is not an IPv4 or IPv6 address"))?;
            dns.servers.push(ip);
        } else if entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            dns.search.push(entry.to_string());
        } else {
            return Err(format!(
                "DNS '{entry}' is neither an IP address nor a search domain (letters, digits, '-', '.', '_')"
            ));
        }
    }
    Ok(())
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

    const PUBLIC2: &str = "8PC71UKUbeTiJsX20JTmnAbyj0Oz25zOkjRYVr7ZBgM=";
    const PUBLIC3: &str = "faVzqQ6yFvLllFwqbJWKHzDlmcoumVw47bkT/aOiqS4=";

    /// Three peers and every key of both sections, in mixed case, with
    /// comments, repeated keys and a hook holding a `#`.
    fn every_key() -> String {
        format!(
            "# a comment\n\
             [interface]\n\
             privatekey={PRIVATE}   # trailing comment\n\
             Address = 10.0.0.1/24, fd00::1/64\n\
             \n\
             Address = 10.1.0.1/16\n\
             ListenPort = 51820\n\
             MTU = 1380\n\
             FwMark = 0x51820\n\
             DNS = 10.0.0.53, fd00::53 corp.example\n\
             dns = 10.0.0.54,lab.corp_2.example\n\
             Table = off\n\
             PreUp = echo '%i #1' >> /tmp/log # kept: the hook's own\n\
             PreUp = true\n\
             PostUp = ip route add 10.9.0.0/16 dev %i\n\
             PreDown = echo down\n\
             PostDown = ip route del 10.9.0.0/16 dev %i\n\
             SaveConfig = True\n\
             [Peer]\n\
             PublicKey = {PUBLIC}\n\
             PresharedKey = {PSK}\n\
             Endpoint = vpn.example.org:51821\n\
             AllowedIPs = 10.0.0.2/32, 192.168.7.9/24\n\
             ALLOWEDIPS = ::/0\n\
             PersistentKeepalive = 25\n\
             \n\
             [Peer]\n\
             PublicKey = {PUBLIC2}\n\
             AllowedIPs = 10.0.0.3/32\n\
             Endpoint = [fd00::3]:51820\n\
             [peer]\n\
             PublicKey = {PUBLIC3}\n\
             AllowedIPs = 10.0.0.4/32, 10.0.0.4/32\n"
        )
    }

    #[test]
    fn full_config_with_every_key() {
        let c = parse(&every_key()).unwrap();
        let cidrs =
            |list: &[&str]| -> Vec<Cidr> { list.iter().map(|s| s.parse().unwrap()).collect() };
        let hook = |command: &str, line| Hook {
            command: command.into(),
            line,
        };
        assert_eq!(
            c,
            Config {
                path: "t.conf".into(),
                interface: InterfaceConfig {
                    private_key: PrivateKey::decode(PRIVATE).unwrap(),
                    addresses: cidrs(&["10.0.0.1/24", "fd00::1/64", "10.1.0.1/16"]),
                    listen_port: Some(51820),
                    mtu: 1380,
                    dns: Some(Dns {
                        servers: ["10.0.0.53", "fd00::53", "10.0.0.54"]
                            .iter()
                            .map(|a| a.parse().unwrap())
                            .collect(),
                        search: vec!["corp.example".into(), "lab.corp_2.example".into()],
                        line: 10,
                    }),
                    table: Table::Off,
                    pre_up: vec![
                        hook("echo '%i #1' >> /tmp/log # kept: the hook's own", 13),
                        hook("true", 14)
                    ],
                    post_up: vec![hook("ip route add 10.9.0.0/16 dev %i", 15)],
                    pre_down: vec![hook("echo down", 16)],
                    post_down: vec![hook("ip route del 10.9.0.0/16 dev %i", 17)],
                    save_config: true,
                    fw_mark: Some(0x51820),
                },
                peers: vec![
                    PeerConfig {
                        line: 19,
                        public_key: PublicKey::decode(PUBLIC).unwrap(),
                        preshared_key: Some(PresharedKey::decode(PSK).unwrap()),
                        endpoint: Some(Endpoint {
                            host: "vpn.example.org".into(),
                            port: 51821,
                            line: 22,
                        }),
                        allowed_ips: cidrs(&["10.0.0.2/32", "192.168.7.0/24", "::/0"]),
                        persistent_keepalive: Some(25),
                    },
                    PeerConfig {
                        line: 27,
                        public_key: PublicKey::decode(PUBLIC2).unwrap(),
                        preshared_key: None,
                        endpoint: Some(Endpoint {
                            host: "fd00::3".into(),
                            port: 51820,
                            line: 30,
                        }),
                        allowed_ips: cidrs(&["10.0.0.3/32"]),
                        persistent_keepalive: None,
                    },
                    PeerConfig {
                        line: 31,
                        public_key: PublicKey::decode(PUBLIC3).unwrap(),
                        preshared_key: None,
                        endpoint: None,
                        allowed_ips: cidrs(&["10.0.0.4/32", "10.0.0.4/32"]),
                        persistent_keepalive: None,
                    },
                ],
            }
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains(PRIVATE) && !debug.contains(PSK), "{debug}");
    }

    #[test]
    fn render_reads_back_to_the_same_values() {
        let c = parse(&every_key()).unwrap();
        let text = c.render();
        // Sized exactly up front, so it was never reallocated (and copied).
        assert_eq!(text.capacity(), text.len());
        let again = parse(&text).unwrap();
        // Lines move; everything else must be equal.
        assert_eq!(again.render(), text);
        assert_eq!(again.peers.len(), 3);
        assert_eq!(
            again.interface.pre_up[0].command,
            c.interface.pre_up[0].command
        );
        assert!(text.contains("FwMark = 0x51820\n"), "{}", *text);
        assert!(
            text.contains(
                "DNS = 10.0.0.53, fd00::53, 10.0.0.54, corp.example, lab.corp_2.example\n"
            ),
            "{}",
            *text
        );
        assert!(text.contains("Endpoint = [fd00::3]:51820\n"), "{}", *text);
        let minimal = parse(&minimal()).unwrap();
        let text = minimal.render();
        assert_eq!(
            *text,
            format!(
                "[Interface]\nPrivateKey = {PRIVATE}\nAddress = 10.0.0.1/24\nMTU = 1420\n\
                 \n[Peer]\nPublicKey = {PUBLIC}\nAllowedIPs = 10.0.0.2/32\n"
            )
        );
    }

    #[test]
    fn defaults_and_zero_values() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.interface.mtu, DEFAULT_MTU);
        assert_eq!(c.interface.listen_port, None);
        assert_eq!(c.peers[0].endpoint, None);
        assert_eq!(c.peers[0].preshared_key, None);
        assert_eq!(c.peers[0].persistent_keepalive, None);
        assert_eq!(c.interface.dns, None);
        assert_eq!(c.interface.table, Table::Auto);
        assert_eq!(c.interface.fw_mark, None);
        assert!(!c.interface.save_config);
        assert!(c.interface.pre_up.is_empty() && c.interface.post_down.is_empty());

        let c = parse(&minimal().replace("[Peer]", "ListenPort = 0\n[Peer]")).unwrap();
        assert_eq!(c.interface.listen_port, None);
        for off in ["0", "off", "OFF"] {
            let c = parse(&format!("{}PersistentKeepalive = {off}\n", minimal())).unwrap();
            assert_eq!(c.peers[0].persistent_keepalive, None, "{off}");
        }
        let interface = |extra: &str| {
            parse(&minimal().replace("[Peer]", &format!("{extra}\n[Peer]")))
                .unwrap()
                .interface
        };
        for (value, mark) in [("off", None), ("OFF", None), ("0", None), ("0x0", None)] {
            assert_eq!(
                interface(&format!("FwMark = {value}")).fw_mark,
                mark,
                "{value}"
            );
        }
        assert_eq!(interface("FwMark = 1234").fw_mark, Some(1234));
        assert_eq!(interface("FwMark = 0xffffffff").fw_mark, Some(u32::MAX));
        assert_eq!(interface("FwMark = 4294967295").fw_mark, Some(u32::MAX));
        assert_eq!(interface("Table = AUTO").table, Table::Auto);
        assert_eq!(
            interface("Table = 1234").table,
            Table::Id { id: 1234, line: 4 }
        );
        assert!(!interface("SaveConfig = false").save_config);
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
        // wg-quick brings an interface up without peers.
        let c = parse(&format!(
            "[Interface]\nPrivateKey = {PRIVATE}\nAddress = 10.0.0.1/24\n"
        ))
        .unwrap();
        assert!(c.peers.is_empty());
    }

    #[test]
    fn unknown_key() {
        fails(
            &format!("{}Colour = blue\n", minimal()),
            7,
            "unknown key 'Colour' in [Peer]",
        );
        fails(
            &minimal().replace("[Peer]", "Colour = blue\n[Peer]"),
            4,
            "unknown key 'Colour' in [Interface]",
        );
        fails(
            &format!("{}postup = echo hi\n", minimal()),
            7,
            "'PostUp' belongs in the [Interface] section",
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
    fn second_interface() {
        fails(
            &format!("{}[Interface]\n", minimal()),
            7,
            "only one [Interface] section is allowed (the first is at line 1)",
        );
    }

    #[test]
    fn peers_sharing_a_key_or_a_prefix() {
        let second = |key: &str, allowed: &str| {
            format!(
                "{}\n[Peer]\nPublicKey = {key}\nAllowedIPs = {allowed}\n",
                minimal()
            )
        };
        fails(
            &second(PUBLIC, "10.0.0.3/32"),
            9,
            "is also the key of the [Peer] at line 4",
        );
        fails(
            &second(PUBLIC2, "10.0.0.3/32, 10.0.0.2/32"),
            10,
            "AllowedIPs 10.0.0.2/32 is also given to the [Peer] at line 4 (line 6)",
        );
        // The same prefix after its host bits are cleared.
        fails(
            &second(PUBLIC2, "10.0.0.2/32").replace("10.0.0.2/32\n", "10.0.0.0/24\n"),
            10,
            "AllowedIPs 10.0.0.0/24 is also given",
        );
        let c = parse(&second(PUBLIC2, "10.0.0.3/32")).unwrap();
        assert_eq!(c.peers.iter().map(|p| p.line).collect::<Vec<_>>(), [4, 8]);
    }

    #[test]
    fn bad_wg_quick_values() {
        let at4 = |extra: &str| minimal().replace("[Peer]", &format!("{extra}\n[Peer]"));
        for (extra, part) in [
            ("FwMark = -1", "FwMark '-1' is not a 32-bit number"),
            ("FwMark = +5", "FwMark '+5'"),
            ("FwMark = 0x", "FwMark '0x'"),
            ("FwMark = 0X10", "FwMark '0X10'"),
            ("FwMark = 0x100000000", "FwMark '0x100000000'"),
            ("FwMark = 4294967296", "FwMark '4294967296'"),
            ("FwMark = on", "FwMark 'on'"),
            (
                "Table = main",
                "Table 'main' is not auto, off or a table number",
            ),
            ("Table = -3", "Table '-3'"),
            ("Table = 4294967296", "Table '4294967296' is out of range"),
            (
                "SaveConfig = yes",
                "SaveConfig 'yes' is neither true nor false",
            ),
            (
                "DNS = 10.0.0.300",
                "DNS '10.0.0.300' is not an IPv4 or IPv6 address",
            ),
            ("DNS = fe80::1%eth0", "DNS 'fe80::1%eth0' is not an IPv4"),
            ("DNS = 1.1.1.1, bad/domain", "DNS 'bad/domain' is neither"),
            (
                "DNS = corp.example",
                "DNS lists search domains (corp.example) but no name server",
            ),
            ("PreUp =", "'PreUp' has no value"),
        ] {
            fails(&at4(extra), 4, part);
        }
        fails(
            &at4("Table = off\ntable = auto"),
            5,
            "duplicate key 'Table' (first set at line 4)",
        );
        fails(
            &at4("SaveConfig = true\nSaveConfig = true"),
            5,
            "duplicate key",
        );
        fails(&at4("FwMark = 1\nFWMARK = 2"), 5, "duplicate key 'FwMark'");
        // Search domains alone fail at the first DNS line, wherever the next is.
        fails(
            &at4("DNS = a.example\nMTU = 1400\nDNS = b.example"),
            4,
            "search domains (a.example, b.example)",
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
