//! The interface: our own key and every peer, with the tables all stages
//! share to find a peer (cryptokey routing, whitepaper §2):
//!
//! - `routes`: every peer's AllowedIPs in one longest-prefix table whose
//!   value is the peer itself, so the encryptor's destination lookup and the
//!   inbound source check (the acceptance after the decryptor) each cost
//!   one trie lookup, whatever the number of peers;
//! - `by_key`: the peer of a static public key, for initiations;
//! - `indices`: the peer of each receiver index we handed out (session
//!   keypairs, our pending initiation), for transport packets, responses and
//!   cookie replies. Indices are random and unique across all peers
//!   (whitepaper §5.4.1).
//!
//! The tables sit behind locks so the peer set can change while the stages
//! run ([`Interface::add_peer`], [`Interface::remove_peer`],
//! [`Interface::update_peer`], [`Interface::set_private_key`], what `wg set`
//! does); readers take them once per batch or per handshake message, and
//! writers only on handshakes and peer changes.
//!
//! Without a private key (an interface that `wg set` has not given one
//! yet, or whose key it removed, as in wireguard-go) there are no
//! handshakes; peers can still be added and changed, and their
//! static-static DH is computed when a key comes.
//!
//! Lock order: `local`, then `by_key`, `peers`, `routes` (then a peer's own
//! AllowedIPs list), `indices`; a peer's `remote` after `local`.

use super::peer::{read, write, Clock, Peer, PeerSpec, Session, Wakeups};
use crate::cidr::{Cidr, PrefixTable};
use crate::protocol::handshake::{LocalStatic, PeerStatic};
use crate::protocol::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::protocol::timers::Timing;
use crate::sys::udp::Endpoint;
use crate::{Error, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

/// A change to one running peer, as `wg set` makes it; a None field (or
/// an empty list) leaves that part as it is. The peer keeps its sessions
/// and counters, as in wireguard-go.
#[derive(Debug, Clone, Default)]
pub struct PeerUpdate {
    /// Some(None) removes the PSK.
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// Some(None) turns it off.
    pub persistent_keepalive: Option<Option<Duration>>,
    /// Drop every AllowedIP of the peer before applying `allowed_ips`.
    pub replace_allowed_ips: bool,
    /// Applied in order, all under one write lock of the AllowedIPs table.
    pub allowed_ips: Vec<AllowedIpChange>,
}

/// The codec's own change, so a `wg set` applies without a translation:
/// `Add` takes the prefix from the peer that has it, if any, as `add_peer`
/// does; `Remove` removes it if the peer has it, and leaves another peer's
/// alone.
pub use crate::protocol::uapi::AllowedIpChange;

pub struct Interface {
    /// Replaced whole by [`Interface::set_private_key`], which also
    /// replaces every peer's `remote` while holding it for writing; None
    /// while the interface has no private key.
    local: RwLock<Option<Arc<LocalStatic>>>,
    pub clock: Clock,
    pub timing: Timing,
    pub mtu: usize,
    next_id: AtomicU64,
    /// Peers removed so far: tells the handshaker when to forget some.
    removals: AtomicU64,
    peers: RwLock<Vec<Arc<Peer>>>,
    by_key: RwLock<HashMap<PublicKey, Arc<Peer>>>,
    routes: RwLock<PrefixTable<Arc<Peer>>>,
    indices: RwLock<HashMap<u32, Arc<Peer>>>,
    /// What a peer wakes: the handshaker when its timers need planning
    /// again, and whoever follows the endpoints (the host routes of `up`).
    wakeups: Wakeups,
    /// Ids of peers whose timers need planning again (see
    /// `Peer::timers_seen`).
    timers_touched: Receiver<u64>,
    /// One wake-up pending at most, so a moving peer never blocks a stage.
    endpoint_moves: Receiver<()>,
    /// A peer was added or removed: the same one-pending wake-up, apart
    /// from `endpoint_moves` so that its readers (and their tests) still
    /// learn of roaming alone there.
    peer_set_changed: Sender<()>,
    peer_set_changes: Receiver<()>,
}

/// The AllowedIPs of all peers, as the data stages hold it for a batch.
pub type Routes<'a> = RwLockReadGuard<'a, PrefixTable<Arc<Peer>>>;

impl Interface {
    /// An interface without peers, and without a private key if None.
    pub fn new(private_key: Option<PrivateKey>, mtu: usize, timing: Timing) -> Interface {
        let (timers_wakeup, timers_touched) = crossbeam_channel::unbounded();
        let (endpoint_moved, endpoint_moves) = bounded(1);
        let (peer_set_changed, peer_set_changes) = bounded(1);
        Interface {
            local: RwLock::new(private_key.map(|k| Arc::new(LocalStatic::new(k)))),
            clock: Clock::new(),
            timing,
            mtu,
            next_id: AtomicU64::new(0),
            removals: AtomicU64::new(0),
            peers: RwLock::default(),
            by_key: RwLock::default(),
            routes: RwLock::default(),
            indices: RwLock::default(),
            wakeups: Wakeups {
                timers: timers_wakeup,
                endpoint_moved,
            },
            timers_touched,
            endpoint_moves,
            peer_set_changed,
            peer_set_changes,
        }
    }

    pub fn now(&self) -> std::time::Duration {
        self.clock.now()
    }

    /// Our static keys (for mac1 checks and cookie replies), None without
    /// a private key; for a handshake with a peer, take
    /// [`Interface::handshake_keys`].
    pub fn local(&self) -> Option<Arc<LocalStatic>> {
        read(&self.local).clone()
    }

    /// Our static keys and `peer`'s, read together so that a private key
    /// changing at that moment never pairs the new with the old; None
    /// without a private key.
    pub fn handshake_keys(&self, peer: &Peer) -> Option<(Arc<LocalStatic>, Arc<PeerStatic>)> {
        let local = read(&self.local);
        Some((local.clone()?, peer.remote()))
    }

    /// Peer changes ([`PeerChanges`]) that compress the AllowedIPs table
    /// once, when the value is dropped.
    pub fn changes(&self) -> PeerChanges<'_> {
        PeerChanges { iface: self }
    }

    /// Adds a peer. An AllowedIP another peer has already is moved to this
    /// one, as `wg set` does.
    pub fn add_peer(&self, spec: PeerSpec) -> Result<Arc<Peer>> {
        self.changes().add_peer(spec)
    }

    /// Adds peers as [`Interface::add_peer`] does, up to the first error,
    /// as one [`PeerChanges`].
    pub fn add_peers(&self, specs: impl IntoIterator<Item = PeerSpec>) -> Result<()> {
        let changes = self.changes();
        specs
            .into_iter()
            .try_for_each(|spec| changes.add_peer(spec).map(drop))
    }

    /// [`PeerChanges::update_peer`], compressed at once.
    pub fn update_peer(&self, key: &PublicKey, update: PeerUpdate) -> Result<Arc<Peer>> {
        self.changes().update_peer(key, update)
    }

    /// [`PeerChanges::remove_peer`], compressed at once.
    pub fn remove_peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        self.changes().remove_peer(key)
    }

    /// Changes our private key, as wireguard-go does: the peer whose public
    /// key is our new one is removed, every other peer's static keys are
    /// computed again, and their keypairs stop sending (they still decrypt
    /// what is in flight), so the next packet starts a handshake with the
    /// new key. None removes the key (wireguard-go's all-zero key): the
    /// keypairs stop sending all the same, and no handshake is made or
    /// answered until a key comes. Nothing changes if the key is the one we
    /// have, or if a peer's keys cannot be computed (then the error names
    /// it).
    pub fn set_private_key(&self, private_key: Option<PrivateKey>) -> Result<()> {
        let new = private_key.map(LocalStatic::new);
        let mut local = write(&self.local);
        let public = |l: Option<&LocalStatic>| l.map(|l| l.public);
        if public(new.as_ref()) == public(local.as_deref()) {
            return Ok(());
        }
        let ours = public(new.as_ref());
        // Not `peers`: a peer being added is in `by_key` first.
        let peers: Vec<Arc<Peer>> = read(&self.by_key)
            .values()
            .filter(|p| Some(p.public_key) != ours)
            .cloned()
            .collect();
        let remotes = peers
            .iter()
            .map(|p| {
                let old = p.remote();
                peer_static(new.as_ref(), p.public_key, Some(old.psk().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(ours) = ours {
            // wireguard-go ignores a peer with our own key; here it goes.
            self.remove_peer(&ours);
        }
        *local = new.map(Arc::new);
        for (peer, remote) in peers.iter().zip(remotes) {
            peer.set_remote(Arc::new(remote));
        }
        drop(local);
        for peer in &peers {
            peer.expire_keypairs();
        }
        Ok(())
    }

    /// Ready once some peer's endpoint address changed since it was last
    /// read (roaming, whitepaper §2.1): the reader then looks at every peer's
    /// [`Peer::endpoint`]. Several moves before that make one wake-up.
    pub fn endpoint_moves(&self) -> &Receiver<()> {
        &self.endpoint_moves
    }

    /// Ready once a peer was added or removed since it was last read: the
    /// reader then looks at [`Interface::peers`]. Several changes before
    /// that make one wake-up.
    pub fn peer_set_changes(&self) -> &Receiver<()> {
        &self.peer_set_changes
    }

    /// Peers with events since the handshaker last planned their timers.
    pub fn timers_touched(&self) -> &Receiver<u64> {
        &self.timers_touched
    }

    /// How many peers were removed so far.
    pub fn removals(&self) -> u64 {
        self.removals.load(Relaxed)
    }

    /// The peers, in the order they were added.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        read(&self.peers).clone()
    }

    pub fn peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        read(&self.by_key).get(key).cloned()
    }

    /// The AllowedIPs table, to hold for the packets of one batch (a writer
    /// waits for at most that long).
    pub fn routes(&self) -> Routes<'_> {
        read(&self.routes)
    }

    /// The peer we gave receiver index `index` to.
    pub fn peer_by_index(&self, index: u32) -> Option<Arc<Peer>> {
        read(&self.indices).get(&index).cloned()
    }

    /// A fresh receiver index for `peer`, drawn from `random` until it is
    /// unused by every peer.
    pub fn new_index(&self, peer: &Arc<Peer>, mut random: impl FnMut() -> u32) -> u32 {
        let mut indices = write(&self.indices);
        loop {
            let i = random();
            if let std::collections::hash_map::Entry::Vacant(e) = indices.entry(i) {
                e.insert(peer.clone());
                return i;
            }
        }
    }

    /// Frees indices `peer` no longer uses.
    pub fn release_indices(&self, peer: &Peer, released: &[u32]) {
        if released.is_empty() {
            return;
        }
        let mut indices = write(&self.indices);
        for i in released {
            if indices.get(i).is_some_and(|p| std::ptr::eq(&**p, peer)) {
                indices.remove(i);
            }
        }
    }

    /// Installs the keypair of a handshake we initiated (see
    /// [`Peer::install_initiated`]).
    pub fn install_initiated(&self, peer: &Peer, session: Session) {
        self.release_indices(peer, &peer.install_initiated(session));
    }

    /// Installs the keypair of a handshake we answered (see
    /// [`Peer::install_responded`]).
    pub fn install_responded(&self, peer: &Peer, session: Session) {
        self.release_indices(peer, &peer.install_responded(session));
    }

    /// Rotates `peer`'s "next" keypair in (see [`Peer::promote`]).
    pub fn promote(&self, peer: &Peer, local_index: u32) -> bool {
        let (promoted, dropped) = peer.promote(local_index);
        self.release_indices(peer, &dropped);
        promoted
    }

    pub fn clear_keypairs(&self, peer: &Peer) {
        self.release_indices(peer, &peer.clear_keypairs());
    }
}

/// Changes to the peers of an [`Interface`] that leave its AllowedIPs table
/// uncompressed until this is dropped: compressing copies the whole table,
/// so a `wg setconf` of 10 000 peers compresses once, not 10 000 times.
/// Lookups meanwhile go to the uncompressed table, which answers the same.
pub struct PeerChanges<'a> {
    iface: &'a Interface,
}

impl PeerChanges<'_> {
    /// Adds a peer (see [`Interface::add_peer`]).
    pub fn add_peer(&self, spec: PeerSpec) -> Result<Arc<Peer>> {
        let key = spec.public_key;
        // Held until the peer is in `by_key`, where a new private key finds it.
        let local = read(&self.iface.local);
        if local.as_ref().is_some_and(|l| key == l.public) {
            // A handshake with ourselves (wireguard-go skips such a peer).
            return Err(Error::Input(format!(
                "peer {key} has the interface's own public key"
            )));
        }
        let remote = peer_static(local.as_deref(), key, spec.preshared_key.clone())?;
        let mut by_key = write(&self.iface.by_key);
        if by_key.contains_key(&key) {
            return Err(Error::Input(format!(
                "peer {key} is listed twice: each peer needs its own public key"
            )));
        }
        let id = self.iface.next_id.fetch_add(1, Relaxed);
        let peer = Arc::new(Peer::new(
            id,
            Arc::new(remote),
            spec,
            self.iface.clock,
            self.iface.mtu,
            self.iface.timing,
            self.iface.wakeups.clone(),
        ));
        by_key.insert(key, peer.clone());
        drop(by_key);
        drop(local);
        write(&self.iface.peers).push(peer.clone());
        {
            let mut routes = write(&self.iface.routes);
            let mut list = peer.allowed_ips_mut();
            for cidr in std::mem::take(&mut *list) {
                claim(&mut routes, &peer, &mut list, cidr);
            }
        }
        let _ = self.iface.peer_set_changed.try_send(());
        Ok(peer)
    }

    /// Changes a running peer (see [`PeerUpdate`]). Its AllowedIPs change
    /// at once under the table's write lock, so a batch routes either by
    /// the old set or by the new one; a new PSK replaces the peer's static
    /// keys whole (the handshaker drops an attempt made with the old ones);
    /// a persistent keepalive makes the handshaker plan the peer's timers
    /// again, and turning one on sends a keepalive at once (a handshake
    /// without a session), as wireguard-go does.
    pub fn update_peer(&self, key: &PublicKey, update: PeerUpdate) -> Result<Arc<Peer>> {
        let peer = self
            .iface
            .peer(key)
            .ok_or_else(|| Error::Input(format!("peer {key}: no such peer on this interface")))?;
        {
            let mut routes = write(&self.iface.routes);
            // `remove_peer` marks the peer before it takes this lock: seen
            // unmarked here, its clean-up reads the list changed below.
            if peer.is_removed() {
                return Err(Error::Input(format!("peer {key} was removed meanwhile")));
            }
            let mut list = peer.allowed_ips_mut();
            if update.replace_allowed_ips {
                // One rebuild of the trie, not one per prefix.
                routes.retain(|p| !Arc::ptr_eq(p, &peer));
                list.clear();
            }
            for change in &update.allowed_ips {
                match *change {
                    AllowedIpChange::Add(cidr) => claim(&mut routes, &peer, &mut list, cidr),
                    AllowedIpChange::Remove(cidr) => {
                        if release(&mut routes, &peer, cidr) {
                            list.retain(|c| c.network() != cidr.network());
                        }
                    }
                }
            }
        }
        if let Some(psk) = update.preshared_key {
            let local = read(&self.iface.local);
            peer.set_remote(Arc::new(peer_static(local.as_deref(), *key, psk)?));
            // The handshaker looks at its attempt again.
            peer.touch_timers();
        }
        if let Some(to) = update.endpoint {
            peer.update_endpoint(Endpoint::from(to));
        }
        if let Some(interval) = update.persistent_keepalive {
            peer.set_persistent_keepalive(interval);
        }
        Ok(peer)
    }

    /// Takes a peer out of every table and erases its keys; packets already
    /// in flight for it are dropped where they meet its `removed` mark.
    pub fn remove_peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        self.remove_peers(std::slice::from_ref(key)).pop()
    }

    /// [`PeerChanges::remove_peer`] for each of `keys`, with one pass over
    /// each table for them all (the AllowedIPs trie is rebuilt by each
    /// pass); returns the peers that were there.
    pub fn remove_peers(&self, keys: &[PublicKey]) -> Vec<Arc<Peer>> {
        let iface = self.iface;
        let gone: Vec<Arc<Peer>> = {
            let mut by_key = write(&iface.by_key);
            keys.iter().filter_map(|k| by_key.remove(k)).collect()
        };
        if gone.is_empty() {
            return gone;
        }
        gone.iter().for_each(|p| p.mark_removed());
        let ids: HashSet<u64> = gone.iter().map(|p| p.id).collect();
        write(&iface.peers).retain(|p| !ids.contains(&p.id));
        write(&iface.routes).retain(|p| !ids.contains(&p.id));
        write(&iface.indices).retain(|_, p| !ids.contains(&p.id));
        for peer in &gone {
            peer.clear_keypairs();
        }
        iface.removals.fetch_add(gone.len() as u64, Relaxed);
        let _ = iface.peer_set_changed.try_send(());
        gone
    }
}

impl Drop for PeerChanges<'_> {
    fn drop(&mut self) {
        write(&self.iface.routes).compress();
    }
}

/// `key`'s static keys with ours, or without a DH while we have no key.
fn peer_static(
    local: Option<&LocalStatic>,
    key: PublicKey,
    psk: Option<PresharedKey>,
) -> Result<PeerStatic> {
    match local {
        Some(local) => PeerStatic::new(local, key, psk),
        None => PeerStatic::without_local(key, psk),
    }
    .map_err(|_| Error::Input(format!("peer {key}: the public key is of low order")))
}

/// Routes `cidr` to `peer`, whose AllowedIPs list is `list`; the peer that
/// had it loses it from its own list too.
fn claim(routes: &mut PrefixTable<Arc<Peer>>, peer: &Arc<Peer>, list: &mut Vec<Cidr>, cidr: Cidr) {
    // The table ignores host bits: so do the lists.
    let cidr = cidr.network();
    match routes.insert(cidr, peer.clone()) {
        Some(old) if Arc::ptr_eq(&old, peer) => return,
        Some(old) => old.allowed_ips_mut().retain(|c| c.network() != cidr),
        None => {}
    }
    list.push(cidr);
}

/// Takes `cidr` out of the table if it routes to `peer`; returns whether it
/// did.
fn release(routes: &mut PrefixTable<Arc<Peer>>, peer: &Arc<Peer>, cidr: Cidr) -> bool {
    let mine = routes.get(cidr).is_some_and(|p| Arc::ptr_eq(p, peer));
    if mine {
        routes.remove(cidr);
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::TransportKeys;
    use std::net::IpAddr;

    fn spec(key: u8, allowed: &[&str]) -> PeerSpec {
        PeerSpec {
            public_key: PrivateKey::from_bytes([key; 32]).public_key(),
            preshared_key: None,
            endpoint: None,
            initiate_at_start: false,
            allowed_ips: allowed.iter().map(|c| c.parse().unwrap()).collect(),
            persistent_keepalive: None,
        }
    }

    fn iface() -> Interface {
        Interface::new(
            Some(PrivateKey::from_bytes([0x11; 32])),
            1420,
            Timing::default(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn routed(i: &Interface, addr: &str) -> Option<u64> {
        i.routes().lookup(ip(addr)).map(|p| p.id)
    }

    #[test]
    fn the_longest_prefix_over_all_peers_picks_the_peer() {
        let i = iface();
        let a = i.add_peer(spec(1, &["10.0.0.0/8", "fd00::/8"])).unwrap();
        let b = i
            .add_peer(spec(2, &["10.1.0.0/16", "fd00:1::/32", "0.0.0.0/0"]))
            .unwrap();
        let c = i.add_peer(spec(3, &["10.1.2.3/32", "::/0"])).unwrap();
        for (addr, want) in [
            ("10.9.9.9", a.id),
            ("10.1.9.9", b.id),
            ("10.1.2.3", c.id),
            ("10.1.2.4", b.id),
            ("192.0.2.1", b.id),
            ("fd00::1", a.id),
            ("fd00:1::1", b.id),
            ("2001:db8::1", c.id),
        ] {
            assert_eq!(routed(&i, addr), Some(want), "{addr}");
        }
        // Removing B uncovers A's shorter prefix and nothing else of B's.
        assert!(Arc::ptr_eq(&i.remove_peer(&b.public_key).unwrap(), &b));
        assert!(b.is_removed());
        for (addr, want) in [
            ("10.1.9.9", Some(a.id)),
            ("10.1.2.3", Some(c.id)),
            ("192.0.2.1", None),
            ("fd00:1::1", Some(a.id)),
        ] {
            assert_eq!(routed(&i, addr), want, "{addr}");
        }
        assert!(i.peer(&b.public_key).is_none());
        assert_eq!(i.peers().len(), 2);
        assert!(i.remove_peer(&b.public_key).is_none(), "already gone");
    }

    #[test]
    fn an_allowed_ip_moves_to_the_peer_added_last_and_stays_on_removal_of_the_first() {
        let i = iface();
        let a = i.add_peer(spec(1, &["10.0.0.0/24"])).unwrap();
        let b = i.add_peer(spec(2, &["10.0.0.0/24"])).unwrap();
        assert_eq!(routed(&i, "10.0.0.9"), Some(b.id));
        i.remove_peer(&a.public_key);
        assert_eq!(routed(&i, "10.0.0.9"), Some(b.id), "A no longer had it");
    }

    /// An interface with 100 peers, peer n (from 1) with 10.0.1.n/32: enough
    /// prefixes for the table to be compressed.
    fn hundred_hosts() -> Interface {
        // Not iface()'s key, which spec(0x11) would share.
        let i = Interface::new(
            Some(PrivateKey::from_bytes([0xee; 32])),
            1420,
            Timing::default(),
        );
        let specs = (1..=100).map(|n| spec(n, &[&format!("10.0.1.{n}/32")]));
        i.add_peers(specs).unwrap();
        i
    }

    /// Many peers, one /32 each: the table is compressed after each change,
    /// and a peer removed takes no other's prefix with it.
    #[test]
    fn peer_changes_leave_the_table_compressed_and_whole() {
        let i = hundred_hosts();
        assert!(i.routes().is_compressed());
        let c = i.add_peer(spec(101, &["10.0.0.0/16"])).unwrap();
        assert!(i.routes().is_compressed());
        let before = i.peers();
        i.remove_peer(&before[49].public_key).unwrap();
        assert!(i.routes().is_compressed());
        for (n, p) in (1..=100).zip(&before) {
            let want = if n == 50 { c.id } else { p.id };
            assert_eq!(routed(&i, &format!("10.0.1.{n}")), Some(want), "{n}");
        }
        // Up to the first error, and compressed still.
        let Err(err) = i.add_peers([spec(102, &["10.0.2.1/32"]), spec(101, &[])]) else {
            panic!("a key listed twice was added");
        };
        assert!(err.to_string().contains("listed twice"), "{err}");
        assert!(i.routes().is_compressed());
        assert_eq!(routed(&i, "10.0.2.1"), Some(i.peers()[100].id));
    }

    #[test]
    fn peer_changes_route_uncompressed_and_compress_when_dropped() {
        let i = hundred_hosts();
        let changes = i.changes();
        let c = changes.add_peer(spec(101, &["10.0.2.0/24"])).unwrap();
        let first = i.peers()[0].clone();
        changes.remove_peer(&first.public_key).unwrap();
        let moved = PeerUpdate {
            allowed_ips: vec![AllowedIpChange::Add("10.0.1.2/32".parse().unwrap())],
            ..PeerUpdate::default()
        };
        changes.update_peer(&c.public_key, moved).unwrap();
        // Each change is seen at once, from the uncompressed table.
        assert!(!i.routes().is_compressed());
        assert_eq!(routed(&i, "10.0.2.7"), Some(c.id));
        assert_eq!(routed(&i, "10.0.1.2"), Some(c.id));
        assert_eq!(routed(&i, "10.0.1.1"), None);
        drop(changes);
        assert!(i.routes().is_compressed());
        assert_eq!(routed(&i, "10.0.2.7"), Some(c.id));
        assert_eq!(routed(&i, "10.0.1.2"), Some(c.id));
        assert_eq!(routed(&i, "10.0.1.3"), Some(i.peers()[1].id));
        assert_eq!(routed(&i, "10.0.1.1"), None);
    }

    #[test]
    fn peers_removed_together_leave_every_table() {
        let i = iface();
        let peers: Vec<_> = (1..=5)
            .map(|n| i.add_peer(spec(n, &[&format!("10.0.{n}.0/24")])).unwrap())
            .collect();
        let stranger = PrivateKey::from_bytes([0x77; 32]).public_key();
        let keys = [peers[1].public_key, stranger, peers[3].public_key];
        let gone = i.changes().remove_peers(&keys);
        assert_eq!(
            gone.iter().map(|p| p.id).collect::<Vec<_>>(),
            [peers[1].id, peers[3].id]
        );
        assert!(gone.iter().all(|p| p.is_removed()));
        assert_eq!(i.removals(), 2);
        let left: Vec<u64> = i.peers().iter().map(|p| p.id).collect();
        assert_eq!(left, [peers[0].id, peers[2].id, peers[4].id]);
        for (n, p) in (1..=5).zip(&peers) {
            let want = (n % 2 == 1).then_some(p.id);
            assert_eq!(routed(&i, &format!("10.0.{n}.9")), want, "{n}");
            assert_eq!(i.peer(&p.public_key).map(|p| p.id), want, "{n}");
        }
    }

    #[test]
    fn a_public_key_listed_twice_is_an_error() {
        let i = iface();
        i.add_peer(spec(1, &[])).unwrap();
        let Err(err) = i.add_peer(spec(1, &["10.0.0.0/8"])) else {
            panic!("a second peer with the same key was added");
        };
        assert!(err.to_string().contains("listed twice"), "{err}");
        assert_eq!(i.peers().len(), 1);
        assert_eq!(routed(&i, "10.0.0.1"), None, "nothing of it was added");
    }

    #[test]
    fn a_peer_with_our_own_public_key_is_refused() {
        let i = iface();
        let Err(err) = i.add_peer(spec(0x11, &["10.0.0.0/8"])) else {
            panic!("a peer with our own key was added");
        };
        assert!(err.to_string().contains("own public key"), "{err}");
        assert!(i.peers().is_empty());
        assert_eq!(routed(&i, "10.0.0.1"), None);
    }

    fn session(local_index: u32) -> Session {
        let keys = TransportKeys {
            send: [1; 32],
            recv: [2; 32],
            local_index,
            remote_index: 7,
        };
        Session::new(&keys, std::time::Duration::ZERO, true)
    }

    #[test]
    fn indices_are_unique_across_peers_and_freed_with_their_keypairs() {
        let i = iface();
        let a = i.add_peer(spec(1, &[])).unwrap();
        let b = i.add_peer(spec(2, &[])).unwrap();
        // A random source that repeats itself: taken indices are skipped.
        let mut draws = [5u32, 5, 5, 6, 6, 5, 6, 7].into_iter();
        let mut random = || draws.next().unwrap();
        assert_eq!(i.new_index(&a, &mut random), 5);
        assert_eq!(i.new_index(&b, &mut random), 6);
        assert_eq!(i.new_index(&a, &mut random), 7);
        let owner = |index| i.peer_by_index(index).map(|p| p.id);
        assert_eq!(
            (owner(5), owner(6), owner(7)),
            (Some(a.id), Some(b.id), Some(a.id))
        );
        assert_eq!(owner(8), None);

        // Keypairs 5 then 7 for A: 5 stays as "previous", until a third.
        i.install_initiated(&a, session(5));
        i.install_initiated(&a, session(7));
        assert_eq!(owner(5), Some(a.id));
        let nine = i.new_index(&a, || 9);
        i.install_initiated(&a, session(nine));
        assert_eq!(owner(5), None, "rotated out: freed");
        assert_eq!((owner(7), owner(9)), (Some(a.id), Some(a.id)));
        // Another peer's index is never freed by A.
        i.release_indices(&a, &[6]);
        assert_eq!(owner(6), Some(b.id));
        i.clear_keypairs(&a);
        assert_eq!((owner(7), owner(9)), (None, None));
        // Removing B frees all of its indices.
        i.remove_peer(&b.public_key);
        assert_eq!(owner(6), None);
    }

    #[test]
    fn only_a_changed_endpoint_address_wakes_the_follower_once() {
        use crate::sys::udp::{Endpoint, Local};
        let i = iface();
        let a = i.add_peer(spec(1, &[])).unwrap();
        let b = i.add_peer(spec(2, &[])).unwrap();
        let moves = i.endpoint_moves();
        let at = |s: &str| Endpoint::from(s.parse::<std::net::SocketAddr>().unwrap());
        assert!(moves.try_recv().is_err(), "nothing moved yet");
        // Learned, then moved to another port, then the same again.
        for (to, wake) in [
            ("192.0.2.1:51820", true),
            ("192.0.2.1:51820", false),
            ("192.0.2.1:4000", true),
            ("192.0.2.1:4000", false),
        ] {
            let moved = a.update_endpoint(at(to)).is_some();
            assert_eq!((moved, moves.try_recv().is_ok()), (wake, wake), "{to}");
        }
        // Our side of the path is no move of the peer.
        let local = Some(Local {
            addr: ip("198.51.100.1"),
            ifindex: 2,
        });
        assert!(a
            .update_endpoint(Endpoint {
                local,
                ..at("192.0.2.1:4000")
            })
            .is_none());
        assert!(moves.try_recv().is_err(), "woken for our own side");
        // Moves of two peers before the follower looks: one wake-up, and
        // neither waits for it.
        a.update_endpoint(at("192.0.2.7:4000")).unwrap();
        b.update_endpoint(at("192.0.2.8:4000")).unwrap();
        assert!(moves.try_recv().is_ok());
        assert!(moves.try_recv().is_err(), "one wake-up for both");
    }

    #[test]
    fn adding_or_removing_a_peer_wakes_the_peer_set_reader_not_the_endpoint_one() {
        let i = iface();
        let (changes, moves) = (i.peer_set_changes(), i.endpoint_moves());
        let mut with_endpoint = spec(1, &["10.0.0.1/32"]);
        with_endpoint.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        let a = i.add_peer(with_endpoint).unwrap();
        assert!(changes.try_recv().is_ok(), "an added peer wakes the reader");
        assert!(
            moves.try_recv().is_err(),
            "a new peer's endpoint is no move"
        );
        // Two changes before the reader looks: one wake-up.
        i.add_peers([spec(2, &[]), spec(3, &[])]).unwrap();
        assert!(changes.try_recv().is_ok());
        assert!(changes.try_recv().is_err(), "one wake-up for both");
        i.remove_peer(&a.public_key).unwrap();
        assert!(
            changes.try_recv().is_ok(),
            "a removed peer wakes the reader"
        );
        // Neither a failed add nor the removal of no peer changes the set.
        assert!(i.add_peer(spec(2, &[])).is_err());
        assert!(i.remove_peer(&a.public_key).is_none());
        assert!(changes.try_recv().is_err());
        assert!(moves.try_recv().is_err());
    }

    #[test]
    fn a_promoted_keypair_frees_the_one_it_pushes_out() {
        let i = iface();
        let a = i.add_peer(spec(1, &[])).unwrap();
        for index in [1, 2, 3] {
            i.new_index(&a, || index);
        }
        i.install_initiated(&a, session(1));
        i.install_initiated(&a, session(2));
        i.install_responded(&a, session(3));
        // Responding drops "previous" (1) and keeps "current" (2).
        assert!(i.peer_by_index(1).is_none());
        assert!(i.promote(&a, 3));
        assert!(!i.promote(&a, 3), "done once");
        let k = a.keypairs();
        assert_eq!(k.indices().collect::<Vec<_>>(), [2, 3]);
        assert!(i.peer_by_index(2).is_some() && i.peer_by_index(3).is_some());
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn allowed(changes: &[(bool, &str)]) -> Vec<AllowedIpChange> {
        changes
            .iter()
            .map(|&(add, c)| match add {
                true => AllowedIpChange::Add(c.parse().unwrap()),
                false => AllowedIpChange::Remove(c.parse().unwrap()),
            })
            .collect()
    }

    #[test]
    fn allowed_ips_change_in_place_replace_add_remove_and_move() {
        let i = iface();
        let a = i.add_peer(spec(1, &["10.0.0.0/24", "fd00::/64"])).unwrap();
        let b = i.add_peer(spec(2, &["10.9.0.0/16"])).unwrap();
        let a_again = i
            .update_peer(
                &a.public_key,
                PeerUpdate {
                    // Host bits do not count: this removes fd00::/64.
                    allowed_ips: allowed(&[
                        (true, "10.1.0.0/16"),
                        (false, "fd00::1/64"),
                        (true, "10.9.0.0/16"),
                        (false, "192.0.2.0/24"),
                    ]),
                    ..PeerUpdate::default()
                },
            )
            .unwrap();
        assert!(Arc::ptr_eq(&a, &a_again), "the same peer, changed in place");
        assert_eq!(
            a.allowed_ips(),
            cidrs(&["10.0.0.0/24", "10.1.0.0/16", "10.9.0.0/16"])
        );
        assert_eq!(b.allowed_ips(), [], "B's prefix moved to A");
        for (addr, want) in [
            ("10.0.0.1", Some(a.id)),
            ("10.1.2.3", Some(a.id)),
            ("10.9.1.1", Some(a.id)),
            ("fd00::1", None),
        ] {
            assert_eq!(routed(&i, addr), want, "{addr}");
        }
        // A's removal of a prefix B holds leaves it with B.
        i.update_peer(
            &b.public_key,
            PeerUpdate {
                allowed_ips: allowed(&[(true, "0.0.0.0/0")]),
                ..PeerUpdate::default()
            },
        )
        .unwrap();
        i.update_peer(
            &a.public_key,
            PeerUpdate {
                allowed_ips: allowed(&[(false, "0.0.0.0/0")]),
                ..PeerUpdate::default()
            },
        )
        .unwrap();
        assert_eq!(routed(&i, "192.0.2.1"), Some(b.id));
        // Replace: A keeps only ::/0 (and its old prefixes fall to B's /0).
        i.update_peer(
            &a.public_key,
            PeerUpdate {
                replace_allowed_ips: true,
                allowed_ips: allowed(&[(true, "::/0")]),
                ..PeerUpdate::default()
            },
        )
        .unwrap();
        assert_eq!(a.allowed_ips(), cidrs(&["::/0"]));
        for (addr, want) in [
            ("10.0.0.1", Some(b.id)),
            ("10.9.1.1", Some(b.id)),
            ("2001:db8::1", Some(a.id)),
        ] {
            assert_eq!(routed(&i, addr), want, "{addr}");
        }
        // Removing a peer after changes takes exactly what it has.
        i.remove_peer(&a.public_key);
        assert_eq!(routed(&i, "2001:db8::1"), None);
        assert_eq!(routed(&i, "10.0.0.1"), Some(b.id));
    }

    #[test]
    fn a_prefix_moved_by_add_peer_leaves_the_other_peers_list() {
        let i = iface();
        let a = i
            .add_peer(spec(1, &["10.0.0.0/24", "10.1.0.0/24"]))
            .unwrap();
        i.add_peer(spec(2, &["10.0.0.0/24"])).unwrap();
        assert_eq!(a.allowed_ips(), cidrs(&["10.1.0.0/24"]));
    }

    #[test]
    fn an_update_of_an_unknown_or_removed_peer_is_an_error_naming_it() {
        let i = iface();
        let stranger = PrivateKey::from_bytes([9; 32]).public_key();
        let err = i
            .update_peer(&stranger, PeerUpdate::default())
            .err()
            .expect("an unknown peer was updated");
        let text = err.to_string();
        assert!(text.contains(&stranger.to_string()), "{text}");
        assert!(text.contains("no such peer"), "{text}");
        let a = i.add_peer(spec(1, &[])).unwrap();
        i.remove_peer(&a.public_key);
        assert!(i
            .update_peer(
                &a.public_key,
                PeerUpdate {
                    allowed_ips: allowed(&[(true, "10.0.0.0/8")]),
                    ..PeerUpdate::default()
                }
            )
            .is_err());
        assert_eq!(routed(&i, "10.0.0.1"), None, "nothing routes to it");
    }

    #[test]
    fn a_new_psk_gives_new_static_keys_and_keeps_the_sessions() {
        let i = iface();
        let a = i.add_peer(spec(1, &[])).unwrap();
        i.install_initiated(&a, session(5));
        let before = a.remote();
        assert!(*before.psk() == PresharedKey::default());
        let psk = PresharedKey::from_bytes([0x42; 32]);
        i.update_peer(
            &a.public_key,
            PeerUpdate {
                preshared_key: Some(Some(psk.clone())),
                ..PeerUpdate::default()
            },
        )
        .unwrap();
        let after = a.remote();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(*after.psk() == psk);
        assert!(a.sending_session().is_some(), "its session is kept");
        i.update_peer(
            &a.public_key,
            PeerUpdate {
                preshared_key: Some(None),
                ..PeerUpdate::default()
            },
        )
        .unwrap();
        assert!(*a.remote().psk() == PresharedKey::default());
    }

    #[test]
    fn a_keepalive_turned_on_asks_for_one_at_once_and_wakes_the_timers() {
        let i = iface();
        let a = i.add_peer(spec(1, &[])).unwrap();
        let on = |interval| PeerUpdate {
            persistent_keepalive: Some(interval),
            ..PeerUpdate::default()
        };
        i.update_peer(&a.public_key, on(Some(Duration::from_secs(25))))
            .unwrap();
        assert_eq!(a.persistent_keepalive(), Some(Duration::from_secs(25)));
        assert!(a.take_keepalive_asked());
        assert_eq!(i.timers_touched().try_recv().ok(), Some(a.id));
        // Changing an interval that is on asks for nothing more.
        a.timers_seen();
        i.update_peer(&a.public_key, on(Some(Duration::from_secs(5))))
            .unwrap();
        assert!(!a.take_keepalive_asked());
        assert_eq!(i.timers_touched().try_recv().ok(), Some(a.id));
        i.update_peer(&a.public_key, on(None)).unwrap();
        assert_eq!(a.persistent_keepalive(), None);
    }

    /// Whether an initiation made with the interface's keys for `peer` is
    /// accepted by that peer, whose private key is `[key; 32]`.
    fn peer_accepts_our_initiation(i: &Interface, peer: &Peer, key: u8) -> bool {
        use crate::protocol::handshake::{consume_initiation, create_initiation};
        use crate::protocol::messages::Initiation;
        let (local, remote) = i.handshake_keys(peer).expect("a private key");
        let (_, msg) = create_initiation(
            &local,
            &remote,
            PrivateKey::from_bytes([0x77; 32]),
            [0; 12],
            1,
            None,
        )
        .unwrap();
        let theirs = LocalStatic::new(PrivateKey::from_bytes([key; 32]));
        consume_initiation(&theirs, &Initiation::parse(&msg).unwrap())
            .is_ok_and(|a| a.peer_public == local.public)
    }

    #[test]
    fn a_new_private_key_recomputes_every_peer_and_removes_our_own_key() {
        let i = iface();
        let a = i.add_peer(spec(1, &["10.1.0.0/16"])).unwrap();
        let b = i.add_peer(spec(2, &[])).unwrap();
        let c = i.add_peer(spec(3, &["10.3.0.0/16"])).unwrap();
        let psk = PresharedKey::from_bytes([0x42; 32]);
        i.update_peer(
            &b.public_key,
            PeerUpdate {
                preshared_key: Some(Some(psk.clone())),
                ..PeerUpdate::default()
            },
        )
        .unwrap();
        i.install_initiated(&a, session(5));
        assert!(peer_accepts_our_initiation(&i, &a, 1));
        // C's private key becomes ours.
        i.set_private_key(Some(PrivateKey::from_bytes([3; 32])))
            .unwrap();
        assert_eq!(i.local().unwrap().public, c.public_key);
        assert!(c.is_removed() && i.peer(&c.public_key).is_none());
        assert_eq!(routed(&i, "10.3.0.1"), None);
        assert_eq!(i.peers().len(), 2);
        for (p, key) in [(&a, 1), (&b, 2)] {
            assert!(peer_accepts_our_initiation(&i, p, key), "peer {key}");
        }
        assert!(*b.remote().psk() == psk, "the PSK is kept");
        // A's session decrypts still but sends no more.
        assert!(a.sending_session().is_none());
        assert!(a.keypairs().current.is_some());
        assert_eq!(routed(&i, "10.1.0.1"), Some(a.id));
        // The same key again changes nothing.
        let remote = a.remote();
        i.set_private_key(Some(PrivateKey::from_bytes([3; 32])))
            .unwrap();
        assert!(Arc::ptr_eq(&remote, &a.remote()));
    }

    #[test]
    fn without_a_private_key_peers_wait_for_one_and_removing_it_stops_sending() {
        let i = Interface::new(None, 1420, Timing::default());
        let a = i.add_peer(spec(1, &["10.1.0.0/16"])).unwrap();
        assert!(i.local().is_none() && i.handshake_keys(&a).is_none());
        assert_eq!(routed(&i, "10.1.0.1"), Some(a.id), "routed all the same");
        let low = PeerSpec {
            public_key: PublicKey::from_bytes([0; 32]),
            ..spec(2, &[])
        };
        let err = i.add_peer(low).err().expect("a low-order key was added");
        assert!(err.to_string().contains("low order"), "{err}");
        // Removing a key we do not have changes nothing.
        i.set_private_key(None).unwrap();
        assert!(i.peer(&a.public_key).is_some());

        i.set_private_key(Some(PrivateKey::from_bytes([0x11; 32])))
            .unwrap();
        assert!(peer_accepts_our_initiation(&i, &a, 1));
        i.install_initiated(&a, session(5));
        assert!(a.sending_session().is_some());

        i.set_private_key(None).unwrap();
        assert!(i.local().is_none() && i.handshake_keys(&a).is_none());
        assert!(a.sending_session().is_none(), "its keypair sends no more");
        assert!(a.keypairs().current.is_some(), "but still decrypts");
        assert!(i.peer(&a.public_key).is_some(), "the peer stays");
    }
}
