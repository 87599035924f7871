//! WireGuard's per-peer timer rules (whitepaper §6) as a pure function of
//! what happened when. The handshaker calls [`due`] on every tick with the
//! times of the last events; nothing here reads a clock.
//!
//! wireguard-go arms and cancels real timers on every packet. Here the data
//! stages only stamp "last sent"/"last received" times, and the rules are
//! evaluated from those stamps, which gives the same behaviour without any
//! per-packet work beyond a store.

use crate::protocol::session::REKEY_AFTER_MESSAGES;
use std::time::Duration;

/// Protocol timing constants. Tests may shorten them; the defaults are
/// WireGuard's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub rekey_after_time: Duration,
    pub reject_after_time: Duration,
    pub rekey_attempt_time: Duration,
    pub rekey_timeout: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_attempt_time: Duration::from_secs(90),
            rekey_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// Applies test overrides written as `name=seconds` pairs separated by
    /// commas, e.g. `rekey_after=10,reject_after=15` (names: rekey_after,
    /// reject_after, rekey_attempt, rekey_timeout, keepalive; fractions allowed).
    pub fn with_overrides(mut self, spec: &str) -> Result<Timing, String> {
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("'{item}' is not name=seconds"))?;
            let secs: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("'{item}': seconds must be a positive number"))?;
            let field = match name.trim() {
                "rekey_after" => &mut self.rekey_after_time,
                "reject_after" => &mut self.reject_after_time,
                "rekey_attempt" => &mut self.rekey_attempt_time,
                "rekey_timeout" => &mut self.rekey_timeout,
                "keepalive" => &mut self.keepalive_timeout,
                other => return Err(format!("unknown timer '{other}'")),
            };
            *field = Duration::from_secs_f64(secs);
        }
        if self.last_minute_age() == Duration::ZERO
            || self.reject_after_time <= self.rekey_after_time
        {
            return Err(
                "reject_after must exceed rekey_after and keepalive + rekey_timeout".into(),
            );
        }
        Ok(self)
    }

    /// Retries before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT (18).
    pub fn max_retries(&self) -> u32 {
        (self.rekey_attempt_time.as_millis() / self.rekey_timeout.as_millis().max(1)) as u32
    }

    /// A keypair this old is no longer used for anything.
    pub fn expired(&self, age: Duration) -> bool {
        age >= self.reject_after_time
    }

    /// All key material is erased this long after the last session was made.
    pub fn zero_keys_after(&self) -> Duration {
        self.reject_after_time * 3
    }

    /// The initiator rekeys on receive once its keypair is this old (165 s),
    /// so a fresh one exists before REJECT_AFTER_TIME.
    pub fn last_minute_age(&self) -> Duration {
        self.reject_after_time
            .saturating_sub(self.keepalive_timeout + self.rekey_timeout)
    }
}

/// Times (since an arbitrary start) of the events the rules depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    pub now: Duration,
    /// Last authenticated packet sent (data, keepalive or handshake).
    pub sent_any: Option<Duration>,
    /// First data packet sent since the last authenticated receive.
    pub sent_data_unanswered: Option<Duration>,
    /// Last authenticated packet received.
    pub recv_any: Option<Duration>,
    /// Last data (non-keepalive) packet received.
    pub recv_data: Option<Duration>,
    /// The current sending keypair: when it was made and whether we initiated it.
    pub session: Option<SessionInfo>,
    /// A handshake we started and that has not finished.
    pub pending: Option<Pending>,
    /// When we last sent a handshake message (initiation or response).
    pub handshake_sent: Option<Duration>,
    /// When the newest session was derived (for key zeroing).
    pub session_derived: Option<Duration>,
    /// Configured persistent keepalive interval.
    pub persistent_keepalive: Option<Duration>,
    /// Packets are waiting for a usable keypair.
    pub want_session: bool,
    /// We know where the peer is and have a private key, so we can
    /// initiate.
    pub can_initiate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    pub created: Duration,
    pub we_initiated: bool,
    /// The last-minute rekey was already asked for this keypair.
    pub last_minute_done: bool,
    /// Messages sent with it so far.
    pub sent_messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// When the latest initiation of this attempt was sent.
    pub sent: Duration,
    /// Initiations re-sent so far in this attempt.
    pub retries: u32,
    /// The random extra wait added to this retransmission.
    pub jitter: Duration,
}

/// What the handshaker should do now. Several can be due at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// Send a new initiation (a fresh one, or a retransmission).
    pub initiate: Option<Initiate>,
    pub keepalive: bool,
    /// Retries are exhausted: forget the attempt and drop queued packets.
    pub give_up: bool,
    /// Erase every keypair and handshake state.
    pub zero_keys: bool,
    /// Mark the current keypair's last-minute rekey as asked for.
    pub last_minute: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiate {
    /// The retransmit timer of a pending attempt expired.
    Retry,
    /// Start a new attempt.
    New,
}

fn since(now: Duration, t: Option<Duration>) -> Option<Duration> {
    t.map(|t| now.saturating_sub(t))
}

fn after(a: Option<Duration>, b: Option<Duration>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Evaluates every timer rule at `ev.now`.
pub fn due(t: &Timing, ev: &Events) -> Due {
    let now = ev.now;
    let mut d = Due::default();

    if let Some(p) = ev.pending {
        if now.saturating_sub(p.sent) >= t.rekey_timeout + p.jitter {
            if p.retries >= t.max_retries() {
                d.give_up = true;
            } else {
                d.initiate = Some(Initiate::Retry);
            }
        }
    } else if ev.can_initiate && wants_new_handshake(t, ev, &mut d) {
        // Never initiate within REKEY_TIMEOUT of our last handshake message.
        let rate_ok = since(now, ev.handshake_sent).is_none_or(|s| s >= t.rekey_timeout);
        if rate_ok {
            d.initiate = Some(Initiate::New);
        }
    }

    // Passive keepalive: data came in and we have sent nothing since.
    if after(ev.recv_data, ev.sent_any)
        && since(now, ev.recv_data).is_some_and(|s| s >= t.keepalive_timeout)
        && usable(t, ev)
    {
        d.keepalive = true;
    }
    // Persistent keepalive: nothing authenticated either way for the interval.
    if let Some(interval) = ev.persistent_keepalive {
        let last = ev.sent_any.max(ev.recv_any);
        if usable(t, ev) && since(now, last).is_none_or(|s| s >= interval) {
            d.keepalive = true;
        }
    }

    if since(now, ev.session_derived).is_some_and(|s| s >= t.zero_keys_after()) {
        d.zero_keys = true;
    }
    d
}

/// The earliest time at which [`due`] may act if nothing happens first: no
/// packet sent or received, no handshake message, no request for a
/// session. None when only such an event can arm a timer. The handshaker
/// sleeps until then, and the data stages wake it when they stamp an event,
/// so idle peers cost nothing. Never later than the first time `due` would
/// act; earlier only costs an evaluation.
pub fn next_due(t: &Timing, ev: &Events) -> Option<Duration> {
    let mut at: Option<Duration> = None;
    let mut candidate = |x: Duration| at = Some(at.map_or(x, |a| a.min(x)));
    if let Some(p) = ev.pending {
        candidate(p.sent + t.rekey_timeout + p.jitter);
    } else if ev.can_initiate {
        if let Some(x) = new_handshake_at(t, ev) {
            candidate(ev.handshake_sent.map_or(x, |h| x.max(h + t.rekey_timeout)));
        }
    }
    // Both keepalives need a session that has not expired by then.
    let usable_at = |x: Duration| {
        ev.session
            .is_some_and(|s| !t.expired(x.saturating_sub(s.created)))
    };
    if let Some(r) = ev.recv_data.filter(|_| after(ev.recv_data, ev.sent_any)) {
        let x = r + t.keepalive_timeout;
        if usable_at(x.max(ev.now)) {
            candidate(x);
        }
    }
    if let Some(interval) = ev.persistent_keepalive {
        let x = ev
            .sent_any
            .max(ev.recv_any)
            .map_or(ev.now, |l| l + interval);
        if usable_at(x.max(ev.now)) {
            candidate(x);
        }
    }
    if let Some(d) = ev.session_derived {
        candidate(d + t.zero_keys_after());
    }
    at
}

/// When [`wants_new_handshake`] becomes true without new events, before
/// the rate limit.
fn new_handshake_at(t: &Timing, ev: &Events) -> Option<Duration> {
    let now = ev.now;
    if ev.want_session {
        return Some(now);
    }
    let unanswered = ev
        .sent_data_unanswered
        .map(|x| x + t.keepalive_timeout + t.rekey_timeout);
    let Some(s) = ev.session else {
        return unanswered;
    };
    if s.sent_messages >= REKEY_AFTER_MESSAGES {
        return Some(now);
    }
    if !s.we_initiated {
        return unanswered;
    }
    // Both rules on the age of the keypair wait for a send or a receive
    // after that age: a new event, unless it already happened.
    let rekey_at = s.created + t.rekey_after_time;
    let last_minute_at = s.created + t.last_minute_age();
    let sent_late = ev.sent_any.is_some_and(|x| x >= rekey_at);
    let received_late = !s.last_minute_done && ev.recv_any.is_some_and(|x| x >= last_minute_at);
    match (sent_late || received_late, unanswered) {
        (true, _) => Some(now),
        (false, u) => u,
    }
}

fn usable(t: &Timing, ev: &Events) -> bool {
    ev.session
        .is_some_and(|s| !t.expired(ev.now.saturating_sub(s.created)))
}

/// The rules that start a fresh handshake (whitepaper §6.2), when none is
/// pending.
fn wants_new_handshake(t: &Timing, ev: &Events, d: &mut Due) -> bool {
    let now = ev.now;
    if ev.want_session {
        return true;
    }
    // New-handshake timer: data sent, nothing authenticated back for 15 s.
    if since(now, ev.sent_data_unanswered)
        .is_some_and(|s| s >= t.keepalive_timeout + t.rekey_timeout)
    {
        return true;
    }
    let Some(s) = ev.session else { return false };
    if s.sent_messages >= REKEY_AFTER_MESSAGES {
        return true;
    }
    if !s.we_initiated {
        return false;
    }
    // Only the initiator rekeys on time, after it sent something on an old key.
    let rekey_at = s.created + t.rekey_after_time;
    if ev.sent_any.is_some_and(|x| x >= rekey_at) && now >= rekey_at {
        return true;
    }
    // Last-minute rekey after receiving on a keypair close to expiry.
    let last_minute_at = s.created + t.last_minute_age();
    if !s.last_minute_done && ev.recv_any.is_some_and(|x| x >= last_minute_at) {
        d.last_minute = true;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn established(now: u64) -> Events {
        Events {
            now: s(now),
            session: Some(SessionInfo {
                created: s(0),
                we_initiated: true,
                last_minute_done: false,
                sent_messages: 10,
            }),
            session_derived: Some(s(0)),
            can_initiate: true,
            handshake_sent: Some(s(0)),
            ..Events::default()
        }
    }

    #[test]
    fn passive_keepalive_after_ten_seconds_of_received_data() {
        let t = Timing::default();
        let mut ev = established(19);
        ev.recv_data = Some(s(10));
        ev.recv_any = Some(s(10));
        ev.sent_any = Some(s(5));
        assert!(!due(&t, &ev).keepalive, "9 s after data: not yet");
        ev.now = s(20);
        assert!(due(&t, &ev).keepalive, "10 s after data: keepalive");
        ev.sent_any = Some(s(12));
        assert!(!due(&t, &ev).keepalive, "anything sent cancels it");
    }

    #[test]
    fn initiator_rekeys_after_120_seconds_when_sending() {
        let t = Timing::default();
        let mut ev = established(119);
        ev.sent_any = Some(s(119));
        assert_eq!(due(&t, &ev).initiate, None);
        ev.now = s(121);
        ev.sent_any = Some(s(121));
        assert_eq!(due(&t, &ev).initiate, Some(Initiate::New));
        // The responder never rekeys on time.
        ev.session.as_mut().unwrap().we_initiated = false;
        assert_eq!(due(&t, &ev).initiate, None);
    }

    #[test]
    fn rekey_is_rate_limited_by_the_last_handshake_message() {
        let t = Timing::default();
        let mut ev = established(121);
        ev.sent_any = Some(s(121));
        ev.handshake_sent = Some(s(118));
        assert_eq!(due(&t, &ev).initiate, None);
        ev.now = s(123);
        assert_eq!(due(&t, &ev).initiate, Some(Initiate::New));
    }

    #[test]
    fn retransmits_every_rekey_timeout_then_gives_up() {
        let t = Timing::default();
        assert_eq!(t.max_retries(), 18);
        let mut ev = established(4);
        ev.pending = Some(Pending {
            sent: s(0),
            retries: 0,
            jitter: Duration::from_millis(200),
        });
        assert_eq!(due(&t, &ev).initiate, None);
        ev.now = Duration::from_millis(5200);
        assert_eq!(due(&t, &ev).initiate, Some(Initiate::Retry));
        ev.pending.as_mut().unwrap().retries = 18;
        let d = due(&t, &ev);
        assert!(d.give_up);
        assert_eq!(d.initiate, None);
    }

    #[test]
    fn new_handshake_when_sent_data_gets_no_answer_for_15_seconds() {
        let t = Timing::default();
        let mut ev = established(14);
        ev.sent_data_unanswered = Some(s(0));
        assert_eq!(due(&t, &ev).initiate, None);
        ev.now = s(15);
        assert_eq!(due(&t, &ev).initiate, Some(Initiate::New));
        ev.can_initiate = false;
        assert_eq!(due(&t, &ev).initiate, None, "no endpoint: cannot initiate");
    }

    #[test]
    fn last_minute_rekey_on_receive_after_165_seconds_once() {
        let t = Timing::default();
        let mut ev = established(166);
        ev.recv_any = Some(s(166));
        let d = due(&t, &ev);
        assert_eq!(d.initiate, Some(Initiate::New));
        assert!(d.last_minute);
        ev.session.as_mut().unwrap().last_minute_done = true;
        assert_eq!(due(&t, &ev).initiate, None);
    }

    #[test]
    fn keys_expire_at_180_and_are_zeroed_after_540_seconds() {
        let t = Timing::default();
        assert!(!t.expired(s(179)));
        assert!(t.expired(s(180)));
        let mut ev = established(539);
        assert!(!due(&t, &ev).zero_keys);
        ev.now = s(540);
        assert!(due(&t, &ev).zero_keys);
    }

    #[test]
    fn persistent_keepalive_fires_on_idle_usable_session_only() {
        let t = Timing::default();
        let mut ev = established(30);
        ev.persistent_keepalive = Some(s(25));
        ev.sent_any = Some(s(4));
        ev.recv_any = Some(s(5));
        assert!(due(&t, &ev).keepalive, "25 s of silence both ways");
        ev.recv_any = Some(s(10));
        assert!(!due(&t, &ev).keepalive);
        ev.now = s(200);
        assert!(!due(&t, &ev).keepalive, "an expired session sends nothing");
    }

    #[test]
    fn either_side_rekeys_after_rekey_after_messages() {
        let t = Timing::default();
        let mut ev = established(30);
        ev.session.as_mut().unwrap().we_initiated = false;
        assert_eq!(due(&t, &ev).initiate, None);
        ev.session.as_mut().unwrap().sent_messages = REKEY_AFTER_MESSAGES;
        assert_eq!(due(&t, &ev).initiate, Some(Initiate::New));
    }

    /// What an idle peer sleeps until: keepalives and key erasure are
    /// seen coming; rules that need a new packet are not scheduled.
    #[test]
    fn next_due_names_the_next_timer_of_an_idle_peer() {
        let t = Timing::default();
        let mut ev = established(30);
        ev.sent_any = Some(s(20));
        ev.recv_any = Some(s(20));
        assert_eq!(next_due(&t, &ev), Some(s(540)), "only the key erasure");
        ev.persistent_keepalive = Some(s(25));
        assert_eq!(next_due(&t, &ev), Some(s(45)));
        ev.recv_data = Some(s(25));
        assert_eq!(next_due(&t, &ev), Some(s(35)), "the passive keepalive");
        ev.pending = Some(Pending {
            sent: s(29),
            retries: 0,
            jitter: Duration::from_millis(100),
        });
        assert_eq!(next_due(&t, &ev), Some(Duration::from_millis(34_100)));
        let idle = Events {
            now: s(7),
            can_initiate: true,
            ..Events::default()
        };
        assert_eq!(next_due(&t, &idle), None, "nothing until traffic");
        let waiting = Events {
            want_session: true,
            handshake_sent: Some(s(4)),
            ..idle
        };
        assert_eq!(
            next_due(&t, &waiting),
            Some(s(9)),
            "rate-limited initiation"
        );
    }

    /// xorshift64: the same cases on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn time(&mut self, max_ms: u64) -> Duration {
            Duration::from_millis(self.next() % max_ms)
        }
        /// A time before `now`, at a random scale: events just past and
        /// long ago.
        fn before(&mut self, now: Duration) -> Duration {
            let scale = [2_000, 20_000, 200_000, 1_200_000][(self.next() % 4) as usize];
            now.saturating_sub(self.time(scale))
        }
        fn maybe_before(&mut self, now: Duration) -> Option<Duration> {
            (self.next() % 3 != 0).then(|| self.before(now))
        }
    }

    /// For random states with nothing due now, `due` acts at no time before
    /// `next_due`, nor ever when it says None: sleeping until then misses
    /// nothing.
    #[test]
    fn nothing_is_due_before_next_due() {
        let mut t = Timing::default();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut checked, mut sleeping_for_good) = (0, 0);
        for case in 0..20_000 {
            if case % 2 == 1 {
                t = Timing::default()
                    .with_overrides(
                        "rekey_after=3,reject_after=6,rekey_attempt=4,rekey_timeout=1,keepalive=2",
                    )
                    .unwrap();
            }
            const SPAN: u64 = 1_200_000;
            let now = rng.time(SPAN);
            let ev = Events {
                now,
                sent_any: rng.maybe_before(now),
                sent_data_unanswered: rng.maybe_before(now),
                recv_any: rng.maybe_before(now),
                recv_data: rng.maybe_before(now),
                session: (rng.next() % 4 != 0).then(|| SessionInfo {
                    created: rng.before(now),
                    we_initiated: rng.next() % 2 == 0,
                    last_minute_done: rng.next() % 2 == 0,
                    sent_messages: if rng.next() % 50 == 0 {
                        REKEY_AFTER_MESSAGES
                    } else {
                        10
                    },
                }),
                pending: (rng.next() % 3 == 0).then(|| Pending {
                    sent: rng.before(now),
                    retries: (rng.next() % 20) as u32,
                    jitter: rng.time(334),
                }),
                handshake_sent: rng.maybe_before(now),
                session_derived: rng.maybe_before(now),
                persistent_keepalive: (rng.next() % 2 == 0)
                    .then(|| rng.time(60_000) + Duration::from_millis(1)),
                want_session: rng.next() % 4 == 0,
                can_initiate: rng.next() % 4 != 0,
            };
            if due(&t, &ev) != Due::default() {
                // The handshaker acts on it first, then asks again.
                continue;
            }
            let next = next_due(&t, &ev);
            checked += 1;
            sleeping_for_good += usize::from(next.is_none());
            let end = next.unwrap_or(now + Duration::from_millis(3 * SPAN));
            // Spread over the wait, every 10 ms of its first 2 s, and its
            // last millisecond.
            let samples = (1..=40u32)
                .map(|k| now + (end.saturating_sub(now)) * k / 41)
                .chain((1..200).map(|k| now + Duration::from_millis(10 * k)))
                .chain(next.map(|n| n.saturating_sub(Duration::from_millis(1))));
            for at in samples {
                if at <= now || Some(at) >= next {
                    continue;
                }
                let d = due(&t, &Events { now: at, ..ev });
                assert_eq!(
                    d,
                    Due::default(),
                    "case {case}: due acts at {at:?}, before next_due {next:?}: {ev:?}"
                );
            }
        }
        assert!(
            checked > 5_000 && sleeping_for_good > 100,
            "{checked}, {sleeping_for_good}"
        );
    }

    #[test]
    fn test_overrides_parse_and_are_checked() {
        let t = Timing::default()
            .with_overrides("rekey_after=10, reject_after=20,keepalive=0.5")
            .unwrap();
        assert_eq!(t.rekey_after_time, s(10));
        assert_eq!(t.reject_after_time, s(20));
        assert_eq!(t.keepalive_timeout, Duration::from_millis(500));
        assert_eq!(t.rekey_timeout, s(5), "others keep their defaults");
        assert!(Timing::default().with_overrides("bogus=1").is_err());
        assert!(Timing::default().with_overrides("rekey_after").is_err());
        assert!(Timing::default().with_overrides("keepalive=-1").is_err());
        assert!(Timing::default()
            .with_overrides("reject_after=100")
            .is_err());
    }

    #[test]
    fn a_waiting_packet_starts_a_handshake() {
        let t = Timing::default();
        let ev = Events {
            now: s(1),
            want_session: true,
            can_initiate: true,
            ..Events::default()
        };
        assert_eq!(due(&t, &ev).initiate, Some(Initiate::New));
    }
}
