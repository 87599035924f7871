//! The WireGuard handshake: Noise_IKpsk2 written out (whitepaper §5.4.2–§5.4.5),
//! mac1 and mac2 (whitepaper §5.4.4), cookie replies (whitepaper §5.4.7) and
//! TAI64N timestamps (whitepaper §5.4.2).
//!
//! Callers supply ephemeral private keys, indices, timestamps and nonces, and
//! do the checks that need state: mac1 before `consume_*`, peer lookup,
//! timestamp replay and flood limits, receiver-index matching.

use std::net::{IpAddr, SocketAddr};

use blake2::digest::consts::U16;
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{AeadInPlace, Nonce};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Mac, SimpleHmac};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::keys::{Key, PresharedKey, PrivateKey, PublicKey};
use super::messages::{CookieReply, Initiation, Response, INITIATION_LEN, RESPONSE_LEN, TAG_LEN};

/// C0 = HASH("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"), the first chaining key.
const C0: Key = [
    0x60, 0xe2, 0x6d, 0xae, 0xf3, 0x27, 0xef, 0xc0, 0x2e, 0xc3, 0x35, 0xe2, 0xa0, 0x25, 0xd2, 0xd0,
    0x16, 0xeb, 0x42, 0x06, 0xf8, 0x72, 0x77, 0xf5, 0x2d, 0x38, 0xd1, 0x98, 0x8b, 0x78, 0xcd, 0x36,
];
/// H0 = HASH(C0 || "WireGuard v1 zx2c4 Jason@zx2c4.com"), the first hash.
const H0: Key = [
    0x22, 0x11, 0xb3, 0x61, 0x08, 0x1a, 0xc5, 0x66, 0x69, 0x12, 0x43, 0xdb, 0x45, 0x8a, 0xd5, 0x32,
    0x2d, 0x9c, 0x6c, 0x66, 0x22, 0x93, 0xe8, 0xb7, 0x0e, 0xe1, 0x9c, 0x65, 0xba, 0x07, 0x9e, 0xf3,
];
const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";
/// mac1 and mac2 are the last 32 bytes of types 1 and 2.
const MACS_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// A public key whose DH result is all zeros, refused as kernel WireGuard
    /// and wireguard-go refuse it.
    LowOrderKey,
    Decrypt,
    BadMac,
    /// The initiation came from another peer than the one answering it.
    UnexpectedPeer,
    /// The peer's keys were made while we had no private key: there is no
    /// static-static DH to initiate with.
    NoPrivateKey,
}

impl HandshakeError {
    /// Name for drop counters.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::LowOrderKey => "low_order_key",
            HandshakeError::Decrypt => "decrypt",
            HandshakeError::BadMac => "bad_mac",
            HandshakeError::UnexpectedPeer => "unexpected_peer",
            HandshakeError::NoPrivateKey => "no_private_key",
        }
    }
}

/// Our own static key pair and the keys derived from it for messages sent
/// *to* us (mac1) and cookie replies sent *by* us.
#[derive(Clone)]
pub struct LocalStatic {
    pub private: PrivateKey,
    pub public: PublicKey,
    mac1_key: Key,
    cookie_key: Key,
}

impl LocalStatic {
    pub fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        LocalStatic {
            private,
            public,
            mac1_key: hash(&[LABEL_MAC1, public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, public.as_bytes()]),
        }
    }
}

/// A configured peer, with what can be computed once per peer: the
/// static-static DH, mac1 key for messages to it, key of its cookie replies.
#[derive(Clone)]
pub struct PeerStatic {
    pub public: PublicKey,
    psk: PresharedKey,
    /// None while we have no private key (see [`PeerStatic::without_local`]).
    static_dh: Option<Zeroizing<Key>>,
    mac1_key: Key,
    cookie_key: Key,
}

impl PeerStatic {
    /// Refuses low-order keys: with our clamped private key the DH is all
    /// zeros exactly when `public.is_low_order()`.
    pub fn new(
        local: &LocalStatic,
        public: PublicKey,
        psk: Option<PresharedKey>,
    ) -> Result<Self, HandshakeError> {
        Ok(PeerStatic {
            static_dh: Some(dh(&local.private, public.as_bytes())?),
            ..PeerStatic::without_local(public, psk)?
        })
    }

    /// The peer of an interface that has no private key yet (wireguard-go's
    /// all-zero device key): everything but the static-static DH, which
    /// [`PeerStatic::new`] computes once a key comes. Low-order keys are
    /// refused all the same.
    pub fn without_local(
        public: PublicKey,
        psk: Option<PresharedKey>,
    ) -> Result<Self, HandshakeError> {
        if public.is_low_order() {
            return Err(HandshakeError::LowOrderKey);
        }
        Ok(PeerStatic {
            public,
            psk: psk.unwrap_or_default(),
            static_dh: None,
            mac1_key: hash(&[LABEL_MAC1, public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, public.as_bytes()]),
        })
    }

    /// The PSK (all zeros for none), to compute the peer's keys again from
    /// a new private key of ours.
    pub fn psk(&self) -> &PresharedKey {
        &self.psk
    }
}

/// An initiation we sent and wait to see answered.
pub struct Initiating {
    pub sender_index: u32,
    /// The mac1 we sent: associated data of a cookie reply to it.
    pub mac1: [u8; 16],
    transcript: Transcript,
    ephemeral_private: PrivateKey,
}

/// An initiation that decrypted; the caller still checks its timestamp
/// (replay, flood) before answering it.
pub struct AcceptedInitiation {
    pub peer_public: PublicKey,
    pub timestamp: [u8; 12],
    pub remote_index: u32,
    transcript: Transcript,
    remote_ephemeral: Key,
}

/// Keys of a finished handshake: the initiator sends with T1, the
/// responder with T2 (whitepaper §5.4.5).
#[derive(ZeroizeOnDrop)]
pub struct TransportKeys {
    pub send: Key,
    pub recv: Key,
    pub local_index: u32,
    pub remote_index: u32,
}

/// Builds message 1 (whitepaper §5.4.2). mac2 is MAC(cookie, bytes 0..132) when
/// a cookie is held, else zeros.
pub fn create_initiation(
    local: &LocalStatic,
    peer: &PeerStatic,
    ephemeral_private: PrivateKey,
    timestamp: [u8; 12],
    sender_index: u32,
    cookie: Option<&[u8; 16]>,
) -> Result<(Initiating, [u8; 148]), HandshakeError> {
    let static_dh = peer
        .static_dh
        .as_ref()
        .ok_or(HandshakeError::NoPrivateKey)?;
    let mut t = Transcript::new(&peer.public);
    let ephemeral = *ephemeral_private.public_key().as_bytes();
    t.mix_ephemeral(&ephemeral);
    let k = t.mix_key_and_take(&*dh(&ephemeral_private, peer.public.as_bytes())?);
    let mut encrypted_static = [0; 48];
    t.seal(&k, local.public.as_bytes(), &mut encrypted_static);
    let k = t.mix_key_and_take(static_dh);
    let mut encrypted_timestamp = [0; 28];
    t.seal(&k, &timestamp, &mut encrypted_timestamp);

    let mut bytes = Initiation {
        sender: sender_index,
        ephemeral,
        encrypted_static,
        encrypted_timestamp,
        mac1: [0; 16],
        mac2: [0; 16],
    }
    .to_bytes();
    let mac1 = add_macs(&mut bytes, &peer.mac1_key, cookie);
    let pending = Initiating {
        sender_index,
        mac1,
        transcript: t,
        ephemeral_private,
    };
    Ok((pending, bytes))
}

/// Whether mac1 of a whole type-1 or type-2 message is right for a message
/// sent to us.
pub fn verify_mac1(local: &LocalStatic, msg: &[u8]) -> bool {
    verify_mac(&local.mac1_key, msg, MACS_LEN)
}

/// Whether mac2 of a whole type-1 or type-2 message was made with `cookie`.
pub fn verify_mac2(cookie: &[u8; 16], msg: &[u8]) -> bool {
    verify_mac(cookie, msg, TAG_LEN)
}

/// Responder side of whitepaper §5.4.2: opens the static key and the
/// timestamp; mac1 must have been checked already.
pub fn consume_initiation(
    local: &LocalStatic,
    msg: &Initiation,
) -> Result<AcceptedInitiation, HandshakeError> {
    let mut t = Transcript::new(&local.public);
    t.mix_ephemeral(&msg.ephemeral);
    let k = t.mix_key_and_take(&*dh(&local.private, &msg.ephemeral)?);
    let mut peer_public = [0; 32];
    t.open(&k, &msg.encrypted_static, &mut peer_public)?;
    let k = t.mix_key_and_take(&*dh(&local.private, &peer_public)?);
    let mut timestamp = [0; 12];
    t.open(&k, &msg.encrypted_timestamp, &mut timestamp)?;
    Ok(AcceptedInitiation {
        peer_public: PublicKey::from_bytes(peer_public),
        timestamp,
        remote_index: msg.sender,
        transcript: t,
        remote_ephemeral: msg.ephemeral,
    })
}

/// Builds message 2 (whitepaper §5.4.3) for the peer that sent `accepted`. Our
/// static key already went into `accepted`; `_local` keeps the call shaped like
/// the other three.
pub fn create_response(
    _local: &LocalStatic,
    peer: &PeerStatic,
    accepted: &AcceptedInitiation,
    ephemeral_private: PrivateKey,
    sender_index: u32,
    cookie: Option<&[u8; 16]>,
) -> Result<(TransportKeys, [u8; 92]), HandshakeError> {
    if accepted.peer_public != peer.public {
        return Err(HandshakeError::UnexpectedPeer);
    }
    let mut t = accepted.transcript.clone();
    let ephemeral = *ephemeral_private.public_key().as_bytes();
    t.mix_ephemeral(&ephemeral);
    t.mix_key(&*dh(&ephemeral_private, &accepted.remote_ephemeral)?);
    t.mix_key(&*dh(&ephemeral_private, peer.public.as_bytes())?);
    let k = t.mix_psk(&peer.psk);
    let mut encrypted_nothing = [0; 16];
    t.seal(&k, &[], &mut encrypted_nothing);

    let mut bytes = Response {
        sender: sender_index,
        receiver: accepted.remote_index,
        ephemeral,
        encrypted_nothing,
        mac1: [0; 16],
        mac2: [0; 16],
    }
    .to_bytes();
    add_macs(&mut bytes, &peer.mac1_key, cookie);
    let split = t.split();
    let keys = TransportKeys {
        send: split[1],
        recv: split[0],
        local_index: sender_index,
        remote_index: accepted.remote_index,
    };
    Ok((keys, bytes))
}

/// The mac1 of a response we built: a cookie reply to it is sealed with it as
/// associated data (whitepaper §5.4.7), so it is kept as [`Initiating::mac1`]
/// is.
pub fn response_mac1(response: &[u8; RESPONSE_LEN]) -> [u8; 16] {
    let mut mac1 = [0; 16];
    mac1.copy_from_slice(&response[RESPONSE_LEN - MACS_LEN..RESPONSE_LEN - TAG_LEN]);
    mac1
}

/// Initiator side of whitepaper §5.4.3; mac1 and the receiver index must have
/// been checked already. A PSK mismatch shows up here as `Decrypt`.
pub fn consume_response(
    local: &LocalStatic,
    peer: &PeerStatic,
    pending: &Initiating,
    msg: &Response,
) -> Result<TransportKeys, HandshakeError> {
    let mut t = pending.transcript.clone();
    t.mix_ephemeral(&msg.ephemeral);
    t.mix_key(&*dh(&pending.ephemeral_private, &msg.ephemeral)?);
    t.mix_key(&*dh(&local.private, &msg.ephemeral)?);
    let k = t.mix_psk(&peer.psk);
    t.open(&k, &msg.encrypted_nothing, &mut [])?;
    let split = t.split();
    Ok(TransportKeys {
        send: split[0],
        recv: split[1],
        local_index: pending.sender_index,
        remote_index: msg.sender,
    })
}

/// TAI64N label (whitepaper §5.4.2), as kernel WireGuard and wireguard-go
/// write it: 2^62 + 10 + seconds, then nanoseconds rounded down to
/// a multiple of 2^24 so that the exact clock reading is not revealed.
pub fn tai64n(unix_secs: u64, nanos: u32) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(
        &0x4000_0000_0000_000a_u64
            .saturating_add(unix_secs)
            .to_be_bytes(),
    );
    out[8..].copy_from_slice(&(nanos & !0xff_ffff).to_be_bytes());
    out
}

/// The cookie for a source address: MAC(secret, ip || port big-endian).
/// The encoding is our own choice: only we ever recompute it.
pub fn make_cookie(secret: &[u8; 32], src: SocketAddr) -> [u8; 16] {
    let port = src.port().to_be_bytes();
    match src.ip() {
        IpAddr::V4(ip) => mac(secret, &[&ip.octets(), &port]),
        IpAddr::V6(ip) => mac(secret, &[&ip.octets(), &port]),
    }
}

/// A type-3 message answering the message with sender index `receiver` and
/// mac1 `mac1`, sealed with the cookie key of our own public key.
pub fn create_cookie_reply(
    local: &LocalStatic,
    receiver: u32,
    mac1: &[u8; 16],
    cookie: &[u8; 16],
    nonce: [u8; 24],
) -> [u8; 64] {
    let mut encrypted_cookie = [0; 32];
    let cipher = XChaCha20Poly1305::new(&local.cookie_key.into());
    seal_with(
        &cipher,
        XNonce::from_slice(&nonce),
        mac1,
        cookie,
        &mut encrypted_cookie,
    );
    CookieReply {
        receiver,
        nonce,
        encrypted_cookie,
    }
    .to_bytes()
}

/// The cookie inside a reply from `peer` to a message of ours whose mac1 was
/// `last_mac1_sent`.
pub fn consume_cookie_reply(
    peer: &PeerStatic,
    msg: &CookieReply,
    last_mac1_sent: &[u8; 16],
) -> Result<[u8; 16], HandshakeError> {
    let mut cookie = [0; 16];
    let cipher = XChaCha20Poly1305::new(&peer.cookie_key.into());
    let nonce = XNonce::from_slice(&msg.nonce);
    open_with(
        &cipher,
        nonce,
        last_mac1_sent,
        &msg.encrypted_cookie,
        &mut cookie,
    )?;
    Ok(cookie)
}

/// The Noise symmetric state: chaining key C and hash H.
#[derive(Clone, ZeroizeOnDrop)]
struct Transcript {
    chain: Key,
    hash: Key,
}

impl Transcript {
    /// State after the pre-message (the responder's static key), both roles.
    fn new(responder_public: &PublicKey) -> Self {
        Transcript {
            chain: C0,
            hash: hash(&[&H0, responder_public.as_bytes()]),
        }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.hash = hash(&[&self.hash, data]);
    }

    fn mix_key(&mut self, input: &Key) {
        self.chain = kdf::<1>(&self.chain, input)[0];
    }

    /// MixKey that also yields an AEAD key (KDF_2).
    fn mix_key_and_take(&mut self, input: &Key) -> Zeroizing<Key> {
        let out = kdf::<2>(&self.chain, input);
        self.chain = out[0];
        Zeroizing::new(out[1])
    }

    /// psk mode: each ephemeral key goes into both C and H.
    fn mix_ephemeral(&mut self, ephemeral: &Key) {
        self.mix_key(ephemeral);
        self.mix_hash(ephemeral);
    }

    /// KDF_3 with the preshared key; returns the AEAD key of message 2.
    fn mix_psk(&mut self, psk: &PresharedKey) -> Zeroizing<Key> {
        let out = kdf::<3>(&self.chain, psk.as_bytes());
        self.chain = out[0];
        self.mix_hash(&out[1]);
        Zeroizing::new(out[2])
    }

    /// AEAD with counter 0 and AD = H, then H absorbs the ciphertext.
    fn seal(&mut self, key: &Key, plain: &[u8], out: &mut [u8]) {
        seal_with(
            &ChaCha20Poly1305::new(key.into()),
            &Nonce::<ChaCha20Poly1305>::default(),
            &self.hash,
            plain,
            out,
        );
        self.mix_hash(out);
    }

    fn open(&mut self, key: &Key, sealed: &[u8], out: &mut [u8]) -> Result<(), HandshakeError> {
        let cipher = ChaCha20Poly1305::new(key.into());
        open_with(
            &cipher,
            &Nonce::<ChaCha20Poly1305>::default(),
            &self.hash,
            sealed,
            out,
        )?;
        self.mix_hash(sealed);
        Ok(())
    }

    /// (T1, T2) = KDF_2(C, ε).
    fn split(&self) -> Zeroizing<[Key; 2]> {
        kdf(&self.chain, &[])
    }
}

fn hash(parts: &[&[u8]]) -> Key {
    let mut h = Blake2s256::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// Keyed BLAKE2s with a 16-byte digest (not a truncated hash, not HMAC).
fn mac_state(key: &[u8], parts: &[&[u8]]) -> Blake2sMac<U16> {
    let mut m = <Blake2sMac<U16> as Mac>::new_from_slice(key).expect("MAC keys are 16 or 32 bytes");
    for part in parts {
        m.update(part);
    }
    m
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    mac_state(key, parts).finalize().into_bytes().into()
}

/// Every output is a key or a step towards one, so it is wiped when dropped.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Key> {
    let mut m = <SimpleHmac<Blake2s256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        m.update(part);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// KDF_N of whitepaper §5.4: N outputs chained from one HMAC of the input.
fn kdf<const N: usize>(chain: &Key, input: &[u8]) -> Zeroizing<[Key; N]> {
    let prk = hmac(chain, &[input]);
    let mut out = Zeroizing::new([[0; 32]; N]);
    for i in 0..N {
        let previous: &[u8] = if i == 0 { &[] } else { &out[i - 1] };
        out[i] = *hmac(&prk[..], &[previous, &[i as u8 + 1]]);
    }
    out
}

/// X25519, refusing the all-zero result of a low-order public key.
fn dh(private: &PrivateKey, public: &Key) -> Result<Zeroizing<Key>, HandshakeError> {
    let shared = Zeroizing::new(x25519_dalek::x25519(*private.as_bytes(), *public));
    if shared.iter().fold(0, |acc, b| acc | b) == 0 {
        Err(HandshakeError::LowOrderKey)
    } else {
        Ok(shared)
    }
}

/// Fills in mac1 (and mac2 given a cookie) at the end of a type-1/2 message.
fn add_macs(msg: &mut [u8], mac1_key: &Key, cookie: Option<&[u8; 16]>) -> [u8; 16] {
    let mac1_at = msg.len() - MACS_LEN;
    let mac2_at = msg.len() - TAG_LEN;
    let mac1 = mac(mac1_key, &[&msg[..mac1_at]]);
    msg[mac1_at..mac2_at].copy_from_slice(&mac1);
    if let Some(cookie) = cookie {
        let mac2 = mac(cookie, &[&msg[..mac2_at]]);
        msg[mac2_at..].copy_from_slice(&mac2);
    }
    mac1
}

/// Checks the 16-byte MAC that starts `from_end` bytes before the end of a
/// type-1/2 message, over everything before it, in constant time.
fn verify_mac(key: &[u8], msg: &[u8], from_end: usize) -> bool {
    if msg.len() != INITIATION_LEN && msg.len() != RESPONSE_LEN {
        return false;
    }
    let at = msg.len() - from_end;
    mac_state(key, &[&msg[..at]])
        .verify_slice(&msg[at..at + 16])
        .is_ok()
}

/// `out` = ciphertext of `plain` followed by the tag.
fn seal_with<A: AeadInPlace>(
    cipher: &A,
    nonce: &Nonce<A>,
    ad: &[u8],
    plain: &[u8],
    out: &mut [u8],
) {
    let (body, tag) = out.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    let computed = cipher
        .encrypt_in_place_detached(nonce, ad, body)
        .expect("handshake plaintexts are far below the AEAD length limit");
    tag.copy_from_slice(&computed);
}

/// Opens ciphertext-then-tag `sealed` into `out` (16 bytes shorter).
fn open_with<A: AeadInPlace>(
    cipher: &A,
    nonce: &Nonce<A>,
    ad: &[u8],
    sealed: &[u8],
    out: &mut [u8],
) -> Result<(), HandshakeError> {
    let (body, tag) = sealed.split_at(out.len());
    out.copy_from_slice(body);
    cipher
        .decrypt_in_place_detached(nonce, ad, out, tag.into())
        .map_err(|_| HandshakeError::Decrypt)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::messages::hex;

    /// One of the fixed-key vectors (computed twice independently and
    /// cross-checked against wireguard-go): the parts that depend on the PSK.
    pub(crate) struct Vector {
        pub psk: Key,
        pub response: &'static str,
        pub t1: &'static str,
        pub t2: &'static str,
        pub keepalive: &'static str,
        pub data: &'static str,
    }

    pub(crate) const VECTORS: [Vector; 2] = [
        Vector {
            psk: [0; 32],
            response:
                "020000000a0b0c0d01020304ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c
                1fff3e6b8a649bd9897af42227c5f50ef95e1ea6c102f1abcbbfa4b5ea6ad9abb31ad53600000000
                000000000000000000000000",
            t1: "e07b709efbfd0361a08a9de658ceb3847d648c207ed71d4dbdfe248bef23a651",
            t2: "f76ba55a113d83abf16240859ca361a9017ae9fbac0b4aa43179112c40e0163f",
            keepalive: "040000000a0b0c0d000000000000000069958abbebcb06f97a256144abed28f6",
            data: "040000000102030400000000000000005b64e704907f19ec4e688e888383dc91
                bf18c1f716bf1d21153e3a9e54d5497f",
        },
        Vector {
            psk: [0x55; 32],
            response:
                "020000000a0b0c0d01020304ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c
                1fff3e6bf9377ba5ef80f885482b99c2d0b317dfc7ef3751218e2fc1907d164936e7a9e000000000
                000000000000000000000000",
            t1: "a007faf842d83f5bd3be20a14e0ffcec34c84867b78b051980602713205922de",
            t2: "d982d5cd10d34a7802b6c19fa441cd9164d70e4f4d62007ab416879ee8bd1b99",
            keepalive: "040000000a0b0c0d0000000000000000f1bce9fd9651b3f6b50c00179cbd1e01",
            data: "04000000010203040000000000000000be255c8d73dff002d08eb2dc2d5ace90
                2d9faf32d05b7c0e00b51d701f120544",
        },
    ];

    /// The initiation is the same for both vectors (the PSK enters later).
    const INITIATION: &str = "
        01000000010203047b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b14
        81e498317da959fba46669572516a5e6c021bfa620bb6c56ca0082e1feae14988c2c64d024c61773
        4a263f76a008df04d0f94bad80b4afc2e1c269552bf47392289d5044853e937920bef2c7270a5b5d
        69e7430da76431634196d83600000000000000000000000000000000";
    const TIMESTAMP: &str = "400000006b00000000000000";
    const INITIATOR_INDEX: u32 = 0x0403_0201;
    const RESPONDER_INDEX: u32 = 0x0d0c_0b0a;

    pub(crate) fn key(text: &str) -> Key {
        hex(text).try_into().unwrap()
    }

    fn random_key() -> PrivateKey {
        PrivateKey::random_with(getrandom::getrandom).unwrap()
    }

    /// Both sides of a pair of peers that know each other.
    struct Pair {
        initiator: LocalStatic,
        responder: LocalStatic,
        /// The responder as the initiator configured it, and vice versa.
        responder_peer: PeerStatic,
        initiator_peer: PeerStatic,
    }

    fn pair(initiator: PrivateKey, responder: PrivateKey, psk: Option<Key>) -> Pair {
        let initiator = LocalStatic::new(initiator);
        let responder = LocalStatic::new(responder);
        let psk = || psk.map(PresharedKey::from_bytes);
        Pair {
            responder_peer: PeerStatic::new(&initiator, responder.public, psk()).unwrap(),
            initiator_peer: PeerStatic::new(&responder, initiator.public, psk()).unwrap(),
            initiator,
            responder,
        }
    }

    fn vector_pair(psk: Key) -> Pair {
        pair(
            PrivateKey::from_bytes([0x11; 32]),
            PrivateKey::from_bytes([0x22; 32]),
            Some(psk),
        )
    }

    fn initiate(
        p: &Pair,
        ephemeral: PrivateKey,
        cookie: Option<&[u8; 16]>,
    ) -> (Initiating, [u8; 148]) {
        let ts = tai64n(1_700_000_000, 0);
        create_initiation(&p.initiator, &p.responder_peer, ephemeral, ts, 7, cookie).unwrap()
    }

    fn accept(p: &Pair, bytes: &[u8]) -> Result<AcceptedInitiation, HandshakeError> {
        consume_initiation(&p.responder, &Initiation::parse(bytes).unwrap())
    }

    #[test]
    fn initial_hashes_are_the_protocol_constants() {
        assert_eq!(C0, hash(&[b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"]));
        assert_eq!(H0, hash(&[&C0, b"WireGuard v1 zx2c4 Jason@zx2c4.com"]));
    }

    #[test]
    fn vectors_are_reproduced_byte_for_byte() {
        for v in &VECTORS {
            let p = vector_pair(v.psk);
            assert_eq!(
                p.responder_peer.mac1_key,
                key("2b14c2a1d73fe52519772891d6df632bd2408279e87eb80c61bc395fccadf4a6")
            );
            let (pending, initiation) = create_initiation(
                &p.initiator,
                &p.responder_peer,
                PrivateKey::from_bytes([0x33; 32]),
                hex(TIMESTAMP).try_into().unwrap(),
                INITIATOR_INDEX,
                None,
            )
            .unwrap();
            assert_eq!(initiation.to_vec(), hex(INITIATION));
            assert!(verify_mac1(&p.responder, &initiation));

            let accepted = accept(&p, &initiation).unwrap();
            assert_eq!(accepted.peer_public, p.initiator.public);
            assert_eq!(accepted.timestamp.to_vec(), hex(TIMESTAMP));
            assert_eq!(accepted.remote_index, INITIATOR_INDEX);

            let (responder_keys, response) = create_response(
                &p.responder,
                &p.initiator_peer,
                &accepted,
                PrivateKey::from_bytes([0x44; 32]),
                RESPONDER_INDEX,
                None,
            )
            .unwrap();
            assert_eq!(response.to_vec(), hex(v.response));
            assert!(verify_mac1(&p.initiator, &response));
            assert_eq!(responder_keys.send, key(v.t2));
            assert_eq!(responder_keys.recv, key(v.t1));
            assert_eq!(responder_keys.local_index, RESPONDER_INDEX);
            assert_eq!(responder_keys.remote_index, INITIATOR_INDEX);

            let msg = Response::parse(&response).unwrap();
            let initiator_keys =
                consume_response(&p.initiator, &p.responder_peer, &pending, &msg).unwrap();
            assert_eq!(initiator_keys.send, key(v.t1));
            assert_eq!(initiator_keys.recv, key(v.t2));
            assert_eq!(initiator_keys.local_index, INITIATOR_INDEX);
            assert_eq!(initiator_keys.remote_index, RESPONDER_INDEX);
        }
    }

    #[test]
    fn random_keys_round_trip() {
        for psk in [None, Some(*random_key().as_bytes())] {
            let p = pair(random_key(), random_key(), psk);
            let (pending, initiation) = initiate(&p, random_key(), None);
            assert!(verify_mac1(&p.responder, &initiation));
            let accepted = accept(&p, &initiation).unwrap();
            assert_eq!(accepted.peer_public, p.initiator.public);
            let (r_keys, response) = create_response(
                &p.responder,
                &p.initiator_peer,
                &accepted,
                random_key(),
                9,
                None,
            )
            .unwrap();
            assert!(verify_mac1(&p.initiator, &response));
            let msg = Response::parse(&response).unwrap();
            let i_keys = consume_response(&p.initiator, &p.responder_peer, &pending, &msg).unwrap();
            assert_eq!(i_keys.send, r_keys.recv);
            assert_eq!(i_keys.recv, r_keys.send);
            assert_ne!(i_keys.send, i_keys.recv);
            assert_eq!((i_keys.local_index, i_keys.remote_index), (7, 9));
            assert_eq!((r_keys.local_index, r_keys.remote_index), (9, 7));
        }
    }

    #[test]
    fn wrong_psk_fails_at_the_initiator() {
        let mut p = pair(random_key(), random_key(), Some([1; 32]));
        p.initiator_peer = PeerStatic::new(
            &p.responder,
            p.initiator.public,
            Some(PresharedKey::from_bytes([2; 32])),
        )
        .unwrap();
        let (pending, initiation) = initiate(&p, random_key(), None);
        // The responder cannot tell: the PSK only enters message 2.
        let accepted = accept(&p, &initiation).unwrap();
        let (_, response) = create_response(
            &p.responder,
            &p.initiator_peer,
            &accepted,
            random_key(),
            9,
            None,
        )
        .unwrap();
        let msg = Response::parse(&response).unwrap();
        let result = consume_response(&p.initiator, &p.responder_peer, &pending, &msg);
        assert_eq!(result.err(), Some(HandshakeError::Decrypt));
    }

    #[test]
    fn tampered_messages_fail_to_decrypt() {
        let p = pair(random_key(), random_key(), None);
        let (pending, initiation) = initiate(&p, random_key(), None);
        // A byte of the ephemeral key, of the encrypted static, of the timestamp.
        for at in [8, 40, 70, 88, 115] {
            let mut bad = initiation;
            bad[at] ^= 1;
            assert_eq!(
                accept(&p, &bad).err(),
                Some(HandshakeError::Decrypt),
                "byte {at}"
            );
        }
        let accepted = accept(&p, &initiation).unwrap();
        let (_, response) = create_response(
            &p.responder,
            &p.initiator_peer,
            &accepted,
            random_key(),
            9,
            None,
        )
        .unwrap();
        for at in [12, 44, 59] {
            let mut bad = Response::parse(&response).unwrap();
            let mut bytes = bad.to_bytes();
            bytes[at] ^= 1;
            bad = Response::parse(&bytes).unwrap();
            let result = consume_response(&p.initiator, &p.responder_peer, &pending, &bad);
            assert_eq!(result.err(), Some(HandshakeError::Decrypt), "byte {at}");
        }
    }

    #[test]
    fn response_must_answer_the_initiating_peer() {
        let p = pair(random_key(), random_key(), None);
        let other = PeerStatic::new(&p.responder, random_key().public_key(), None).unwrap();
        let (_, initiation) = initiate(&p, random_key(), None);
        let accepted = accept(&p, &initiation).unwrap();
        let result = create_response(&p.responder, &other, &accepted, random_key(), 9, None);
        assert_eq!(result.err(), Some(HandshakeError::UnexpectedPeer));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let local = LocalStatic::new(random_key());
        let mut one = [0; 32];
        one[0] = 1;
        let order_eight = key("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        for public in [[0; 32], one, order_eight].map(PublicKey::from_bytes) {
            assert!(public.is_low_order());
            let result = PeerStatic::new(&local, public, None);
            assert_eq!(result.err(), Some(HandshakeError::LowOrderKey));
            let result = PeerStatic::without_local(public, None);
            assert_eq!(result.err(), Some(HandshakeError::LowOrderKey));
        }
        // A low-order ephemeral key in an initiation.
        let p = pair(random_key(), random_key(), None);
        let (_, initiation) = initiate(&p, random_key(), None);
        let mut msg = Initiation::parse(&initiation).unwrap();
        msg.ephemeral = order_eight;
        let result = consume_initiation(&p.responder, &msg);
        assert_eq!(result.err(), Some(HandshakeError::LowOrderKey));
    }

    #[test]
    fn keys_made_without_our_private_key_initiate_nothing_but_keep_the_macs() {
        let p = pair(random_key(), random_key(), Some([7; 32]));
        let keyless = PeerStatic::without_local(p.responder.public, None).unwrap();
        let result = create_initiation(&p.initiator, &keyless, random_key(), [0; 12], 1, None);
        assert_eq!(result.err(), Some(HandshakeError::NoPrivateKey));
        // The mac1 and cookie keys depend on the peer's key alone.
        assert_eq!(keyless.mac1_key, p.responder_peer.mac1_key);
        assert_eq!(keyless.cookie_key, p.responder_peer.cookie_key);
    }

    #[test]
    fn mac1_detects_tampering_and_wrong_recipient() {
        let p = pair(random_key(), random_key(), None);
        let (_, initiation) = initiate(&p, random_key(), None);
        assert!(verify_mac1(&p.responder, &initiation));
        assert!(
            !verify_mac1(&p.initiator, &initiation),
            "keyed by the recipient"
        );
        for at in [0, 4, 8, 60, 115, 116, 131] {
            let mut bad = initiation;
            bad[at] ^= 0x40;
            assert!(!verify_mac1(&p.responder, &bad), "byte {at}");
        }
        // mac2 is outside mac1's coverage.
        let mut other_mac2 = initiation;
        other_mac2[140] ^= 1;
        assert!(verify_mac1(&p.responder, &other_mac2));
        assert!(!verify_mac1(&p.responder, &initiation[..147]));
    }

    #[test]
    fn mac2_follows_the_cookie() {
        let p = pair(random_key(), random_key(), None);
        let ephemeral = random_key();
        let (_, plain) = initiate(&p, ephemeral.clone(), None);
        assert_eq!(plain[132..], [0; 16]);
        let cookie = [0xc0; 16];
        let (pending, with_cookie) = initiate(&p, ephemeral, Some(&cookie));
        assert_eq!(
            plain[..132],
            with_cookie[..132],
            "mac1 does not depend on the cookie"
        );
        assert_eq!(pending.mac1[..], with_cookie[116..132]);
        assert!(verify_mac2(&cookie, &with_cookie));
        assert!(!verify_mac2(&[0xc1; 16], &with_cookie));
        assert!(!verify_mac2(&cookie, &plain));
        let mut bad = with_cookie;
        bad[120] ^= 1;
        assert!(!verify_mac2(&cookie, &bad), "mac2 covers mac1");

        let accepted = accept(&p, &with_cookie).unwrap();
        let (_, response) = create_response(
            &p.responder,
            &p.initiator_peer,
            &accepted,
            random_key(),
            9,
            Some(&cookie),
        )
        .unwrap();
        assert!(verify_mac1(&p.initiator, &response));
        assert!(verify_mac2(&cookie, &response));
    }

    #[test]
    fn cookie_reply_round_trip() {
        let p = pair(random_key(), random_key(), None);
        let (pending, _) = initiate(&p, random_key(), None);
        let secret = [9; 32];
        let src: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        let cookie = make_cookie(&secret, src);
        assert_eq!(cookie, make_cookie(&secret, src));
        for other in ["192.0.2.8:51820", "192.0.2.7:51821", "[2001:db8::7]:51820"] {
            assert_ne!(cookie, make_cookie(&secret, other.parse().unwrap()));
        }
        assert_ne!(cookie, make_cookie(&[8; 32], src));

        let reply = create_cookie_reply(&p.responder, 7, &pending.mac1, &cookie, [3; 24]);
        let msg = CookieReply::parse(&reply).unwrap();
        assert_eq!(msg.receiver, 7);
        assert_eq!(
            consume_cookie_reply(&p.responder_peer, &msg, &pending.mac1),
            Ok(cookie)
        );
        let wrong_mac1 = [0; 16];
        let result = consume_cookie_reply(&p.responder_peer, &msg, &wrong_mac1);
        assert_eq!(result, Err(HandshakeError::Decrypt));
        let mut tampered = msg.clone();
        tampered.encrypted_cookie[3] ^= 1;
        let result = consume_cookie_reply(&p.responder_peer, &tampered, &pending.mac1);
        assert_eq!(result, Err(HandshakeError::Decrypt));

        // The next initiation carries a mac2 the responder accepts.
        let (_, next) = initiate(&p, random_key(), Some(&cookie));
        assert!(verify_mac2(&make_cookie(&secret, src), &next));
    }

    #[test]
    fn cookie_reply_to_a_response() {
        let p = pair(random_key(), random_key(), None);
        let (_, initiation) = initiate(&p, random_key(), None);
        let accepted = accept(&p, &initiation).unwrap();
        let respond = |cookie| {
            create_response(
                &p.responder,
                &p.initiator_peer,
                &accepted,
                random_key(),
                9,
                cookie,
            )
            .unwrap()
            .1
        };
        let response = respond(None);
        let mac1 = response_mac1(&response);
        assert_eq!(mac1, Response::parse(&response).unwrap().mac1);
        // The initiator, under load, answers the response with a cookie.
        let cookie = make_cookie(&[9; 32], "192.0.2.7:51820".parse().unwrap());
        let reply = create_cookie_reply(&p.initiator, 9, &mac1, &cookie, [3; 24]);
        let msg = CookieReply::parse(&reply).unwrap();
        assert_eq!(
            consume_cookie_reply(&p.initiator_peer, &msg, &mac1),
            Ok(cookie)
        );
        let next = respond(Some(&cookie));
        assert!(verify_mac1(&p.initiator, &next));
        assert!(
            verify_mac2(&cookie, &next),
            "the next response carries mac2"
        );
    }

    #[test]
    fn secrets_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: ZeroizeOnDrop>() {}
        // What LocalStatic, PeerStatic and Initiating keep: private and
        // preshared keys and the static DH result.
        zeroed_on_drop::<PrivateKey>();
        zeroed_on_drop::<PresharedKey>();
        zeroed_on_drop::<Zeroizing<Key>>();
        zeroed_on_drop::<Transcript>();
        zeroed_on_drop::<TransportKeys>();
        // KDF outputs and intermediates.
        zeroed_on_drop::<Zeroizing<[Key; 3]>>();
    }

    #[test]
    fn tai64n_layout() {
        assert_eq!(tai64n(0, 0).to_vec(), hex("400000000000000a 00000000"));
        assert_eq!(
            tai64n(0x6b00_0000, 0x17ab_cdef).to_vec(),
            hex("400000006b00000a 17000000")
        );
        assert_eq!(tai64n(u64::MAX, 999_999_999)[..8], [0xff; 8]);
        assert!(tai64n(100, 0) > tai64n(99, 999_999_999));
    }

    #[test]
    fn reasons_are_counter_names() {
        let names = [
            HandshakeError::LowOrderKey,
            HandshakeError::Decrypt,
            HandshakeError::BadMac,
            HandshakeError::UnexpectedPeer,
            HandshakeError::NoPrivateKey,
        ]
        .map(HandshakeError::reason);
        assert_eq!(
            names,
            [
                "low_order_key",
                "decrypt",
                "bad_mac",
                "unexpected_peer",
                "no_private_key"
            ]
        );
    }
}
