//! Per-stage counters: packets and bytes handled, drops by reason, the
//! depth of the queue feeding the stage, and how often and how long the
//! stage waited for room in the channel to the next one (backpressure).
//! Relaxed atomics: a stage's counters may have several writers (its
//! crypto workers, a reader taking the shortcut, the tun_writer accepting
//! for the decryptor), each adding atomically, and readers only want a
//! recent value.

use crate::protocol::messages::ParseError;
use crate::protocol::uapi::Extra;
use crossbeam_channel::{SendError, Sender, TrySendError};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The pipeline's threads, in flow order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    TunReader,
    Encryptor,
    UdpSender,
    UdpReceiver,
    Decryptor,
    TunWriter,
    Handshaker,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::TunReader,
        Stage::Encryptor,
        Stage::UdpSender,
        Stage::UdpReceiver,
        Stage::Decryptor,
        Stage::TunWriter,
        Stage::Handshaker,
    ];

    /// Thread name and counter name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::TunReader => "tun_reader",
            Stage::Encryptor => "encryptor",
            Stage::UdpSender => "udp_sender",
            Stage::UdpReceiver => "udp_receiver",
            Stage::Decryptor => "decryptor",
            Stage::TunWriter => "tun_writer",
            Stage::Handshaker => "handshaker",
        }
    }
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// Why a packet was dropped. Every drop is counted under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DropReason { $($variant,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    // Outer datagram checks (whitepaper §5.4).
    TooShort => "too_short",
    UnknownType => "unknown_type",
    BadLength => "bad_length",
    Oversized => "oversized",
    // Transport data (whitepaper §5.4.6).
    UnknownIndex => "unknown_index",
    ExpiredKey => "expired_key",
    Replay => "replay",
    Decrypt => "decrypt",
    // Inner packets.
    NotIp => "not_ip",
    InnerTruncated => "inner_truncated",
    SourceNotAllowed => "source_not_allowed",
    NoRoute => "no_route",
    TooBig => "too_big",
    // Waiting for, or lacking, a session or an endpoint.
    NoSessionQueueFull => "no_session_queue_full",
    GaveUp => "handshake_gave_up",
    NoEndpoint => "no_endpoint",
    // In flight for a peer taken out of the interface.
    PeerRemoved => "peer_removed",
    // Device errors.
    SendError => "send_error",
    WriteError => "write_error",
    BadTunPacket => "bad_tun_packet",
    // Handshake messages (whitepaper §5.4.2–§5.4.4, §5.4.7).
    HandshakeQueueFull => "handshake_queue_full",
    NoPrivateKey => "no_private_key",
    BadMac1 => "bad_mac1",
    HandshakeFailed => "handshake_failed",
    UnknownPeer => "unknown_peer",
    StaleTimestamp => "stale_timestamp",
    InitiationFlood => "initiation_flood",
    UnexpectedMessage => "unexpected_message",
    BadCookie => "bad_cookie",
    UnderLoad => "under_load_cookie_sent",
    RateLimited => "rate_limited",
}

/// A datagram the outer checks refuse, counted under the check it failed.
impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> DropReason {
        match e {
            ParseError::TooShort => DropReason::TooShort,
            ParseError::UnknownType => DropReason::UnknownType,
            ParseError::BadLength => DropReason::BadLength,
        }
    }
}

const REASONS: usize = DropReason::ALL.len();

#[derive(Default)]
pub struct StageStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: [AtomicU64; REASONS],
    queue: AtomicU64,
    blocked: AtomicU64,
    blocked_ns: AtomicU64,
    /// Calls into the kernel device (a tun write, a UDP send) under way:
    /// work that holds the stage without waiting in its channel, as when a
    /// full tun blocks a write (also one made by a lone-packet shortcut on
    /// another stage's thread). The watchdog counts it as work waiting.
    in_device: AtomicU64,
}

impl StageStats {
    /// Runs `call`, a device call doing this stage's work, counted as under
    /// way while it lasts.
    pub fn in_device<T>(&self, call: impl FnOnce() -> T) -> T {
        self.in_device.fetch_add(1, Relaxed);
        let result = call();
        self.in_device.fetch_sub(1, Relaxed);
        result
    }

    /// Device calls under way now (see [`StageStats::in_device`]).
    pub fn device_calls(&self) -> u64 {
        self.in_device.load(Relaxed)
    }

    /// Sends `item` to the next stage. Only when that channel is full is the
    /// wait counted and timed (one clock pair): the common case costs what a
    /// plain send costs. The wait is counted as it begins, so a stage stuck
    /// behind a stalled one shows at once; its time is added as it ends.
    pub fn send<T>(&self, tx: &Sender<T>, item: T) -> std::result::Result<(), SendError<T>> {
        match tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(item)) => Err(SendError(item)),
            Err(TrySendError::Full(item)) => {
                self.blocked.fetch_add(1, Relaxed);
                let start = Instant::now();
                let sent = tx.send(item);
                let waited = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.blocked_ns.fetch_add(waited, Relaxed);
                sent
            }
        }
    }

    /// How many sends found the next stage's channel full (the one under
    /// way included).
    pub fn blocked(&self) -> u64 {
        self.blocked.load(Relaxed)
    }

    /// Nanoseconds spent waiting for room in the next stage's channel.
    pub fn blocked_ns(&self) -> u64 {
        self.blocked_ns.load(Relaxed)
    }

    pub fn pass(&self, packets: usize, bytes: usize) {
        self.packets.fetch_add(packets as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// Records how many batches wait in the channel feeding this stage.
    pub fn queue(&self, depth: usize) {
        self.queue.store(depth as u64, Relaxed);
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }
}

/// Counters of the whole tunnel.
#[derive(Default)]
pub struct Stats {
    stages: [StageStats; Stage::ALL.len()],
    handshakes: AtomicU64,
    last_handshake_ms: AtomicU64,
}

impl Stats {
    pub fn stage(&self, s: Stage) -> &StageStats {
        &self.stages[s as usize]
    }

    pub fn handshake_completed(&self, took_ms: u64) {
        self.last_handshake_ms.store(took_ms, Relaxed);
        self.handshakes.fetch_add(1, Relaxed);
    }

    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Relaxed)
    }

    /// The counters now, each read once.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stages: Stage::ALL.map(|stage| {
                let s = self.stage(stage);
                StageCounts {
                    packets: s.packets(),
                    bytes: s.bytes(),
                    queue: s.queue.load(Relaxed),
                    blocked: s.blocked(),
                    blocked_ns: s.blocked_ns(),
                    drops: std::array::from_fn(|k| s.drops[k].load(Relaxed)),
                }
            }),
            handshakes: self.handshakes(),
            last_handshake_ms: self.last_handshake_ms.load(Relaxed),
        }
    }
}

/// One stage's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageCounts {
    pub packets: u64,
    pub bytes: u64,
    /// Batches waiting in the channel feeding the stage.
    pub queue: u64,
    /// Sends that found the next stage's channel full, and the time they
    /// waited for room, in nanoseconds.
    pub blocked: u64,
    pub blocked_ns: u64,
    /// Per reason, indexed by `DropReason as usize`.
    pub drops: [u64; REASONS],
}

impl StageCounts {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// The tunnel's counters at one moment. The one codec of them: the control
/// socket's get answers them as [`Snapshot::extras`], and `pipevpn show`
/// reads them back with [`Snapshot::from_extras`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Indexed by `Stage as usize`.
    pub stages: [StageCounts; Stage::ALL.len()],
    pub handshakes: u64,
    pub last_handshake_ms: u64,
}

impl Snapshot {
    pub fn stage(&self, s: Stage) -> &StageCounts {
        &self.stages[s as usize]
    }

    /// One line per stage, in [`Stage::ALL`] order:
    /// `STAGE packets=N bytes=N drops=N queue=N blocked=N blocked_ns=N
    /// [drop_REASON=N ...]`
    /// (only reasons that dropped something), then
    /// `handshake last_ms=N completed=N`.
    fn render(&self) -> String {
        let mut out = String::new();
        for stage in Stage::ALL {
            let s = self.stage(stage);
            let _ = write!(
                out,
                "{} packets={} bytes={} drops={} queue={} blocked={} blocked_ns={}",
                stage.name(),
                s.packets,
                s.bytes,
                s.total_drops(),
                s.queue,
                s.blocked,
                s.blocked_ns
            );
            for &r in DropReason::ALL {
                let n = s.dropped(r);
                if n > 0 {
                    let _ = write!(out, " drop_{}={n}", r.name());
                }
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "handshake last_ms={} completed={}",
            self.last_handshake_ms, self.handshakes
        );
        out
    }

    /// The counters as the control socket's get answers them: each line
    /// of [`Snapshot::render`] as an extra line, a stage's under
    /// [`STAGE_KEY`], the handshake line's fields under [`HANDSHAKES_KEY`]
    /// (see [`crate::protocol::uapi::Extra`]).
    pub fn extras(&self) -> Vec<Extra> {
        let extra = |key: &str, value: &str| Extra {
            key: key.to_string(),
            value: value.to_string(),
        };
        self.render()
            .lines()
            .map(|line| match line.strip_prefix(HANDSHAKE_LINE) {
                Some(fields) => extra(HANDSHAKES_KEY, fields),
                None => extra(STAGE_KEY, line),
            })
            .collect()
    }

    /// Reads what [`Snapshot::extras`] wrote, from the extra lines of a get
    /// answer; other `pipevpn_` keys (of a later version) are skipped. The
    /// error names the key and what is wrong.
    pub fn from_extras(extras: &[Extra]) -> std::result::Result<Snapshot, String> {
        let mut text = String::new();
        for Extra { key, value } in extras {
            let line = match key.as_str() {
                STAGE_KEY if !value.starts_with(HANDSHAKE_LINE) => value.clone(),
                HANDSHAKES_KEY => format!("{HANDSHAKE_LINE}{value}"),
                STAGE_KEY => return Err(format!("{key}={value}: not a stage")),
                _ => continue,
            };
            text.push_str(&line);
            text.push('\n');
        }
        Snapshot::parse(&text).map_err(|e| format!("the pipevpn_ lines of the answer: {e}"))
    }

    /// Reads what [`Snapshot::render`] wrote. Every stage line and the
    /// handshake line must be there once, with all their fields; the error
    /// names the line and what is wrong with it.
    fn parse(text: &str) -> std::result::Result<Snapshot, String> {
        let mut snap = Snapshot::default();
        let mut seen = [false; Stage::ALL.len() + 1];
        for (i, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}", i + 1);
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else {
                return Err(at("empty line".into()));
            };
            let mut fields = Vec::new();
            for w in words {
                let (k, v) = w
                    .split_once('=')
                    .ok_or_else(|| at(format!("'{w}' is not FIELD=N")))?;
                let v = v
                    .parse::<u64>()
                    .map_err(|_| at(format!("'{w}': not a count")))?;
                fields.push((k, v));
            }
            let slot = match Stage::ALL.iter().position(|s| s.name() == name) {
                Some(k) => k,
                None if name == "handshake" => Stage::ALL.len(),
                None => return Err(at(format!("unknown stage '{name}'"))),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(at(format!("a second '{name}' line")));
            }
            if slot == Stage::ALL.len() {
                let [last_ms, completed] = take_fields(&fields, ["last_ms", "completed"])
                    .map_err(|e| at(format!("{name}: {e}")))?;
                (snap.last_handshake_ms, snap.handshakes) = (last_ms, completed);
                continue;
            }
            let (totals, reasons): (Vec<_>, Vec<_>) = fields
                .into_iter()
                .partition(|(k, _)| !k.starts_with("drop_"));
            let fields = [
                "packets",
                "bytes",
                "drops",
                "queue",
                "blocked",
                "blocked_ns",
            ];
            let [packets, bytes, drops, queue, blocked, blocked_ns] =
                take_fields(&totals, fields).map_err(|e| at(format!("{name}: {e}")))?;
            let s = &mut snap.stages[slot];
            (s.packets, s.bytes, s.queue) = (packets, bytes, queue);
            (s.blocked, s.blocked_ns) = (blocked, blocked_ns);
            let mut given = [false; REASONS];
            for (k, v) in reasons {
                let reason = &k["drop_".len()..];
                let r = *DropReason::ALL
                    .iter()
                    .find(|r| r.name() == reason)
                    .ok_or_else(|| at(format!("{name}: unknown drop reason '{reason}'")))?;
                if std::mem::replace(&mut given[r as usize], true) {
                    return Err(at(format!("{name}: {k} given twice")));
                }
                s.drops[r as usize] = v;
            }
            if s.total_drops() != drops {
                return Err(at(format!(
                    "{name}: drops={drops}, but the drop_ fields add up to {}",
                    s.total_drops()
                )));
            }
        }
        if let Some(k) = seen.iter().position(|&seen| !seen) {
            let name = Stage::ALL.get(k).map_or("handshake", |s| s.name());
            return Err(format!("no '{name}' line"));
        }
        Ok(snap)
    }
}

/// The key of a stage's line in a get answer of the control socket.
pub const STAGE_KEY: &str = "pipevpn_stage";
/// The key of the handshake counters in a get answer.
pub const HANDSHAKES_KEY: &str = "pipevpn_handshakes";
/// How [`Snapshot::render`]'s handshake line starts.
const HANDSHAKE_LINE: &str = "handshake ";

/// The values of exactly the fields `names`, in that order.
fn take_fields<const N: usize>(
    fields: &[(&str, u64)],
    names: [&str; N],
) -> std::result::Result<[u64; N], String> {
    if let Some((k, _)) = fields.iter().find(|(k, _)| !names.contains(k)) {
        return Err(format!("unknown field '{k}'"));
    }
    if fields.len() > N {
        return Err("a field given twice".into());
    }
    let mut values = [0; N];
    for (v, name) in values.iter_mut().zip(names) {
        *v = fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| format!("no '{name}=N'"))?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_parse_errors_have_their_own_reasons() {
        assert_eq!(DropReason::from(ParseError::TooShort), DropReason::TooShort);
        assert_eq!(
            DropReason::from(ParseError::UnknownType),
            DropReason::UnknownType
        );
        assert_eq!(
            DropReason::from(ParseError::BadLength),
            DropReason::BadLength
        );
    }

    /// A stalled next stage: the send that waits for it is counted and
    /// timed; sends that find room, and a send to a stage that has ended,
    /// count nothing.
    #[test]
    fn a_send_counts_only_the_waits_for_a_full_channel() {
        let stats = Stats::default();
        let s = stats.stage(Stage::Decryptor);
        let (tx, rx) = crossbeam_channel::bounded(1);
        s.send(&tx, 1).unwrap();
        assert_eq!((s.blocked(), s.blocked_ns()), (0, 0));
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| s.send(&tx, 2));
            // The wait shows while it lasts, its time once it ends.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while s.blocked() == 0 {
                if Instant::now() > deadline {
                    rx.recv().unwrap(); // frees the sender before failing
                    panic!("a send waiting for a full channel is not counted");
                }
                std::thread::yield_now();
            }
            assert_eq!(s.blocked_ns(), 0);
            assert!(!waiting.is_finished());
            assert_eq!((rx.recv().unwrap(), rx.recv().unwrap()), (1, 2));
            waiting.join().unwrap().unwrap();
        });
        assert_eq!(s.blocked(), 1);
        assert!(s.blocked_ns() > 0);
        drop(rx);
        assert_eq!(s.send(&tx, 3).unwrap_err().0, 3, "the receiver has gone");
        assert_eq!(s.blocked(), 1);
        let snap = stats.snapshot();
        assert_eq!(snap.stage(Stage::Decryptor).blocked, 1);
        assert_eq!(snap.stage(Stage::Decryptor).blocked_ns, s.blocked_ns());
        assert_eq!(snap.stage(Stage::Encryptor).blocked, 0);
    }

    #[test]
    fn render_lists_every_stage_and_nonzero_drops() {
        let stats = Stats::default();
        stats.stage(Stage::Decryptor).pass(3, 300);
        stats.stage(Stage::Decryptor).drop(DropReason::Replay);
        stats.handshake_completed(12);
        let text = stats.snapshot().render();
        assert!(text.contains(
            "decryptor packets=3 bytes=300 drops=1 queue=0 blocked=0 blocked_ns=0 drop_replay=1\n"
        ));
        assert!(
            text.contains("tun_reader packets=0 bytes=0 drops=0 queue=0 blocked=0 blocked_ns=0\n")
        );
        assert!(text.ends_with("handshake last_ms=12 completed=1\n"));
        assert_eq!(text.lines().count(), Stage::ALL.len() + 1);
    }

    /// Every stage, field and reason with its own value, so a field read
    /// into the wrong place shows.
    fn distinct_snapshot() -> Snapshot {
        let mut snap = Snapshot {
            handshakes: 3,
            last_handshake_ms: 17,
            ..Snapshot::default()
        };
        for (k, s) in snap.stages.iter_mut().enumerate() {
            let k = k as u64;
            (s.packets, s.bytes, s.queue) = (1000 + k, 2000 + k, 3000 + k);
            (s.blocked, s.blocked_ns) = (4000 + k, 5000 + k);
            // Stage k dropped only for reasons k, k+7, k+14 ...: many are 0.
            for (r, n) in s.drops.iter_mut().enumerate() {
                if r as u64 % 7 == k {
                    *n = 100 * k + r as u64 + 1;
                }
            }
        }
        snap
    }

    #[test]
    fn parse_reads_back_what_render_wrote() {
        let snap = distinct_snapshot();
        assert_eq!(Snapshot::parse(&snap.render()), Ok(snap));
        assert_eq!(
            Snapshot::parse(&Snapshot::default().render()),
            Ok(Snapshot::default())
        );

        let stats = Stats::default();
        stats.stage(Stage::UdpReceiver).pass(5, 700);
        stats.stage(Stage::UdpReceiver).drop(DropReason::BadMac1);
        stats.stage(Stage::Handshaker).drop(DropReason::RateLimited);
        stats.stage(Stage::TunWriter).queue(2);
        stats.handshake_completed(9);
        let back = Snapshot::parse(&stats.snapshot().render()).unwrap();
        assert_eq!(back, stats.snapshot());
        let r = back.stage(Stage::UdpReceiver);
        assert_eq!((r.packets, r.bytes, r.total_drops()), (5, 700, 1));
        assert_eq!(r.dropped(DropReason::BadMac1), 1);
        assert_eq!(back.stage(Stage::TunWriter).queue, 2);
        assert_eq!((back.handshakes, back.last_handshake_ms), (1, 9));
    }

    #[test]
    fn extras_read_back_and_a_bad_one_is_named() {
        let snap = distinct_snapshot();
        let extras = snap.extras();
        assert_eq!(extras.len(), Stage::ALL.len() + 1);
        assert!(extras[..Stage::ALL.len()]
            .iter()
            .all(|e| e.key == STAGE_KEY));
        assert_eq!(extras[Stage::ALL.len()].key, HANDSHAKES_KEY);
        assert_eq!(extras[Stage::ALL.len()].value, "last_ms=17 completed=3");
        assert!(extras[1]
            .value
            .starts_with("encryptor packets=1001 bytes=2001 drops="));
        assert!(extras[1].value.contains(" blocked=4001 blocked_ns=5001"));
        assert_eq!(Snapshot::from_extras(&extras), Ok(snap.clone()));
        // A later version's key is skipped; a stage missing is named.
        let mut more = extras.clone();
        more.insert(
            0,
            Extra {
                key: "pipevpn_future".into(),
                value: "x".into(),
            },
        );
        assert_eq!(Snapshot::from_extras(&more), Ok(snap));
        let e = Snapshot::from_extras(&extras[1..]).unwrap_err();
        assert!(e.contains("no 'tun_reader' line"), "{e}");
        let mut bad = extras.clone();
        bad[0].value = bad[0].value.replace("blocked=4000", "blocked=x");
        let e = Snapshot::from_extras(&bad).unwrap_err();
        assert!(e.contains("'blocked=x': not a count"), "{e}");
        bad[0].value = extras[Stage::ALL.len()].value.clone();
        bad[0].value.insert_str(0, HANDSHAKE_LINE);
        assert!(Snapshot::from_extras(&bad)
            .unwrap_err()
            .contains("not a stage"));
    }

    #[test]
    fn parse_names_the_line_and_the_fault() {
        let good = distinct_snapshot().render();
        let edit = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            Snapshot::parse(&good.replacen(from, to, 1)).unwrap_err()
        };
        assert_eq!(
            edit("tun_reader ", "tun_raeder "),
            "line 1: unknown stage 'tun_raeder'"
        );
        assert_eq!(
            edit("bytes=2001", "bytes=x"),
            "line 2: 'bytes=x': not a count"
        );
        assert_eq!(edit(" queue=3002", ""), "line 3: udp_sender: no 'queue=N'");
        assert_eq!(
            edit(" queue=3002", " queue=3002 rate=1"),
            "line 3: udp_sender: unknown field 'rate'"
        );
        assert_eq!(
            edit("handshaker ", "tun_reader "),
            "line 7: a second 'tun_reader' line"
        );
        assert_eq!(
            edit("completed=3", "completed"),
            "line 8: 'completed' is not FIELD=N"
        );
        assert!(edit("drops=", "drops=9").starts_with("line 1: tun_reader: drops=9"));
        assert_eq!(
            edit("drop_too_short", "drop_to_short"),
            "line 1: tun_reader: unknown drop reason 'to_short'"
        );
        let first_drop = good
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .find(|w| w.starts_with("drop_"))
            .unwrap();
        assert_eq!(
            edit(first_drop, &format!("{first_drop} {first_drop}")),
            format!(
                "line 1: tun_reader: {} given twice",
                first_drop.split('=').next().unwrap()
            )
        );
        let no_decryptor: String = good
            .lines()
            .filter(|l| !l.starts_with("decryptor "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            Snapshot::parse(&no_decryptor).unwrap_err(),
            "no 'decryptor' line"
        );
        let no_handshake = good
            .lines()
            .take(Stage::ALL.len())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            Snapshot::parse(&no_handshake).unwrap_err(),
            "no 'handshake' line"
        );
        assert_eq!(Snapshot::parse("").unwrap_err(), "no 'tun_reader' line");
    }
}
