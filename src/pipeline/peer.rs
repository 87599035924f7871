//! What the stages share about one peer: its keys, its keypairs (previous,
//! current, next; whitepaper §6.3), its endpoint, its allowed IPs, and when
//! packets last went each way. The handshaker writes keypairs (through
//! [`super::interface::Interface`], which keeps the index table in step);
//! the encryptor, the decryptor and the acceptance after it (on the
//! tun_writer) take a snapshot of them once per batch.
//!
//! What a configuration change may set while the peer runs (its keys, its
//! AllowedIPs, its persistent keepalive, through
//! [`super::interface::Interface::update_peer`]) sits behind its own small
//! lock or atomic that only the handshaker or the changer reads: the data
//! stages never touch it (they reach AllowedIPs through the interface's
//! table), so nothing is added per packet.

use crate::cidr::Cidr;
use crate::protocol::handshake::{PeerStatic, TransportKeys};
use crate::protocol::keys::{PresharedKey, PublicKey};
use crate::protocol::session::{ReplayWindow, SessionKey, REJECT_AFTER_MESSAGES};
use crate::protocol::timers::Timing;
use crate::sys::udp::Endpoint;
use crossbeam_channel::Sender;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Monotonic time since the tunnel started.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A time stamp one thread sets and another reads; 0 means "never".
#[derive(Default)]
pub struct Stamp(AtomicU64);

impl Stamp {
    pub fn set(&self, t: Duration) {
        self.0.store(t.as_micros() as u64 + 1, Relaxed);
    }

    /// Sets the stamp only if it is not set, keeping the first time.
    pub fn set_if_unset(&self, t: Duration) {
        let _ = self
            .0
            .compare_exchange(0, t.as_micros() as u64 + 1, Relaxed, Relaxed);
    }

    pub fn clear(&self) {
        self.0.store(0, Relaxed);
    }

    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Relaxed) {
            0 => None,
            v => Some(Duration::from_micros(v - 1)),
        }
    }
}

fn keepalive_millis(interval: Option<Duration>) -> u64 {
    // At least 1 ms so that Some never reads back as None.
    interval.map_or(0, |d| (d.as_millis() as u64).max(1))
}

// A poisoned lock means a stage panicked while changing what it guards;
// each change leaves the value whole, so the others go on with it.
pub(super) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One keypair: the result of a handshake.
pub struct Session {
    pub send: SessionKey,
    pub recv: SessionKey,
    pub local_index: u32,
    pub remote_index: u32,
    pub created: Duration,
    pub we_initiated: bool,
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    pub last_minute_done: AtomicBool,
}

impl Session {
    pub fn new(keys: &TransportKeys, created: Duration, we_initiated: bool) -> Session {
        Session {
            send: SessionKey::new(&keys.send),
            recv: SessionKey::new(&keys.recv),
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            created,
            we_initiated,
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::new()),
            last_minute_done: AtomicBool::new(false),
        }
    }

    /// Makes the keypair unusable for sending while it still decrypts what
    /// the peer sends with it, as wireguard-go does to the current keypairs
    /// when the private key changes: the next packet asks for a handshake.
    /// The headroom between `REJECT_AFTER_MESSAGES` and `u64::MAX` keeps
    /// the counters of batches already sealing with it from wrapping.
    pub fn expire(&self) {
        self.send_counter.store(REJECT_AFTER_MESSAGES, Relaxed);
    }

    /// Takes the next send counter, or None once the key is used up.
    pub fn next_counter(&self) -> Option<u64> {
        let c = self.send_counter.fetch_add(1, Relaxed);
        (c < REJECT_AFTER_MESSAGES).then_some(c)
    }

    pub fn counter(&self) -> u64 {
        self.send_counter.load(Relaxed)
    }

    /// Cheap check before decrypting: could this counter still be accepted?
    pub fn replay_check(&self, counter: u64) -> bool {
        self.replay.lock().is_ok_and(|w| w.check(counter))
    }

    /// Records a counter after successful decryption; false for a replay.
    pub fn replay_update(&self, counter: u64) -> bool {
        self.replay.lock().is_ok_and(|mut w| w.update(counter))
    }
}

/// The three keypair slots.
#[derive(Default, Clone)]
pub struct Keypairs {
    pub previous: Option<Arc<Session>>,
    pub current: Option<Arc<Session>>,
    pub next: Option<Arc<Session>>,
}

impl Keypairs {
    /// The session for a receiver index, and whether it sits in "next".
    pub fn find(&self, index: u32) -> Option<(&Arc<Session>, bool)> {
        let is = |s: &&Arc<Session>| s.local_index == index;
        if let Some(s) = self.next.as_ref().filter(is) {
            return Some((s, true));
        }
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(is)
            .map(|s| (s, false))
    }

    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.previous, &self.current, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.local_index)
    }
}

/// One `[Peer]` of the interface, already validated.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Start a handshake with `endpoint` at once, without waiting for
    /// traffic: it is where the peer last was before we restarted, and the
    /// peer's session with the previous run is dead.
    pub initiate_at_start: bool,
    pub allowed_ips: Vec<Cidr>,
    pub persistent_keepalive: Option<Duration>,
}

/// Where a peer's news goes (the interface's channels): the handshaker's
/// timer planning (peer ids), and whoever follows the endpoints.
#[derive(Clone)]
pub struct Wakeups {
    pub timers: Sender<u64>,
    pub endpoint_moved: Sender<()>,
}

/// The peer as every stage sees it.
pub struct Peer {
    /// Unique within the interface, never reused: the handshaker's key for
    /// its state of this peer.
    pub id: u64,
    pub public_key: PublicKey,
    /// The peer's key with what the handshake precomputes from it (also
    /// from our private key and the PSK): replaced whole when either
    /// changes, read by the handshaker only.
    remote: RwLock<Arc<PeerStatic>>,
    /// The peer's part of the interface's AllowedIPs table, changed only
    /// under that table's write lock so the two always agree.
    allowed_ips: Mutex<Vec<Cidr>>,
    /// Persistent keepalive interval in milliseconds, 0 for none.
    persistent_keepalive: AtomicU64,
    /// Set when a persistent keepalive is turned on: the handshaker sends a
    /// keepalive (or starts a handshake) at once, as wireguard-go does.
    keepalive_asked: AtomicBool,
    pub initiate_at_start: bool,
    pub clock: Clock,
    pub timing: Timing,
    pub mtu: usize,
    keypairs: RwLock<Keypairs>,
    endpoint: Mutex<Option<Endpoint>>,
    /// Told when the endpoint's address changes and when a stamp moves.
    wakeups: Wakeups,
    /// Last authenticated packet sent / received, and data received.
    pub sent_any: Stamp,
    pub recv_any: Stamp,
    pub recv_data: Stamp,
    /// First data packet sent since the last authenticated receive.
    pub sent_data_unanswered: Stamp,
    /// When the last handshake with this peer completed.
    pub last_handshake: Stamp,
    /// Bytes of authenticated datagrams received, and of datagrams sealed.
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Set by the encryptor when it asks the handshaker for a session and
    /// cleared by the handshaker when it takes the request: one request in
    /// the queue per peer at most.
    pub session_asked: AtomicBool,
    /// Set on the first event stamped since the handshaker last planned
    /// this peer's timers, which is when the handshaker gets its id.
    timers_touched: AtomicBool,
    /// Set by the encryptor while packets of this peer wait in its queue:
    /// the lone-packet shortcut must not overtake them.
    pub packets_waiting: AtomicBool,
    /// Taken out of the interface: packets still in flight for it are
    /// dropped.
    removed: AtomicBool,
}

impl Peer {
    pub fn new(
        id: u64,
        remote: Arc<PeerStatic>,
        spec: PeerSpec,
        clock: Clock,
        mtu: usize,
        timing: Timing,
        wakeups: Wakeups,
    ) -> Peer {
        Peer {
            id,
            public_key: spec.public_key,
            remote: RwLock::new(remote),
            allowed_ips: Mutex::new(spec.allowed_ips),
            persistent_keepalive: AtomicU64::new(keepalive_millis(spec.persistent_keepalive)),
            keepalive_asked: AtomicBool::new(false),
            initiate_at_start: spec.initiate_at_start && spec.endpoint.is_some(),
            clock,
            timing,
            mtu,
            keypairs: RwLock::default(),
            endpoint: Mutex::new(spec.endpoint.map(Endpoint::from)),
            wakeups,
            sent_any: Stamp::default(),
            recv_any: Stamp::default(),
            recv_data: Stamp::default(),
            sent_data_unanswered: Stamp::default(),
            last_handshake: Stamp::default(),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            session_asked: AtomicBool::new(false),
            timers_touched: AtomicBool::new(false),
            packets_waiting: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub(super) fn mark_removed(&self) {
        self.removed.store(true, Relaxed);
    }

    /// The peer's static keys; see [`super::interface::Interface::handshake_keys`]
    /// for them together with ours.
    pub fn remote(&self) -> Arc<PeerStatic> {
        read(&self.remote).clone()
    }

    pub(super) fn set_remote(&self, remote: Arc<PeerStatic>) {
        *write(&self.remote) = remote;
    }

    /// The peer's AllowedIPs, in the order they were added.
    pub fn allowed_ips(&self) -> Vec<Cidr> {
        lock(&self.allowed_ips).clone()
    }

    /// The list to change, with the interface's table write-locked.
    pub(super) fn allowed_ips_mut(&self) -> MutexGuard<'_, Vec<Cidr>> {
        lock(&self.allowed_ips)
    }

    pub fn persistent_keepalive(&self) -> Option<Duration> {
        match self.persistent_keepalive.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Sets the persistent keepalive interval and has the handshaker plan
    /// the peer's timers again; turning it on asks for a keepalive at once.
    pub(super) fn set_persistent_keepalive(&self, interval: Option<Duration>) {
        let old = self
            .persistent_keepalive
            .swap(keepalive_millis(interval), Relaxed);
        if old == 0 && interval.is_some() {
            self.keepalive_asked.store(true, Relaxed);
        }
        self.touch_timers();
    }

    /// Whether a keepalive was asked since the handshaker last looked.
    pub fn take_keepalive_asked(&self) -> bool {
        self.keepalive_asked.swap(false, Relaxed)
    }

    /// Stops every keypair sending (see [`Session::expire`]) and has the
    /// handshaker look at the peer again.
    pub(super) fn expire_keypairs(&self) {
        let k = self.keypairs();
        for s in [&k.current, &k.next].into_iter().flatten() {
            s.expire();
        }
        self.touch_timers();
    }

    pub fn keypairs(&self) -> Keypairs {
        self.keypairs.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// The keypair to send with, if it is usable now.
    pub fn sending_session(&self) -> Option<Arc<Session>> {
        let current = self.keypairs.read().ok()?.current.clone()?;
        let fresh = !self
            .timing
            .expired(self.now().saturating_sub(current.created));
        (fresh && current.counter() < REJECT_AFTER_MESSAGES).then_some(current)
    }

    /// Initiator side: the new keypair becomes current at once
    /// (whitepaper §5.4.6). Returns the local indices of the keypairs this
    /// dropped.
    pub(super) fn install_initiated(&self, session: Session) -> Vec<u32> {
        self.with_keypairs(|k| {
            k.previous = match k.next.take() {
                Some(next) => Some(next),
                None => k.current.take(),
            };
            k.current = Some(Arc::new(session));
        })
    }

    /// Responder side: the new keypair waits in "next" until the initiator uses
    /// it, so we never send on a key the peer may not have (whitepaper §5.4.6).
    pub(super) fn install_responded(&self, session: Session) -> Vec<u32> {
        self.with_keypairs(|k| {
            k.next = Some(Arc::new(session));
            k.previous = None;
        })
    }

    /// A packet arrived on the "next" keypair: rotate it in. Returns whether
    /// this call did the rotation (another batch may have done it first),
    /// and the indices of the keypairs it dropped.
    pub(super) fn promote(&self, local_index: u32) -> (bool, Vec<u32>) {
        let mut promoted = false;
        let dropped = self.with_keypairs(|k| {
            if k.next
                .as_ref()
                .is_some_and(|n| n.local_index == local_index)
            {
                k.previous = k.current.take();
                k.current = k.next.take();
                promoted = true;
            }
        });
        (promoted, dropped)
    }

    pub(super) fn clear_keypairs(&self) -> Vec<u32> {
        self.with_keypairs(|k| *k = Keypairs::default())
    }

    /// Changes the keypairs; returns the indices of those it dropped, for the
    /// interface's index table.
    fn with_keypairs(&self, f: impl FnOnce(&mut Keypairs)) -> Vec<u32> {
        // A poisoned lock means a stage panicked; the process is going down
        // and the keys must not be used, so start from empty slots.
        let mut k = self
            .keypairs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before: Vec<u32> = k.indices().collect();
        f(&mut k);
        before
            .into_iter()
            .filter(|i| k.indices().all(|kept| kept != *i))
            .collect()
    }

    pub fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint.lock().ok().and_then(|e| *e)
    }

    /// Moves the endpoint to where an authenticated packet came from
    /// (whitepaper §2.1), and our side of it to the local address that packet
    /// reached; returns the old endpoint if the peer's address changed, and
    /// then tells whoever follows the moves. Never blocks: a full channel
    /// means a wake-up is already pending, and it will read the new address.
    pub fn update_endpoint(&self, to: Endpoint) -> Option<Option<Endpoint>> {
        let mut e = self.endpoint.lock().ok()?;
        let moved = e.map(|old| old.addr) != Some(to.addr);
        let old = e.replace(to);
        drop(e);
        if !moved {
            return None;
        }
        let _ = self.wakeups.endpoint_moved.try_send(());
        Some(old)
    }

    /// Tells the handshaker, once until it looks, that a stamp moved and
    /// the peer's timers need planning again (timers::next_due): a few
    /// loads per batch, no message while the mark is set.
    pub(super) fn touch_timers(&self) {
        // Pairs with the fence in `timers_seen`: either the handshaker reads
        // the new stamp, or this reads the cleared mark and sends again.
        fence(SeqCst);
        if !self.timers_touched.load(Relaxed) && !self.timers_touched.swap(true, Relaxed) {
            // At most one id per peer waits, so the channel stays small; it
            // is closed only at shutdown.
            let _ = self.wakeups.timers.send(self.id);
        }
    }

    /// The handshaker, about to read the stamps to plan the timers.
    pub fn timers_seen(&self) {
        self.timers_touched.store(false, Relaxed);
        fence(SeqCst);
    }

    /// Stamps an authenticated receive; `data` for a non-keepalive packet.
    pub fn received(&self, now: Duration, data: bool) {
        self.recv_any.set(now);
        self.sent_data_unanswered.clear();
        if data {
            self.recv_data.set(now);
        }
        self.touch_timers();
    }

    /// Stamps an authenticated send; `data` for a non-keepalive packet.
    pub fn sent(&self, now: Duration, data: bool) {
        self.sent_any.set(now);
        if data {
            self.sent_data_unanswered.set_if_unset(now);
        }
        self.touch_timers();
    }
}
