//! The responder fed initiations that pass mac1, so the fuzzer's bytes get
//! past the cheap check to the admission rules, the Diffie-Hellman work, the
//! AEAD openings and the response, as the handshaker takes them. mac1 (and
//! mac2) are computed here from the message layout (whitepaper §5.4.4), not
//! with pipevpn's own code.
//!
//! Input: one flags byte, then
//! - flags bit 0 clear: 112 bytes of initiation body after the type field
//!   (sender, ephemeral, encrypted static and timestamp), zero-padded;
//! - bit 0 set: a real initiation from the configured initiator, made with the
//!   next 32 bytes as its ephemeral private key, 12 as its timestamp and 4 as
//!   its sender index, then XORed with the rest over the same 112 bytes;
//! - bit 1: a valid mac2 (with the cookie for the source address);
//! - bit 2: the responder is under load.
//!
//! Checks: admission follows the rules of protocol::dos::Gate; an untouched
//! real initiation is accepted, and its response completes the handshake at
//! the initiator with matching keys.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use pipevpn::protocol::dos::{Admission, Gate};
use pipevpn::protocol::handshake::{
    consume_initiation, consume_response, create_cookie_reply, create_initiation, create_response,
    make_cookie, verify_mac1, LocalStatic, PeerStatic,
};
use pipevpn::protocol::keys::{PresharedKey, PrivateKey};
use pipevpn::protocol::messages::{Initiation, Response, INITIATION_LEN};
use std::net::SocketAddr;
use std::time::Duration;

/// The fuzzer's part of an initiation: bytes 4..116 (mac1 covers 0..116).
const BODY: std::ops::Range<usize> = 4..116;
const MAC1: std::ops::Range<usize> = 116..132;
const MAC2: std::ops::Range<usize> = 132..148;

fn mac(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<U16> as Mac>::new_from_slice(key).expect("key of 16 or 32 bytes");
    Mac::update(&mut m, data);
    m.finalize_fixed().into()
}

/// Splits off `N` bytes, zero-padded when the input runs out.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = data.len().min(N);
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

fn main() {
    let initiator_key = PrivateKey::from_bytes([0x11; 32]);
    let responder_key = PrivateKey::from_bytes([0x22; 32]);
    let psk = PresharedKey::from_bytes([0x33; 32]);
    let responder_public = responder_key.public_key();
    let initiator_public = initiator_key.public_key();
    let initiator = LocalStatic::new(initiator_key);
    let responder = LocalStatic::new(responder_key);
    let to_responder = PeerStatic::new(&initiator, responder_public, Some(psk.clone()))
        .expect("fixed keys are fine");
    let to_initiator =
        PeerStatic::new(&responder, initiator_public, Some(psk)).expect("fixed keys are fine");
    let mac1_key: [u8; 32] = Blake2s256::new()
        .chain_update(b"mac1----")
        .chain_update(responder_public.as_bytes())
        .finalize()
        .into();
    let src: SocketAddr = "192.0.2.1:51820".parse().expect("an address");
    let secret = [0x44; 32];
    let cookie = make_cookie(&secret, src);

    afl::fuzz!(|data: &[u8]| {
        let mut rest = data;
        let [flags] = take::<1>(&mut rest);
        let (real, with_mac2, under_load) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        let mut msg = [0u8; INITIATION_LEN];
        let mut pending = None;
        if real {
            let (ephemeral, timestamp) = (take::<32>(&mut rest), take::<12>(&mut rest));
            let sender = u32::from_le_bytes(take::<4>(&mut rest));
            let Ok((p, m)) = create_initiation(
                &initiator,
                &to_responder,
                PrivateKey::from_bytes(ephemeral),
                timestamp,
                sender,
                None,
            ) else {
                return;
            };
            pending = Some((p, timestamp));
            msg = m;
        } else {
            msg[0] = 1;
        }
        let mask = take::<112>(&mut rest);
        let untouched = real && mask == [0; 112];
        for (b, x) in msg[BODY].iter_mut().zip(mask) {
            *b = if real { *b ^ x } else { x };
        }
        let mac1 = mac(&mac1_key, &msg[..MAC1.start]);
        msg[MAC1].copy_from_slice(&mac1);
        if with_mac2 {
            let mac2 = mac(&cookie, &msg[..MAC2.start]);
            msg[MAC2].copy_from_slice(&mac2);
        }

        // The responder's path, in the handshaker's order.
        let m = Initiation::parse(&msg).expect("type 1 and the right length");
        assert!(verify_mac1(&responder, &msg), "mac1 made from the layout");
        let mut gate = Gate::default();
        gate.load.observe(under_load, Duration::ZERO);
        match gate.admit(&msg, src, Duration::ZERO, || secret) {
            Admission::Process => assert!(!under_load || with_mac2, "no mac2 under load"),
            Admission::SendCookie(c) => {
                assert!(
                    under_load && !with_mac2,
                    "a cookie only under load, without mac2"
                );
                assert_eq!(c, cookie);
                let _ = create_cookie_reply(&responder, m.sender, &m.mac1, &c, [0; 24]);
                return;
            }
            Admission::RateLimited => panic!("a fresh source has a full bucket"),
        }
        let accepted = consume_initiation(&responder, &m);
        if untouched {
            assert!(accepted.is_ok(), "a real initiation is accepted");
        }
        let Ok(accepted) = accepted else {
            return;
        };
        if let Some((_, timestamp)) = &pending {
            if untouched {
                assert_eq!(accepted.timestamp, *timestamp);
                assert_eq!(accepted.peer_public, to_initiator.public);
            }
        }
        let response = create_response(
            &responder,
            &to_initiator,
            &accepted,
            PrivateKey::from_bytes([0x55; 32]),
            7,
            with_mac2.then_some(&cookie),
        );
        let Ok((keys, response)) = response else {
            assert!(!untouched, "a real initiation is answered");
            return;
        };
        assert!(verify_mac1(&initiator, &response));
        if let (true, Some((p, _))) = (untouched, &pending) {
            let r = Response::parse(&response).expect("a response we built parses");
            let theirs = consume_response(&initiator, &to_responder, p, &r)
                .expect("the initiator takes the response");
            assert!(theirs.send == keys.recv && theirs.recv == keys.send);
        }
    });
}
