//! Inbound, in flow order: udp_receiver -> decryptor -> tun_writer, with
//! optional open workers between the decryptor and the tun_writer
//! ([`super::parallel`]). A datagram takes three steps:
//!
//! 1. check ([`Decryptor`], in read order): handshake messages go to the
//!    handshaker; a transport datagram must name a live session whose key
//!    has not expired, with a counter the replay window may still accept.
//! 2. open ([`open_batch`], on any thread): the AEAD, the costly part.
//! 3. accept ([`Acceptor`], in read order again, on the tun_writer): the
//!    replay window moves, a "next" keypair rotates in, the inner source
//!    must route back to the peer, and the peer's timers and endpoint
//!    follow. As wireguard-go: parallel decryption, then each peer's
//!    checks in order.

use super::device::{TunDevice, UdpDevice};
use super::handshake_queue::HandshakePacket;
use super::interface::Interface;
use super::parallel::{in_order, Numbered, Onward};
use super::peer::{Keypairs, Peer, Session};
use super::pool::{Batch, Opened, Sealed, HEADROOM};
use super::reading::Direction;
use super::stats::{DropReason, Stage, StageStats, Stats};
use super::SessionEvent;
use crate::cidr::Memo;
use crate::protocol::messages::{message_type, MessageType, TransportHeader};
use crate::protocol::session::{inner_packet, open_in_place, opened_len, InnerError};
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
    pub acceptor: Acceptor<'a>,
    pub tun: &'a dyn TunDevice,
    pub writer_stats: &'a StageStats,
}

impl Shortcut<'_> {
    fn take(&self, mut batch: Batch) {
        if decrypt(&self.decryptor, &self.acceptor, &mut batch) {
            write_plain(self.tun, &mut batch, self.writer_stats);
        }
    }
}

/// The three steps on one thread; returns whether any packet is left to
/// deliver.
fn decrypt(decryptor: &Decryptor, acceptor: &Acceptor, batch: &mut Batch) -> bool {
    decryptor.check_batch(batch) && {
        open_batch(batch, decryptor.stats.stage(Stage::Decryptor));
        acceptor.accept_batch(batch)
    }
}

/// Where the decryptor's batches go: opened by itself, or checked to the
/// open workers.
pub type Output<'a> = Onward<'a, Sealed, Opened>;

/// The decryptor's own step, in read order: checks each datagram and hands
/// handshake messages to the handshaker. Everything that fails a check, in
/// any step, is counted and dropped, without any reply (whitepaper §5.1).
pub struct Decryptor<'a> {
    pub iface: &'a Interface,
    pub stats: &'a Stats,
    pub handshake_in: &'a Sender<HandshakePacket>,
}

/// The peer of the receiver index last seen in a batch: a batch from one
/// peer costs one index lookup and one keypair snapshot.
struct Found {
    index: u32,
    peer: Arc<Peer>,
    keypairs: Keypairs,
}

impl Decryptor<'_> {
    /// Checks each batch, numbers it and sends it on: opened here, or to
    /// the open workers.
    pub fn run(&self, inbound_sealed: &Receiver<Sealed>, output: Output) {
        let stats = self.stats.stage(Stage::Decryptor);
        let mut seq = 0;
        for Sealed(mut batch) in inbound_sealed.iter() {
            stats.queue(inbound_sealed.len());
            if !self.check_batch(&mut batch) {
                continue;
            }
            if !output.send(stats, seq, Sealed(batch), |b| open(b, stats)) {
                return;
            }
            seq += 1;
        }
    }

    /// Checks the datagrams of `batch`, leaving only transport datagrams
    /// to open, each with its peer, session and counter; returns whether
    /// there are any.
    fn check_batch(&self, batch: &mut Batch) -> bool {
        let stats = self.stats.stage(Stage::Decryptor);
        let now = self.iface.now();
        let mut found = None;
        let mut any = false;
        for i in 0..batch.count() {
            if batch.len(i) == 0 {
                continue;
            }
            match self.check(batch, i, &mut found, now) {
                Ok(MessageType::Transport) => {
                    any = true;
                    continue;
                }
                // Handed to the handshaker.
                Ok(_) => {}
                Err(reason) => stats.drop(reason),
            }
            batch.set_len(i, 0);
        }
        any
    }

    /// Checks slot `i`; returns its message type.
    fn check(
        &self,
        batch: &mut Batch,
        i: usize,
        found: &mut Option<Found>,
        now: Duration,
    ) -> Result<MessageType, DropReason> {
        let datagram = &batch.slot(i)[..batch.len(i)];
        let kind = message_type(datagram).map_err(DropReason::from)?;
        if kind != MessageType::Transport {
            return match self
                .handshake_in
                .try_send(HandshakePacket::new(datagram, batch.addr(i)))
            {
                Ok(()) => Ok(kind),
                Err(_) => Err(DropReason::HandshakeQueueFull),
            };
        }
        let header = TransportHeader::parse(datagram).map_err(DropReason::from)?;
        let f = self.find(found, header.receiver)?;
        let (session, _) = f
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
        // Only a cheap look: the window moves once the packet proved authentic.
        if !session.replay_check(header.counter) {
            return Err(DropReason::Replay);
        }
        batch.set_peer_session(i, &f.peer, session);
        batch.set_counter(i, header.counter);
        Ok(kind)
    }

    /// The peer of receiver index `index`, looked up unless `found` has it.
    fn find<'f>(&self, found: &'f mut Option<Found>, index: u32) -> Result<&'f Found, DropReason> {
        if found.as_ref().is_none_or(|f| f.index != index) {
            let peer = self
                .iface
                .peer_by_index(index)
                .ok_or(DropReason::UnknownIndex)?;
            if peer.is_removed() {
                return Err(DropReason::PeerRemoved);
            }
            let keypairs = peer.keypairs();
            *found = Some(Found {
                index,
                peer,
                keypairs,
            });
        }
        found.as_ref().ok_or(DropReason::UnknownIndex)
    }
}

/// An open worker's work on a checked batch: see [`open_batch`].
pub fn open(Sealed(mut batch): Sealed, stats: &StageStats) -> Opened {
    open_batch(&mut batch, stats);
    Opened(batch)
}

/// Opens each checked datagram of `batch` in place with the key and
/// counter the decryptor found for it: the step any thread may do. One
/// that does not authenticate is dropped.
fn open_batch(batch: &mut Batch, stats: &StageStats) {
    for k in 0..batch.peers().len() {
        let Some(session) = batch.session(k).cloned() else {
            continue;
        };
        for i in 0..batch.count() {
            let len = batch.len(i);
            if len == 0 || usize::from(batch.peer_index(i)) != k {
                continue;
            }
            let counter = batch.counter(i);
            if open_in_place(&session.recv, counter, &mut batch.slot_mut(i)[..len]).is_err() {
                stats.drop(DropReason::Decrypt);
                batch.set_len(i, 0);
            }
        }
    }
}

/// The last step, in read order: each authentic datagram moves its
/// session's replay window and shows its peer alive and where it is; an
/// IP packet whose source routes back to that peer is left to deliver.
pub struct Acceptor<'a> {
    pub iface: &'a Interface,
    pub stats: &'a Stats,
    pub session_events: &'a Sender<SessionEvent>,
}

/// The peer of the slots last accepted in a batch, and what they did.
struct Current {
    peer: Arc<Peer>,
    /// Its keypairs when its run began, or since it last rotated one in.
    keypairs: Keypairs,
    /// Data packets delivered, and bytes of authenticated datagrams.
    delivered: usize,
    rx_bytes: usize,
    /// Source of the last authenticated datagram.
    from: Option<Endpoint>,
}

/// What became of one authentic datagram.
enum Accepted {
    /// An IP packet of this length, to deliver.
    Data(usize),
    /// A keepalive: nothing to deliver.
    Keepalive,
}

impl Acceptor<'_> {
    /// Accepts the opened datagrams of `batch`, leaving only the IP packets
    /// to deliver; returns whether there are any.
    fn accept_batch(&self, batch: &mut Batch) -> bool {
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
            let c = switch(
                &mut current,
                &batch.peers()[usize::from(batch.peer_index(i))],
                now,
            );
            match self.accept(batch, i, c, &mut sources, now) {
                Ok(accepted) => {
                    c.from = Some(batch.addr(i));
                    c.rx_bytes += datagram_len;
                    if let Accepted::Data(len) = accepted {
                        batch.set_len(i, len);
                        packets += 1;
                        bytes += len;
                        c.delivered += 1;
                        continue;
                    }
                }
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

    /// Accepts slot `i`, which opened.
    fn accept(
        &self,
        batch: &Batch,
        i: usize,
        c: &mut Current,
        sources: &mut Memo<Arc<Peer>>,
        now: Duration,
    ) -> Result<Accepted, DropReason> {
        // Removed since the check: as its packets in flight outbound.
        if c.peer.is_removed() {
            return Err(DropReason::PeerRemoved);
        }
        let session = batch
            .session(usize::from(batch.peer_index(i)))
            .ok_or(DropReason::UnknownIndex)?;
        if !session.replay_update(batch.counter(i)) {
            return Err(DropReason::Replay);
        }
        let is_next = c
            .keypairs
            .next
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, session));
        if is_next {
            self.promote(c, session, now);
        }
        let len = opened_len(batch.len(i));
        if len == 0 {
            return Ok(Accepted::Keepalive);
        }
        let plain = &batch.slot(i)[HEADROOM..HEADROOM + len];
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
        Ok(Accepted::Data(inner.len))
    }

    /// A datagram authenticated on `c`'s "next" keypair: the peer confirmed
    /// our response, so that keypair becomes the current one.
    fn promote(&self, c: &mut Current, session: &Session, now: Duration) {
        if self.iface.promote(&c.peer, session.local_index) {
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
        c.keypairs = c.peer.keypairs();
    }
}

/// Makes `current` the entry for `peer`, finishing the one before if it is
/// another peer.
fn switch<'c>(
    current: &'c mut Option<Current>,
    peer: &Arc<Peer>,
    now: Duration,
) -> &'c mut Current {
    if let Some(done) = current.take_if(|c| !Arc::ptr_eq(&c.peer, peer)) {
        finish(done, now);
    }
    current.get_or_insert_with(|| Current {
        peer: peer.clone(),
        keypairs: peer.keypairs(),
        delivered: 0,
        rx_bytes: 0,
        from: None,
    })
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

/// Accepts opened batches in the decryptor's order and writes their IP
/// packets to the tun, a batch at a time. `batches` is the size of the
/// direction's pool, which bounds how far the open workers can get out of
/// order.
pub fn tun_writer(
    tun: &dyn TunDevice,
    acceptor: &Acceptor,
    inbound_opened: &Receiver<Numbered<Opened>>,
    batches: usize,
    stats: &StageStats,
) {
    in_order(inbound_opened, batches, stats, |Opened(mut batch)| {
        if acceptor.accept_batch(&mut batch) {
            write_plain(tun, &mut batch, stats);
        }
    });
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

    fn from() -> Endpoint {
        Endpoint::from("192.0.2.7:51820".parse::<SocketAddr>().unwrap())
    }

    /// An interface with our key, and what the three steps need beside it.
    struct Steps {
        iface: Interface,
        stats: Stats,
        handshake_in: (Sender<HandshakePacket>, Receiver<HandshakePacket>),
        events: (Sender<SessionEvent>, Receiver<SessionEvent>),
    }

    impl Steps {
        fn new() -> Steps {
            let key = PrivateKey::from_bytes([0x11; 32]);
            Steps {
                iface: Interface::new(Some(key), 1420, Timing::default()),
                stats: Stats::default(),
                handshake_in: crossbeam_channel::bounded(1),
                events: crossbeam_channel::bounded(4),
            }
        }

        /// A session under receiver index `index`, whose peer seals with
        /// the key `[k + 1; 32]`.
        fn session(&self, index: u32, k: u8) -> Session {
            let keys = TransportKeys {
                send: [k; 32],
                recv: [k + 1; 32],
                local_index: index,
                remote_index: 5,
            };
            Session::new(&keys, self.iface.now(), true)
        }

        fn decryptor(&self) -> Decryptor<'_> {
            Decryptor {
                iface: &self.iface,
                stats: &self.stats,
                handshake_in: &self.handshake_in.0,
            }
        }

        fn acceptor(&self) -> Acceptor<'_> {
            Acceptor {
                iface: &self.iface,
                stats: &self.stats,
                session_events: &self.events.0,
            }
        }

        /// The three steps on one batch of `datagrams` from [`from`];
        /// returns whether any packet is left to deliver, and the batch.
        fn decrypt(&self, datagrams: impl IntoIterator<Item = Vec<u8>>) -> (bool, Batch) {
            let mut batch = batch_of(datagrams);
            let delivers = decrypt(&self.decryptor(), &self.acceptor(), &mut batch);
            (delivers, batch)
        }
    }

    fn batch_of(datagrams: impl IntoIterator<Item = Vec<u8>>) -> Batch {
        let mut batch = Pool::new(1, inbound_slot_size(1420)).get();
        for d in datagrams {
            batch.free_mut()[..d.len()].copy_from_slice(&d);
            batch.push_datagram(d.len(), from());
        }
        batch
    }

    /// A peer removed between the check and the acceptance (its batch with
    /// the open workers): its datagrams are dropped as `peer_removed`, a
    /// keepalive too, and it does not roam.
    #[test]
    fn a_peer_removed_after_the_check_has_nothing_accepted() {
        let steps = Steps::new();
        let iface = &steps.iface;
        let a = iface.add_peer(spec(1, "10.0.0.0/8")).unwrap();
        let index = iface.new_index(&a, || 77);
        iface.install_initiated(&a, steps.session(index, 1));
        let a_sends = SessionKey::new(&[2; 32]);
        let mut keepalive = vec![0u8; 64];
        let n = seal_in_place(&a_sends, index, 1, &mut keepalive, 0, 1420).unwrap();
        keepalive.truncate(n);
        let data = datagram(&a_sends, index, 0, Ipv4Addr::new(10, 2, 0, 1));
        let mut batch = batch_of([data, keepalive]);
        assert!(steps.decryptor().check_batch(&mut batch));
        iface.remove_peer(&a.public_key).expect("was there");
        open_batch(&mut batch, steps.stats.stage(Stage::Decryptor));
        assert!(!steps.acceptor().accept_batch(&mut batch));
        let s = steps.stats.stage(Stage::Decryptor);
        assert_eq!(s.dropped(DropReason::PeerRemoved), 2);
        assert_eq!((s.packets(), s.total_drops()), (0, 2));
        assert_eq!(a.endpoint(), None);
        assert_eq!(a.rx_bytes.load(Relaxed), 0);
    }

    /// Whitepaper §2 over several peers: the inner source must route back to
    /// the peer whose session the packet came on, by longest prefix over all
    /// peers. A's shorter prefix covering B's does not make B's addresses A's.
    #[test]
    fn the_inner_source_must_route_back_to_the_same_peer() {
        let steps = Steps::new();
        let iface = &steps.iface;
        let a = iface.add_peer(spec(1, "10.0.0.0/8")).unwrap();
        let b = iface.add_peer(spec(2, "10.1.0.0/16")).unwrap();
        let index = iface.new_index(&a, || 77);
        iface.install_initiated(&a, steps.session(index, 1));
        let a_sends = SessionKey::new(&[2; 32]);
        let sources = [
            Ipv4Addr::new(10, 2, 0, 1),   // A's alone: delivered
            Ipv4Addr::new(10, 1, 0, 1),   // B's, inside A's /8: dropped
            Ipv4Addr::new(192, 0, 2, 99), // nobody's: dropped
        ];
        let (delivers, batch) = steps.decrypt(
            (0..)
                .zip(sources)
                .map(|(counter, src)| datagram(&a_sends, index, counter, src)),
        );
        assert!(delivers);
        let lens: Vec<_> = (0..3).map(|i| batch.len(i)).collect();
        assert_eq!(lens, [40, 0, 0]);
        let s = steps.stats.stage(Stage::Decryptor);
        assert_eq!(s.dropped(DropReason::SourceNotAllowed), 2);
        assert_eq!(s.packets(), 1);
        // All three were authentic: A is alive and roams to their source.
        assert_eq!(a.endpoint(), Some(from()));
        assert!(a.rx_bytes.load(Relaxed) > 0);
        assert_eq!(b.rx_bytes.load(Relaxed), 0);
        assert_eq!(b.endpoint(), None);
    }

    /// Around a rekey a peer's batch holds datagrams on its current keypair
    /// and on the one waiting in "next": each opens with its own key, and
    /// the first on "next" rotates it in, once.
    #[test]
    fn a_batch_on_two_keypairs_of_one_peer_opens_each_and_rotates_once() {
        let steps = Steps::new();
        let iface = &steps.iface;
        let a = iface.add_peer(spec(1, "10.0.0.0/8")).unwrap();
        let (old, new) = (iface.new_index(&a, || 70), iface.new_index(&a, || 71));
        iface.install_initiated(&a, steps.session(old, 1));
        iface.install_responded(&a, steps.session(new, 3));
        let (old_key, new_key) = (SessionKey::new(&[2; 32]), SessionKey::new(&[4; 32]));
        let src = Ipv4Addr::new(10, 2, 0, 1);
        let (delivers, batch) = steps.decrypt([
            datagram(&old_key, old, 0, src),
            datagram(&new_key, new, 0, src),
            datagram(&old_key, old, 1, src),
            datagram(&new_key, new, 1, src),
        ]);
        assert!(delivers);
        assert_eq!(batch.peers().len(), 2, "one entry per keypair");
        let lens: Vec<_> = (0..4).map(|i| batch.len(i)).collect();
        assert_eq!(lens, [40; 4]);
        let s = steps.stats.stage(Stage::Decryptor);
        assert_eq!((s.packets(), s.total_drops()), (4, 0));
        assert_eq!(steps.stats.handshakes(), 1, "rotated once");
        let ready = &steps.events.1;
        assert!(matches!(ready.try_recv(), Ok(SessionEvent::Ready(_))));
        assert!(ready.try_recv().is_err());
        let k = a.keypairs();
        let index = |s: &Option<Arc<Session>>| s.as_ref().map(|s| s.local_index);
        assert_eq!(
            (index(&k.current), index(&k.previous)),
            (Some(new), Some(old))
        );
        assert!(k.next.is_none());
    }
}
