//! The responder's defences against handshake floods (PROTOCOL.md §7.2):
//! knowing when we are under load, the rotating cookie secret, and a
//! per-source token bucket. Time and random bytes are passed in.

use super::handshake::make_cookie;
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
/// Sources tracked at most; beyond that new sources are refused until the
/// table is cleaned, so a spoofed-address flood cannot grow memory.
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
            if self.buckets.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
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

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let newcomer: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(!r.allow(newcomer, ms(10)), "full table refuses new sources");
        assert!(r.allow(newcomer, ms(300)), "idle buckets were forgotten");
        assert_eq!(r.tracked(), 1);
    }
}
