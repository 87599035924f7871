//! The WireGuard cross-platform userspace API (UAPI): the text protocol that
//! `wg` speaks to a userspace implementation over the Unix socket
//! `/var/run/wireguard/<iface>.sock` (the "Configuration Protocol" of
//! wireguard.com/xplatform). This module is its codec only: bytes in, typed
//! requests out, typed snapshots in, reply text out. The socket, and applying
//! a request to the interface, live elsewhere.
//!
//! The format, as wireguard-go serves it and `wg` (wireguard-tools) sends it:
//!
//! - A request is an operation line, `get=1` or `set=1`, then for a set
//!   `key=value` lines, and ends with an empty line. One connection may carry
//!   several requests one after another.
//! - A set names the device's keys first (`private_key`, `listen_port`,
//!   `fwmark`, `replace_peers`), then for each peer a `public_key` line
//!   followed by that peer's keys (`remove`, `update_only`, `preshared_key`,
//!   `endpoint`, `persistent_keepalive_interval`, `replace_allowed_ips`,
//!   `allowed_ip`, `protocol_version`). A peer key before the first
//!   `public_key`, or a device key after it, is an error.
//! - Keys are 64 hex digits; an all-zero `private_key` removes the
//!   interface's key and an all-zero `preshared_key` means none. Numbers are
//!   plain decimal digits. `allowed_ip=-CIDR` removes one prefix (newer
//!   wireguard-go).
//! - Every request is answered with `errno=N` and an empty line, N being 0 or
//!   a negated errno value (`errno=-22` for EINVAL): `wg` negates it back.
//!   A get answer puts the device's and peers' `key=value` lines before it.
//!
//! Two deliberate differences from wireguard-go, which applies each line of
//! a set as it reads it: the reader here returns a set only once it is
//! complete and valid, so a malformed request changes nothing; and it refuses
//! a line or a request longer than any `wg` sends (see [`MAX_LINE_BYTES`],
//! [`MAX_REQUEST_BYTES`]), where wireguard-go reads any request and lines up
//! to 64 KiB.

use std::fmt;
use std::mem;
use std::net::SocketAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::cidr::Cidr;
use crate::protocol::keys::{Key, PresharedKey, PrivateKey, PublicKey};

/// The longest line accepted, without its newline. The longest line a valid
/// request can hold is an endpoint with a scoped IPv6 address,
/// `endpoint=[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535`
/// (73 bytes); 256 leaves room for leading zeros, and no more, so that a
/// client cannot make the reader hold an endless line.
pub const MAX_LINE_BYTES: usize = 256;

/// The longest request accepted, operation line included: 16 MiB, the same
/// bound as a config file's (`config::MAX_CONFIG_BYTES`). `wg setconf` of
/// 10 000 peers, each with a preshared key, an IPv6 endpoint, a keepalive and
/// 20 IPv6 allowed IPs of the longest form, is 13.7 MB (see the test
/// `ten_thousand_peers_fit`); a client that sends more is cut off instead of
/// growing our memory without bound.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The reply to a request that succeeded (a get's lines come before it).
pub const OK_REPLY: &str = "errno=0\n\n";

/// The error codes a reply can carry, as wireguard-go names them
/// (`ipcErrorIO`, `ipcErrorProtocol`, `ipcErrorInvalid`, `ipcErrorPortInUse`,
/// `ipcErrorUnknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// EIO: the request could not be read (here: a line or request too long).
    Io,
    /// EPROTO: not the protocol (a line without `=`, an unknown operation).
    Protocol,
    /// EINVAL: an unknown key, a key out of order, or a bad value.
    Invalid,
    /// EADDRINUSE: the listen port or fwmark could not be set.
    PortInUse,
    /// ENOANO: any other failure while applying a request.
    Unknown,
}

impl Errno {
    /// The number on the wire: the errno value negated, as wireguard-go
    /// writes it; `wg` negates it back and prints its `strerror`.
    pub fn code(self) -> i32 {
        -match self {
            Errno::Io => libc::EIO,
            Errno::Protocol => libc::EPROTO,
            Errno::Invalid => libc::EINVAL,
            Errno::PortInUse => libc::EADDRINUSE,
            Errno::Unknown => libc::ENOANO,
        }
    }

    /// The whole reply for a request that failed with this code.
    pub fn reply(self) -> String {
        format!("errno={}\n\n", self.code())
    }
}

/// Why a request was refused: the errno to reply with, and for our log the
/// line of the request (1 is the operation line) and what is wrong with it.
/// Messages never quote a key's value, so a mistyped private key does not
/// end up in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UapiError {
    pub errno: Errno,
    pub line: usize,
    pub msg: String,
    /// The reader gave up on the connection's byte stream (a line or request
    /// too long, an unknown operation, a stray byte after `get=1`): the
    /// server answers and then closes the connection, as what follows cannot
    /// be told apart from the rest of the bad request. For an unknown
    /// operation wireguard-go closes without answering.
    pub ends_connection: bool,
}

impl fmt::Display for UapiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UAPI request, line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for UapiError {}

/// A complete, valid request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(Set),
}

/// The changes of one `set=1` request. Fields left `None` (or `false`) were
/// not in the request and stay as they are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// `Some(None)` for an all-zero key: the interface is left without one.
    pub private_key: Option<Option<PrivateKey>>,
    pub listen_port: Option<u16>,
    /// `Some(0)` removes the mark.
    pub fwmark: Option<u32>,
    /// Remove every peer before applying `peers`.
    pub replace_peers: bool,
    /// In request order. The same key may come twice; each change applies to
    /// the state the one before it left (a peer added by the first is no
    /// longer new for the second's `update_only`).
    pub peers: Vec<PeerChange>,
}

/// The changes to one peer, from its `public_key` line to the next one. A
/// public key equal to the interface's own (after this request's
/// `private_key`) names no peer: wireguard-go checks its lines and ignores
/// them, and so must whoever applies this.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerChange {
    pub public_key: PublicKey,
    /// Remove the peer; the other fields are then to be ignored (wireguard-go
    /// ignores a removed peer's later lines, after checking them).
    pub remove: bool,
    /// Change the peer only if it exists: never add it.
    pub update_only: bool,
    /// All zeros: no preshared key.
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `Some(0)` turns keepalives off.
    pub persistent_keepalive_interval: Option<u16>,
    /// Drop the peer's allowed IPs before applying `allowed_ips`. An
    /// `allowed_ip` line before `replace_allowed_ips` in the same peer is
    /// dropped here, as wireguard-go would remove it again.
    pub replace_allowed_ips: bool,
    /// In request order, host bits cleared (as the AllowedIPs table keeps them).
    pub allowed_ips: Vec<AllowedIpChange>,
}

impl PeerChange {
    /// A change to the peer `public_key` that changes nothing yet: what its
    /// `public_key` line starts, and what a reload fills in.
    pub fn new(public_key: PublicKey) -> PeerChange {
        PeerChange {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive_interval: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpChange {
    Add(Cidr),
    /// `allowed_ip=-CIDR`.
    Remove(Cidr),
}

/// Reads requests from a byte stream fed in pieces of any size (as a socket
/// delivers them), holding only the current line and the changes parsed so
/// far.
#[derive(Debug, Default)]
pub struct RequestReader {
    /// The current line so far, without its newline.
    line: Vec<u8>,
    /// Complete lines of the current request.
    lines: usize,
    /// Bytes of the current request consumed so far.
    bytes: usize,
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Operation,
    /// After `get=1\n`: the next byte must end the request.
    GetEnd,
    /// Inside a set. After the first bad line the rest of the request is
    /// read and dropped, so the reply comes when the client expects it and
    /// the connection can carry another request.
    Set { set: Set, error: Option<UapiError> },
}

impl RequestReader {
    pub fn new() -> Self {
        RequestReader::default()
    }

    /// Whether no request is under way: a client that closes now closed
    /// between requests, not in the middle of one.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Operation) && self.line.is_empty()
    }

    /// Reads from `input` until a request is complete or `input` runs out.
    /// Returns how many bytes it consumed and, once a request is complete,
    /// the request or why it was refused; the bytes after it are the next
    /// request's. After an error with `ends_connection` the rest of the
    /// stream is not to be read.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Request, UapiError>>) {
        let mut used = 0;
        while used < input.len() {
            if let State::GetEnd = self.state {
                let byte = input[used];
                let line = self.lines + 1;
                self.reset();
                let result = if byte == b'\n' {
                    Ok(Request::Get)
                } else {
                    Err(fatal(
                        Errno::Invalid,
                        line,
                        format!(
                            "{:?} after get=1 where the empty line ends it",
                            byte as char
                        ),
                    ))
                };
                return (used + 1, Some(result));
            }
            let rest = &input[used..];
            let newline = rest.iter().position(|&b| b == b'\n');
            let chunk = &rest[..newline.unwrap_or(rest.len())];
            let taken = chunk.len() + usize::from(newline.is_some());
            used += taken;
            self.bytes += taken;
            let line = self.lines + 1;
            if self.line.len() + chunk.len() > MAX_LINE_BYTES {
                self.reset();
                let msg = format!("line longer than {MAX_LINE_BYTES} bytes");
                return (used, Some(Err(fatal(Errno::Io, line, msg))));
            }
            if self.bytes > MAX_REQUEST_BYTES {
                self.reset();
                let msg = format!("request longer than {MAX_REQUEST_BYTES} bytes");
                return (used, Some(Err(fatal(Errno::Io, line, msg))));
            }
            self.line.extend_from_slice(chunk);
            if newline.is_some() {
                self.lines = line;
                let text = mem::take(&mut self.line);
                if let Some(done) = self.take_line(&text, line) {
                    self.reset();
                    return (used, Some(done));
                }
            }
        }
        (used, None)
    }

    fn reset(&mut self) {
        *self = RequestReader::default();
    }

    /// Handles one complete line; returns the outcome once it ends the request.
    fn take_line(&mut self, text: &[u8], line: usize) -> Option<Result<Request, UapiError>> {
        match &mut self.state {
            State::Operation => match text {
                b"get=1" => {
                    self.state = State::GetEnd;
                    None
                }
                b"set=1" => {
                    self.state = State::Set {
                        set: Set::default(),
                        error: None,
                    };
                    None
                }
                _ => Some(Err(fatal(
                    Errno::Protocol,
                    line,
                    format!(
                        "unknown operation {:?} (get=1 or set=1)",
                        String::from_utf8_lossy(text)
                    ),
                ))),
            },
            State::GetEnd => unreachable!("feed handles the byte after get=1"),
            State::Set { set, error } => {
                // wireguard-go's line reader drops a carriage return before
                // the newline; do the same.
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                if text.is_empty() {
                    return Some(match error.take() {
                        Some(e) => Err(e),
                        None => Ok(Request::Set(mem::take(set))),
                    });
                }
                if error.is_none() {
                    if let Err((errno, msg)) = set_line(set, text) {
                        *error = Some(UapiError {
                            errno,
                            line,
                            msg,
                            ends_connection: false,
                        });
                    }
                }
                None
            }
        }
    }
}

fn fatal(errno: Errno, line: usize, msg: String) -> UapiError {
    UapiError {
        errno,
        line,
        msg,
        ends_connection: true,
    }
}

/// What is wrong with one line: the errno and the message.
type LineResult<T> = Result<T, (Errno, String)>;

const DEVICE_KEYS: &[&[u8]] = &[b"private_key", b"listen_port", b"fwmark", b"replace_peers"];
const PEER_KEYS: &[&[u8]] = &[
    b"remove",
    b"update_only",
    b"preshared_key",
    b"endpoint",
    b"persistent_keepalive_interval",
    b"replace_allowed_ips",
    b"allowed_ip",
    b"protocol_version",
];

/// Applies one `key=value` line of a set to the changes parsed so far.
fn set_line(set: &mut Set, text: &[u8]) -> LineResult<()> {
    let Some(eq) = text.iter().position(|&b| b == b'=') else {
        return Err((Errno::Protocol, "not a key=value line".to_string()));
    };
    let key = &text[..eq];
    let name = String::from_utf8_lossy(key);
    let value = std::str::from_utf8(&text[eq + 1..]).map_err(|_| {
        (
            Errno::Invalid,
            format!("{name:?}: the value is not UTF-8 text"),
        )
    })?;
    if key == b"public_key" {
        set.peers
            .push(PeerChange::new(PublicKey::from_bytes(*hex_key(
                value,
                "public_key",
            )?)));
        return Ok(());
    }
    match set.peers.last_mut() {
        None => device_line(set, key, &name, value),
        Some(peer) => peer_line(peer, key, &name, value),
    }
}

fn device_line(set: &mut Set, key: &[u8], name: &str, value: &str) -> LineResult<()> {
    match key {
        b"private_key" => {
            let bytes = hex_key(value, "private_key")?;
            set.private_key = Some((*bytes != [0; 32]).then(|| PrivateKey::from_bytes(*bytes)));
        }
        b"listen_port" => set.listen_port = Some(decimal(value, name)?),
        b"fwmark" => set.fwmark = Some(decimal(value, name)?),
        b"replace_peers" => set.replace_peers = flag(value, name)?,
        _ if PEER_KEYS.contains(&key) => {
            return Err((
                Errno::Invalid,
                format!("peer key {name:?} before any public_key"),
            ))
        }
        _ => return Err((Errno::Invalid, format!("unknown device key {name:?}"))),
    }
    Ok(())
}

fn peer_line(peer: &mut PeerChange, key: &[u8], name: &str, value: &str) -> LineResult<()> {
    match key {
        b"remove" => peer.remove = flag(value, name)?,
        b"update_only" => peer.update_only = flag(value, name)?,
        b"preshared_key" => {
            peer.preshared_key = Some(PresharedKey::from_bytes(*hex_key(value, name)?));
        }
        b"endpoint" => {
            let endpoint = value.parse().map_err(|_| {
                let msg = format!(
                    "endpoint {value:?} is not a numeric IP:port (an IPv6 address in brackets)"
                );
                (Errno::Invalid, msg)
            })?;
            peer.endpoint = Some(endpoint);
        }
        b"persistent_keepalive_interval" => {
            peer.persistent_keepalive_interval = Some(decimal(value, name)?);
        }
        b"replace_allowed_ips" => {
            peer.replace_allowed_ips = flag(value, name)?;
            peer.allowed_ips.clear();
        }
        b"allowed_ip" => {
            let change = allowed_ip(value)?;
            peer.allowed_ips.push(change);
        }
        b"protocol_version" => {
            if value != "1" {
                let msg = format!("protocol_version {value:?}: only 1 exists");
                return Err((Errno::Invalid, msg));
            }
        }
        _ if DEVICE_KEYS.contains(&key) => {
            return Err((
                Errno::Invalid,
                format!("device key {name:?} after a public_key: device keys come first"),
            ))
        }
        _ => return Err((Errno::Invalid, format!("unknown peer key {name:?}"))),
    }
    Ok(())
}

/// 64 hex digits (either case, as Go's hex decoder takes them) into a key,
/// wiped when dropped. The message tells what is wrong without quoting it.
fn hex_key(value: &str, name: &str) -> LineResult<Zeroizing<Key>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(value, &mut key[..]).map_err(|e| {
        let what = match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                format!("character {} is not a hex digit", index + 1)
            }
            hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
                format!("{} characters", value.len())
            }
        };
        (
            Errno::Invalid,
            format!("{name} is not 64 hex digits: {what}"),
        )
    })?;
    Ok(key)
}

/// Plain decimal digits, as Go's `strconv.ParseUint(value, 10, bits)` takes
/// them (no sign, leading zeros allowed), within the type's range.
fn decimal<T: std::str::FromStr>(value: &str, name: &str) -> LineResult<T> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let parsed = if digits { value.parse().ok() } else { None };
    parsed.ok_or_else(|| {
        let max = std::any::type_name::<T>();
        let msg = format!("{name} {value:?} is not a decimal number within {max}");
        (Errno::Invalid, msg)
    })
}

/// The only value a flag key takes.
fn flag(value: &str, name: &str) -> LineResult<bool> {
    if value == "true" {
        Ok(true)
    } else {
        Err((
            Errno::Invalid,
            format!("{name} {value:?}: the only value is true"),
        ))
    }
}

/// `ADDR/LEN` to add, `-ADDR/LEN` to remove; the length is required.
fn allowed_ip(value: &str) -> LineResult<AllowedIpChange> {
    let (remove, text) = match value.strip_prefix('-') {
        Some(text) => (true, text),
        None => (false, value),
    };
    let bad = |why: String| (Errno::Invalid, format!("allowed_ip {value:?}: {why}"));
    let len = match text.split_once('/') {
        Some((_, len)) => len,
        None => return Err(bad("no prefix length (ADDR/LEN)".to_string())),
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the prefix length is not a decimal number".to_string()));
    }
    let cidr = text.parse::<Cidr>().map_err(bad)?.network();
    Ok(if remove {
        AllowedIpChange::Remove(cidr)
    } else {
        AllowedIpChange::Add(cidr)
    })
}

/// What a get answers with: the device and its peers as they are.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub private_key: Option<PrivateKey>,
    /// 0: not written (no socket bound yet).
    pub listen_port: u16,
    /// 0: no mark, not written.
    pub fwmark: u32,
    /// pipevpn's own device lines, written after wireguard-go's; see [`Extra`].
    pub extra: Vec<Extra>,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug)]
pub struct PeerSnapshot {
    pub public_key: PublicKey,
    /// All zeros when the peer has none.
    pub preshared_key: PresharedKey,
    pub endpoint: Option<SocketAddr>,
    /// Time since the Unix epoch of the last completed handshake; `None`
    /// (written as 0 and 0) before the first.
    pub last_handshake: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Seconds; 0 when off.
    pub persistent_keepalive_interval: u16,
    pub allowed_ips: Vec<Cidr>,
    /// pipevpn's own lines for this peer, after its allowed IPs.
    pub extra: Vec<Extra>,
}

/// A line of pipevpn's own after wireguard-go's. `wg` skips every key it
/// does not know, wherever it comes, even one whose value holds `=`: its
/// reader (wireguard-tools' `ipc-uapi.h`, `userspace_get_device`) splits a
/// line at its first `=` and matches the key against the keys it knows, with
/// no branch for the others; checked with `wg show`, `wg show IFACE dump` and
/// `wg showconf` against such an answer (`integration/uapi.sh`). The key must
/// start with `pipevpn_`, so that no key of wireguard-go's (which `wg` would
/// parse) is ever taken, and the key and value hold no newline.
///
/// The keys pipevpn writes, all on the device, before the first peer (their
/// values are built and read by `pipeline::stats`, which owns the stage and
/// drop-reason names):
///
/// - `pipevpn_stage=STAGE packets=N bytes=N drops=N queue=N blocked=N
///   blocked_ns=N [drop_REASON=N ...]`, once per stage of the pipeline in
///   flow order: packets and bytes it passed on, drops in all and by reason
///   (only reasons that dropped something), batches waiting in the channel
///   feeding it, and how often and how long (nanoseconds) it waited for room
///   in the channel to the next stage;
/// - `pipevpn_handshakes=last_ms=N completed=N`: how long the last
///   handshake took, and how many completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub key: String,
    pub value: String,
}

/// The longest get answer [`read_get`] takes: twice the longest request, as
/// an answer adds a few counters to each peer of what `wg setconf` sent.
pub const MAX_ANSWER_BYTES: usize = 2 * MAX_REQUEST_BYTES;

/// Reads the answer to a `get=1`, as [`write_get`] writes it (or
/// wireguard-go: its keys are the same), up to and including `errno=N` and
/// the empty line. Keys it does not know are skipped, as `wg` skips them;
/// a malformed value, a peer key before any `public_key`, a non-zero errno
/// or an answer cut short is an error naming the line. The keys in the
/// answer are wiped with the snapshot; the caller wipes `text`.
pub fn read_get(text: &str) -> Result<Snapshot, UapiError> {
    let mut snapshot = Snapshot::default();
    let bad = |line: usize, errno: Errno, msg: String| UapiError {
        errno,
        line,
        msg,
        ends_connection: true,
    };
    if text.len() > MAX_ANSWER_BYTES {
        return Err(bad(
            1,
            Errno::Io,
            format!("answer longer than {MAX_ANSWER_BYTES} bytes"),
        ));
    }
    let mut lines = text.split('\n').enumerate();
    for (i, text) in lines.by_ref() {
        let line = i + 1;
        let at = |(errno, msg): (Errno, String)| bad(line, errno, msg);
        let Some((key, value)) = text.split_once('=') else {
            let msg = match text.is_empty() {
                true => "the answer ends before its errno line".to_string(),
                false => "not a key=value line".to_string(),
            };
            return Err(bad(line, Errno::Protocol, msg));
        };
        if key == "errno" {
            let code: i64 = value
                .parse()
                .map_err(|_| bad(line, Errno::Protocol, format!("errno {value:?}")))?;
            if code != 0 {
                return Err(bad(
                    line,
                    Errno::Unknown,
                    format!("the get failed: errno={code}"),
                ));
            }
            // "errno=0\n\n" ends the text: two empty pieces after it.
            let rest: Vec<&str> = lines.map(|(_, l)| l).collect();
            return match rest[..] {
                ["", ""] => Ok(snapshot),
                _ => Err(bad(
                    line + 1,
                    Errno::Protocol,
                    "no empty line after errno, or text after it".into(),
                )),
            };
        }
        get_line(&mut snapshot, key, value).map_err(at)?;
    }
    // The last piece had no newline after it: the answer was cut short.
    let line = text.split('\n').count();
    Err(bad(
        line,
        Errno::Protocol,
        "the answer ends before its errno line".into(),
    ))
}

/// Applies one `key=value` line of a get answer.
fn get_line(snapshot: &mut Snapshot, key: &str, value: &str) -> LineResult<()> {
    if let Some(own) = key.strip_prefix("pipevpn_").filter(|k| !k.is_empty()) {
        let extra = Extra {
            key: format!("pipevpn_{own}"),
            value: value.to_string(),
        };
        match snapshot.peers.last_mut() {
            Some(peer) => peer.extra.push(extra),
            None => snapshot.extra.push(extra),
        }
        return Ok(());
    }
    if key == "public_key" {
        snapshot.peers.push(PeerSnapshot {
            public_key: PublicKey::from_bytes(*hex_key(value, key)?),
            preshared_key: PresharedKey::default(),
            endpoint: None,
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
            persistent_keepalive_interval: 0,
            allowed_ips: Vec::new(),
            extra: Vec::new(),
        });
        return Ok(());
    }
    let Some(peer) = snapshot.peers.last_mut() else {
        match key {
            "private_key" => {
                snapshot.private_key = Some(PrivateKey::from_bytes(*hex_key(value, key)?))
            }
            "listen_port" => snapshot.listen_port = decimal(value, key)?,
            "fwmark" => snapshot.fwmark = decimal(value, key)?,
            _ if GET_PEER_KEYS.contains(&key) => {
                return Err((
                    Errno::Invalid,
                    format!("peer key {key:?} before any public_key"),
                ))
            }
            _ => {}
        }
        return Ok(());
    };
    match key {
        "preshared_key" => peer.preshared_key = PresharedKey::from_bytes(*hex_key(value, key)?),
        "endpoint" => {
            let endpoint = value.parse().map_err(|_| {
                (
                    Errno::Invalid,
                    format!("endpoint {value:?} is not a numeric IP:port"),
                )
            })?;
            peer.endpoint = Some(endpoint);
        }
        "last_handshake_time_sec" => {
            let nanos = peer.last_handshake.map_or(0, |d| d.subsec_nanos());
            let secs = decimal(value, key)?;
            peer.last_handshake = ((secs, nanos) != (0, 0)).then(|| Duration::new(secs, nanos));
        }
        "last_handshake_time_nsec" => {
            let secs = peer.last_handshake.map_or(0, |d| d.as_secs());
            let nanos: u32 = decimal(value, key)?;
            if nanos >= 1_000_000_000 {
                return Err((Errno::Invalid, format!("{key} {value:?}: not below 10^9")));
            }
            peer.last_handshake = ((secs, nanos) != (0, 0)).then(|| Duration::new(secs, nanos));
        }
        "tx_bytes" => peer.tx_bytes = decimal(value, key)?,
        "rx_bytes" => peer.rx_bytes = decimal(value, key)?,
        "persistent_keepalive_interval" => {
            peer.persistent_keepalive_interval = decimal(value, key)?
        }
        "allowed_ip" => match allowed_ip(value)? {
            AllowedIpChange::Add(cidr) => peer.allowed_ips.push(cidr),
            AllowedIpChange::Remove(_) => {
                return Err((
                    Errno::Invalid,
                    format!("allowed_ip {value:?}: a removal in an answer"),
                ))
            }
        },
        "protocol_version" if value != "1" => {
            return Err((
                Errno::Invalid,
                format!("protocol_version {value:?}: only 1 exists"),
            ))
        }
        "private_key" | "listen_port" | "fwmark" => {
            return Err((
                Errno::Invalid,
                format!("device key {key:?} after a public_key: device keys come first"),
            ))
        }
        _ => {}
    }
    Ok(())
}

/// The peer keys of a get answer.
const GET_PEER_KEYS: &[&str] = &[
    "preshared_key",
    "protocol_version",
    "endpoint",
    "last_handshake_time_sec",
    "last_handshake_time_nsec",
    "tx_bytes",
    "rx_bytes",
    "persistent_keepalive_interval",
    "allowed_ip",
];

/// The whole answer to a get, `errno=0` and the empty line included, in
/// wireguard-go's order of keys. It holds the private and preshared keys in
/// hex, so it is built at its exact size in memory that is wiped when
/// dropped.
pub fn write_get(snapshot: &Snapshot) -> Zeroizing<String> {
    let mut size = Counter(0);
    write_answer(&mut size, snapshot).expect("counting cannot fail");
    let mut out = Zeroizing::new(String::with_capacity(size.0));
    write_answer(&mut *out, snapshot).expect("writing to a String cannot fail");
    debug_assert_eq!(out.len(), size.0);
    out
}

/// Counts the bytes written to it, to size the answer before writing it.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn write_answer(w: &mut impl fmt::Write, snapshot: &Snapshot) -> fmt::Result {
    if let Some(key) = &snapshot.private_key {
        write_key(w, "private_key", key.as_bytes())?;
    }
    if snapshot.listen_port != 0 {
        writeln!(w, "listen_port={}", snapshot.listen_port)?;
    }
    if snapshot.fwmark != 0 {
        writeln!(w, "fwmark={}", snapshot.fwmark)?;
    }
    write_extra(w, &snapshot.extra)?;
    for peer in &snapshot.peers {
        write_key(w, "public_key", peer.public_key.as_bytes())?;
        write_key(w, "preshared_key", peer.preshared_key.as_bytes())?;
        w.write_str("protocol_version=1\n")?;
        if let Some(endpoint) = peer.endpoint {
            writeln!(w, "endpoint={endpoint}")?;
        }
        let handshake = peer.last_handshake.unwrap_or_default();
        writeln!(w, "last_handshake_time_sec={}", handshake.as_secs())?;
        writeln!(w, "last_handshake_time_nsec={}", handshake.subsec_nanos())?;
        writeln!(w, "tx_bytes={}", peer.tx_bytes)?;
        writeln!(w, "rx_bytes={}", peer.rx_bytes)?;
        let keepalive = peer.persistent_keepalive_interval;
        writeln!(w, "persistent_keepalive_interval={keepalive}")?;
        for cidr in &peer.allowed_ips {
            writeln!(w, "allowed_ip={cidr}")?;
        }
        write_extra(w, &peer.extra)?;
    }
    w.write_str(OK_REPLY)
}

/// `name=` and the key in lower-case hex, through a buffer wiped on drop.
fn write_key(w: &mut impl fmt::Write, name: &str, key: &Key) -> fmt::Result {
    let mut hex = Zeroizing::new([0u8; 64]);
    hex::encode_to_slice(key, &mut hex[..]).map_err(|_| fmt::Error)?;
    let text = std::str::from_utf8(&hex[..]).map_err(|_| fmt::Error)?;
    writeln!(w, "{name}={text}")
}

fn write_extra(w: &mut impl fmt::Write, extra: &[Extra]) -> fmt::Result {
    for Extra { key, value } in extra {
        debug_assert!(key.starts_with("pipevpn_") && !key.contains(['=', '\n']));
        debug_assert!(!value.contains('\n'));
        writeln!(w, "{key}={value}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::tests::renderings;
    use std::fmt::Write as _;

    /// What `wg setconf IFACE FILE` (wireguard-tools v1.0.20210914) sent to a
    /// listener on its socket, byte for byte, for a file of throw-away keys:
    /// `PrivateKey = aMFxS2aD42CIM/zAAiORYGM3odbBwAnT75c5D2NUXV4=`,
    /// `ListenPort = 51820`, `FwMark = 0x1234`; a peer
    /// `fzH8kNw2moOD55JKwakS1SYRbSCsVlEr4C7txwwp/jU=` with
    /// `PresharedKey = Er1luC+16D9JTFGZzEFVfJx8dQco4VhqP8YZ7fXmCq8=`,
    /// `Endpoint = 192.0.2.1:51820`, `AllowedIPs = 10.0.0.2/32, fd00::2/128`,
    /// `PersistentKeepalive = 25`; a peer
    /// `dFk0UeVUwv8YTbCPYPLpziFb/WULLUDMUrWvjlz4xSU=` with
    /// `Endpoint = [2001:db8::1]:51821`, `AllowedIPs = 10.0.1.0/24`.
    const WG_SETCONF: &str = "set=1
private_key=68c1714b6683e3608833fcc0022391606337a1d6c1c009d3ef97390f63545d5e
listen_port=51820
fwmark=4660
replace_peers=true
public_key=7f31fc90dc369a8383e7924ac1a912d526116d20ac56512be02eedc70c29fe35
preshared_key=12bd65b82fb5e83f494c5199cc41557c9c7c750728e1586a3fc619edf5e60aaf
endpoint=192.0.2.1:51820
persistent_keepalive_interval=25
replace_allowed_ips=true
allowed_ip=10.0.0.2/32
allowed_ip=fd00::2/128
public_key=74593451e554c2ff184db08f60f2e9ce215bfd650b2d40cc52b5af8e5cf8c525
endpoint=[2001:db8::1]:51821
replace_allowed_ips=true
allowed_ip=10.0.1.0/24

";

    /// What `wg set IFACE listen-port 0 fwmark off private-key /dev/null peer
    /// P1 remove peer P2 preshared-key /dev/null endpoint 198.51.100.7:1
    /// persistent-keepalive off allowed-ips ""` sent (same capture).
    const WG_SET: &str = "set=1
private_key=0000000000000000000000000000000000000000000000000000000000000000
listen_port=0
fwmark=0
public_key=29a594d7cde9e2a58c6283c05a48dc9c821b3b11bf2057efac320eb33ee54720
remove=true
public_key=5b019ed3f7e8978dfaca0c119154b862710a1a9f727334eaa8b2507835b46804
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
endpoint=198.51.100.7:1
persistent_keepalive_interval=0
replace_allowed_ips=true

";

    const PEER: &str = "7f31fc90dc369a8383e7924ac1a912d526116d20ac56512be02eedc70c29fe35";

    /// Feeds `input` in one piece; the request must take all of it.
    fn read(input: &str) -> Result<Request, UapiError> {
        let mut reader = RequestReader::new();
        let (used, done) = reader.feed(input.as_bytes());
        let done = done.expect("the request is complete");
        assert_eq!(
            used,
            input.len(),
            "the request ends at the end of the input"
        );
        assert!(reader.is_idle());
        done
    }

    fn set(lines: &str) -> Result<Set, UapiError> {
        match read(&format!("set=1\n{lines}\n"))? {
            Request::Set(set) => Ok(set),
            Request::Get => panic!("a set read as a get"),
        }
    }

    fn peer(lines: &str) -> Result<PeerChange, UapiError> {
        let mut set = set(&format!("public_key={PEER}\n{lines}"))?;
        assert_eq!(set.peers.len(), 1);
        Ok(set.peers.remove(0))
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[track_caller]
    fn refused(result: Result<impl fmt::Debug, UapiError>, errno: Errno, line: usize, says: &str) {
        let e = result.expect_err("refused");
        assert_eq!((e.errno, e.line), (errno, line), "{e}");
        assert!(e.to_string().contains(says), "{e:?} should say {says:?}");
    }

    #[test]
    fn errno_codes_are_negative_on_the_wire_as_wireguard_go_writes_them() {
        assert_eq!(Errno::Io.code(), -5);
        assert_eq!(Errno::Protocol.code(), -71);
        assert_eq!(Errno::Invalid.code(), -22);
        assert_eq!(Errno::PortInUse.code(), -98);
        assert_eq!(Errno::Unknown.code(), -55);
        assert_eq!(Errno::Invalid.reply(), "errno=-22\n\n");
        assert_eq!(OK_REPLY, "errno=0\n\n");
    }

    #[test]
    fn get() {
        assert_eq!(read("get=1\n\n").unwrap(), Request::Get);
    }

    #[test]
    fn a_byte_after_get_other_than_the_empty_line_ends_the_connection() {
        let mut reader = RequestReader::new();
        let (used, done) = reader.feed(b"get=1\nx\n\n");
        let e = done.unwrap().unwrap_err();
        assert_eq!(
            (used, e.errno, e.line, e.ends_connection),
            (7, Errno::Invalid, 2, true)
        );
    }

    #[test]
    fn an_unknown_operation_ends_the_connection() {
        for op in ["set=2\n", "get\n", "\n", "GET=1\n", "get=1\r\n"] {
            let e = read(op).unwrap_err();
            assert_eq!(
                (e.errno, e.line, e.ends_connection),
                (Errno::Protocol, 1, true),
                "{op:?}"
            );
        }
    }

    #[test]
    fn an_empty_set_changes_nothing() {
        assert_eq!(set("").unwrap(), Set::default());
    }

    #[test]
    fn device_keys() {
        let s = set(&format!(
            "private_key={}\nlisten_port=51820\nfwmark=4660\nreplace_peers=true\n",
            "68c1714b6683e3608833fcc0022391606337a1d6c1c009d3ef97390f63545d5e"
        ))
        .unwrap();
        let key = PrivateKey::decode("aMFxS2aD42CIM/zAAiORYGM3odbBwAnT75c5D2NUXV4=").unwrap();
        assert_eq!(s.private_key, Some(Some(key)));
        assert_eq!(
            (s.listen_port, s.fwmark, s.replace_peers),
            (Some(51820), Some(4660), true)
        );
        assert!(s.peers.is_empty());
    }

    #[test]
    fn an_all_zero_private_key_clears_it_and_fwmark_0_clears_the_mark() {
        let s = set(&format!("private_key={}\nfwmark=0\n", "0".repeat(64))).unwrap();
        assert_eq!((s.private_key, s.fwmark), (Some(None), Some(0)));
    }

    #[test]
    fn a_private_key_is_clamped_as_wireguard_go_clamps_it() {
        let s = set(&format!("private_key={}\n", "ff".repeat(32))).unwrap();
        let key = s.private_key.unwrap().unwrap();
        assert_eq!((key.as_bytes()[0], key.as_bytes()[31]), (0xf8, 0x7f));
    }

    #[test]
    fn a_repeated_device_key_takes_the_last_value() {
        let s = set("listen_port=1\nlisten_port=2\n").unwrap();
        assert_eq!(s.listen_port, Some(2));
    }

    #[test]
    fn hex_keys_take_either_case() {
        let upper = set(&format!("public_key={}\n", PEER.to_uppercase())).unwrap();
        assert_eq!(upper.peers[0].public_key, peer("").unwrap().public_key);
    }

    #[test]
    fn every_peer_key() {
        let p = peer(&format!(
            "update_only=true\npreshared_key={}\nendpoint=192.0.2.1:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\nprotocol_version=1\n",
            "12bd65b82fb5e83f494c5199cc41557c9c7c750728e1586a3fc619edf5e60aaf"
        ))
        .unwrap();
        let psk = PresharedKey::decode("Er1luC+16D9JTFGZzEFVfJx8dQco4VhqP8YZ7fXmCq8=").unwrap();
        let public = PublicKey::decode("fzH8kNw2moOD55JKwakS1SYRbSCsVlEr4C7txwwp/jU=").unwrap();
        assert_eq!(
            p,
            PeerChange {
                public_key: public,
                remove: false,
                update_only: true,
                preshared_key: Some(psk),
                endpoint: Some("192.0.2.1:51820".parse().unwrap()),
                persistent_keepalive_interval: Some(25),
                replace_allowed_ips: true,
                allowed_ips: vec![
                    AllowedIpChange::Add(cidr("10.0.0.2/32")),
                    AllowedIpChange::Add(cidr("fd00::2/128"))
                ],
            }
        );
        let removed = peer("remove=true\n").unwrap();
        assert!(removed.remove && !removed.update_only);
        let zero = peer(&format!("preshared_key={}\n", "0".repeat(64))).unwrap();
        assert_eq!(zero.preshared_key, Some(PresharedKey::default()));
        let off = peer("persistent_keepalive_interval=0\n").unwrap();
        assert_eq!(off.persistent_keepalive_interval, Some(0));
    }

    #[test]
    fn endpoints_numeric_with_ipv6_in_brackets() {
        for (text, want) in [
            ("198.51.100.7:1", "198.51.100.7:1"),
            ("[2001:db8::1]:51821", "[2001:db8::1]:51821"),
            ("[::ffff:192.0.2.1]:5", "[::ffff:192.0.2.1]:5"),
            ("[fe80::1%3]:51820", "[fe80::1%3]:51820"),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
            ),
        ] {
            let p = peer(&format!("endpoint={text}\n")).unwrap();
            assert_eq!(p.endpoint.unwrap().to_string(), want);
        }
    }

    #[test]
    fn bad_endpoints() {
        for bad in [
            "",
            "192.0.2.1",
            "192.0.2.1:",
            "192.0.2.1:65536",
            "192.0.2.1:-1",
            "2001:db8::1:51820",
            "[2001:db8::1]",
            "example.com:51820",
            "[fe80::1%eth0]:51820",
            " 192.0.2.1:1",
        ] {
            refused(
                peer(&format!("endpoint={bad}\n")),
                Errno::Invalid,
                3,
                "endpoint",
            );
        }
    }

    #[test]
    fn allowed_ips_add_and_remove_with_host_bits_cleared() {
        let p =
            peer("allowed_ip=10.0.0.7/24\nallowed_ip=-10.0.0.0/24\nallowed_ip=-::/0\n").unwrap();
        assert_eq!(
            p.allowed_ips,
            vec![
                AllowedIpChange::Add(cidr("10.0.0.0/24")),
                AllowedIpChange::Remove(cidr("10.0.0.0/24")),
                AllowedIpChange::Remove(cidr("::/0")),
            ]
        );
        assert!(!p.replace_allowed_ips);
    }

    #[test]
    fn replace_allowed_ips_drops_the_peers_earlier_allowed_ip_lines() {
        let p = peer("allowed_ip=10.0.0.1/32\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n")
            .unwrap();
        assert!(p.replace_allowed_ips);
        assert_eq!(
            p.allowed_ips,
            vec![AllowedIpChange::Add(cidr("10.0.0.2/32"))]
        );
    }

    #[test]
    fn bad_allowed_ips() {
        for bad in [
            "10.0.0.1",
            "-10.0.0.1",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            "--10.0.0.0/8",
            "+10.0.0.0/8",
            "10.0.0/8",
            "fe80::1%1/64",
            "",
        ] {
            refused(
                peer(&format!("allowed_ip={bad}\n")),
                Errno::Invalid,
                3,
                "allowed_ip",
            );
        }
    }

    #[test]
    fn bad_numbers() {
        for (key, bad) in [
            ("listen_port", "65536"),
            ("listen_port", "+1"),
            ("listen_port", "-1"),
            ("listen_port", ""),
            ("listen_port", "0x10"),
            ("listen_port", " 1"),
            ("fwmark", "4294967296"),
            ("fwmark", "0x1234"),
        ] {
            refused(set(&format!("{key}={bad}\n")), Errno::Invalid, 2, key);
        }
        assert_eq!(
            set("listen_port=0051820\n").unwrap().listen_port,
            Some(51820)
        );
        for bad in ["65536", "-1", "off", ""] {
            let line = format!("persistent_keepalive_interval={bad}\n");
            refused(
                peer(&line),
                Errno::Invalid,
                3,
                "persistent_keepalive_interval",
            );
        }
    }

    #[test]
    fn flags_take_only_true_and_protocol_version_only_1() {
        for key in ["replace_peers"] {
            for bad in ["false", "1", "TRUE", ""] {
                refused(set(&format!("{key}={bad}\n")), Errno::Invalid, 2, key);
            }
        }
        for key in ["remove", "update_only", "replace_allowed_ips"] {
            for bad in ["false", "1", "TRUE", ""] {
                refused(peer(&format!("{key}={bad}\n")), Errno::Invalid, 3, key);
            }
        }
        for bad in ["0", "2", ""] {
            refused(
                peer(&format!("protocol_version={bad}\n")),
                Errno::Invalid,
                3,
                "protocol_version",
            );
        }
    }

    #[test]
    fn hex_key_errors_say_what_is_wrong_without_quoting_the_key() {
        let secret = "68c1714b6683e3608833fcc0022391606337a1d6c1c009d3ef97390f63545d5e";
        let cases = [
            (secret[..63].to_string(), "63 characters"),
            (secret[..62].to_string(), "62 characters"),
            (format!("{secret}00"), "66 characters"),
            (
                format!("{}g", &secret[..63]),
                "character 64 is not a hex digit",
            ),
            (String::new(), "0 characters"),
        ];
        for (bad, says) in &cases {
            for (lines, line) in [
                (format!("private_key={bad}\n"), 2),
                (format!("public_key={bad}\n"), 2),
                (format!("public_key={PEER}\npreshared_key={bad}\n"), 3),
            ] {
                let e = set(&lines).unwrap_err();
                assert_eq!((e.errno, e.line), (Errno::Invalid, line), "{e}");
                assert!(e.msg.contains(says), "{e} should say {says}");
                assert!(!e.msg.contains(&secret[..16]), "{e} quotes the key");
            }
        }
    }

    #[test]
    fn unknown_keys_and_lines_without_equals() {
        refused(
            set("listen-port=1\n"),
            Errno::Invalid,
            2,
            "unknown device key \"listen-port\"",
        );
        refused(
            peer("allowed_ips=10.0.0.0/8\n"),
            Errno::Invalid,
            3,
            "unknown peer key",
        );
        // get-only keys are not settable, as in wireguard-go.
        refused(
            peer("tx_bytes=1\n"),
            Errno::Invalid,
            3,
            "unknown peer key \"tx_bytes\"",
        );
        refused(
            set("listen_port\n"),
            Errno::Protocol,
            2,
            "not a key=value line",
        );
        refused(
            set("\u{0}=1\n"),
            Errno::Invalid,
            2,
            "unknown device key \"\\0\"",
        );
        let not_text = set_line(&mut Set::default(), b"listen_port=\xff").unwrap_err();
        assert_eq!(not_text.0, Errno::Invalid);
    }

    #[test]
    fn keys_out_of_order() {
        refused(
            set("endpoint=192.0.2.1:1\n"),
            Errno::Invalid,
            2,
            "before any public_key",
        );
        refused(
            set("allowed_ip=10.0.0.0/8\n"),
            Errno::Invalid,
            2,
            "before any public_key",
        );
        refused(
            peer("listen_port=1\n"),
            Errno::Invalid,
            3,
            "after a public_key",
        );
        refused(
            peer("private_key=00\n"),
            Errno::Invalid,
            3,
            "after a public_key",
        );
    }

    #[test]
    fn a_bad_line_is_reported_once_the_request_ends_and_nothing_of_it_is_returned() {
        // The bad line is 3; the good lines around it are not returned, and
        // the next request on the connection is read as usual.
        let input = format!(
            "set=1\nlisten_port=1\nfwmark=x\npublic_key={PEER}\nallowed_ip=bad\n\nget=1\n\n"
        );
        let mut reader = RequestReader::new();
        let (used, done) = reader.feed(input.as_bytes());
        let e = done.unwrap().unwrap_err();
        assert_eq!(
            (e.errno, e.line, e.ends_connection),
            (Errno::Invalid, 3, false),
            "{e}"
        );
        assert_eq!(&input[used..], "get=1\n\n");
        assert_eq!(
            reader.feed(&input.as_bytes()[used..]),
            (7, Some(Ok(Request::Get)))
        );
    }

    #[test]
    fn a_carriage_return_before_the_newline_is_dropped_as_wireguard_go_does() {
        let s = set("listen_port=7\r\n\r").unwrap();
        assert_eq!(s.listen_port, Some(7));
    }

    /// Feeds `input` split at `cut` (and both halves fed whole), returning
    /// every outcome in order.
    fn outcomes_split(input: &[u8], cuts: &[usize]) -> Vec<Result<Request, UapiError>> {
        let mut reader = RequestReader::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&input.len()]) {
            let mut piece = &input[start..end];
            while !piece.is_empty() {
                let (used, done) = reader.feed(piece);
                assert!(used > 0 && used <= piece.len());
                piece = &piece[used..];
                out.extend(done);
            }
            start = end;
        }
        assert!(reader.is_idle());
        out
    }

    #[test]
    fn input_split_at_every_byte_boundary_reads_the_same() {
        let input = format!("{WG_SETCONF}get=1\n\n{WG_SET}");
        let input = input.as_bytes();
        let whole = outcomes_split(input, &[]);
        assert_eq!(whole.len(), 3);
        assert!(whole.iter().all(Result::is_ok));
        for cut in 0..=input.len() {
            assert_eq!(outcomes_split(input, &[cut]), whole, "cut at {cut}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(outcomes_split(input, &every), whole, "one byte at a time");
    }

    #[test]
    fn a_partial_request_is_not_idle_and_returns_nothing() {
        let mut reader = RequestReader::new();
        let part = &WG_SETCONF.as_bytes()[..WG_SETCONF.len() - 1];
        assert_eq!(reader.feed(part), (part.len(), None));
        assert!(!reader.is_idle());
    }

    #[test]
    fn golden_wg_setconf() {
        let Request::Set(s) = read(WG_SETCONF).unwrap() else {
            panic!("not a set")
        };
        let key = PrivateKey::decode("aMFxS2aD42CIM/zAAiORYGM3odbBwAnT75c5D2NUXV4=").unwrap();
        assert_eq!(s.private_key, Some(Some(key)));
        assert_eq!(
            (s.listen_port, s.fwmark, s.replace_peers),
            (Some(51820), Some(0x1234), true)
        );
        let first = PublicKey::decode("fzH8kNw2moOD55JKwakS1SYRbSCsVlEr4C7txwwp/jU=").unwrap();
        let second = PublicKey::decode("dFk0UeVUwv8YTbCPYPLpziFb/WULLUDMUrWvjlz4xSU=").unwrap();
        let psk = PresharedKey::decode("Er1luC+16D9JTFGZzEFVfJx8dQco4VhqP8YZ7fXmCq8=").unwrap();
        assert_eq!(
            s.peers,
            vec![
                PeerChange {
                    public_key: first,
                    remove: false,
                    update_only: false,
                    preshared_key: Some(psk),
                    endpoint: Some("192.0.2.1:51820".parse().unwrap()),
                    persistent_keepalive_interval: Some(25),
                    replace_allowed_ips: true,
                    allowed_ips: vec![
                        AllowedIpChange::Add(cidr("10.0.0.2/32")),
                        AllowedIpChange::Add(cidr("fd00::2/128")),
                    ],
                },
                PeerChange {
                    public_key: second,
                    remove: false,
                    update_only: false,
                    preshared_key: None,
                    endpoint: Some("[2001:db8::1]:51821".parse().unwrap()),
                    persistent_keepalive_interval: None,
                    replace_allowed_ips: true,
                    allowed_ips: vec![AllowedIpChange::Add(cidr("10.0.1.0/24"))],
                },
            ]
        );
    }

    #[test]
    fn golden_wg_set() {
        let Request::Set(s) = read(WG_SET).unwrap() else {
            panic!("not a set")
        };
        assert_eq!(s.private_key, Some(None));
        assert_eq!(
            (s.listen_port, s.fwmark, s.replace_peers),
            (Some(0), Some(0), false)
        );
        assert_eq!(s.peers.len(), 2);
        assert!(s.peers[0].remove);
        let p = &s.peers[1];
        assert!(!p.remove && p.replace_allowed_ips && p.allowed_ips.is_empty());
        assert_eq!(p.preshared_key, Some(PresharedKey::default()));
        assert_eq!(p.endpoint, Some("198.51.100.7:1".parse().unwrap()));
        assert_eq!(p.persistent_keepalive_interval, Some(0));
    }

    #[test]
    fn a_line_longer_than_the_limit_ends_the_connection() {
        let longest = format!("fwmark={}1", "0".repeat(MAX_LINE_BYTES - "fwmark=1".len()));
        assert_eq!(longest.len(), MAX_LINE_BYTES);
        assert_eq!(set(&format!("{longest}\n")).unwrap().fwmark, Some(1));
        let input = format!("set=1\n0{longest}\n\n");
        let mut reader = RequestReader::new();
        let (used, done) = reader.feed(input.as_bytes());
        let e = done.unwrap().unwrap_err();
        assert_eq!(
            (e.errno, e.line, e.ends_connection),
            (Errno::Io, 2, true),
            "{e}"
        );
        assert_eq!(used, input.len() - 1, "stops at the end of the long line");
        // An endless line without a newline, fed piece by piece, is refused
        // as soon as it passes the limit.
        let mut reader = RequestReader::new();
        assert_eq!(reader.feed(b"set=1\n").1, None);
        let mut fed = 0;
        let outcome = loop {
            let (used, done) = reader.feed(&[b'a'; 100]);
            fed += used;
            if let Some(done) = done {
                break done;
            }
            assert!(fed <= MAX_LINE_BYTES, "{fed} bytes of one line taken");
        };
        assert_eq!(outcome.unwrap_err().errno, Errno::Io);
    }

    #[test]
    fn a_request_longer_than_the_limit_ends_the_connection() {
        let mut reader = RequestReader::new();
        assert_eq!(reader.feed(b"set=1\n").1, None);
        let line = b"listen_port=51820\n";
        let mut fed = 6;
        let outcome = loop {
            let (used, done) = reader.feed(line);
            fed += used;
            if let Some(done) = done {
                break done;
            }
            assert!(fed <= MAX_REQUEST_BYTES, "{fed} bytes of one request taken");
        };
        let e = outcome.unwrap_err();
        assert_eq!((e.errno, e.ends_connection), (Errno::Io, true), "{e}");
        assert!(e.msg.contains("request longer than"), "{e}");
        assert!(fed > MAX_REQUEST_BYTES);
        assert!(
            reader.is_idle(),
            "starts afresh (for a server that reads on)"
        );
    }

    /// `wg setconf` of 10 000 peers with every key at its longest, as
    /// wireguard-tools writes them, fits the request limit.
    #[test]
    fn ten_thousand_peers_fit() {
        let mut input = String::from("set=1\nreplace_peers=true\n");
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            let _ = write!(
                input,
                "public_key={k}\npreshared_key={k}\n\
                 endpoint=[2001:db8:ffff:ffff:ffff:ffff:{:x}{:02x}:{:x}{:02x}]:65535\n\
                 persistent_keepalive_interval=65535\nreplace_allowed_ips=true\n",
                b[0] | 0x10,
                b[1],
                b[2] | 0x10,
                b[3],
                k = format!("{:0>64x}", i + 1),
            );
            for j in 0..20 {
                let (j, i) = (0xf000 | j, 0x1000 + i);
                let _ = writeln!(
                    input,
                    "allowed_ip=fd00:ffff:ffff:ffff:ffff:{j:x}:{i:x}:ffff/128"
                );
            }
        }
        input.push('\n');
        assert!(input.len() < MAX_REQUEST_BYTES, "{} bytes", input.len());
        assert!(input.len() > 13_000_000, "{} bytes", input.len());
        let Request::Set(s) = read(&input).unwrap() else {
            panic!("not a set")
        };
        assert_eq!(s.peers.len(), 10_000);
        assert_eq!(s.peers[9_999].allowed_ips.len(), 20);
    }

    fn sample_snapshot() -> Snapshot {
        let private = PrivateKey::decode("aMFxS2aD42CIM/zAAiORYGM3odbBwAnT75c5D2NUXV4=").unwrap();
        Snapshot {
            private_key: Some(private),
            listen_port: 51820,
            fwmark: 4660,
            extra: vec![Extra {
                key: "pipevpn_stage".to_string(),
                value: "tun_reader packets=3".to_string(),
            }],
            peers: vec![
                PeerSnapshot {
                    public_key: PublicKey::decode("fzH8kNw2moOD55JKwakS1SYRbSCsVlEr4C7txwwp/jU=")
                        .unwrap(),
                    preshared_key: PresharedKey::decode(
                        "Er1luC+16D9JTFGZzEFVfJx8dQco4VhqP8YZ7fXmCq8=",
                    )
                    .unwrap(),
                    endpoint: Some("[2001:db8::1]:51821".parse().unwrap()),
                    last_handshake: Some(Duration::new(1_764_600_000, 123_456_789)),
                    tx_bytes: 1234,
                    rx_bytes: 5678,
                    persistent_keepalive_interval: 25,
                    allowed_ips: vec![cidr("10.0.0.2/32"), cidr("fd00::/64")],
                    extra: vec![Extra {
                        key: "pipevpn_queue".to_string(),
                        value: "a=b".to_string(),
                    }],
                },
                PeerSnapshot {
                    public_key: PublicKey::decode("dFk0UeVUwv8YTbCPYPLpziFb/WULLUDMUrWvjlz4xSU=")
                        .unwrap(),
                    preshared_key: PresharedKey::default(),
                    endpoint: None,
                    last_handshake: None,
                    tx_bytes: 0,
                    rx_bytes: 0,
                    persistent_keepalive_interval: 0,
                    allowed_ips: vec![],
                    extra: vec![],
                },
            ],
        }
    }

    #[test]
    fn get_answer_in_wireguard_gos_order() {
        let answer = write_get(&sample_snapshot());
        assert_eq!(
            answer.as_str(),
            "private_key=68c1714b6683e3608833fcc0022391606337a1d6c1c009d3ef97390f63545d5e
listen_port=51820
fwmark=4660
pipevpn_stage=tun_reader packets=3
public_key=7f31fc90dc369a8383e7924ac1a912d526116d20ac56512be02eedc70c29fe35
preshared_key=12bd65b82fb5e83f494c5199cc41557c9c7c750728e1586a3fc619edf5e60aaf
protocol_version=1
endpoint=[2001:db8::1]:51821
last_handshake_time_sec=1764600000
last_handshake_time_nsec=123456789
tx_bytes=1234
rx_bytes=5678
persistent_keepalive_interval=25
allowed_ip=10.0.0.2/32
allowed_ip=fd00::/64
pipevpn_queue=a=b
public_key=74593451e554c2ff184db08f60f2e9ce215bfd650b2d40cc52b5af8e5cf8c525
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
protocol_version=1
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
errno=0

"
        );
        assert_eq!(answer.capacity(), answer.len(), "built at its exact size");
    }

    #[test]
    fn a_get_answer_leaves_out_what_wireguard_go_leaves_out() {
        let answer = write_get(&Snapshot::default());
        assert_eq!(answer.as_str(), OK_REPLY);
    }

    /// The answer's settable lines, sent back as a set, give the snapshot's
    /// values again (the get-only and pipevpn lines are what a set refuses).
    #[test]
    fn a_get_answer_read_back_as_a_set() {
        let snapshot = sample_snapshot();
        let answer = write_get(&snapshot);
        let get_only = [
            "last_handshake_time_sec=",
            "last_handshake_time_nsec=",
            "tx_bytes=",
            "rx_bytes=",
            "pipevpn_",
            "errno=",
        ];
        let lines: String = answer
            .lines()
            .filter(|l| !l.is_empty() && !get_only.iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{l}\n"))
            .collect();
        let s = set(&lines).unwrap();
        assert_eq!(s.private_key.unwrap(), snapshot.private_key);
        assert_eq!((s.listen_port, s.fwmark), (Some(51820), Some(4660)));
        assert_eq!(s.peers.len(), snapshot.peers.len());
        for (got, want) in s.peers.iter().zip(&snapshot.peers) {
            assert_eq!(got.public_key, want.public_key);
            assert_eq!(got.preshared_key.as_ref(), Some(&want.preshared_key));
            assert_eq!(got.endpoint, want.endpoint);
            let keepalive = Some(want.persistent_keepalive_interval);
            assert_eq!(got.persistent_keepalive_interval, keepalive);
            let adds: Vec<_> = want
                .allowed_ips
                .iter()
                .map(|&c| AllowedIpChange::Add(c))
                .collect();
            assert_eq!(got.allowed_ips, adds);
        }
    }

    #[test]
    fn a_get_answer_reads_back_to_the_same_answer() {
        for snapshot in [sample_snapshot(), Snapshot::default()] {
            let answer = write_get(&snapshot);
            let back = read_get(&answer).unwrap();
            assert_eq!(*write_get(&back), *answer);
        }
        let back = read_get(&write_get(&sample_snapshot())).unwrap();
        assert_eq!(back.extra[0].key, "pipevpn_stage");
        assert_eq!(back.extra[0].value, "tun_reader packets=3");
        assert_eq!(back.peers[0].extra[0].value, "a=b");
        assert_eq!(back.peers[0].rx_bytes, 5678);
        assert_eq!(back.peers[1].last_handshake, None);
    }

    /// What wireguard-go answered (v0.0.20230223, a peer with a handshake),
    /// with keys it may add later: those are skipped, as `wg` skips them.
    #[test]
    fn a_wireguard_go_answer_with_unknown_keys_is_read() {
        let answer = format!(
            "private_key={}\nlisten_port=51820\nsome_future_key=1\npublic_key={PEER}\n\
             preshared_key={}\nprotocol_version=1\nendpoint=10.0.0.1:51821\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n\
             tx_bytes=92\nrx_bytes=180\npersistent_keepalive_interval=0\n\
             allowed_ip=10.9.0.2/32\nfuture_peer_key=x=y\nerrno=0\n\n",
            "68c1714b6683e3608833fcc0022391606337a1d6c1c009d3ef97390f63545d5e",
            "0".repeat(64)
        );
        let s = read_get(&answer).unwrap();
        assert_eq!((s.listen_port, s.fwmark, s.extra.len()), (51820, 0, 0));
        let p = &s.peers[0];
        assert_eq!(p.last_handshake, Some(Duration::new(1_700_000_000, 5)));
        assert_eq!((p.tx_bytes, p.rx_bytes), (92, 180));
        assert_eq!(p.allowed_ips, vec![cidr("10.9.0.2/32")]);
        assert_eq!(p.endpoint, Some("10.0.0.1:51821".parse().unwrap()));
    }

    #[test]
    fn a_malformed_get_answer_names_its_line() {
        let good = write_get(&sample_snapshot()).to_string();
        let refused = |text: &str, line: usize, what: &str| {
            let e = read_get(text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.msg.contains(what), "{e} (expected {what:?})");
        };
        let edit = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            good.replacen(from, to, 1)
        };
        refused(
            &edit("listen_port=51820", "listen_port=x"),
            2,
            "listen_port",
        );
        refused(&edit("fwmark=4660", "fwmark"), 3, "not a key=value");
        refused(&edit("tx_bytes=1234", "tx_bytes=-1"), 11, "tx_bytes");
        refused(
            &edit("endpoint=[2001:db8::1]:51821", "endpoint=x"),
            8,
            "endpoint",
        );
        refused(
            &edit("allowed_ip=10.0.0.2/32", "allowed_ip=-10.0.0.2/32"),
            14,
            "removal",
        );
        refused(
            &edit(
                "last_handshake_time_nsec=123456789",
                "last_handshake_time_nsec=1000000000",
            ),
            10,
            "10^9",
        );
        refused(
            &edit("protocol_version=1", "protocol_version=2"),
            7,
            "only 1",
        );
        refused("tx_bytes=1\nerrno=0\n\n", 1, "before any public_key");
        refused(
            &format!("public_key={PEER}\nfwmark=1\nerrno=0\n\n"),
            2,
            "device key",
        );
        refused(
            &format!("public_key={}\nerrno=0\n\n", &PEER[1..]),
            1,
            "64 hex digits",
        );
        refused("listen_port=1\nerrno=-22\n\n", 2, "errno=-22");
        refused("listen_port=1\nerrno=0\n", 3, "no empty line");
        refused("listen_port=1\n", 2, "ends before its errno");
        for cut in 0..good.len() - 1 {
            assert!(read_get(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read_get(&"x".repeat(MAX_ANSWER_BYTES + 1)).is_err());
    }

    #[test]
    fn errors_name_the_line_and_debug_output_hides_the_keys() {
        let e = set("listen_port=1\nbogus=1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "UAPI request, line 3: unknown device key \"bogus\""
        );
        let s = set(&format!(
            "private_key={}\npublic_key={PEER}\npreshared_key={}\n",
            "68c1714b6683e3608833fcc0022391606337a1d6c1c009d3ef97390f63545d5e",
            "12bd65b82fb5e83f494c5199cc41557c9c7c750728e1586a3fc619edf5e60aaf"
        ))
        .unwrap();
        let debug = format!("{s:?}");
        let private = s.private_key.as_ref().unwrap().as_ref().unwrap();
        let psk = s.peers[0].preshared_key.as_ref().unwrap();
        for secret in renderings(private.as_bytes())
            .iter()
            .chain(&renderings(psk.as_bytes()))
        {
            assert!(!debug.contains(secret.as_str()), "{debug}");
        }
    }
}
