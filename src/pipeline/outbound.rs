//! Outbound, in flow order: tun_reader -> encryptor -> udp_sender, with
//! optional seal workers between the encryptor and the udp_sender
//! ([`super::parallel`]): the encryptor routes and gives each packet its
//! counter in read order, the workers seal batches in parallel, and the
//! udp_sender sends them in the encryptor's order again.

use super::device::{TunDevice, UdpDevice};
use super::interface::{Interface, Routes};
use super::parallel::{in_order, Numbered, Onward};
use super::peer::{Peer, Session};
use super::pool::{Batch, Plain, Pool, Sealed, HEADROOM, NO_ADDR};
use super::reading::Direction;
use super::stats::{DropReason, StageStats};
use super::SessionEvent;
use crate::protocol::session::{inner_packet, seal_in_place, InnerError};
use crate::sys::poll::StopFd;
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

/// Packets that may wait for one peer's session, as wireguard-go's staged
/// queue; the overflow is dropped and counted.
pub const WAITING_PACKETS: usize = 128;

/// The outbound direction as its readers see it ([`Reading`](super::reading::Reading)): IP packets
/// from the tun, a batch of whatever is ready at a time, to the encryptor.
/// [`Reading::next`](super::reading::Reading::next) blocks on the pool when every batch is in flight: that
/// is the backpressure from the stages after it. A [`Lone`](super::pool::Lone) packet takes
/// the [`Shortcut`].
pub struct Outbound<'a> {
    pub tun: &'a dyn TunDevice,
    pub outbound_plain: &'a Sender<Plain>,
    pub shortcut: Shortcut<'a>,
    /// The tun_reader's, whichever thread reads.
    pub stats: &'a StageStats,
}

impl Direction for Outbound<'_> {
    fn wait(&self, stop: &StopFd) -> io::Result<bool> {
        self.tun.wait_readable(stop)
    }

    fn read(&self, batch: &mut Batch) -> io::Result<bool> {
        let Some(dropped) = self.tun.try_read_batch(batch)? else {
            return Ok(false);
        };
        (0..dropped).for_each(|_| self.stats.drop(DropReason::BadTunPacket));
        Ok(true)
    }

    fn shortcut(&self, batch: Batch) -> Option<Batch> {
        self.shortcut.take(batch)
    }

    fn hand_on(&self, batch: Batch) -> bool {
        // An error: the encryptor has ended and reports why.
        self.stats.send(self.outbound_plain, Plain(batch)).is_ok()
    }

    fn stats(&self) -> &StageStats {
        self.stats
    }
}

/// The encryptor's and udp_sender's work done on the reading thread (the
/// tun_reader's, or the udp_receiver's for an answer: see [`Reading`](super::reading::Reading)),
/// for a [`Lone`](super::pool::Lone) packet: nothing is queued or in the works ahead of it, so
/// order holds, and the packet goes out without two thread wake-ups. Those
/// cost tens of microseconds each on a small machine, most of a ping's RTT.
pub struct Shortcut<'a> {
    pub sealer: Sealer<'a>,
    pub udp: &'a dyn UdpDevice,
    pub sender_stats: &'a StageStats,
}

impl Shortcut<'_> {
    /// Seals and sends `batch`, or hands it back when it must take the
    /// long way: its peer has no session or has packets waiting for one,
    /// and the encryptor keeps the order.
    fn take(&self, mut batch: Batch) -> Option<Batch> {
        self.sealer
            .check_packets(&mut batch, &self.sealer.iface.routes());
        // Dropped by the checks: nothing to send.
        let peer = batch.peers().first()?.clone();
        // Its packets that wait for a session go first, from the encryptor.
        // Set before the batch that brought them went back to the pool, and
        // the caller saw that batch back: a plain load sees it set.
        if peer.packets_waiting.load(SeqCst) {
            return Some(batch);
        }
        let Some(session) = peer.sending_session() else {
            return Some(batch);
        };
        if self.sealer.assign(&mut batch, 0, &peer, &session) {
            self.sealer.seal_assigned(&mut batch);
            send_sealed(self.udp, &mut batch, self.sender_stats);
        }
        None
    }
}

/// Checks and seals plaintext packets in place: the encryptor's work on one
/// batch, without the waiting for a session.
#[derive(Clone, Copy)]
pub struct Sealer<'a> {
    pub iface: &'a Interface,
    pub stats: &'a StageStats,
}

impl Sealer<'_> {
    /// Gives the packets of `batch` for `peer` (the `k`th of
    /// [`Batch::peers`]) their counters under `session`, in order: the half
    /// of sealing that must stay on one thread. Returns whether any packet
    /// is left to seal.
    fn assign(&self, batch: &mut Batch, k: usize, peer: &Peer, session: &Arc<Session>) -> bool {
        let mut any = false;
        for i in 0..batch.count() {
            if batch.len(i) == 0 || usize::from(batch.peer_index(i)) != k {
                continue;
            }
            match session.next_counter() {
                Some(counter) => {
                    batch.set_counter(i, counter);
                    any = true;
                }
                None => {
                    // Key used up: drop; the handshaker rekeys long before this.
                    self.stats.drop(DropReason::ExpiredKey);
                    batch.set_len(i, 0);
                }
            }
        }
        if any {
            batch.set_session(k, session.clone());
            peer.sent(peer.now(), true);
        }
        any
    }

    /// Seals each packet of `batch` in place with the counter and session
    /// [`Sealer::assign`] gave it: the half of sealing that any thread may
    /// do.
    pub fn seal_assigned(&self, batch: &mut Batch) {
        let mtu = self.iface.mtu;
        let (mut packets, mut bytes) = (0, 0);
        for k in 0..batch.peers().len() {
            let Some(session) = batch.session(k).cloned() else {
                continue;
            };
            let mut sealed = 0;
            for i in 0..batch.count() {
                let len = batch.len(i);
                if len == 0 || usize::from(batch.peer_index(i)) != k {
                    continue;
                }
                let counter = batch.counter(i);
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
                        sealed += n;
                    }
                    None => {
                        self.stats.drop(DropReason::TooBig);
                        batch.set_len(i, 0);
                    }
                }
            }
            batch.peers()[k].tx_bytes.fetch_add(sealed as u64, Relaxed);
        }
        self.stats.pass(packets, bytes);
    }

    /// A seal worker's work on a batch: see [`Sealer::seal_assigned`].
    pub fn seal(&self, Plain(mut batch): Plain) -> Sealed {
        self.seal_assigned(&mut batch);
        Sealed(batch)
    }

    /// Drops what must never be sent: non-IP data, oversized packets, and
    /// packets for destinations outside every peer's AllowedIPs; gives each
    /// other packet the peer its destination routes to (whitepaper §2).
    fn check_packets(&self, batch: &mut Batch, routes: &Routes) {
        let mut routes = routes.memo();
        for i in 0..batch.count() {
            let len = batch.len(i);
            if len == 0 {
                continue;
            }
            let reason = if len > self.iface.mtu {
                DropReason::TooBig
            } else {
                match inner_packet(&batch.slot(i)[HEADROOM..HEADROOM + len]) {
                    Err(InnerError::Empty | InnerError::BadVersion) => DropReason::NotIp,
                    Err(_) => DropReason::InnerTruncated,
                    Ok(p) => match routes.lookup(p.dst) {
                        Some(peer) => {
                            batch.set_peer(i, peer);
                            continue;
                        }
                        None => DropReason::NoRoute,
                    },
                }
            };
            self.stats.drop(reason);
            batch.set_len(i, 0);
        }
    }
}

/// Plaintext packets waiting for their peer's session: copies, so that no
/// pool batch is held per waiting peer (the pool serves all of them).
struct Waiting {
    peer: Arc<Peer>,
    data: Vec<u8>,
    lens: Vec<usize>,
}

/// Where the encryptor's batches go: sealed by itself, or with their
/// counters given to the seal workers.
pub type Output<'a> = Onward<'a, Plain, Sealed>;

/// Seals plaintext packets with each peer's current keypair, or gives them
/// their counters for the seal workers. Packets for a peer without one
/// wait in that peer's queue (bounded; the overflow is counted) and the
/// handshaker is asked for a session for that peer; the other peers'
/// packets go on meanwhile.
pub struct Encryptor<'a> {
    sealer: Sealer<'a>,
    output: Output<'a>,
    /// The number of the next batch forwarded.
    seq: u64,
    /// Asks the handshaker for a session with a peer.
    want_session: &'a Sender<Arc<Peer>>,
    pool: &'a Pool,
    /// By peer id; each peer here has [`Peer::packets_waiting`] set.
    waiting: HashMap<u64, Waiting>,
}

impl<'a> Encryptor<'a> {
    pub fn new(
        sealer: Sealer<'a>,
        output: Output<'a>,
        want_session: &'a Sender<Arc<Peer>>,
        pool: &'a Pool,
    ) -> Self {
        Encryptor {
            sealer,
            output,
            seq: 0,
            want_session,
            pool,
            waiting: HashMap::new(),
        }
    }

    pub fn run(
        mut self,
        outbound_plain: &Receiver<Plain>,
        session_events: &Receiver<SessionEvent>,
    ) {
        let mut session_events = session_events.clone();
        loop {
            let more = select! {
                recv(outbound_plain) -> msg => match msg {
                    Ok(Plain(batch)) => {
                        self.sealer.stats.queue(outbound_plain.len());
                        self.process(batch)
                    }
                    Err(_) => false,
                },
                recv(session_events) -> ev => match ev {
                    // Any peer that has a session by now goes, in case the
                    // event of another was lost to a full channel.
                    Ok(SessionEvent::Ready(_)) => self.flush_ready(),
                    Ok(SessionEvent::GaveUp(peer)) => {
                        self.drop_waiting(peer.id, DropReason::GaveUp);
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

    /// Checks, seals and forwards a batch; the packets of a peer without a
    /// session wait for one. Returns false once the next stage has ended.
    fn process(&mut self, mut batch: Batch) -> bool {
        self.sealer
            .check_packets(&mut batch, &self.sealer.iface.routes());
        for k in 0..batch.peers().len() {
            let peer = batch.peers()[k].clone();
            let Some(session) = peer.sending_session() else {
                self.wait(&mut batch, k, &peer);
                continue;
            };
            // Packets that waited for this session go out first, in order.
            if self.waiting.contains_key(&peer.id) && !self.flush(peer.id) {
                return false;
            }
            self.sealer.assign(&mut batch, k, &peer, &session);
        }
        !batch.has_packets() || self.forward(batch)
    }

    /// Numbers a batch whose counters are given and sends it on: sealed
    /// here, or to the workers. Returns false once the next stage has ended.
    fn forward(&mut self, batch: Batch) -> bool {
        let seq = self.seq;
        self.seq += 1;
        let sealer = self.sealer;
        self.output
            .send(sealer.stats, seq, Plain(batch), |p| sealer.seal(p))
    }

    /// Copies the packets of the `k`th peer of `batch` into its queue, and
    /// asks for a session.
    fn wait(&mut self, batch: &mut Batch, k: usize, peer: &Arc<Peer>) {
        let w = self.waiting.entry(peer.id).or_insert_with(|| {
            // Before `batch` goes back to the pool (see Shortcut::take).
            peer.packets_waiting.store(true, SeqCst);
            Waiting {
                peer: peer.clone(),
                data: Vec::new(),
                lens: Vec::new(),
            }
        });
        for i in 0..batch.count() {
            let len = batch.len(i);
            if len == 0 || usize::from(batch.peer_index(i)) != k {
                continue;
            }
            if w.lens.len() < WAITING_PACKETS {
                w.data
                    .extend_from_slice(&batch.slot(i)[HEADROOM..HEADROOM + len]);
                w.lens.push(len);
            } else {
                self.sealer.stats.drop(DropReason::NoSessionQueueFull);
            }
            batch.set_len(i, 0);
        }
        // One request per peer in the queue; a full queue: the next packet
        // asks again.
        if !peer.session_asked.swap(true, Relaxed)
            && self.want_session.try_send(peer.clone()).is_err()
        {
            peer.session_asked.store(false, Relaxed);
        }
    }

    /// Sends the waiting packets of every peer that has a session now.
    fn flush_ready(&mut self) -> bool {
        let ready: Vec<u64> = self
            .waiting
            .values()
            .filter(|w| w.peer.is_removed() || w.peer.sending_session().is_some())
            .map(|w| w.peer.id)
            .collect();
        ready.into_iter().all(|id| self.flush(id))
    }

    /// Seals and sends peer `id`'s waiting packets, if it has a session.
    /// Returns false once the next stage has ended.
    fn flush(&mut self, id: u64) -> bool {
        let Some(w) = self.waiting.get(&id) else {
            return true;
        };
        if w.peer.is_removed() {
            self.drop_waiting(id, DropReason::PeerRemoved);
            return true;
        }
        let Some(session) = w.peer.sending_session() else {
            return true;
        };
        let Some(w) = self.waiting.remove(&id) else {
            return true;
        };
        let mut offset = 0;
        let mut batch = self.pool.get();
        // From here until they are sent, the batches they fill are out of
        // the pool, which keeps the shortcut away.
        w.peer.packets_waiting.store(false, SeqCst);
        for &len in &w.lens {
            if batch.is_full() {
                let full = std::mem::replace(&mut batch, self.pool.get());
                if !self.seal_and_send(full, &w.peer, &session) {
                    return false;
                }
            }
            let slot = batch
                .free_slots_mut()
                .next()
                .expect("the batch is not full");
            slot[HEADROOM..HEADROOM + len].copy_from_slice(&w.data[offset..offset + len]);
            offset += len;
            let i = batch.count();
            batch.push(len, NO_ADDR);
            batch.set_peer(i, &w.peer);
        }
        self.seal_and_send(batch, &w.peer, &session)
    }

    fn seal_and_send(&mut self, mut batch: Batch, peer: &Peer, session: &Arc<Session>) -> bool {
        !self.sealer.assign(&mut batch, 0, peer, session) || self.forward(batch)
    }

    fn drop_waiting(&mut self, id: u64, reason: DropReason) {
        if let Some(w) = self.waiting.remove(&id) {
            w.peer.packets_waiting.store(false, SeqCst);
            for _ in 0..w.lens.len() {
                self.sealer.stats.drop(reason);
            }
        }
    }
}

/// Sends sealed batches in the encryptor's order, each packet to its
/// peer's current endpoint. `batches` is the size of the direction's pool,
/// which bounds how far the seal workers can get out of order.
pub fn udp_sender(
    udp: &dyn UdpDevice,
    outbound_sealed: &Receiver<Numbered<Sealed>>,
    batches: usize,
    stats: &StageStats,
) {
    in_order(outbound_sealed, batches, stats, |Sealed(mut batch)| {
        send_sealed(udp, &mut batch, stats);
    });
}

/// Sends one sealed batch: the udp_sender's work on it. Each slot goes to
/// its peer's endpoint, read once per peer of the batch.
fn send_sealed(udp: &dyn UdpDevice, batch: &mut Batch, stats: &StageStats) {
    for k in 0..batch.peers().len() {
        let peer = &batch.peers()[k];
        let dest = match (peer.is_removed(), peer.endpoint()) {
            (true, _) => Err(DropReason::PeerRemoved),
            (false, Some(dest)) => Ok(dest),
            (false, None) => Err(DropReason::NoEndpoint),
        };
        for i in 0..batch.count() {
            if batch.len(i) == 0 || usize::from(batch.peer_index(i)) != k {
                continue;
            }
            match dest {
                Ok(dest) => batch.set_addr(i, dest),
                Err(reason) => {
                    stats.drop(reason);
                    batch.set_len(i, 0);
                }
            }
        }
    }
    let packets = batch.packets();
    if packets == 0 {
        return;
    }
    let sent = stats.in_device(|| udp.send_batch(batch));
    stats.pass(sent.datagrams, sent.bytes);
    if let Some(e) = &sent.error {
        log::debug!("udp_sender: {e}");
    }
    (sent.datagrams..packets).for_each(|_| stats.drop(DropReason::SendError));
}
