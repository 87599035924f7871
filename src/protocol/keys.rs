//! Keys and their text form: 32 bytes, standard base64 with padding
//! (44 characters), exactly as `wg genkey`, `wg pubkey` and config files use.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

pub type Key = [u8; 32];

/// Decodes a base64 key; the error says what is wrong with the text.
pub fn decode(text: &str) -> Result<Key, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("bad base64 key: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("a key is 32 bytes, this one decodes to {}", b.len()))
}

pub fn encode(key: &Key) -> String {
    STANDARD.encode(key)
}

/// Clamps a private key the way `wg genkey` does.
pub fn clamp(mut key: Key) -> Key {
    key[0] &= 0xf8;
    key[31] = (key[31] & 0x7f) | 0x40;
    key
}

/// A new private key from `random` bytes (the caller reads the OS source).
pub fn private_from_random(random: Key) -> Key {
    clamp(random)
}

/// X25519 public key of a private key (x25519 clamps internally, like `wg`).
pub fn public_key(private: &Key) -> Key {
    x25519_dalek::x25519(*private, x25519_dalek::X25519_BASEPOINT_BYTES)
}

/// Whether a public key is of low order: a clamped scalar is a multiple of the
/// cofactor 8, so its product with a small-order point is the identity, whose
/// encoding is all zeros. Such keys would make every DH output predictable.
pub fn is_low_order(public: &Key) -> bool {
    x25519_dalek::x25519(clamp([0x5a; 32]), *public) == [0u8; 32]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Key {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    #[test]
    fn public_key_matches_protocol_vector() {
        assert_eq!(
            public_key(&[0x11; 32]),
            hex("7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13")
        );
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let k = [7u8; 32];
        let text = encode(&k);
        assert_eq!(text.len(), 44);
        assert_eq!(decode(&text).unwrap(), k);
        assert!(decode("not base64!").unwrap_err().contains("base64"));
        assert!(decode("AAAA").unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn clamping_is_wg_genkey_clamping() {
        let k = private_from_random([0xff; 32]);
        assert_eq!(k[0], 0xf8);
        assert_eq!(k[31], 0x7f);
    }

    #[test]
    fn low_order_points_are_refused() {
        assert!(is_low_order(&[0; 32]));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(is_low_order(&one));
        // A point of order 8 (from the published list of small-order points).
        assert!(is_low_order(&hex(
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
        )));
        assert!(!is_low_order(&public_key(&[0x11; 32])));
    }
}
