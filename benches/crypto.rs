//! Crypto micro-benchmarks: the ChaCha20-Poly1305 implementations a portable
//! Rust binary can use (run-time CPU detection, no `target-cpu`), side by side
//! at a small and a full-MTU packet; pipevpn's own transport seal/open (what
//! the encryptor and decryptor run per packet); and one whole handshake.
//! The data-path AEAD was chosen by these numbers (README, "The data-path
//! AEAD"). Each size runs every implementation in turn, so that a change of
//! load on a shared machine hits all of them alike.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipevpn::protocol::handshake::{
    consume_initiation, consume_response, create_initiation, create_response, tai64n, verify_mac1,
    LocalStatic, PeerStatic,
};
use pipevpn::protocol::keys::{PresharedKey, PrivateKey};
use pipevpn::protocol::messages::{Initiation, Response, MIN_TRANSPORT_LEN, TAG_LEN};
use pipevpn::protocol::session::{open_in_place, seal_in_place, SessionKey};
use ring::aead::{Aad, LessSafeKey, UnboundKey, CHACHA20_POLY1305};

/// A small packet (a TCP ACK, a 64-byte UDP payload) and a full tunnel MTU.
const SIZES: [usize; 2] = [64, 1420];
const KEY: [u8; 32] = [7; 32];
const COUNTER: u64 = 12345;

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Sealing then opening one buffer with one implementation, in place with a
/// detached tag as the transport does. `&mut self` because OpenSSL's context
/// is re-initialised with each nonce.
trait Aead {
    fn seal(&mut self, body: &mut [u8]) -> [u8; TAG_LEN];
    fn open(&mut self, body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool;
}

/// RustCrypto 0.10, the handshake's AEAD.
impl Aead for ChaCha20Poly1305 {
    fn seal(&mut self, body: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::from(nonce_bytes(COUNTER));
        let tag = self.encrypt_in_place_detached(&nonce, &[], body).unwrap();
        tag.into()
    }

    fn open(&mut self, body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let nonce = Nonce::from(nonce_bytes(COUNTER));
        self.decrypt_in_place_detached(&nonce, &[], body, Tag::from_slice(tag))
            .is_ok()
    }
}

impl Aead for LessSafeKey {
    fn seal(&mut self, body: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(COUNTER));
        let tag = self
            .seal_in_place_separate_tag(nonce, Aad::empty(), body)
            .unwrap();
        tag.as_ref().try_into().unwrap()
    }

    fn open(&mut self, body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(COUNTER));
        let tag = ring::aead::Tag::from(*tag);
        self.open_in_place_separate_tag(nonce, Aad::empty(), tag, body, 0..)
            .is_ok()
    }
}

/// The other candidates for the data path, measured with
/// `cargo bench --bench crypto --features aead-compare` (kept out of the
/// default build: aws-lc-sys alone compiles for minutes).
#[cfg(feature = "aead-compare")]
mod candidates {
    use super::{nonce_bytes, Aead, COUNTER, KEY, TAG_LEN};
    use aws_lc_rs::aead as aws;
    use chacha20poly1305_current::aead::{AeadInOut, KeyInit as _};
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::CipherCtx;

    pub fn all() -> Vec<(&'static str, Box<dyn Aead>)> {
        let aws_key =
            aws::LessSafeKey::new(aws::UnboundKey::new(&aws::CHACHA20_POLY1305, &KEY).unwrap());
        vec![
            ("aws-lc-rs", Box::new(aws_key)),
            ("openssl", Box::new(OpenSsl::new(&KEY))),
            (
                "chacha20poly1305-0.11",
                Box::new(chacha20poly1305_current::ChaCha20Poly1305::new(&KEY.into())),
            ),
        ]
    }

    /// RustCrypto's current release.
    impl Aead for chacha20poly1305_current::ChaCha20Poly1305 {
        fn seal(&mut self, body: &mut [u8]) -> [u8; TAG_LEN] {
            let nonce = nonce_bytes(COUNTER).into();
            let tag = self
                .encrypt_inout_detached(&nonce, &[], body.into())
                .unwrap();
            tag.into()
        }

        fn open(&mut self, body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
            let nonce = nonce_bytes(COUNTER).into();
            self.decrypt_inout_detached(&nonce, &[], body.into(), &(*tag).into())
                .is_ok()
        }
    }

    impl Aead for aws::LessSafeKey {
        fn seal(&mut self, body: &mut [u8]) -> [u8; TAG_LEN] {
            let nonce = aws::Nonce::assume_unique_for_key(nonce_bytes(COUNTER));
            let tag = self
                .seal_in_place_separate_tag(nonce, aws::Aad::empty(), body)
                .unwrap();
            tag.as_ref().try_into().unwrap()
        }

        fn open(&mut self, body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
            let nonce = aws::Nonce::assume_unique_for_key(nonce_bytes(COUNTER));
            self.open_in_place_separate_tag(nonce, aws::Aad::empty(), tag, body)
                .is_ok()
        }
    }

    /// The system's libcrypto: one context holding the key, re-initialised with
    /// each packet's nonce (the key schedule is not redone).
    struct OpenSsl {
        seal: CipherCtx,
        open: CipherCtx,
    }

    impl OpenSsl {
        fn new(key: &[u8; 32]) -> Self {
            let cipher = Cipher::chacha20_poly1305();
            let mut seal = CipherCtx::new().unwrap();
            seal.encrypt_init(Some(cipher), Some(key), None).unwrap();
            let mut open = CipherCtx::new().unwrap();
            open.decrypt_init(Some(cipher), Some(key), None).unwrap();
            OpenSsl { seal, open }
        }
    }

    impl Aead for OpenSsl {
        fn seal(&mut self, body: &mut [u8]) -> [u8; TAG_LEN] {
            let ctx = &mut self.seal;
            ctx.encrypt_init(None, None, Some(&nonce_bytes(COUNTER)))
                .unwrap();
            ctx.cipher_update_inplace(body, body.len()).unwrap();
            ctx.cipher_final(&mut []).unwrap();
            let mut tag = [0; TAG_LEN];
            ctx.tag(&mut tag).unwrap();
            tag
        }

        fn open(&mut self, body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
            let ctx = &mut self.open;
            ctx.decrypt_init(None, None, Some(&nonce_bytes(COUNTER)))
                .unwrap();
            ctx.set_tag(tag).unwrap();
            ctx.cipher_update_inplace(body, body.len()).unwrap();
            ctx.cipher_final(&mut []).is_ok()
        }
    }
}

fn bench_aead(c: &mut Criterion, size: usize, name: &str, aead: &mut dyn Aead) {
    let mut g = c.benchmark_group(format!("aead/{size}B"));
    g.throughput(Throughput::Bytes(size as u64));
    let mut body = vec![0x42; size];
    g.bench_function(BenchmarkId::new("seal", name), |b| {
        b.iter(|| black_box(aead.seal(black_box(&mut body))))
    });
    let plain = vec![0x42; size];
    let mut sealed = plain.clone();
    let tag = aead.seal(&mut sealed);
    g.bench_function(BenchmarkId::new("open", name), |b| {
        b.iter(|| {
            // Opening decrypts in place: start each time from the
            // ciphertext (a copy costs every implementation the same).
            body.copy_from_slice(&sealed);
            assert!(aead.open(black_box(&mut body), &tag));
        })
    });
    // Checked apart from the timed loops, which a filter may skip.
    body.copy_from_slice(&sealed);
    assert!(aead.open(&mut body, &tag), "{name} opens its own seal");
    assert_eq!(body, plain, "{name} round trip at {size} bytes");
    let mut forged = sealed.clone();
    forged[0] ^= 1;
    assert!(!aead.open(&mut forged, &tag), "{name} opened a forgery");
    g.finish();
}

fn aeads(c: &mut Criterion) {
    let ring_key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).unwrap());
    let mut impls: Vec<(&str, Box<dyn Aead>)> = vec![
        ("ring", Box::new(ring_key)),
        (
            "chacha20poly1305-0.10",
            Box::new(ChaCha20Poly1305::new(&KEY.into())),
        ),
    ];
    #[cfg(feature = "aead-compare")]
    impls.extend(candidates::all());
    // The same ciphertext from every implementation: they are one algorithm.
    let sealed: Vec<_> = impls
        .iter_mut()
        .map(|(_, aead)| {
            let mut body = [0x42; 1420];
            let tag = aead.seal(&mut body);
            (body.to_vec(), tag)
        })
        .collect();
    assert!(sealed.windows(2).all(|w| w[0] == w[1]));
    for size in SIZES {
        for (name, aead) in &mut impls {
            bench_aead(c, size, name, aead.as_mut());
        }
    }
}

/// pipevpn's type-4 seal and open, header and padding included.
fn transport(c: &mut Criterion) {
    let key = SessionKey::new(&KEY);
    for size in SIZES {
        let mut g = c.benchmark_group(format!("transport/{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x45; size + MIN_TRANSPORT_LEN];
        g.bench_function("seal_in_place", |b| {
            b.iter(|| seal_in_place(&key, 1, COUNTER, black_box(&mut buf), size, 1420).unwrap())
        });
        let n = seal_in_place(&key, 1, COUNTER, &mut buf, size, 1420).unwrap();
        let sealed = buf[..n].to_vec();
        g.bench_function("open_in_place", |b| {
            b.iter(|| {
                buf[..n].copy_from_slice(&sealed);
                open_in_place(&key, COUNTER, black_box(&mut buf[..n])).unwrap()
            })
        });
        g.finish();
    }
}

/// Initiation, response, and both sides' keys, as two peers do it (mac1
/// checks and parsing included; cookies not).
fn handshake(c: &mut Criterion) {
    let initiator = LocalStatic::new(PrivateKey::from_bytes([0x11; 32]));
    let responder = LocalStatic::new(PrivateKey::from_bytes([0x22; 32]));
    let psk = Some(PresharedKey::from_bytes([0x55; 32]));
    let responder_peer = PeerStatic::new(&initiator, responder.public, psk.clone()).unwrap();
    let initiator_peer = PeerStatic::new(&responder, initiator.public, psk).unwrap();
    let timestamp = tai64n(1_700_000_000, 0);
    c.bench_function("handshake/full", |b| {
        b.iter(|| {
            let ephemeral = PrivateKey::from_bytes([0x33; 32]);
            let (pending, init) =
                create_initiation(&initiator, &responder_peer, ephemeral, timestamp, 1, None)
                    .unwrap();
            assert!(verify_mac1(&responder, &init));
            let accepted =
                consume_initiation(&responder, &Initiation::parse(&init).unwrap()).unwrap();
            let ephemeral = PrivateKey::from_bytes([0x44; 32]);
            let (r_keys, resp) =
                create_response(&responder, &initiator_peer, &accepted, ephemeral, 2, None)
                    .unwrap();
            assert!(verify_mac1(&initiator, &resp));
            let msg = Response::parse(&resp).unwrap();
            let i_keys = consume_response(&initiator, &responder_peer, &pending, &msg).unwrap();
            assert_eq!(i_keys.send, r_keys.recv);
        })
    });
}

criterion_group!(benches, aeads, transport, handshake);
criterion_main!(benches);
