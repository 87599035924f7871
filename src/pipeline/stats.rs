//! Per-stage counters: packets and bytes handled, drops by reason, and the
//! depth of the queue feeding the stage. Relaxed atomics: each counter has one
//! writer, and readers only want a recent value.

use crate::protocol::messages::ParseError;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    // Device errors.
    SendError => "send_error",
    WriteError => "write_error",
    BadTunPacket => "bad_tun_packet",
    // Handshake messages (whitepaper §5.4.2–§5.4.4, §5.4.7).
    HandshakeQueueFull => "handshake_queue_full",
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
}

impl StageStats {
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

    /// Text form, one line per stage, as written to `--stats-file`:
    /// `STAGE packets=N bytes=N drops=N queue=N [drop_REASON=N ...]`
    /// then `handshake last_ms=N completed=N`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for stage in Stage::ALL {
            let s = self.stage(stage);
            let _ = write!(
                out,
                "{} packets={} bytes={} drops={} queue={}",
                stage.name(),
                s.packets(),
                s.bytes(),
                s.total_drops(),
                s.queue.load(Relaxed)
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
            self.last_handshake_ms.load(Relaxed),
            self.handshakes()
        );
        out
    }
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

    #[test]
    fn render_lists_every_stage_and_nonzero_drops() {
        let stats = Stats::default();
        stats.stage(Stage::Decryptor).pass(3, 300);
        stats.stage(Stage::Decryptor).drop(DropReason::Replay);
        stats.handshake_completed(12);
        let text = stats.render();
        assert!(text.contains("decryptor packets=3 bytes=300 drops=1 queue=0 drop_replay=1\n"));
        assert!(text.contains("tun_reader packets=0 bytes=0 drops=0 queue=0\n"));
        assert!(text.ends_with("handshake last_ms=12 completed=1\n"));
        assert_eq!(text.lines().count(), Stage::ALL.len() + 1);
    }
}
