//! What the decryptor hands the handshaker: a handshake message copied out
//! of its receive batch. Its own module, so that the decryptor (which sends)
//! and the handshaker (which receives) do not depend on each other.

use crate::protocol::messages::INITIATION_LEN;
use crate::sys::udp::Endpoint;

/// A handshake message copied out of a receive batch, so the batch can move
/// on at once; sized for the largest one (an initiation).
pub struct HandshakePacket {
    bytes: [u8; INITIATION_LEN],
    len: usize,
    pub src: Endpoint,
}

impl HandshakePacket {
    /// `datagram` is a type 1, 2 or 3 message (already length-checked).
    pub fn new(datagram: &[u8], src: Endpoint) -> HandshakePacket {
        let mut bytes = [0u8; INITIATION_LEN];
        let len = datagram.len().min(INITIATION_LEN);
        bytes[..len].copy_from_slice(&datagram[..len]);
        HandshakePacket { bytes, len, src }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
