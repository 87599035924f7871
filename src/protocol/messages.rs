//! Wire layouts of the four message types (whitepaper §5.4): sizes and
//! types are checked here, cryptography lives in `handshake` and `session`.
//! Integers are little-endian; the first 4 bytes are one u32 type, so the
//! three "reserved" bytes must be zero.

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Transport header: type, receiver index, counter.
pub const HEADER_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
/// Shortest datagram of any type: an empty (keepalive) transport message.
pub const MIN_TRANSPORT_LEN: usize = HEADER_LEN + TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Initiation,
    Response,
    CookieReply,
    Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    TooShort,
    /// Type not in 1..=4 (non-zero reserved bytes included), or, for a typed
    /// `parse`, not the type that parser reads.
    UnknownType,
    BadLength,
}

impl ParseError {
    /// Name for drop counters.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::TooShort => "too_short",
            ParseError::UnknownType => "unknown_type",
            ParseError::BadLength => "bad_length",
        }
    }
}

impl MessageType {
    fn code(self) -> u32 {
        match self {
            MessageType::Initiation => 1,
            MessageType::Response => 2,
            MessageType::CookieReply => 3,
            MessageType::Transport => 4,
        }
    }
}

/// Classifies a datagram the way receivers must before any other work.
pub fn message_type(datagram: &[u8]) -> Result<MessageType, ParseError> {
    if datagram.len() < MIN_TRANSPORT_LEN {
        return Err(ParseError::TooShort);
    }
    let (kind, exact_len) = match u32_at(datagram, 0) {
        1 => (MessageType::Initiation, Some(INITIATION_LEN)),
        2 => (MessageType::Response, Some(RESPONSE_LEN)),
        3 => (MessageType::CookieReply, Some(COOKIE_REPLY_LEN)),
        4 => (MessageType::Transport, None),
        _ => return Err(ParseError::UnknownType),
    };
    match exact_len {
        Some(len) if len != datagram.len() => Err(ParseError::BadLength),
        _ => Ok(kind),
    }
}

fn expect_type(datagram: &[u8], kind: MessageType) -> Result<(), ParseError> {
    if message_type(datagram)? == kind {
        Ok(())
    } else {
        Err(ParseError::UnknownType)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array_at(bytes, at))
}

/// Fixed-size field at `at`; callers have checked the length already.
pub(super) fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Writes fields one after another into a fixed-size message.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8], kind: MessageType) -> Self {
        let mut w = Writer { out, at: 0 };
        w.put(&kind.code().to_le_bytes());
        w
    }

    fn put(&mut self, field: &[u8]) -> &mut Self {
        self.out[self.at..self.at + field.len()].copy_from_slice(field);
        self.at += field.len();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiation {
    pub sender: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_static: [u8; 48],
    pub encrypted_timestamp: [u8; 28],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Initiation {
    pub fn parse(datagram: &[u8]) -> Result<Self, ParseError> {
        expect_type(datagram, MessageType::Initiation)?;
        Ok(Initiation {
            sender: u32_at(datagram, 4),
            ephemeral: array_at(datagram, 8),
            encrypted_static: array_at(datagram, 40),
            encrypted_timestamp: array_at(datagram, 88),
            mac1: array_at(datagram, 116),
            mac2: array_at(datagram, 132),
        })
    }

    pub fn to_bytes(&self) -> [u8; INITIATION_LEN] {
        let mut out = [0; INITIATION_LEN];
        Writer::new(&mut out, MessageType::Initiation)
            .put(&self.sender.to_le_bytes())
            .put(&self.ephemeral)
            .put(&self.encrypted_static)
            .put(&self.encrypted_timestamp)
            .put(&self.mac1)
            .put(&self.mac2);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub sender: u32,
    pub receiver: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_nothing: [u8; 16],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Response {
    pub fn parse(datagram: &[u8]) -> Result<Self, ParseError> {
        expect_type(datagram, MessageType::Response)?;
        Ok(Response {
            sender: u32_at(datagram, 4),
            receiver: u32_at(datagram, 8),
            ephemeral: array_at(datagram, 12),
            encrypted_nothing: array_at(datagram, 44),
            mac1: array_at(datagram, 60),
            mac2: array_at(datagram, 76),
        })
    }

    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        let mut out = [0; RESPONSE_LEN];
        Writer::new(&mut out, MessageType::Response)
            .put(&self.sender.to_le_bytes())
            .put(&self.receiver.to_le_bytes())
            .put(&self.ephemeral)
            .put(&self.encrypted_nothing)
            .put(&self.mac1)
            .put(&self.mac2);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReply {
    pub receiver: u32,
    pub nonce: [u8; 24],
    pub encrypted_cookie: [u8; 32],
}

impl CookieReply {
    pub fn parse(datagram: &[u8]) -> Result<Self, ParseError> {
        expect_type(datagram, MessageType::CookieReply)?;
        Ok(CookieReply {
            receiver: u32_at(datagram, 4),
            nonce: array_at(datagram, 8),
            encrypted_cookie: array_at(datagram, 32),
        })
    }

    pub fn to_bytes(&self) -> [u8; COOKIE_REPLY_LEN] {
        let mut out = [0; COOKIE_REPLY_LEN];
        Writer::new(&mut out, MessageType::CookieReply)
            .put(&self.receiver.to_le_bytes())
            .put(&self.nonce)
            .put(&self.encrypted_cookie);
        out
    }
}

/// The 16 bytes in front of a transport message's ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportHeader {
    pub receiver: u32,
    pub counter: u64,
}

impl TransportHeader {
    /// Accepts any type-4 datagram of at least 32 bytes.
    pub fn parse(datagram: &[u8]) -> Result<Self, ParseError> {
        expect_type(datagram, MessageType::Transport)?;
        Ok(TransportHeader {
            receiver: u32_at(datagram, 4),
            counter: u64::from_le_bytes(array_at(datagram, 8)),
        })
    }

    /// Writes the header into `out[..16]`; `out` must hold at least 16 bytes.
    pub fn write(&self, out: &mut [u8]) {
        Writer::new(&mut out[..HEADER_LEN], MessageType::Transport)
            .put(&self.receiver.to_le_bytes())
            .put(&self.counter.to_le_bytes());
    }
}

/// Decodes test hex (whitespace ignored, so wrapped vectors can be pasted).
#[cfg(test)]
pub(crate) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_initiation() -> Initiation {
        Initiation {
            sender: 0x0403_0201,
            ephemeral: [1; 32],
            encrypted_static: [2; 48],
            encrypted_timestamp: [3; 28],
            mac1: [4; 16],
            mac2: [5; 16],
        }
    }

    fn sample_response() -> Response {
        Response {
            sender: 0x0d0c_0b0a,
            receiver: 0x0403_0201,
            ephemeral: [6; 32],
            encrypted_nothing: [7; 16],
            mac1: [8; 16],
            mac2: [9; 16],
        }
    }

    fn sample_cookie_reply() -> CookieReply {
        CookieReply {
            receiver: 77,
            nonce: [10; 24],
            encrypted_cookie: [11; 32],
        }
    }

    fn keepalive() -> [u8; MIN_TRANSPORT_LEN] {
        let mut out = [0xee; MIN_TRANSPORT_LEN];
        TransportHeader {
            receiver: 0x0d0c_0b0a,
            counter: 0x0102_0304_0506_0708,
        }
        .write(&mut out);
        out
    }

    #[test]
    fn round_trips() {
        let i = sample_initiation();
        let bytes = i.to_bytes();
        assert_eq!(&bytes[..8], &[1, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(Initiation::parse(&bytes), Ok(i));

        let r = sample_response();
        let bytes = r.to_bytes();
        assert_eq!(&bytes[..12], &[2, 0, 0, 0, 10, 11, 12, 13, 1, 2, 3, 4]);
        assert_eq!(Response::parse(&bytes), Ok(r));

        let c = sample_cookie_reply();
        let bytes = c.to_bytes();
        assert_eq!(&bytes[..8], &[3, 0, 0, 0, 77, 0, 0, 0]);
        assert_eq!(CookieReply::parse(&bytes), Ok(c));

        let t = keepalive();
        assert_eq!(&t[..16], &hex("04000000 0a0b0c0d 0807060504030201")[..]);
        assert_eq!(t[16], 0xee, "write touches only the header");
        let header = TransportHeader::parse(&t).unwrap();
        assert_eq!(
            (header.receiver, header.counter),
            (0x0d0c_0b0a, 0x0102_0304_0506_0708)
        );
    }

    #[test]
    fn classifies_each_type() {
        assert_eq!(
            message_type(&sample_initiation().to_bytes()),
            Ok(MessageType::Initiation)
        );
        assert_eq!(
            message_type(&sample_response().to_bytes()),
            Ok(MessageType::Response)
        );
        assert_eq!(
            message_type(&sample_cookie_reply().to_bytes()),
            Ok(MessageType::CookieReply)
        );
        assert_eq!(message_type(&keepalive()), Ok(MessageType::Transport));
    }

    #[test]
    fn short_datagrams_are_too_short() {
        let keepalive = keepalive();
        for len in 0..MIN_TRANSPORT_LEN {
            assert_eq!(message_type(&keepalive[..len]), Err(ParseError::TooShort));
            assert_eq!(
                TransportHeader::parse(&keepalive[..len]),
                Err(ParseError::TooShort)
            );
        }
    }

    #[test]
    fn handshake_sizes_are_exact() {
        let messages: [Vec<u8>; 3] = [
            sample_initiation().to_bytes().to_vec(),
            sample_response().to_bytes().to_vec(),
            sample_cookie_reply().to_bytes().to_vec(),
        ];
        for good in messages {
            let mut long = good.clone();
            long.push(0);
            for bad in [&good[..good.len() - 1], &long[..]] {
                assert_eq!(message_type(bad), Err(ParseError::BadLength));
            }
        }
        let long = [sample_initiation().to_bytes().to_vec(), vec![0]].concat();
        assert_eq!(Initiation::parse(&long), Err(ParseError::BadLength));
        let short = &sample_response().to_bytes()[..RESPONSE_LEN - 1];
        assert_eq!(Response::parse(short), Err(ParseError::BadLength));
        let short = &sample_cookie_reply().to_bytes()[..COOKIE_REPLY_LEN - 1];
        assert_eq!(CookieReply::parse(short), Err(ParseError::BadLength));
        // Transport messages have any length from 32 up.
        assert!(TransportHeader::parse(&[keepalive().to_vec(), vec![0; 17]].concat()).is_ok());
    }

    #[test]
    fn unknown_types_and_reserved_bytes() {
        for first in [0u8, 5, 0xff] {
            let mut bytes = keepalive();
            bytes[0] = first;
            assert_eq!(message_type(&bytes), Err(ParseError::UnknownType));
        }
        for reserved in 1..4 {
            let mut bytes = sample_initiation().to_bytes();
            bytes[reserved] = 1;
            assert_eq!(message_type(&bytes), Err(ParseError::UnknownType));
            assert_eq!(Initiation::parse(&bytes), Err(ParseError::UnknownType));
            let mut bytes = keepalive();
            bytes[reserved] = 0x80;
            assert_eq!(message_type(&bytes), Err(ParseError::UnknownType));
        }
    }

    #[test]
    fn typed_parsers_refuse_other_types() {
        let response = sample_response().to_bytes();
        assert_eq!(Initiation::parse(&response), Err(ParseError::UnknownType));
        assert_eq!(
            TransportHeader::parse(&response),
            Err(ParseError::UnknownType)
        );
        let cookie = sample_cookie_reply().to_bytes();
        assert_eq!(Response::parse(&cookie), Err(ParseError::UnknownType));
        assert_eq!(
            CookieReply::parse(&keepalive()),
            Err(ParseError::UnknownType)
        );
    }

    #[test]
    fn reasons_are_counter_names() {
        assert_eq!(ParseError::TooShort.reason(), "too_short");
        assert_eq!(ParseError::UnknownType.reason(), "unknown_type");
        assert_eq!(ParseError::BadLength.reason(), "bad_length");
    }
}
