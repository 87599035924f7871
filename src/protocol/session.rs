//! Transport data (whitepaper §5.4.6): sealing and opening type-4 messages in
//! place, the replay window, and the inner IP packet check. Nothing here
//! allocates; these functions run once per packet.

use std::net::IpAddr;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::ZeroizeOnDrop;

use super::keys::Key;
use super::messages::{array_at, TransportHeader, HEADER_LEN, MIN_TRANSPORT_LEN};
use crate::sys::mem::overwrite;

/// Send counter at which a new handshake is started.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// No counter at or above this is sent or accepted: wireguard-go's value,
/// 2^64 − 2^13 − 1.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

const RING_WORDS: usize = 128;
/// How far behind the largest accepted counter a packet may be: the ring
/// less the word being filled.
const WINDOW: u64 = (RING_WORDS as u64 - 1) * 64;

/// Which counters were seen (whitepaper §5.4.6): a ring of 128 bit words
/// following the largest counter accepted so far.
#[derive(Clone)]
pub struct ReplayWindow {
    last: u64,
    ring: [u64; RING_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    pub fn new() -> Self {
        ReplayWindow {
            last: 0,
            ring: [0; RING_WORDS],
        }
    }

    /// Whether `counter` would be accepted; a cheap test before decrypting.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.last {
            return true;
        }
        if self.last - counter > WINDOW {
            return false;
        }
        let (word, bit) = Self::position(counter);
        self.ring[word] & bit == 0
    }

    /// Checks and records `counter`; call only after the packet decrypted,
    /// so forged packets cannot move the window.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter > self.last {
            // Words between the old and new front hold stale bits.
            let old_block = self.last / 64;
            let stale = (counter / 64 - old_block).min(RING_WORDS as u64);
            for i in 1..=stale {
                self.ring[((old_block + i) % RING_WORDS as u64) as usize] = 0;
            }
            self.last = counter;
        }
        let (word, bit) = Self::position(counter);
        self.ring[word] |= bit;
        true
    }

    fn position(counter: u64) -> (usize, u64) {
        let word = (counter / 64) % RING_WORDS as u64;
        (word as usize, 1 << (counter % 64))
    }
}

/// Length after padding with zeros to a multiple of 16, but not beyond the
/// MTU (and never below `len`, even above the MTU).
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let rounded = len.checked_next_multiple_of(16).unwrap_or(len);
    rounded.min(mtu.max(len))
}

/// The AEAD of one direction of a session: ring's ChaCha20-Poly1305, which
/// picks its SIMD code at run time and measured 3.5 times faster than the
/// chacha20poly1305 crate on full packets and 6 times on small ones, as fast
/// as aws-lc-rs and faster than the system libcrypto through the openssl
/// crate (benches/crypto.rs, README "The data-path AEAD"). The handshake
/// keeps chacha20poly1305: it runs a few times per two minutes.
///
/// ring does not wipe keys: `LessSafeKey` holds the ChaCha20 key as eight
/// words inline, with neither `Drop` nor `Zeroize`. So dropping a
/// `SessionKey` overwrites it in place with the all-zero key.
#[derive(Clone)]
pub struct SessionKey(LessSafeKey);

impl SessionKey {
    pub fn new(key: &Key) -> Self {
        SessionKey(less_safe_key(key))
    }

    fn erase(&mut self) {
        overwrite(&mut self.0, less_safe_key(&[0; 32]));
    }
}

impl Drop for SessionKey {
    fn drop(&mut self) {
        self.erase();
    }
}

impl ZeroizeOnDrop for SessionKey {}

fn less_safe_key(key: &Key) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// Transport nonce: 4 zero bytes, then the counter little-endian. Unique per
/// key because a counter is sent once and never reused (`REJECT_AFTER_MESSAGES`
/// forces a new key before it could wrap).
fn nonce(counter: u64) -> Nonce {
    let mut nonce = [0; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// Turns `buf` into a type-4 message in place. On entry `buf[..16]` is free
/// room for the header and the plaintext is `buf[16..16 + plain_len]`.
/// Returns the datagram length, `32 + padded_len(plain_len, mtu)`, or `None`
/// (buffer untouched) if `buf` is shorter than that.
pub fn seal_in_place(
    key: &SessionKey,
    receiver: u32,
    counter: u64,
    buf: &mut [u8],
    plain_len: usize,
    mtu: usize,
) -> Option<usize> {
    let padded = padded_len(plain_len, mtu);
    let total = padded.checked_add(MIN_TRANSPORT_LEN)?;
    let (header, rest) = buf.get_mut(..total)?.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(padded);
    body[plain_len..].fill(0);
    let computed = key
        .0
        .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
        .ok()?;
    tag.copy_from_slice(computed.as_ref());
    TransportHeader { receiver, counter }.write(header);
    Some(total)
}

/// Opens a whole type-4 message in place with the counter from its header.
/// On success the plaintext is `datagram[16..16 + n]`, `n` returned.
#[allow(clippy::result_unit_err)] // the only failure is "does not authenticate"
pub fn open_in_place(key: &SessionKey, counter: u64, datagram: &mut [u8]) -> Result<usize, ()> {
    if datagram.len() < MIN_TRANSPORT_LEN {
        return Err(());
    }
    let plain = key
        .0
        .open_in_place(nonce(counter), Aad::empty(), &mut datagram[HEADER_LEN..])
        .map_err(|_| ())?;
    Ok(plain.len())
}

/// The length of the plaintext [`open_in_place`] left in a datagram of
/// `len` bytes that opened: all but the header and the tag.
pub fn opened_len(len: usize) -> usize {
    len.saturating_sub(MIN_TRANSPORT_LEN)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerError {
    Empty,
    BadVersion,
    /// Shorter than the fixed IP header.
    Truncated,
    /// The header states a length the packet does not have.
    BadLength,
}

impl InnerError {
    /// Name for drop counters.
    pub fn reason(self) -> &'static str {
        match self {
            InnerError::Empty => "empty",
            InnerError::BadVersion => "bad_version",
            InnerError::Truncated => "truncated",
            InnerError::BadLength => "bad_length",
        }
    }
}

/// What the decryptor needs of a decrypted packet: its real length (without
/// padding) and addresses (for the allowed-IPs check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerPacket {
    pub len: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Validates the IP header of a decrypted, non-empty plaintext; its length
/// field tells where the padding starts (whitepaper §5.4.6).
pub fn inner_packet(plain: &[u8]) -> Result<InnerPacket, InnerError> {
    let first = plain.first().ok_or(InnerError::Empty)?;
    let (header_len, len, src, dst) = match first >> 4 {
        4 if plain.len() >= 20 => {
            let total = u16::from_be_bytes(array_at(plain, 2));
            let src: [u8; 4] = array_at(plain, 12);
            let dst: [u8; 4] = array_at(plain, 16);
            (20, usize::from(total), src.into(), dst.into())
        }
        6 if plain.len() >= 40 => {
            let payload = u16::from_be_bytes(array_at(plain, 4));
            let src: [u8; 16] = array_at(plain, 8);
            let dst: [u8; 16] = array_at(plain, 24);
            (40, 40 + usize::from(payload), src.into(), dst.into())
        }
        4 | 6 => return Err(InnerError::Truncated),
        _ => return Err(InnerError::BadVersion),
    };
    if len < header_len || len > plain.len() {
        return Err(InnerError::BadLength);
    }
    Ok(InnerPacket { len, src, dst })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::tests::{key, VECTORS};
    use crate::protocol::messages::hex;

    const INITIATOR_INDEX: u32 = 0x0403_0201;
    const RESPONDER_INDEX: u32 = 0x0d0c_0b0a;
    const MTU: usize = 1420;

    #[test]
    fn vector_keepalive_and_data_packets() {
        for v in &VECTORS {
            // Initiator -> responder keepalive with T1.
            let mut buf = [0xaa; 40];
            let n = seal_in_place(
                &SessionKey::new(&key(v.t1)),
                RESPONDER_INDEX,
                0,
                &mut buf,
                0,
                MTU,
            );
            assert_eq!(n, Some(32));
            assert_eq!(buf[..32].to_vec(), hex(v.keepalive));
            assert_eq!(buf[32..], [0xaa; 8], "nothing written past the datagram");
            assert_eq!(
                open_in_place(&SessionKey::new(&key(v.t1)), 0, &mut buf[..32]),
                Ok(0)
            );

            // Responder -> initiator "hello" with T2, padded to 16.
            let mut buf = [0xaa; 64];
            buf[16..21].copy_from_slice(b"hello");
            let key2 = SessionKey::new(&key(v.t2));
            assert_eq!(
                seal_in_place(&key2, INITIATOR_INDEX, 0, &mut buf, 5, MTU),
                Some(48)
            );
            assert_eq!(buf[..48].to_vec(), hex(v.data));
            assert_eq!(open_in_place(&key2, 0, &mut buf[..48]), Ok(16));
            assert_eq!(&buf[16..32], b"hello\0\0\0\0\0\0\0\0\0\0\0");
        }
    }

    fn sealed_hello(counter: u64) -> (SessionKey, [u8; 48]) {
        let key = SessionKey::new(&[7; 32]);
        let mut buf = [0; 48];
        buf[16..21].copy_from_slice(b"hello");
        assert_eq!(seal_in_place(&key, 1, counter, &mut buf, 5, MTU), Some(48));
        (key, buf)
    }

    #[test]
    fn tampering_fails_to_open() {
        let (key, sealed) = sealed_hello(3);
        for at in [16, 31, 32, 47] {
            let mut bad = sealed;
            bad[at] ^= 1;
            assert_eq!(open_in_place(&key, 3, &mut bad), Err(()), "byte {at}");
        }
        let mut copy = sealed;
        assert_eq!(open_in_place(&key, 4, &mut copy), Err(()), "wrong counter");
        let mut copy = sealed;
        let other = SessionKey::new(&[8; 32]);
        assert_eq!(open_in_place(&other, 3, &mut copy), Err(()), "wrong key");
        let mut copy = sealed;
        assert_eq!(
            open_in_place(&key, 3, &mut copy[..47]),
            Err(()),
            "truncated"
        );
        for len in 0..MIN_TRANSPORT_LEN {
            assert_eq!(open_in_place(&key, 3, &mut [0; 32][..len]), Err(()));
        }
        let mut copy = sealed;
        assert_eq!(open_in_place(&key, 3, &mut copy), Ok(16));
        assert_eq!(opened_len(copy.len()), 16);
    }

    #[test]
    fn dropping_a_key_overwrites_it_with_zeros() {
        fn zeroed_on_drop<T: ZeroizeOnDrop>() {}
        zeroed_on_drop::<SessionKey>();
        let (mut key, mut sealed) = sealed_hello(3);
        key.erase();
        assert_eq!(open_in_place(&key, 3, &mut sealed), Err(()), "old key gone");
        let zero = SessionKey::new(&[0; 32]);
        let seal = |k: &SessionKey| {
            let mut buf = [0; 48];
            seal_in_place(k, 1, 3, &mut buf, 5, MTU).unwrap();
            buf
        };
        assert_eq!(seal(&key), seal(&zero), "it is the all-zero key now");
    }

    #[test]
    fn seal_needs_room_for_padding_and_tag() {
        let key = SessionKey::new(&[7; 32]);
        let mut buf = [0x5a; 47];
        assert_eq!(seal_in_place(&key, 1, 0, &mut buf, 5, MTU), None);
        assert_eq!(buf, [0x5a; 47], "untouched on refusal");
        assert_eq!(seal_in_place(&key, 1, 0, &mut buf, 40, MTU), None);
        assert_eq!(seal_in_place(&key, 1, 0, &mut [], 0, MTU), None);
        assert_eq!(seal_in_place(&key, 1, 0, &mut buf, usize::MAX, MTU), None);
    }

    #[test]
    fn full_mtu_round_trip() {
        let key = SessionKey::new(&[1; 32]);
        let mut buf = vec![0; MTU + MIN_TRANSPORT_LEN];
        for (i, b) in buf[16..16 + 1419].iter_mut().enumerate() {
            *b = i as u8;
        }
        let n = seal_in_place(&key, 9, 77, &mut buf, 1419, MTU).unwrap();
        assert_eq!(n, MTU + MIN_TRANSPORT_LEN);
        let header = TransportHeader::parse(&buf[..n]).unwrap();
        assert_eq!((header.receiver, header.counter), (9, 77));
        assert_eq!(open_in_place(&key, header.counter, &mut buf[..n]), Ok(MTU));
        assert!(buf[16..16 + 1419]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == i as u8));
        assert_eq!(buf[16 + 1419], 0);
    }

    #[test]
    fn padding() {
        for (len, mtu, padded) in [
            (0, MTU, 0),
            (1, MTU, 16),
            (16, MTU, 16),
            (59, MTU, 64),
            (1409, MTU, 1420),
            (1419, MTU, 1420),
            (1420, MTU, 1420),
            (1421, MTU, 1421),
            (1500, MTU, 1500),
            (usize::MAX, MTU, usize::MAX),
        ] {
            assert_eq!(padded_len(len, mtu), padded, "len {len}");
        }
    }

    #[test]
    fn replay_in_order_and_duplicates() {
        let mut w = ReplayWindow::new();
        for c in 0..200 {
            assert!(w.check(c));
            assert!(w.check(c), "check does not record");
            assert!(w.update(c));
            assert!(!w.check(c));
            assert!(!w.update(c));
        }
    }

    #[test]
    fn replay_reordered_inside_window() {
        let mut w = ReplayWindow::new();
        assert!(w.update(100));
        for c in [50, 99, 0, 64, 63, 101] {
            assert!(w.update(c), "{c}");
        }
        for c in [50, 99, 0, 64, 63, 101, 100] {
            assert!(!w.update(c), "{c} again");
        }
        assert!(w.update(1));
    }

    #[test]
    fn replay_window_edge() {
        let mut w = ReplayWindow::new();
        let last = WINDOW + 1000;
        assert!(w.update(last));
        assert!(!w.check(last - WINDOW - 1), "just beyond the edge");
        assert!(!w.update(0));
        assert!(w.update(last - WINDOW), "exactly at the edge");
        assert!(!w.update(last - WINDOW), "and only once");
    }

    #[test]
    fn replay_jump_ahead() {
        let mut w = ReplayWindow::new();
        for c in [0, 5, 134, 200] {
            assert!(w.update(c));
        }
        // Same ring word and bit as 134: the jump must clear stale bits.
        assert!(w.update(134 + 128 * 64));
        assert!(!w.update(5), "now too old");
        assert!(!w.update(200), "still in the window: duplicate");
        assert!(w.update(201));

        assert!(w.update(1_000_000));
        assert!(!w.update(1_000_000 - WINDOW - 1));
        assert!(w.update(999_999));
        assert!(w.update(1_000_000 - WINDOW));
    }

    #[test]
    fn replay_rejects_counters_past_the_limit() {
        let mut w = ReplayWindow::new();
        assert!(!w.check(REJECT_AFTER_MESSAGES));
        assert!(!w.update(REJECT_AFTER_MESSAGES));
        assert!(!w.update(u64::MAX));
        assert!(w.update(REJECT_AFTER_MESSAGES - 1));
        assert!(!w.update(REJECT_AFTER_MESSAGES - 1));
        assert_eq!(u128::from(REJECT_AFTER_MESSAGES), (1 << 64) - (1 << 13) - 1);
    }

    /// An IPv4 header stating `total_len`, in a plaintext of `buffer_len`.
    fn ipv4(total_len: u16, buffer_len: usize) -> Vec<u8> {
        let mut p = vec![0; buffer_len.max(20)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total_len.to_be_bytes());
        p[12..16].copy_from_slice(&[10, 96, 0, 1]);
        p[16..20].copy_from_slice(&[10, 96, 0, 2]);
        p.truncate(buffer_len);
        p
    }

    fn ipv6(payload_len: u16, buffer_len: usize) -> Vec<u8> {
        let mut p = vec![0; buffer_len.max(40)];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[23] = 1;
        p[39] = 2;
        p.truncate(buffer_len);
        p
    }

    #[test]
    fn inner_ipv4() {
        let got = inner_packet(&ipv4(28, 32)).unwrap();
        assert_eq!(got.len, 28, "padding trimmed");
        assert_eq!(got.src, "10.96.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(got.dst, "10.96.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(inner_packet(&ipv4(20, 20)).unwrap().len, 20);
        assert_eq!(inner_packet(&ipv4(20, 19)), Err(InnerError::Truncated));
        assert_eq!(inner_packet(&ipv4(19, 32)), Err(InnerError::BadLength));
        assert_eq!(inner_packet(&ipv4(0, 32)), Err(InnerError::BadLength));
        assert_eq!(inner_packet(&ipv4(33, 32)), Err(InnerError::BadLength));
    }

    #[test]
    fn inner_ipv6() {
        let got = inner_packet(&ipv6(8, 64)).unwrap();
        assert_eq!(got.len, 48, "padding trimmed");
        assert_eq!(got.src, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(got.dst, "::2".parse::<IpAddr>().unwrap());
        assert_eq!(inner_packet(&ipv6(0, 40)).unwrap().len, 40);
        assert_eq!(inner_packet(&ipv6(0, 39)), Err(InnerError::Truncated));
        assert_eq!(inner_packet(&ipv6(25, 64)), Err(InnerError::BadLength));
        assert_eq!(
            inner_packet(&ipv6(u16::MAX, 64)),
            Err(InnerError::BadLength)
        );
    }

    #[test]
    fn inner_other_versions() {
        assert_eq!(inner_packet(&[]), Err(InnerError::Empty));
        for first in [0x00, 0x50, 0xf0] {
            let mut p = ipv4(20, 40);
            p[0] = first;
            assert_eq!(inner_packet(&p), Err(InnerError::BadVersion));
        }
        let names = [
            InnerError::Empty,
            InnerError::BadVersion,
            InnerError::Truncated,
            InnerError::BadLength,
        ]
        .map(InnerError::reason);
        assert_eq!(names, ["empty", "bad_version", "truncated", "bad_length"]);
    }
}
