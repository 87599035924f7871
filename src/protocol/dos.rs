//! The responder's defences against handshake floods (whitepaper §5.3,
//! §5.4.7): knowing when we are under load, the rotating cookie
//! secret, a per-source token bucket, and [`Gate`], which puts them together.
//! Time and random bytes are passed in.

use super::handshake::{make_cookie, verify_mac2};
use super::keys::Key;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The cookie secret is replaced when it is this old.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// "Under load" lasts this long after the last busy observation.
pub const UNDER_LOAD_LINGER: Duration = Duration::from_secs(1);
/// Token bucket per source address: sustained handshakes per second, burst.
pub const HANDSHAKES_PER_SECOND: u32 = 20;
pub const HANDSHAKE_BURST: u32 = 5;
/// Sources tracked at most, so memory stays bounded; when the table is full
/// the least recently seen source is forgotten, never a new one refused.
pub const MAX_TRACKED_SOURCES: usize = 4096;

/// Remembers when the handshake queue was last seen busy.
#[derive(Debug, Default)]
pub struct LoadMeter {
    last_busy: Option<Duration>,
}

impl LoadMeter {
    pub fn observe(&mut self, busy: bool, now: Duration) {
        if busy {
            self.last_busy = Some(now);
        }
    }

    pub fn under_load(&self, now: Duration) -> bool {
        self.last_busy
            .is_some_and(|t| now.saturating_sub(t) < UNDER_LOAD_LINGER)
    }
}

/// The secret cookies are made from, renewed every two minutes.
#[derive(Default)]
pub struct CookieSecret {
    secret: Key,
    made: Option<Duration>,
}

impl CookieSecret {
    /// The cookie for `src` now; `fresh` gives new random bytes when the
    /// secret is missing or too old.
    pub fn cookie(
        &mut self,
        now: Duration,
        src: SocketAddr,
        fresh: impl FnOnce() -> Key,
    ) -> [u8; 16] {
        if self
            .made
            .is_none_or(|t| now.saturating_sub(t) >= COOKIE_SECRET_LIFETIME)
        {
            self.secret = fresh();
            self.made = Some(now);
        }
        make_cookie(&self.secret, src)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in millionths, refilled continuously.
    micro_tokens: u64,
    at: Duration,
}

/// Per-source-address token buckets for handshake initiations.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

const MICRO: u64 = 1_000_000;

impl RateLimiter {
    /// Takes a token for `ip`; false when it has none left.
    pub fn allow(&mut self, ip: IpAddr, now: Duration) -> bool {
        let full = u64::from(HANDSHAKE_BURST) * MICRO;
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            self.forget_idle(now);
            self.forget_least_recent();
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            micro_tokens: full,
            at: now,
        });
        let elapsed = now.saturating_sub(b.at).as_micros() as u64;
        b.micro_tokens = (b.micro_tokens + elapsed * u64::from(HANDSHAKES_PER_SECOND)).min(full);
        b.at = now;
        if b.micro_tokens >= MICRO {
            b.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely: they hold no state.
    pub fn forget_idle(&mut self, now: Duration) {
        let refill = Duration::from_micros(
            u64::from(HANDSHAKE_BURST) * MICRO / u64::from(HANDSHAKES_PER_SECOND),
        );
        self.buckets
            .retain(|_, b| now.saturating_sub(b.at) < refill);
    }

    /// Makes room when the table is still full: a forgotten source starts
    /// again with a full bucket, which is less harm than refusing a source
    /// never seen (only senders that proved their address with mac2 get here).
    fn forget_least_recent(&mut self) {
        if self.buckets.len() < MAX_TRACKED_SOURCES {
            return;
        }
        if let Some(oldest) = self
            .buckets
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(ip, _)| *ip)
        {
            self.buckets.remove(&oldest);
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// What to do with a type 1 or 2 message whose mac1 is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go on with the Diffie-Hellman work.
    Process,
    /// Under load and no valid mac2: answer with a cookie reply carrying this
    /// cookie, and nothing else.
    SendCookie([u8; 16]),
    /// Under load, mac2 valid, but its source address has no token left.
    RateLimited,
}

/// The responder's admission rules, as the kernel and wireguard-go apply
/// them. Not under load, nothing is limited: the bounded handshake queue
/// protects the CPU, and a per-source limit there would let anyone who spoofs
/// a client's address (mac1 needs only our public key) starve that client.
/// Under load, only a valid mac2 (proof that the sender receives at its
/// address) lets a message on, and then through the per-source limiter.
#[derive(Default)]
pub struct Gate {
    pub load: LoadMeter,
    cookie_secret: CookieSecret,
    limiter: RateLimiter,
}

impl Gate {
    /// `msg` is a whole type 1 or 2 message from `src` with a valid mac1.
    pub fn admit(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Duration,
        fresh: impl FnOnce() -> Key,
    ) -> Admission {
        if !self.load.under_load(now) {
            return Admission::Process;
        }
        let cookie = self.cookie_secret.cookie(now, src, fresh);
        if !verify_mac2(&cookie, msg) {
            Admission::SendCookie(cookie)
        } else if self.limiter.allow(src.ip(), now) {
            Admission::Process
        } else {
            Admission::RateLimited
        }
    }

    /// Forgets the buckets that hold no state (called on every timer tick).
    pub fn forget_idle(&mut self, now: Duration) {
        self.limiter.forget_idle(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::{create_initiation, tai64n, LocalStatic, PeerStatic};
    use crate::protocol::keys::PrivateKey;

    const fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn load_lingers_for_one_second() {
        let mut m = LoadMeter::default();
        assert!(!m.under_load(ms(0)));
        m.observe(true, ms(100));
        m.observe(false, ms(500));
        assert!(m.under_load(ms(1099)));
        assert!(!m.under_load(ms(1100)));
    }

    #[test]
    fn cookie_is_stable_then_rotates_after_two_minutes() {
        let src: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let mut s = CookieSecret::default();
        let mut n = 0u8;
        let mut fresh = || {
            n += 1;
            [n; 32]
        };
        let c1 = s.cookie(ms(0), src, &mut fresh);
        assert_eq!(
            c1,
            make_cookie(&[1; 32], src),
            "cookie = MAC(secret, source)"
        );
        assert_eq!(s.cookie(ms(119_999), src, &mut fresh), c1);
        let c2 = s.cookie(ms(120_000), src, &mut fresh);
        assert_ne!(c2, c1, "a new secret after 120 s");
        let other: SocketAddr = "192.0.2.7:4001".parse().unwrap();
        assert_ne!(
            s.cookie(ms(120_001), other, &mut fresh),
            c2,
            "the port counts"
        );
    }

    #[test]
    fn rate_limit_allows_a_burst_then_twenty_per_second() {
        let mut r = RateLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..HANDSHAKE_BURST {
            assert!(r.allow(ip, ms(0)));
        }
        assert!(!r.allow(ip, ms(0)), "burst used up");
        assert!(!r.allow(ip, ms(40)), "under one token after 40 ms");
        assert!(r.allow(ip, ms(50)), "one token per 50 ms");
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(r.allow(other, ms(50)), "sources are independent");
    }

    #[test]
    fn the_table_is_bounded_and_cleaned() {
        let mut r = RateLimiter::default();
        for i in 0..MAX_TRACKED_SOURCES as u32 {
            assert!(r.allow(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), ms(0)));
        }
        // The first source spends its burst again later: the most recent one.
        let first = IpAddr::from(0x0a00_0000u32.to_be_bytes());
        for _ in 1..HANDSHAKE_BURST {
            assert!(r.allow(first, ms(5)));
        }
        let newcomer: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(
            r.allow(newcomer, ms(10)),
            "a full table still admits a new source"
        );
        assert_eq!(r.tracked(), MAX_TRACKED_SOURCES, "by forgetting another");
        assert!(
            !r.allow(first, ms(10)),
            "the most recent one was kept, empty"
        );
        for _ in 1..HANDSHAKE_BURST {
            assert!(r.allow(newcomer, ms(10)));
        }
        assert!(
            !r.allow(newcomer, ms(10)),
            "the newcomer is limited as any other"
        );
        r.forget_idle(ms(300));
        assert_eq!(r.tracked(), 0, "idle buckets were forgotten");
    }

    const SRC: &str = "192.0.2.7:4000";

    /// An initiation with mac2 made from `cookie`, or zeros.
    fn message(cookie: Option<&[u8; 16]>) -> [u8; 148] {
        let local = LocalStatic::new(PrivateKey::from_bytes([0x11; 32]));
        let peer = PeerStatic::new(
            &local,
            PrivateKey::from_bytes([0x22; 32]).public_key(),
            None,
        )
        .unwrap();
        let ephemeral = PrivateKey::from_bytes([0x33; 32]);
        create_initiation(&local, &peer, ephemeral, tai64n(1, 0), 1, cookie)
            .unwrap()
            .1
    }

    fn under_load(now: Duration) -> Gate {
        let mut g = Gate::default();
        g.load.observe(true, now);
        g
    }

    #[test]
    fn not_under_load_nothing_is_limited() {
        let mut g = Gate::default();
        let src = SRC.parse().unwrap();
        for i in 0..1000 {
            // As a spoofed flood from one address at 1000/s would come.
            assert_eq!(
                g.admit(&message(None), src, ms(i), || [1; 32]),
                Admission::Process,
                "message {i}"
            );
        }
    }

    #[test]
    fn under_load_without_mac2_only_a_cookie() {
        let mut g = under_load(ms(0));
        let src: SocketAddr = SRC.parse().unwrap();
        let want = make_cookie(&[1; 32], src);
        for _ in 0..2 * HANDSHAKE_BURST {
            assert_eq!(
                g.admit(&message(None), src, ms(1), || [1; 32]),
                Admission::SendCookie(want)
            );
        }
        let wrong = message(Some(&[0xee; 16]));
        assert_eq!(
            g.admit(&wrong, src, ms(2), || [1; 32]),
            Admission::SendCookie(want)
        );
        // The cookie is bound to the address and port it was sent to.
        let other: SocketAddr = "192.0.2.7:4001".parse().unwrap();
        assert_eq!(
            g.admit(&message(Some(&want)), other, ms(3), || [1; 32]),
            Admission::SendCookie(make_cookie(&[1; 32], other))
        );
    }

    #[test]
    fn under_load_a_valid_mac2_goes_through_the_limiter() {
        let mut g = under_load(ms(0));
        let src: SocketAddr = SRC.parse().unwrap();
        let with_mac2 = message(Some(&make_cookie(&[1; 32], src)));
        for _ in 0..HANDSHAKE_BURST {
            assert_eq!(
                g.admit(&with_mac2, src, ms(1), || [1; 32]),
                Admission::Process
            );
        }
        assert_eq!(
            g.admit(&with_mac2, src, ms(1), || [1; 32]),
            Admission::RateLimited
        );
        // Load over: the same source is not limited any more.
        assert_eq!(
            g.admit(&with_mac2, src, ms(1000), || [1; 32]),
            Admission::Process
        );
    }
}
