//! Every parser a received datagram meets, on arbitrary bytes, as the
//! decryptor and handshaker call them: none may panic, and the typed parsers
//! must agree with `message_type` and give back the bytes they read.

use pipevpn::protocol::handshake::{consume_initiation, verify_mac1, LocalStatic};
use pipevpn::protocol::keys::PrivateKey;
use pipevpn::protocol::messages::{
    message_type, CookieReply, Initiation, MessageType, Response, TransportHeader, HEADER_LEN,
};
use pipevpn::protocol::session::{inner_packet, open_in_place, SessionKey};

fn main() {
    let local = LocalStatic::new(PrivateKey::from_bytes([0x11; 32]));
    let key = SessionKey::new(&[0x22; 32]);
    afl::fuzz!(|data: &[u8]| {
        let kind = message_type(data).ok();

        let initiation = Initiation::parse(data);
        assert_eq!(initiation.is_ok(), kind == Some(MessageType::Initiation));
        if let Ok(m) = initiation {
            assert_eq!(&m.to_bytes()[..], data);
            if verify_mac1(&local, data) {
                let _ = consume_initiation(&local, &m);
            }
        }

        let response = Response::parse(data);
        assert_eq!(response.is_ok(), kind == Some(MessageType::Response));
        if let Ok(m) = response {
            assert_eq!(&m.to_bytes()[..], data);
            let _ = verify_mac1(&local, data);
        }

        let cookie = CookieReply::parse(data);
        assert_eq!(cookie.is_ok(), kind == Some(MessageType::CookieReply));
        if let Ok(m) = cookie {
            assert_eq!(&m.to_bytes()[..], data);
        }

        let header = TransportHeader::parse(data);
        assert_eq!(header.is_ok(), kind == Some(MessageType::Transport));
        if let Ok(h) = header {
            let mut written = [0u8; HEADER_LEN];
            h.write(&mut written);
            assert_eq!(&written[..], &data[..HEADER_LEN]);
            let mut datagram = data.to_vec();
            if let Ok(n) = open_in_place(&key, h.counter, &mut datagram) {
                let _ = inner_packet(&datagram[HEADER_LEN..HEADER_LEN + n]);
            }
        }

        // What a peer with the session key could put inside a transport packet.
        if let Ok(inner) = inner_packet(data) {
            assert!(
                inner.len <= data.len(),
                "{inner:?} from {} bytes",
                data.len()
            );
        }
    });
}
