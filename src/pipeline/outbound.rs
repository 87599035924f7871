//! Outbound, in flow order: tun_reader -> encryptor -> udp_sender.

use super::device::{TunDevice, UdpDevice};
use super::peer::{Peer, Session};
use super::pool::{Batch, Lone, Plain, Pool, Sealed, HEADROOM};
use super::stats::{DropReason, StageStats};
use super::SessionEvent;
use crate::protocol::session::{inner_packet, seal_in_place, InnerError};
use crate::sys::poll::StopFd;
use crossbeam_channel::{select, Receiver, Sender};
use std::io;

/// Reads IP packets from the tun, a batch of whatever is ready at a time.
/// Blocks on the pool when every batch is in flight: that is the
/// backpressure from the stages after it. A [`Lone`] packet takes the
/// [`Shortcut`].
pub fn tun_reader(
    tun: &dyn TunDevice,
    pool: &Pool,
    outbound_plain: &Sender<Plain>,
    shortcut: &Shortcut,
    stop: &StopFd,
    stats: &StageStats,
) -> io::Result<()> {
    let mut lone = Lone::default();
    loop {
        let mut batch = pool.get();
        let Some(dropped) = tun.read_batch(&mut batch, stop)? else {
            return Ok(());
        };
        (0..dropped).for_each(|_| stats.drop(DropReason::BadTunPacket));
        if !batch.has_packets() {
            continue;
        }
        stats.pass(batch.packets(), batch.bytes());
        let batch = match lone.check(&batch, pool) {
            true => match shortcut.take(batch) {
                Some(batch) => batch,
                None => continue,
            },
            false => batch,
        };
        if outbound_plain.send(Plain(batch)).is_err() {
            return Ok(()); // the encryptor has ended and reports why
        }
    }
}

/// The encryptor's and udp_sender's work done on the tun_reader's thread,
/// for a [`Lone`] packet: nothing is queued or in the works ahead of it, so
/// order holds, and the packet goes out without two thread wake-ups. Those
/// cost tens of microseconds each on a small machine, most of a ping's RTT.
pub struct Shortcut<'a> {
    pub sealer: Sealer<'a>,
    pub udp: &'a dyn UdpDevice,
    pub sender_stats: &'a StageStats,
}

impl Shortcut<'_> {
    /// Seals and sends `batch`, or hands it back when it must take the
    /// long way: without a session, the encryptor keeps it waiting.
    fn take(&self, mut batch: Batch) -> Option<Batch> {
        let Some(session) = self.sealer.peer.sending_session() else {
            return Some(batch);
        };
        self.sealer.check_packets(&mut batch);
        if self.sealer.seal(&mut batch, &session) {
            send_sealed(self.udp, self.sealer.peer, &batch, self.sender_stats);
        }
        None
    }
}

/// Checks and seals plaintext packets in place: the encryptor's work on one
/// batch, without the waiting for a session.
#[derive(Clone, Copy)]
pub struct Sealer<'a> {
    pub peer: &'a Peer,
    pub stats: &'a StageStats,
}

impl Sealer<'_> {
    /// Seals the packets of `batch` in place with `session`; returns whether
    /// any is left to send.
    fn seal(&self, batch: &mut Batch, session: &Session) -> bool {
        let mtu = self.peer.mtu;
        let (mut packets, mut bytes) = (0, 0);
        for i in 0..batch.count() {
            let len = batch.len(i);
            if len == 0 {
                continue;
            }
            let Some(counter) = session.next_counter() else {
                // Key used up: drop; the handshaker rekeys long before this.
                self.stats.drop(DropReason::ExpiredKey);
                batch.set_len(i, 0);
                continue;
            };
            // Slots are sized for the MTU and longer packets were dropped,
            // so sealing always has room; stay safe if that ever changes.
            match seal_in_place(
                &session.send,
                session.remote_index,
                counter,
                batch.slot_mut(i),
                len,
                mtu,
            ) {
                Some(n) => {
                    batch.set_len(i, n);
                    packets += 1;
                    bytes += len;
                }
                None => {
                    self.stats.drop(DropReason::TooBig);
                    batch.set_len(i, 0);
                }
            }
        }
        if packets == 0 {
            return false;
        }
        self.stats.pass(packets, bytes);
        self.peer.sent(self.peer.now(), true);
        true
    }

    /// Drops what must never be sent: non-IP data, oversized packets, and
    /// packets for destinations outside the peer's AllowedIPs (whitepaper §2).
    fn check_packets(&self, batch: &mut Batch) {
        for i in 0..batch.count() {
            let len = batch.len(i);
            if len == 0 {
                continue;
            }
            let reason = if len > self.peer.mtu {
                Some(DropReason::TooBig)
            } else {
                match inner_packet(&batch.slot(i)[HEADROOM..HEADROOM + len]) {
                    Err(InnerError::Empty | InnerError::BadVersion) => Some(DropReason::NotIp),
                    Err(_) => Some(DropReason::InnerTruncated),
                    Ok(p) if !self.peer.allows(p.dst) => Some(DropReason::NoRoute),
                    Ok(_) => None,
                }
            };
            if let Some(r) = reason {
                self.stats.drop(r);
                batch.set_len(i, 0);
            }
        }
    }
}

/// Seals plaintext packets with the current keypair. Packets that arrive
/// before there is one wait in a single batch (bounded; the overflow is
/// counted) and the handshaker is asked for a session.
pub struct Encryptor<'a> {
    sealer: Sealer<'a>,
    /// Asks the handshaker for a session.
    want_session: &'a Sender<()>,
    waiting: Option<Batch>,
}

impl<'a> Encryptor<'a> {
    pub fn new(sealer: Sealer<'a>, want_session: &'a Sender<()>) -> Self {
        Encryptor {
            sealer,
            want_session,
            waiting: None,
        }
    }

    pub fn run(
        mut self,
        outbound_plain: &Receiver<Plain>,
        session_events: &Receiver<SessionEvent>,
        outbound_sealed: &Sender<Sealed>,
    ) {
        let mut session_events = session_events.clone();
        loop {
            let more = select! {
                recv(outbound_plain) -> msg => match msg {
                    Ok(Plain(batch)) => {
                        self.sealer.stats.queue(outbound_plain.len());
                        self.process(batch, outbound_sealed)
                    }
                    Err(_) => false,
                },
                recv(session_events) -> ev => match ev {
                    Ok(SessionEvent::Ready) => match self.waiting.take() {
                        Some(waiting) => self.process(waiting, outbound_sealed),
                        None => true,
                    },
                    Ok(SessionEvent::GaveUp) => {
                        self.drop_waiting(DropReason::GaveUp);
                        true
                    }
                    Err(_) => {
                        // Its senders have ended (shutdown): stop watching it.
                        session_events = crossbeam_channel::never();
                        true
                    }
                },
            };
            if !more {
                return;
            }
        }
    }

    /// Checks, seals and forwards a batch, or keeps it until a session
    /// exists. Returns false once the udp_sender has ended.
    fn process(&mut self, mut batch: Batch, outbound_sealed: &Sender<Sealed>) -> bool {
        self.sealer.check_packets(&mut batch);
        let Some(session) = self.sealer.peer.sending_session() else {
            self.wait(batch);
            return true;
        };
        // Packets that waited for this session go out first, in order.
        if let Some(waiting) = self.waiting.take() {
            if !self.seal_and_send(waiting, &session, outbound_sealed) {
                return false;
            }
        }
        self.seal_and_send(batch, &session, outbound_sealed)
    }

    fn seal_and_send(
        &self,
        mut batch: Batch,
        session: &Session,
        outbound_sealed: &Sender<Sealed>,
    ) -> bool {
        !self.sealer.seal(&mut batch, session) || outbound_sealed.send(Sealed(batch)).is_ok()
    }

    /// Keeps packets until a session exists, and asks for one.
    fn wait(&mut self, mut batch: Batch) {
        if !batch.has_packets() {
            return;
        }
        match &mut self.waiting {
            None => self.waiting = Some(batch),
            Some(waiting) => {
                waiting.append_from(&mut batch);
                for _ in 0..batch.packets() {
                    self.sealer.stats.drop(DropReason::NoSessionQueueFull);
                }
            }
        }
        // Full means a request is already queued.
        let _ = self.want_session.try_send(());
    }

    fn drop_waiting(&mut self, reason: DropReason) {
        if let Some(b) = self.waiting.take() {
            for _ in 0..b.packets() {
                self.sealer.stats.drop(reason);
            }
        }
    }
}

/// Sends sealed batches to the peer's current endpoint.
pub fn udp_sender(
    udp: &dyn UdpDevice,
    peer: &Peer,
    outbound_sealed: &Receiver<Sealed>,
    stats: &StageStats,
) {
    for Sealed(batch) in outbound_sealed.iter() {
        stats.queue(outbound_sealed.len());
        send_sealed(udp, peer, &batch, stats);
    }
}

/// Sends one sealed batch: the udp_sender's work on it.
fn send_sealed(udp: &dyn UdpDevice, peer: &Peer, batch: &Batch, stats: &StageStats) {
    let packets = batch.packets();
    let result = match peer.endpoint() {
        Some(dest) => udp.send_batch(batch, dest).map_err(|e| {
            log::debug!("udp_sender: sending to {dest}: {e}");
            DropReason::SendError
        }),
        None => Err(DropReason::NoEndpoint),
    };
    match result {
        Ok(()) => stats.pass(packets, batch.bytes()),
        Err(reason) => (0..packets).for_each(|_| stats.drop(reason)),
    }
}
