//! rtnetlink requests: each on a socket of its own, answered by the kernel's
//! acknowledgement (an `NLMSG_ERROR` holding 0 or an errno).
//!
//! Message layouts are netlink-packet-route's; the socket calls are
//! netlink-sys's, one per function here.

use crate::{Error, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use std::io;

/// The sequence number of every request. Each request has a socket of its
/// own, so an answer carrying another is not to it.
const SEQUENCE: u32 = 1;

/// Room for the acknowledgement, which echoes the request (a route request
/// is well under 100 bytes).
const ANSWER_ROOM: usize = 4096;

/// Sends `msg` with `flags` (besides `NLM_F_REQUEST | NLM_F_ACK`) and reads
/// the kernel's acknowledgement. The outer error is a failure to ask or a
/// malformed answer; the inner one is the kernel's refusal. `op` names the
/// request for the errors.
pub fn request(
    msg: RouteNetlinkMessage,
    flags: u16,
    op: &str,
) -> Result<std::result::Result<(), Errno>> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = SEQUENCE;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    req.finalize();
    let mut bytes = vec![0; req.buffer_len()];
    req.serialize(&mut bytes);
    let sock = open(op)?;
    send(&sock, &bytes, op)?;
    let answer = recv(&sock, op)?;
    acknowledgement(&answer)
        .map_err(|why| Error::sys(op, io::Error::new(io::ErrorKind::InvalidData, why)))
}

/// An rtnetlink socket (socket(2)).
fn open(op: &str) -> Result<Socket> {
    Socket::new(NETLINK_ROUTE).map_err(|e| Error::sys(format!("netlink socket for {op}"), e))
}

/// Sends one request to the kernel (sendto(2), port 0).
fn send(sock: &Socket, bytes: &[u8], op: &str) -> Result<()> {
    let sent = sock
        .send_to(bytes, &SocketAddr::new(0, 0), 0)
        .map_err(|e| Error::sys(format!("sending {op}"), e))?;
    match sent == bytes.len() {
        true => Ok(()),
        false => Err(Error::sys(
            format!("sending {op}"),
            io::Error::new(io::ErrorKind::WriteZero, "the request was cut short"),
        )),
    }
}

/// Reads the answer without waiting (recv(2) with `MSG_DONTWAIT`): the kernel
/// handles an rtnetlink request within the sender's `sendto`, so the
/// acknowledgement is already queued, and a missing one never hangs `up`.
fn recv(sock: &Socket, op: &str) -> Result<Vec<u8>> {
    let mut answer = Vec::with_capacity(ANSWER_ROOM);
    sock.recv(&mut answer, libc::MSG_DONTWAIT)
        .map_err(|e| Error::sys(format!("reading the answer to {op}"), e))?;
    Ok(answer)
}

/// The kernel's verdict in an acknowledgement: `Ok(())` for 0, the errno
/// otherwise; anything else is an error saying what came.
fn acknowledgement(answer: &[u8]) -> std::result::Result<std::result::Result<(), Errno>, String> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(answer)
        .map_err(|e| format!("malformed netlink answer: {e}"))?;
    if msg.header.sequence_number != SEQUENCE {
        return Err(format!(
            "netlink answer to request {} instead of {SEQUENCE}",
            msg.header.sequence_number
        ));
    }
    match msg.payload {
        NetlinkPayload::Error(e) => Ok(match e.code {
            None => Ok(()),
            Some(code) => Err(Errno::from_raw(code.get().saturating_abs())),
        }),
        other => Err(format!(
            "netlink answer of type {} instead of an acknowledgement",
            other.message_type()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ErrorMessage;
    use std::num::NonZeroI32;

    fn answer(seq: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    fn error(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(code);
        NetlinkPayload::Error(e)
    }

    #[test]
    fn acknowledgements_are_read() {
        assert_eq!(acknowledgement(&answer(SEQUENCE, error(0))), Ok(Ok(())));
        assert_eq!(
            acknowledgement(&answer(SEQUENCE, error(-libc::EEXIST))),
            Ok(Err(Errno::EEXIST))
        );
        let other = acknowledgement(&answer(SEQUENCE + 1, error(0))).unwrap_err();
        assert!(other.contains("request 2 instead of 1"), "{other}");
        let done = acknowledgement(&answer(SEQUENCE, NetlinkPayload::Done(Default::default())));
        assert!(done.unwrap_err().contains("instead of an acknowledgement"));
        for bad in [&[][..], &[1, 2, 3], &answer(SEQUENCE, error(0))[..10]] {
            let err = acknowledgement(bad).unwrap_err();
            assert!(
                err.starts_with("malformed netlink answer"),
                "{bad:?}: {err}"
            );
        }
    }
}
