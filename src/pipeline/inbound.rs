//! Inbound, in flow order: udp_receiver -> decryptor -> tun_writer.

use super::device::{TunDevice, UdpDevice};
use super::handshake_queue::HandshakePacket;
use super::interface::Interface;
use super::peer::{Keypairs, Peer};
use super::pool::{Batch, Plain, Sealed, HEADROOM};
use super::reading::Direction;
use super::stats::{DropReason, Stage, StageStats, Stats};
use super::SessionEvent;
use crate::cidr::Memo;
use crate::protocol::messages::{message_type, MessageType, TransportHeader};
use crate::protocol::session::{inner_packet, open_in_place, InnerError};
use crate::sys::poll::StopFd;
use crate::sys::udp::Endpoint;
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// The inbound direction as its readers see it ([`Reading`](super::reading::Reading)): datagrams,
/// a batch of whatever is ready at a time, to the decryptor. A [`Lone`](super::pool::Lone)
/// datagram takes the [`Shortcut`].
pub struct Inbound<'a> {
    pub udp: &'a dyn UdpDevice,
    pub inbound_sealed: &'a Sender<Sealed>,
    pub shortcut: Shortcut<'a>,
    /// The udp_receiver's, whichever thread reads.
    pub stats: &'a StageStats,
}

impl Direction for Inbound<'_> {
    fn wait(&self, stop: &StopFd) -> io::Result<bool> {
        self.udp.wait_readable(stop)
    }

    fn read(&self, batch: &mut Batch) -> io::Result<bool> {
        let unfit = match self.udp.try_recv_batch(batch) {
            Ok(Some(unfit)) => unfit,
            Ok(None) => return Ok(false),
            // ICMP errors for earlier sends surface here; they are not ours to die of.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(false),
            Err(e) => return Err(e),
        };
        (0..unfit.oversized).for_each(|_| self.stats.drop(DropReason::Oversized));
        (0..unfit.empty).for_each(|_| self.stats.drop(DropReason::TooShort));
        Ok(true)
    }

    fn shortcut(&self, batch: Batch) -> Option<Batch> {
        self.shortcut.take(batch);
        None
    }

    fn hand_on(&self, batch: Batch) -> bool {
        self.stats.send(self.inbound_sealed, Sealed(batch)).is_ok()
    }

    fn stats(&self) -> &StageStats {
        self.stats
    }
}

/// The decryptor's and tun_writer's work done on the reading thread (the
/// udp_receiver's, or the tun_reader's for an answer: see [`Reading`](super::reading::Reading)),
/// for a [`Lone`](super::pool::Lone) datagram: nothing is ahead of it, so order holds,
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
    pub iface: &'a Interface,
    pub stats: &'a Stats,
    pub handshake_in: &'a Sender<HandshakePacket>,
    pub session_events: &'a Sender<SessionEvent>,
}

/// The peer of the receiver index last seen in a batch, and what its
/// packets there did: a batch from one peer costs one index lookup and one
/// keypair snapshot.
struct Current {
    index: u32,
    peer: Arc<Peer>,
    keypairs: Keypairs,
    /// Data packets delivered, and bytes of authenticated datagrams.
    delivered: usize,
    rx_bytes: usize,
    /// Source of the last authenticated datagram.
    from: Option<Endpoint>,
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
            if self.open_batch(&mut batch)
                && self
                    .stats
                    .stage(Stage::Decryptor)
                    .send(inbound_plain, Plain(batch))
                    .is_err()
            {
                return;
            }
        }
    }

    /// Opens the datagrams of `batch` in place, leaving only the packets to
    /// deliver; returns whether there are any.
    fn open_batch(&self, batch: &mut Batch) -> bool {
        let stats = self.stats.stage(Stage::Decryptor);
        let now = self.iface.now();
        // Held for the batch: a peer change waits for at most that long.
        let routes = self.iface.routes();
        let mut sources = routes.memo();
        let mut current = None;
        let (mut packets, mut bytes) = (0, 0);
        for i in 0..batch.count() {
            let datagram_len = batch.len(i);
            if datagram_len == 0 {
                continue;
            }
            let opened = self.open(batch, i, &mut current, &mut sources, now);
            if let (Ok(Opened::Data(_) | Opened::Keepalive), Some(c)) = (&opened, &mut current) {
                c.from = Some(batch.addr(i));
                c.rx_bytes += datagram_len;
            }
            match opened {
                Ok(Opened::Data(len)) => {
                    batch.set_len(i, len);
                    packets += 1;
                    bytes += len;
                    if let Some(c) = &mut current {
                        c.delivered += 1;
                    }
                    continue;
                }
                // Nothing to deliver; both were accounted for already.
                Ok(Opened::Keepalive | Opened::Handshake) => {}
                Err(reason) => stats.drop(reason),
            }
            batch.set_len(i, 0);
        }
        drop(routes);
        if let Some(c) = current {
            finish(c, now);
        }
        stats.pass(packets, bytes);
        packets > 0
    }

    /// Makes `current` the peer of receiver index `index`, finishing the
    /// one before if it is another peer.
    fn switch<'c>(
        &self,
        current: &'c mut Option<Current>,
        index: u32,
        now: Duration,
    ) -> Result<&'c Current, DropReason> {
        if current.as_ref().is_some_and(|c| c.index == index) {
            return current.as_ref().ok_or(DropReason::UnknownIndex);
        }
        let peer = self
            .iface
            .peer_by_index(index)
            .ok_or(DropReason::UnknownIndex)?;
        if peer.is_removed() {
            return Err(DropReason::PeerRemoved);
        }
        let keypairs = peer.keypairs();
        match current {
            Some(c) if Arc::ptr_eq(&c.peer, &peer) => {
                (c.index, c.keypairs) = (index, keypairs);
            }
            _ => {
                let next = Current {
                    index,
                    peer,
                    keypairs,
                    delivered: 0,
                    rx_bytes: 0,
                    from: None,
                };
                if let Some(done) = current.replace(next) {
                    finish(done, now);
                }
            }
        }
        current.as_ref().ok_or(DropReason::UnknownIndex)
    }

    /// Checks and opens slot `i` in place.
    fn open(
        &self,
        batch: &mut Batch,
        i: usize,
        current: &mut Option<Current>,
        sources: &mut Memo<Arc<Peer>>,
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
        let c = self.switch(current, header.receiver, now)?;
        let (session, is_next) = c
            .keypairs
            .find(header.receiver)
            .ok_or(DropReason::UnknownIndex)?;
        if self
            .iface
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
        if is_next && self.iface.promote(&c.peer, session.local_index) {
            let took = now.saturating_sub(session.created);
            self.stats.handshake_completed(took.as_millis() as u64);
            c.peer.last_handshake.set(now);
            log::info!(
                "handshake completed: the peer confirmed our response ({})",
                c.peer.public_key
            );
            let _ = self
                .session_events
                .try_send(SessionEvent::Ready(c.peer.clone()));
        }
        if plain_len == 0 {
            return Ok(Opened::Keepalive);
        }
        let plain = &datagram[HEADROOM..HEADROOM + plain_len];
        let inner = inner_packet(plain).map_err(|e| match e {
            InnerError::Empty | InnerError::BadVersion => DropReason::NotIp,
            _ => DropReason::InnerTruncated,
        })?;
        // Cryptokey routing: the inner source must route back to this very
        // peer, by longest prefix over all peers (whitepaper §2): another
        // peer's prefix inside this one's shorter one is not this peer's.
        if !sources
            .lookup(inner.src)
            .is_some_and(|p| Arc::ptr_eq(p, &c.peer))
        {
            return Err(DropReason::SourceNotAllowed);
        }
        Ok(Opened::Data(inner.len))
    }
}

/// What a batch's packets from one peer tell about it: it is alive, and
/// where it is now.
fn finish(c: Current, now: Duration) {
    let Some(src) = c.from else { return };
    c.peer.received(now, c.delivered > 0);
    c.peer.rx_bytes.fetch_add(c.rx_bytes as u64, Relaxed);
    // Roaming: follow the newest authenticated source (whitepaper §2.1).
    if let Some(old) = c.peer.update_endpoint(src) {
        log::info!(
            "peer endpoint changed: {} -> {src} ({})",
            show(old),
            c.peer.public_key
        );
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
    let written = stats.in_device(|| tun.write_batch(batch));
    stats.pass(written.packets, written.bytes);
    if let Some(e) = written.error {
        log::debug!("tun_writer: {e}");
    }
    (0..written.failed).for_each(|_| stats.drop(DropReason::WriteError));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::peer::{PeerSpec, Session};
    use crate::pipeline::pool::{inbound_slot_size, Pool};
    use crate::protocol::handshake::TransportKeys;
    use crate::protocol::keys::PrivateKey;
    use crate::protocol::session::{seal_in_place, SessionKey};
    use crate::protocol::timers::Timing;
    use std::net::{Ipv4Addr, SocketAddr};

    fn spec(key: u8, allowed: &str) -> PeerSpec {
        PeerSpec {
            public_key: PrivateKey::from_bytes([key; 32]).public_key(),
            preshared_key: None,
            endpoint: None,
            initiate_at_start: false,
            allowed_ips: vec![allowed.parse().unwrap()],
            persistent_keepalive: None,
        }
    }

    /// A transport datagram to receiver index `receiver`, sealed with
    /// `key`, holding an IPv4 packet from `src`.
    fn datagram(key: &SessionKey, receiver: u32, counter: u64, src: Ipv4Addr) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let inner = &mut buf[HEADROOM..HEADROOM + 40];
        inner[0] = 0x45;
        inner[2..4].copy_from_slice(&40u16.to_be_bytes());
        inner[12..16].copy_from_slice(&src.octets());
        inner[16..20].copy_from_slice(&[10, 96, 0, 1]);
        let n = seal_in_place(key, receiver, counter, &mut buf, 40, 1420).unwrap();
        buf.truncate(n);
        buf
    }

    /// Whitepaper §2 over several peers: the inner source must route back to
    /// the peer whose session the packet came on, by longest prefix over all
    /// peers. A's shorter prefix covering B's does not make B's addresses A's.
    #[test]
    fn the_inner_source_must_route_back_to_the_same_peer() {
        let iface = Interface::new(
            Some(PrivateKey::from_bytes([0x11; 32])),
            1420,
            Timing::default(),
        );
        let a = iface.add_peer(spec(1, "10.0.0.0/8")).unwrap();
        let b = iface.add_peer(spec(2, "10.1.0.0/16")).unwrap();
        let index = iface.new_index(&a, || 77);
        let keys = TransportKeys {
            send: [1; 32],
            recv: [2; 32],
            local_index: index,
            remote_index: 5,
        };
        iface.install_initiated(&a, Session::new(&keys, iface.now(), true));
        let a_sends = SessionKey::new(&[2; 32]);

        let stats = Stats::default();
        let (handshake_in, _h) = crossbeam_channel::bounded(1);
        let (session_events, _e) = crossbeam_channel::bounded(1);
        let dec = Decryptor {
            iface: &iface,
            stats: &stats,
            handshake_in: &handshake_in,
            session_events: &session_events,
        };
        let pool = Pool::new(1, inbound_slot_size(1420));
        let mut batch = pool.get();
        let from = Endpoint::from("192.0.2.7:51820".parse::<SocketAddr>().unwrap());
        let sources = [
            Ipv4Addr::new(10, 2, 0, 1),   // A's alone: delivered
            Ipv4Addr::new(10, 1, 0, 1),   // B's, inside A's /8: dropped
            Ipv4Addr::new(192, 0, 2, 99), // nobody's: dropped
        ];
        for (counter, src) in sources.into_iter().enumerate() {
            let d = datagram(&a_sends, index, counter as u64, src);
            batch.free_mut()[..d.len()].copy_from_slice(&d);
            batch.push_datagram(d.len(), from);
        }
        assert!(dec.open_batch(&mut batch));
        let lens: Vec<_> = (0..3).map(|i| batch.len(i)).collect();
        assert_eq!(lens, [40, 0, 0]);
        let s = stats.stage(Stage::Decryptor);
        assert_eq!(s.dropped(DropReason::SourceNotAllowed), 2);
        assert_eq!(s.packets(), 1);
        // All three were authentic: A is alive and roams to their source.
        assert_eq!(a.endpoint(), Some(from));
        assert!(a.rx_bytes.load(Relaxed) > 0);
        assert_eq!(b.rx_bytes.load(Relaxed), 0);
        assert_eq!(b.endpoint(), None);
    }
}
