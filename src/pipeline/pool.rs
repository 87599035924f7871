//! Reusable packet buffers. A [`Batch`] is up to [`BATCH`] packets in one
//! allocation; all batches of a direction are made up front by a [`Pool`],
//! travel through the stages, and go back to the pool when dropped. So the
//! data path allocates nothing, and the memory a direction can hold is fixed
//! by the pool size, whatever the load.
//!
//! Slot layout: a sealed datagram starts at offset 0; its plaintext lives at
//! [`HEADROOM`], so the encryptor and decryptor work in place.
//!
//! A packet read from the tun takes a slot sized for our MTU
//! ([`Batch::push`]), with room to be sealed in place. A received datagram
//! takes only the space it fills ([`Batch::push_datagram`]), so it may be
//! longer than a slot: a peer with a larger MTU than ours (1500 against our
//! 1420, or jumbo frames) sends such datagrams, and kernel WireGuard and
//! wireguard-go accept them up to 64 KiB. An inbound batch has room for the
//! largest ([`inbound_slot_size`]), so the memory stays that of the pool.
//!
//! A slot also knows its peer: a small index into the batch's own list of
//! the peers it holds (usually one), so a packet costs no reference count
//! of its own.

use super::peer::{Peer, Session};
use crate::sys::udp::Endpoint;
use crossbeam_channel::{Receiver, Sender};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets per batch: one recvmmsg/sendmmsg and one channel hand-off.
pub const BATCH: usize = crate::sys::udp::MAX_BATCH;

/// Room before the plaintext for the 16-byte transport header.
pub const HEADROOM: usize = crate::protocol::messages::HEADER_LEN;

/// Slot size for a tunnel MTU: header, plaintext padded to 16, tag.
pub fn slot_size(mtu: usize) -> usize {
    (HEADROOM + mtu + 16 + crate::protocol::messages::TAG_LEN).next_multiple_of(64)
}

/// The largest UDP datagram, with a byte to spare.
pub const MAX_DATAGRAM: usize = 1 << 16;

/// Slot size for the inbound pool: a sealed packet of our MTU, and at least
/// a [`BATCH`]th of [`MAX_DATAGRAM`], so that an empty batch holds any
/// datagram a peer with a larger MTU may send.
pub fn inbound_slot_size(mtu: usize) -> usize {
    slot_size(mtu).max(MAX_DATAGRAM / BATCH)
}

#[derive(Default)]
struct Slots {
    data: Box<[u8]>,
    lens: Box<[usize]>,
    /// Where the buffer of each packet starts in `data`; the entry after the
    /// last packet's is where the free space starts.
    starts: Box<[usize]>,
    addrs: Box<[Endpoint]>,
    /// Index of each slot's peer in `peers`, or [`NO_PEER`].
    peer: Box<[u8]>,
    peers: Vec<Arc<Peer>>,
    /// Each slot's message counter and each entry's session: outbound given
    /// in order by the encryptor for a seal that may happen elsewhere,
    /// inbound found by the decryptor for an open that may.
    counters: Box<[u64]>,
    sessions: Vec<Option<Arc<Session>>>,
    count: usize,
}

const NO_PEER: u8 = u8::MAX;
const _: () = assert!(BATCH < NO_PEER as usize, "a peer index per slot fits a u8");

/// Up to [`BATCH`] packets. A slot whose length is 0 holds no packet (it was
/// dropped by a stage); later stages skip it.
pub struct Batch {
    slots: Slots,
    slot: usize,
    home: Sender<Slots>,
}

/// Source of packets that have none (read from the tun).
pub const NO_ADDR: Endpoint = Endpoint {
    addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    local: None,
};

impl Batch {
    /// Number of slots in use (including emptied ones).
    pub fn count(&self) -> usize {
        self.slots.count
    }

    /// No slot or no byte is left.
    pub fn is_full(&self) -> bool {
        self.slots.count == self.slots.lens.len() || self.room() == 0
    }

    /// The whole buffer of slot `i`.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let (start, end) = (self.slots.starts[i], self.slots.starts[i + 1]);
        &mut self.slots.data[start..end]
    }

    pub fn slot(&self, i: usize) -> &[u8] {
        let (start, end) = (self.slots.starts[i], self.slots.starts[i + 1]);
        &self.slots.data[start..end]
    }

    pub fn len(&self, i: usize) -> usize {
        self.slots.lens[i]
    }

    pub fn set_len(&mut self, i: usize, len: usize) {
        self.slots.lens[i] = len;
    }

    pub fn addr(&self, i: usize) -> Endpoint {
        self.slots.addrs[i]
    }

    /// Sets where slot `i` comes from or goes to.
    pub fn set_addr(&mut self, i: usize, addr: Endpoint) {
        self.slots.addrs[i] = addr;
    }

    /// Index of slot `i`'s peer in [`Batch::peers`] ([`NO_PEER`] for none).
    pub fn peer_index(&self, i: usize) -> u8 {
        self.slots.peer[i]
    }

    /// The distinct peers of the slots, in order of first appearance.
    pub fn peers(&self) -> &[Arc<Peer>] {
        &self.slots.peers
    }

    /// Sets slot `i`'s peer. Looks at the previous slot's first: a batch
    /// mostly holds runs of packets for one peer.
    pub fn set_peer(&mut self, i: usize, peer: &Arc<Peer>) {
        self.set_entry(i, peer, None);
    }

    /// Sets slot `i`'s peer and the session it came on: inbound, a peer's
    /// datagrams in one batch may come on two keypairs (around a rekey), so
    /// each pair is one entry of [`Batch::peers`] and [`Batch::session`].
    pub fn set_peer_session(&mut self, i: usize, peer: &Arc<Peer>, session: &Arc<Session>) {
        self.set_entry(i, peer, Some(session));
    }

    fn set_entry(&mut self, i: usize, peer: &Arc<Peer>, session: Option<&Arc<Session>>) {
        let s = &self.slots;
        let is = |k: usize| {
            s.peers.get(k).is_some_and(|p| Arc::ptr_eq(p, peer))
                && session.is_none_or(|want| {
                    s.sessions
                        .get(k)
                        .and_then(Option::as_ref)
                        .is_some_and(|have| Arc::ptr_eq(have, want))
                })
        };
        let last = i.checked_sub(1).map(|j| usize::from(s.peer[j]));
        let k = match last
            .filter(|&k| is(k))
            .or_else(|| (0..s.peers.len()).find(|&k| is(k)))
        {
            Some(k) => k,
            None => {
                let k = self.slots.peers.len();
                self.slots.peers.push(peer.clone());
                if let Some(session) = session {
                    self.set_session(k, session.clone());
                }
                k
            }
        };
        self.slots.peer[i] = k as u8;
    }

    /// The counter slot `i` is to be sealed with, or came with.
    pub fn counter(&self, i: usize) -> u64 {
        self.slots.counters[i]
    }

    pub fn set_counter(&mut self, i: usize, counter: u64) {
        self.slots.counters[i] = counter;
    }

    /// The session the `k`th entry's slots are to be sealed with, or came
    /// on, if given.
    pub fn session(&self, k: usize) -> Option<&Arc<Session>> {
        self.slots.sessions.get(k)?.as_ref()
    }

    pub fn set_session(&mut self, k: usize, session: Arc<Session>) {
        let sessions = &mut self.slots.sessions;
        if sessions.len() <= k {
            sessions.resize(k + 1, None);
        }
        sessions[k] = Some(session);
    }

    /// Runs of consecutive slots holding packets for the same address:
    /// each is one send, empty slots inside a run are skipped by the sender.
    pub fn runs(&self) -> impl Iterator<Item = (Endpoint, Range<usize>)> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < self.count() && self.len(i) == 0 {
                i += 1;
            }
            if i == self.count() {
                return None;
            }
            let (start, addr) = (i, self.addr(i));
            i += 1;
            while i < self.count() && (self.len(i) == 0 || self.addr(i) == addr) {
                i += 1;
            }
            Some((addr, start..i))
        })
    }

    /// Claims the next slot, the first of [`Batch::free_slots_mut`], for a
    /// packet of `len` bytes from `addr`.
    pub fn push(&mut self, len: usize, addr: Endpoint) {
        self.claim(len, self.slot, addr);
    }

    /// Claims the start of [`Batch::free_mut`] for a received datagram of
    /// `len` bytes from `addr`, which must fit [`Batch::room`]: only the
    /// space it fills, rounded up to 64 bytes, so an empty one too has the
    /// [`HEADROOM`] that later stages slice past.
    pub fn push_datagram(&mut self, len: usize, addr: Endpoint) {
        let size = len.max(1).next_multiple_of(64);
        self.claim(len, size.min(self.room()), addr);
    }

    fn claim(&mut self, len: usize, size: usize, addr: Endpoint) {
        let i = self.slots.count;
        self.slots.lens[i] = len;
        self.slots.addrs[i] = addr;
        self.slots.peer[i] = NO_PEER;
        self.slots.starts[i + 1] = self.slots.starts[i] + size;
        self.slots.count += 1;
    }

    /// The free slots after those in use, for a device to fill.
    pub fn free_slots_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let slot = self.slot;
        self.free_mut().chunks_exact_mut(slot)
    }

    /// All the space after the slots in use, for a datagram that may be
    /// longer than a slot.
    pub fn free_mut(&mut self) -> &mut [u8] {
        let start = self.slots.starts[self.slots.count];
        &mut self.slots.data[start..]
    }

    /// Bytes of [`Batch::free_mut`].
    pub fn room(&self) -> usize {
        self.slots.data.len() - self.slots.starts[self.slots.count]
    }

    /// Whether any slot still holds a packet.
    pub fn has_packets(&self) -> bool {
        self.slots.lens[..self.slots.count].iter().any(|&l| l > 0)
    }

    /// Total bytes of the packets held.
    pub fn bytes(&self) -> usize {
        self.slots.lens[..self.slots.count].iter().sum()
    }

    /// Packets held (slots with a length).
    pub fn packets(&self) -> usize {
        self.slots.lens[..self.slots.count]
            .iter()
            .filter(|&&l| l > 0)
            .count()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        slots.count = 0;
        slots.peers.clear();
        slots.sessions.clear();
        // The pool may be gone at shutdown; then the memory is simply freed.
        let _ = self.home.try_send(slots);
    }
}

/// A fixed set of batches for one direction of the pipeline.
#[derive(Clone)]
pub struct Pool {
    free: Receiver<Slots>,
    home: Sender<Slots>,
    slot: usize,
}

impl Pool {
    /// Allocates `batches` batches of [`BATCH`] slots of `slot` bytes each.
    pub fn new(batches: usize, slot: usize) -> Pool {
        let (home, free) = crossbeam_channel::bounded(batches);
        for _ in 0..batches {
            let slots = Slots {
                data: vec![0u8; BATCH * slot].into_boxed_slice(),
                lens: vec![0; BATCH].into_boxed_slice(),
                starts: vec![0; BATCH + 1].into_boxed_slice(),
                addrs: vec![NO_ADDR; BATCH].into_boxed_slice(),
                peer: vec![NO_PEER; BATCH].into_boxed_slice(),
                peers: Vec::with_capacity(1),
                counters: vec![0; BATCH].into_boxed_slice(),
                sessions: Vec::with_capacity(1),
                count: 0,
            };
            home.send(slots)
                .expect("pool channel has room for every batch");
        }
        Pool { free, home, slot }
    }

    /// An empty batch; blocks while every batch is in flight, which is how a
    /// reader feels backpressure from the stages after it.
    pub fn get(&self) -> Batch {
        let slots = self
            .free
            .recv()
            .expect("the pool holds its own sender, so it never disconnects");
        self.wrap(slots)
    }

    /// An empty batch if one is free right now.
    pub fn try_get(&self) -> Option<Batch> {
        self.free.try_recv().ok().map(|s| self.wrap(s))
    }

    fn wrap(&self, slots: Slots) -> Batch {
        Batch {
            slots,
            slot: self.slot,
            home: self.home.clone(),
        }
    }

    /// Whether the caller's batch is the only one out of the pool: then no
    /// stage after the reader holds a batch or has one queued.
    pub fn only_one_out(&self) -> bool {
        Some(self.free.len() + 1) == self.free.capacity()
    }
}

/// Tells a reader when a batch it read is a lone packet that it may carry
/// through the rest of its direction itself (see
/// [`super::outbound::Shortcut`], [`super::inbound::Shortcut`]).
#[derive(Default)]
pub struct Lone {
    last_read: Option<Instant>,
}

/// How long a direction must have been quiet before a packet counts as lone.
/// Going through the stages on one thread costs some microseconds per
/// packet; packets further apart than this leave the reader idle anyway,
/// while a stream of packets is faster spread over the stage threads.
const QUIET: Duration = Duration::from_micros(200);

impl Lone {
    /// Whether `batch`, just read, is one packet after a quiet spell, and
    /// every other batch of `pool` is back: then no stage holds or has
    /// queued any packet that should go before it.
    pub fn check(&mut self, batch: &Batch, pool: &Pool) -> bool {
        let now = Instant::now();
        let quiet = self
            .last_read
            .is_none_or(|t| now.saturating_duration_since(t) >= QUIET);
        self.last_read = Some(now);
        quiet && batch.packets() == 1 && pool.only_one_out()
    }
}

/// Plaintext packets: IP packets at [`HEADROOM`] in each slot.
pub struct Plain(pub Batch);

/// Sealed packets: whole WireGuard datagrams at offset 0 in each slot.
pub struct Sealed(pub Batch);

/// Opened datagrams: authentic, each plaintext at [`HEADROOM`] of its
/// datagram, not yet accepted (see [`super::inbound`]).
pub struct Opened(pub Batch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_return_to_the_pool_when_dropped() {
        let pool = Pool::new(2, slot_size(1420));
        let mut a = pool.get();
        let _b = pool.get();
        assert!(pool.try_get().is_none(), "both batches are out");
        a.push(10, NO_ADDR);
        assert_eq!(a.packets(), 1);
        drop(a);
        let again = pool.try_get().expect("dropped batch came back");
        assert_eq!(again.count(), 0, "a returned batch is empty");
    }

    #[test]
    fn only_one_out_counts_every_batch_not_in_the_pool() {
        let pool = Pool::new(3, 64);
        let a = pool.get();
        assert!(pool.only_one_out());
        let b = pool.get();
        assert!(!pool.only_one_out());
        drop(a);
        assert!(pool.only_one_out());
        drop(b);
        assert!(!pool.only_one_out(), "none is out");
    }

    #[test]
    fn lone_means_one_packet_after_a_quiet_spell_with_nothing_ahead() {
        let pool = Pool::new(3, 64);
        let mut lone = Lone::default();
        let mut one = pool.get();
        one.push(10, NO_ADDR);
        assert!(lone.check(&one, &pool), "the first packet of all is lone");
        assert!(!lone.check(&one, &pool), "right after another it is not");
        std::thread::sleep(QUIET);
        let mut two = pool.get();
        two.push(10, NO_ADDR);
        two.push(10, NO_ADDR);
        assert!(!lone.check(&two, &pool), "two packets are a batch");
        std::thread::sleep(QUIET);
        assert!(
            !lone.check(&one, &pool),
            "another batch is still out: something may be ahead"
        );
        drop(two);
        std::thread::sleep(QUIET);
        assert!(lone.check(&one, &pool));
    }

    #[test]
    fn slots_fit_a_sealed_full_mtu_packet() {
        let s = slot_size(1420);
        assert!(s >= 16 + 1420 + 16 + 16);
        assert_eq!(s % 64, 0);
    }

    #[test]
    fn a_datagram_takes_the_room_it_fills_a_tun_packet_a_slot() {
        let pool = Pool::new(1, 128);
        let mut b = pool.get();
        b.push(3, NO_ADDR);
        assert_eq!(b.room(), (BATCH - 1) * 128);
        b.free_mut()[..130].fill(9);
        b.push_datagram(130, NO_ADDR);
        b.push_datagram(0, NO_ADDR);
        b.push_datagram(10, NO_ADDR);
        let sizes: Vec<_> = (0..b.count()).map(|i| b.slot(i).len()).collect();
        assert_eq!(sizes, [128, 192, 64, 64], "rounded up to 64 bytes");
        assert_eq!(b.slot(1)[..130], [9; 130]);
        assert_eq!(b.packets(), 3);
        assert_eq!(b.room(), BATCH * 128 - 448);
        b.free_slots_mut().next().unwrap()[0] = 7;
        b.push(5, NO_ADDR);
        assert_eq!((b.slot(4).len(), b.slot(4)[0]), (128, 7));
        // Fills the rest of the batch exactly: no room for another packet.
        let rest = b.room();
        b.push_datagram(rest, NO_ADDR);
        assert!(b.is_full());
        // A batch back from the pool starts empty, with all its room.
        drop(b);
        let mut again = pool.get();
        assert_eq!(again.room(), BATCH * 128);
        for _ in 0..BATCH {
            again.push(1, NO_ADDR);
        }
        assert!(again.is_full());
        assert!((0..BATCH).all(|i| again.slot(i).len() == 128));
    }

    #[test]
    fn an_inbound_batch_holds_the_largest_datagram() {
        for mtu in [576, 1420, 9000] {
            assert!(BATCH * inbound_slot_size(mtu) >= MAX_DATAGRAM, "MTU {mtu}");
            assert!(inbound_slot_size(mtu) >= slot_size(mtu));
        }
    }

    fn to(port: u16) -> Endpoint {
        Endpoint::from(SocketAddr::from(([192, 0, 2, 1], port)))
    }

    #[test]
    fn runs_end_where_the_address_changes_and_skip_empty_slots() {
        let pool = Pool::new(1, 64);
        let mut b = pool.get();
        for (len, port) in [
            (0, 9),
            (5, 1),
            (5, 1),
            (0, 2),
            (5, 1),
            (5, 2),
            (0, 3),
            (5, 1),
        ] {
            b.push(len, to(port));
        }
        let runs: Vec<_> = b.runs().map(|(a, r)| (a.addr.port(), r)).collect();
        assert_eq!(runs, [(1, 1..5), (2, 5..7), (1, 7..8)]);
        drop(b);
        let mut empty = pool.get();
        empty.push(0, to(1));
        assert_eq!(empty.runs().count(), 0);
    }

    #[test]
    fn free_slots_follow_the_used_ones() {
        let pool = Pool::new(1, 64);
        let mut b = pool.get();
        b.push(3, NO_ADDR);
        assert_eq!(b.free_slots_mut().count(), BATCH - 1);
        b.free_slots_mut().next().unwrap()[0] = 7;
        b.push(1, NO_ADDR);
        assert_eq!(b.slot(1)[0], 7);
    }
}
