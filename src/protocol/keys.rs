//! Keys and their text form: 32 bytes, standard base64 with padding
//! (44 characters), exactly as `wg genkey`, `wg pubkey` and config files use.
//!
//! Private, public and preshared keys are distinct types, so one cannot be
//! passed where another is meant. The two secret ones are zeroed when dropped
//! (zeroize) and their `Debug` hides the bytes, so that neither a log line nor
//! memory given back to the allocator shows them. Public keys print as base64,
//! as `wg show` does.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// 32 raw bytes, as the protocol hashes and exchanges them.
pub type Key = [u8; 32];

/// An X25519 private key, static or ephemeral, clamped as `wg genkey` does.
#[derive(Clone, ZeroizeOnDrop)]
pub struct PrivateKey(Key);

/// A static X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(Key);

/// The symmetric key mixed into the second handshake message; all zeros
/// when none is configured, as the protocol says.
#[derive(Clone, Default, ZeroizeOnDrop)]
pub struct PresharedKey(Key);

impl PrivateKey {
    /// Clamps `bytes` the way `wg genkey` does.
    pub fn from_bytes(bytes: Key) -> Self {
        let mut key = PrivateKey(bytes);
        key.0[0] &= 0xf8;
        key.0[31] = (key.0[31] & 0x7f) | 0x40;
        key
    }

    /// A new key filled by `fill` (the caller's OS random source) in place,
    /// so no copy of the random bytes is left behind.
    pub fn random_with<E>(fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<Self, E> {
        let mut key = PrivateKey([0; 32]);
        fill(&mut key.0)?;
        Ok(PrivateKey::from_bytes(key.0))
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let mut key = PrivateKey([0; 32]);
        decode_into(text, &mut key.0)?;
        Ok(PrivateKey::from_bytes(key.0))
    }

    pub fn as_bytes(&self) -> &Key {
        &self.0
    }

    /// The base64 text, wiped when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// X25519 public key (x25519 clamps internally, like `wg`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::x25519(
            self.0,
            x25519_dalek::X25519_BASEPOINT_BYTES,
        ))
    }
}

impl PublicKey {
    pub const fn from_bytes(bytes: Key) -> Self {
        PublicKey(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let mut key = [0; 32];
        decode_into(text, &mut key)?;
        Ok(PublicKey(key))
    }

    pub fn as_bytes(&self) -> &Key {
        &self.0
    }

    /// Whether this is a point of low order: a clamped scalar is a multiple
    /// of the cofactor 8, so its product with a small-order point is the
    /// identity, whose encoding is all zeros. Such keys would make every DH
    /// output predictable.
    pub fn is_low_order(&self) -> bool {
        x25519_dalek::x25519(*PrivateKey::from_bytes([0x5a; 32]).as_bytes(), self.0) == [0u8; 32]
    }
}

impl PresharedKey {
    pub fn from_bytes(bytes: Key) -> Self {
        PresharedKey(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let mut key = PresharedKey([0; 32]);
        decode_into(text, &mut key.0)?;
        Ok(key)
    }

    pub fn as_bytes(&self) -> &Key {
        &self.0
    }

    /// The base64 text, wiped when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }
}

/// Decodes base64 text into `out`; the error says what is wrong with the
/// text without quoting it. The decoded bytes are wiped on every path.
fn decode_into(text: &str, out: &mut Key) -> Result<(), String> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|e| format!("bad base64 key: {e}"))?,
    );
    if bytes.len() != out.len() {
        return Err(format!(
            "a key is 32 bytes, this one decodes to {}",
            bytes.len()
        ));
    }
    out.copy_from_slice(&bytes);
    Ok(())
}

/// Compares in constant time, so the time taken does not tell an observer
/// how many leading bytes of a secret they guessed.
fn same_secret(a: &Key, b: &Key) -> bool {
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.0, &other.0)
    }
}

impl Eq for PrivateKey {}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.0, &other.0)
    }
}

impl Eq for PresharedKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<hidden>)")
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<hidden>)")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn hex(s: &str) -> Key {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// The ways a key's bytes could show up in text: base64, hex, and the
    /// `Debug` of a byte array (what a derived `Debug` prints).
    pub(crate) fn renderings(bytes: &Key) -> [String; 3] {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        [STANDARD.encode(bytes), hex, format!("{bytes:?}")]
    }

    /// Fails if `text` shows `bytes` in any of the usual renderings.
    pub(crate) fn assert_hidden(text: &str, bytes: &Key) {
        for form in renderings(bytes) {
            assert!(!text.contains(&form), "{form} appears in {text}");
        }
    }

    #[test]
    fn public_key_matches_protocol_vector() {
        assert_eq!(
            PrivateKey::from_bytes([0x11; 32]).public_key(),
            PublicKey::from_bytes(hex(
                "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13"
            ))
        );
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let k = PrivateKey::from_bytes([7; 32]);
        let text = k.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(PrivateKey::decode(&text).unwrap(), k);
        let public = k.public_key();
        assert_eq!(PublicKey::decode(&public.to_string()).unwrap(), public);
        let psk = PresharedKey::decode(&STANDARD.encode([9; 32])).unwrap();
        assert_eq!(psk.as_bytes(), &[9; 32]);
        for bad in [
            PrivateKey::decode("not base64!").map(drop),
            PublicKey::decode("not base64!").map(drop),
            PresharedKey::decode("not base64!").map(drop),
        ] {
            assert!(bad.unwrap_err().contains("base64"));
        }
        assert!(PublicKey::decode("AAAA").unwrap_err().contains("32 bytes"));
        let long = STANDARD.encode([1; 33]);
        assert!(PresharedKey::decode(&long).unwrap_err().contains("33"));
    }

    #[test]
    fn clamping_is_wg_genkey_clamping() {
        let k = PrivateKey::from_bytes([0xff; 32]);
        assert_eq!(k.as_bytes()[0], 0xf8);
        assert_eq!(k.as_bytes()[31], 0x7f);
        let random = PrivateKey::random_with(|b| {
            b.fill(0xff);
            Ok::<_, ()>(())
        });
        assert_eq!(random.unwrap(), k);
        assert_eq!(
            PrivateKey::random_with(|_| Err("no source")),
            Err("no source")
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let bytes = [0x3c; 32];
        let private = PrivateKey::from_bytes(bytes);
        assert_eq!(format!("{private:?}"), "PrivateKey(<hidden>)");
        assert_hidden(&format!("{private:?}"), private.as_bytes());
        let psk = PresharedKey::from_bytes(bytes);
        assert_eq!(format!("{:?}", Some(psk)), "Some(PresharedKey(<hidden>))");
        let public = private.public_key();
        assert_eq!(format!("{public:?}"), format!("PublicKey({public})"));
        assert_eq!(public.to_string(), STANDARD.encode(public.as_bytes()));
    }

    #[test]
    fn secrets_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: ZeroizeOnDrop>() {}
        zeroed_on_drop::<PrivateKey>();
        zeroed_on_drop::<PresharedKey>();
    }

    #[test]
    fn low_order_points_are_refused() {
        let low = |bytes| PublicKey::from_bytes(bytes).is_low_order();
        assert!(low([0; 32]));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(low(one));
        // A point of order 8 (from the published list of small-order points).
        assert!(low(hex(
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
        )));
        assert!(!PrivateKey::from_bytes([0x11; 32])
            .public_key()
            .is_low_order());
    }
}
