//! Inbound, in flow order: udp_receiver -> decryptor -> tun_writer.

use super::device::{TunDevice, UdpDevice};
use super::handshake_queue::HandshakePacket;
use super::peer::{Keypairs, Peer};
use super::pool::{Batch, Lone, Plain, Pool, Sealed, HEADROOM};
use super::stats::{DropReason, Stage, StageStats, Stats};
use super::SessionEvent;
use crate::protocol::messages::{message_type, MessageType, TransportHeader};
use crate::protocol::session::{inner_packet, open_in_place, InnerError};
use crate::sys::poll::StopFd;
use crate::sys::udp::Endpoint;
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::time::Duration;

/// Receives datagrams, a batch of whatever is ready at a time. A [`Lone`]
/// datagram takes the [`Shortcut`].
pub fn udp_receiver(
    udp: &dyn UdpDevice,
    pool: &Pool,
    inbound_sealed: &Sender<Sealed>,
    shortcut: &Shortcut,
    stop: &StopFd,
    stats: &StageStats,
) -> io::Result<()> {
    let mut lone = Lone::default();
    loop {
        let mut batch = pool.get();
        let unfit = match udp.recv_batch(&mut batch, stop) {
            Ok(Some(unfit)) => unfit,
            Ok(None) => return Ok(()),
            // ICMP errors for earlier sends surface here; they are not ours to die of.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        (0..unfit.oversized).for_each(|_| stats.drop(DropReason::Oversized));
        (0..unfit.empty).for_each(|_| stats.drop(DropReason::TooShort));
        if !batch.has_packets() {
            continue;
        }
        stats.pass(batch.packets(), batch.bytes());
        if lone.check(&batch, pool) {
            shortcut.take(batch);
            continue;
        }
        if inbound_sealed.send(Sealed(batch)).is_err() {
            return Ok(());
        }
    }
}

/// The decryptor's and tun_writer's work done on the udp_receiver's
/// thread, for a [`Lone`] datagram: nothing is ahead of it, so order holds,
/// and it reaches the tun without two thread wake-ups (see
/// [`super::outbound::Shortcut`]).
pub struct Shortcut<'a> {
    pub decryptor: Decryptor<'a>,
    pub tun: &'a dyn TunDevice,
    pub writer_stats: &'a StageStats,
}

impl Shortcut<'_> {
    fn take(&self, mut batch: Batch) {
        if self.decryptor.open_batch(&mut batch) {
            write_plain(self.tun, &mut batch, self.writer_stats);
        }
    }
}

/// Opens transport packets in place and hands handshake messages to the
/// handshaker. Everything that fails a check is counted and dropped, without
/// any reply (whitepaper §5.1).
pub struct Decryptor<'a> {
    pub peer: &'a Peer,
    pub stats: &'a Stats,
    pub handshake_in: &'a Sender<HandshakePacket>,
    pub session_events: &'a Sender<SessionEvent>,
}

/// What became of one datagram.
enum Opened {
    /// An authenticated IP packet of this length, to deliver.
    Data(usize),
    /// An authenticated keepalive: nothing to deliver.
    Keepalive,
    /// A handshake message, passed to the handshaker.
    Handshake,
}

impl Decryptor<'_> {
    pub fn run(&self, inbound_sealed: &Receiver<Sealed>, inbound_plain: &Sender<Plain>) {
        for Sealed(mut batch) in inbound_sealed.iter() {
            self.stats
                .stage(Stage::Decryptor)
                .queue(inbound_sealed.len());
            if self.open_batch(&mut batch) && inbound_plain.send(Plain(batch)).is_err() {
                return;
            }
        }
    }

    /// Opens the datagrams of `batch` in place, leaving only the packets to
    /// deliver; returns whether there are any.
    fn open_batch(&self, batch: &mut Batch) -> bool {
        let stats = self.stats.stage(Stage::Decryptor);
        let keypairs = self.peer.keypairs();
        let now = self.peer.now();
        let (mut packets, mut bytes) = (0, 0);
        let mut authenticated_from = None;
        for i in 0..batch.count() {
            if batch.len(i) == 0 {
                continue;
            }
            let opened = self.open(batch, i, &keypairs, now);
            if matches!(opened, Ok(Opened::Data(_) | Opened::Keepalive)) {
                authenticated_from = Some(batch.addr(i));
            }
            match opened {
                Ok(Opened::Data(len)) => {
                    batch.set_len(i, len);
                    packets += 1;
                    bytes += len;
                    continue;
                }
                // Nothing to deliver; both were accounted for already.
                Ok(Opened::Keepalive | Opened::Handshake) => {}
                Err(reason) => stats.drop(reason),
            }
            batch.set_len(i, 0);
        }
        if let Some(src) = authenticated_from {
            self.peer.received(now, packets > 0);
            // Roaming: follow the newest authenticated source
            // (whitepaper §2.1).
            if let Some(old) = self.peer.update_endpoint(src) {
                log::info!("peer endpoint changed: {} -> {src}", show(old));
            }
        }
        stats.pass(packets, bytes);
        packets > 0
    }

    /// Checks and opens slot `i` in place.
    fn open(
        &self,
        batch: &mut Batch,
        i: usize,
        keypairs: &Keypairs,
        now: Duration,
    ) -> Result<Opened, DropReason> {
        let src = batch.addr(i);
        let len = batch.len(i);
        let datagram = &mut batch.slot_mut(i)[..len];
        if message_type(datagram).map_err(DropReason::from)? != MessageType::Transport {
            return match self
                .handshake_in
                .try_send(HandshakePacket::new(datagram, src))
            {
                Ok(()) => Ok(Opened::Handshake),
                Err(_) => Err(DropReason::HandshakeQueueFull),
            };
        }
        let header = TransportHeader::parse(datagram).map_err(DropReason::from)?;
        let (session, is_next) = keypairs
            .find(header.receiver)
            .ok_or(DropReason::UnknownIndex)?;
        if self
            .peer
            .timing
            .expired(now.saturating_sub(session.created))
        {
            return Err(DropReason::ExpiredKey);
        }
        if !session.replay_check(header.counter) {
            return Err(DropReason::Replay);
        }
        let plain_len = open_in_place(&session.recv, header.counter, datagram)
            .map_err(|()| DropReason::Decrypt)?;
        // The window moves only for packets that proved authentic.
        if !session.replay_update(header.counter) {
            return Err(DropReason::Replay);
        }
        if is_next && self.peer.promote(session.local_index) {
            let took = now.saturating_sub(session.created);
            self.stats.handshake_completed(took.as_millis() as u64);
            log::info!("handshake completed: the peer confirmed our response");
            let _ = self.session_events.try_send(SessionEvent::Ready);
        }
        if plain_len == 0 {
            return Ok(Opened::Keepalive);
        }
        let plain = &datagram[HEADROOM..HEADROOM + plain_len];
        let inner = inner_packet(plain).map_err(|e| match e {
            InnerError::Empty | InnerError::BadVersion => DropReason::NotIp,
            _ => DropReason::InnerTruncated,
        })?;
        // Cryptokey routing: the inner source must belong to this peer
        // (whitepaper §2).
        if !self.peer.allows(inner.src) {
            return Err(DropReason::SourceNotAllowed);
        }
        Ok(Opened::Data(inner.len))
    }
}

fn show(addr: Option<Endpoint>) -> String {
    addr.map_or_else(|| "none".into(), |a| a.to_string())
}

/// Writes plaintext packets to the tun, a batch at a time.
pub fn tun_writer(tun: &dyn TunDevice, inbound_plain: &Receiver<Plain>, stats: &StageStats) {
    for Plain(mut batch) in inbound_plain.iter() {
        stats.queue(inbound_plain.len());
        write_plain(tun, &mut batch, stats);
    }
}

/// Writes one batch to the tun: the tun_writer's work on it.
fn write_plain(tun: &dyn TunDevice, batch: &mut Batch, stats: &StageStats) {
    let written = tun.write_batch(batch);
    stats.pass(written.packets, written.bytes);
    if let Some(e) = written.error {
        log::debug!("tun_writer: {e}");
    }
    (0..written.failed).for_each(|_| stats.drop(DropReason::WriteError));
}
