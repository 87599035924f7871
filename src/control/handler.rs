//! The control socket's [`Handler`] over a running [`Interface`]: a get
//! reads the device and its peers as they are, a set changes them live, in
//! request order, as wireguard-go applies it (its `IpcSetOperation`).
//!
//! Device keys as in wireguard-go: an all-zero `private_key` removes ours
//! (no handshake is made or answered until a key comes, and a get writes
//! no `private_key` line); a new `listen_port` moves the pipeline to a new
//! UDP socket ([`Udp::rebind`]), and one that cannot be bound is answered
//! EADDRINUSE, logged, with the old socket kept; `fwmark` marks the socket
//! at once.
//!
//! `up`'s SIGHUP reload applies its config file through [`Live`]'s `set`
//! too ([`crate::reload`] builds that set): one applier for both.

use super::Handler;
use crate::pipeline::interface::{Interface, PeerChanges, PeerUpdate};
use crate::pipeline::stats::Stats;
use crate::pipeline::PeerSpec;
use crate::protocol::keys::PresharedKey;
use crate::protocol::uapi::{Errno, PeerChange, PeerSnapshot, Set, Snapshot};
use crate::udp::Udp;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the control socket changes besides the interface: the pipeline's
/// UDP device, for `listen_port` and `fwmark`.
pub struct Live {
    interface: Arc<Interface>,
    udp: Arc<Udp>,
    /// The mark now on `udp`, 0 for none. Held for the whole of a set, so
    /// two clients' sets apply one after the other, as in wireguard-go.
    fwmark: Mutex<u32>,
    /// The pipeline's counters, answered as extra lines of a get.
    stats: Option<Arc<Stats>>,
}

impl Live {
    pub fn new(interface: Arc<Interface>, udp: Arc<Udp>, fwmark: u32) -> Live {
        Live {
            interface,
            udp,
            fwmark: Mutex::new(fwmark),
            stats: None,
        }
    }

    /// The UDP port really bound now.
    fn listen_port(&self) -> u16 {
        self.udp.local_addr().map_or(0, |a| a.port())
    }

    /// Answers a get with the pipeline's per-stage counters too
    /// ([`crate::pipeline::stats::Snapshot::extras`]).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Live {
        self.stats = Some(stats);
        self
    }

    fn peer_snapshot(&self, peer: &crate::pipeline::peer::Peer, wall: SystemTime) -> PeerSnapshot {
        let now = self.interface.now();
        PeerSnapshot {
            public_key: peer.public_key,
            preshared_key: peer.remote().psk().clone(),
            endpoint: peer.endpoint().map(|e| e.addr),
            last_handshake: peer
                .last_handshake
                .get()
                .and_then(|stamp| since_epoch(wall, now, stamp)),
            tx_bytes: peer.tx_bytes.load(std::sync::atomic::Ordering::Relaxed),
            rx_bytes: peer.rx_bytes.load(std::sync::atomic::Ordering::Relaxed),
            persistent_keepalive_interval: peer
                .persistent_keepalive()
                .map_or(0, |d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
            allowed_ips: peer.allowed_ips(),
            extra: Vec::new(),
        }
    }

    /// Applies the set line by line, as wireguard-go does: a failure stops
    /// there, and what came before it in the request stays applied (the
    /// reply's errno tells the client the request did not all apply).
    /// `origin` (the control socket, or a reload of the file) starts each
    /// line this logs.
    pub fn apply(&self, set: Set, origin: &str) -> std::result::Result<(), Errno> {
        let mut fwmark = self.fwmark.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = set.private_key {
            let removed = key.is_none();
            self.interface.set_private_key(key).map_err(|e| {
                log::warn!("{origin}: private_key: {e}");
                Errno::Invalid
            })?;
            if removed {
                log::info!("{origin}: private key removed: no handshakes until a new one");
            }
        }
        if let Some(port) = set.listen_port.filter(|&p| p != self.listen_port()) {
            // Any bind error is EADDRINUSE, as wireguard-go answers it.
            let old = self.listen_port();
            let bound = self.udp.rebind(port, *fwmark).map_err(|e| {
                log::warn!("{origin}: listen_port {port}: {e}; staying on port {old}");
                Errno::PortInUse
            })?;
            log::info!("{origin}: UDP port {old} -> {bound}");
        }
        if let Some(mark) = set.fwmark.filter(|&m| m != *fwmark) {
            self.udp.set_mark(mark).map_err(|e| {
                log::warn!("{origin}: fwmark: {e}");
                Errno::PortInUse
            })?;
            *fwmark = mark;
        }
        // The AllowedIPs table is compressed once, after the last peer.
        let changes = self.interface.changes();
        if set.replace_peers {
            let keys: Vec<_> = self
                .interface
                .peers()
                .iter()
                .map(|p| p.public_key)
                .collect();
            changes.remove_peers(&keys);
        }
        set.peers
            .into_iter()
            .try_for_each(|change| self.apply_peer(&changes, change, origin))
    }

    /// One peer's lines of a set; `origin` starts its log lines.
    fn apply_peer(
        &self,
        changes: &PeerChanges,
        change: PeerChange,
        origin: &str,
    ) -> std::result::Result<(), Errno> {
        let key = change.public_key;
        // A peer with our own key names no peer (the codec's rule): checked
        // against the key as this request left it.
        if self.interface.local().is_some_and(|l| key == l.public) {
            log::info!("{origin}: peer {key} is this interface's own key: ignored");
            return Ok(());
        }
        if change.remove {
            if changes.remove_peer(&key).is_some() {
                log::info!("{origin}: peer {key} removed");
            }
            return Ok(());
        }
        let update = PeerUpdate {
            preshared_key: change.preshared_key.map(|k| Some(k).filter(has_key)),
            endpoint: change.endpoint,
            persistent_keepalive: change
                .persistent_keepalive_interval
                .map(|s| Some(Duration::from_secs(u64::from(s))).filter(|d| !d.is_zero())),
            replace_allowed_ips: change.replace_allowed_ips,
            allowed_ips: change.allowed_ips,
        };
        let result = match self.interface.peer(&key) {
            Some(_) => changes.update_peer(&key, update).map(drop),
            None if change.update_only => return Ok(()),
            None => add_peer(changes, key, update, origin),
        };
        result.map_err(|e| {
            log::warn!("{origin}: {e}");
            Errno::Invalid
        })
    }
}

/// A new peer: added with its keys, endpoint and keepalive, then given
/// its AllowedIPs as an update, which applies removals and the
/// replacement in order exactly as for a running peer.
fn add_peer(
    changes: &PeerChanges,
    key: crate::protocol::keys::PublicKey,
    update: PeerUpdate,
    origin: &str,
) -> crate::Result<()> {
    changes.add_peer(PeerSpec {
        public_key: key,
        preshared_key: update.preshared_key.clone().flatten(),
        endpoint: update.endpoint,
        initiate_at_start: false,
        allowed_ips: Vec::new(),
        persistent_keepalive: update.persistent_keepalive.flatten(),
    })?;
    log::info!("{origin}: peer {key} added");
    if !update.allowed_ips.is_empty() {
        let ips = PeerUpdate {
            allowed_ips: update.allowed_ips,
            ..PeerUpdate::default()
        };
        changes.update_peer(&key, ips)?;
    }
    Ok(())
}

/// Whether a PSK from the socket is one: all zeros means none.
fn has_key(k: &PresharedKey) -> bool {
    k.as_bytes() != &[0; 32]
}

/// A monotonic `stamp` read at monotonic `now` and wall-clock `wall`, as
/// time since the Unix epoch; None for a clock set before 1970.
fn since_epoch(wall: SystemTime, now: Duration, stamp: Duration) -> Option<Duration> {
    wall.checked_sub(now.saturating_sub(stamp))?
        .duration_since(UNIX_EPOCH)
        .ok()
}

impl Handler for Live {
    fn get(&self) -> Snapshot {
        let wall = SystemTime::now();
        Snapshot {
            // None writes no line, as wireguard-go omits a zero key.
            private_key: self.interface.local().map(|l| l.private.clone()),
            listen_port: self.listen_port(),
            fwmark: *self.fwmark.lock().unwrap_or_else(|p| p.into_inner()),
            extra: self
                .stats
                .as_ref()
                .map_or_else(Vec::new, |s| s.snapshot().extras()),
            peers: self
                .interface
                .peers()
                .iter()
                .map(|p| self.peer_snapshot(p, wall))
                .collect(),
        }
    }

    fn set(&self, set: Set) -> std::result::Result<(), Errno> {
        self.apply(set, "control socket")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cidr::Cidr;
    use crate::protocol::keys::{PrivateKey, PublicKey};
    use crate::protocol::timers::Timing;
    use crate::protocol::uapi::{write_get, Request, RequestReader};
    use std::net::{SocketAddr, UdpSocket};

    /// The private key of all bytes `n`: test keys by number.
    pub(crate) fn key(n: u8) -> PrivateKey {
        PrivateKey::from_bytes([n; 32])
    }

    pub(crate) fn public(n: u8) -> PublicKey {
        key(n).public_key()
    }

    fn hex(k: &PublicKey) -> String {
        hex::encode(k.as_bytes())
    }

    /// A handler over an interface without a tun or peers, our key `key(1)`,
    /// its UDP socket on a loopback port, no mark; and that interface.
    pub(crate) fn live_interface() -> (Live, Arc<Interface>) {
        let iface = Arc::new(Interface::new(Some(key(1)), 1420, Timing::default()));
        let udp = Udp::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        (Live::new(iface.clone(), Arc::new(udp), 0), iface)
    }

    fn live() -> Live {
        live_interface().0
    }

    /// Parses `text` as `wg` would send it and applies it.
    fn set(live: &Live, text: &str) -> std::result::Result<(), Errno> {
        let mut reader = RequestReader::new();
        let (_, done) = reader.feed(format!("set=1\n{text}\n").as_bytes());
        match done.expect("a complete request").expect("a valid request") {
            Request::Set(s) => live.set(s),
            Request::Get => panic!("not a set"),
        }
    }

    pub(crate) fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    /// (public key, allowed IPs) of every peer, in order.
    fn peers(live: &Live) -> Vec<(PublicKey, Vec<Cidr>)> {
        live.get()
            .peers
            .into_iter()
            .map(|p| (p.public_key, p.allowed_ips))
            .collect()
    }

    #[test]
    fn a_set_adds_updates_and_removes_peers_as_it_says() {
        let live = live();
        let (a, b) = (public(2), public(3));
        let psk = "07".repeat(32);
        set(
            &live,
            &format!(
                "public_key={}\npreshared_key={psk}\nendpoint=192.0.2.1:51820\n\
                 persistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\n\
                 allowed_ip=10.9.0.0/16\nallowed_ip=-10.9.0.0/16\n\
                 public_key={}\nallowed_ip=10.0.0.3/32\n",
                hex(&a),
                hex(&b)
            ),
        )
        .unwrap();
        assert_eq!(
            peers(&live),
            [(a, cidrs(&["10.0.0.2/32"])), (b, cidrs(&["10.0.0.3/32"]))]
        );
        let got = live.get();
        let pa = &got.peers[0];
        assert_eq!(pa.preshared_key, PresharedKey::from_bytes([7; 32]));
        assert_eq!(pa.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(pa.persistent_keepalive_interval, 25);
        assert_eq!(pa.last_handshake, None);
        assert_eq!(got.peers[1].preshared_key, PresharedKey::default());
        let a_peer = live.interface.peer(&a).unwrap();

        // An update keeps the peer itself; zeros clear the PSK, 0 the
        // keepalive; AllowedIPs move from B to A.
        set(
            &live,
            &format!(
                "public_key={}\npreshared_key={}\npersistent_keepalive_interval=0\n\
                 endpoint=[2001:db8::1]:4000\nallowed_ip=10.0.0.3/32\n",
                hex(&a),
                "0".repeat(64)
            ),
        )
        .unwrap();
        assert!(Arc::ptr_eq(&a_peer, &live.interface.peer(&a).unwrap()));
        let got = live.get();
        assert_eq!(got.peers[0].preshared_key, PresharedKey::default());
        assert_eq!(got.peers[0].persistent_keepalive_interval, 0);
        let moved: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(got.peers[0].endpoint, Some(moved));
        assert_eq!(
            peers(&live),
            [(a, cidrs(&["10.0.0.2/32", "10.0.0.3/32"])), (b, vec![])]
        );

        // replace_allowed_ips, then a removal.
        set(
            &live,
            &format!(
                "public_key={}\nreplace_allowed_ips=true\nallowed_ip=10.5.0.0/16\n\
                 public_key={}\nremove=true\n",
                hex(&a),
                hex(&b)
            ),
        )
        .unwrap();
        assert_eq!(peers(&live), [(a, cidrs(&["10.5.0.0/16"]))]);
        assert!(live.interface.peer(&b).is_none());
        // Removing a peer that is not there changes nothing and succeeds.
        set(&live, &format!("public_key={}\nremove=true\n", hex(&b))).unwrap();
        assert_eq!(peers(&live).len(), 1);
    }

    #[test]
    fn update_only_adds_nothing_and_replace_peers_starts_afresh() {
        let live = live();
        let (a, b, c) = (public(2), public(3), public(4));
        set(
            &live,
            &format!(
                "public_key={}\nupdate_only=true\nallowed_ip=10.0.0.2/32\n",
                hex(&a)
            ),
        )
        .unwrap();
        assert_eq!(peers(&live), []);
        set(
            &live,
            &format!(
                "public_key={}\nallowed_ip=10.0.0.2/32\npublic_key={}\n",
                hex(&a),
                hex(&b)
            ),
        )
        .unwrap();
        // update_only on a peer that exists changes it.
        set(
            &live,
            &format!(
                "public_key={}\nupdate_only=true\nallowed_ip=10.0.0.9/32\n",
                hex(&b)
            ),
        )
        .unwrap();
        assert_eq!(peers(&live)[1], (b, cidrs(&["10.0.0.9/32"])));
        set(
            &live,
            &format!(
                "replace_peers=true\npublic_key={}\nallowed_ip=10.0.0.4/32\n",
                hex(&c)
            ),
        )
        .unwrap();
        assert_eq!(peers(&live), [(c, cidrs(&["10.0.0.4/32"]))]);
        assert!(live.interface.peer(&a).is_none() && live.interface.peer(&b).is_none());
        assert!(
            live.interface
                .routes()
                .lookup("10.0.0.2".parse().unwrap())
                .is_none(),
            "a replaced peer's AllowedIPs route nowhere"
        );
    }

    #[test]
    fn our_own_key_names_no_peer() {
        let live = live();
        set(
            &live,
            &format!("public_key={}\nallowed_ip=10.0.0.2/32\n", hex(&public(1))),
        )
        .unwrap();
        assert_eq!(peers(&live), []);
        // After a new private key in the same request, the new one counts.
        set(
            &live,
            &format!(
                "private_key={}\npublic_key={}\npublic_key={}\n",
                "05".repeat(32),
                hex(&public(5)),
                hex(&public(1))
            ),
        )
        .unwrap();
        assert_eq!(live.interface.local().unwrap().public, public(5));
        assert_eq!(peers(&live), [(public(1), vec![])]);
        let answer = write_get(&live.get());
        // The key as the interface keeps it (clamped, whitepaper §5.4).
        let ours = hex::encode(live.interface.local().unwrap().private.as_bytes());
        assert_eq!(&ours[2..8], "050505");
        assert!(
            answer.starts_with(&format!("private_key={ours}\n")),
            "{}",
            &*answer
        );
    }

    #[test]
    fn device_keys_apply_or_are_refused() {
        let live = live();
        set(&live, "fwmark=51\n").unwrap();
        assert_eq!(live.get().fwmark, 51);
        let mark = || -> u32 {
            nix::sys::socket::getsockopt(&*live.udp, nix::sys::socket::sockopt::Mark)
                .expect("SO_MARK readable (root)")
        };
        assert_eq!(mark(), 51);
        // A new port keeps the mark; a mark set with it applies to the new
        // socket.
        let before = live.get().listen_port;
        set(&live, "listen_port=0\n").unwrap();
        let moved = live.get().listen_port;
        assert_ne!(moved, before, "a new random port");
        assert_eq!(mark(), 51);
        set(&live, "listen_port=0\nfwmark=52\n").unwrap();
        assert_eq!((mark(), live.get().fwmark), (52, 52));
        set(&live, "fwmark=0\n").unwrap();
        assert_eq!(live.get().fwmark, 0);
        // A low-order peer key fails there; what came before stays applied.
        let err = set(
            &live,
            &format!(
                "public_key={}\npublic_key={}\npublic_key={}\n",
                hex(&public(2)),
                "0".repeat(64),
                hex(&public(3))
            ),
        );
        assert_eq!(err, Err(Errno::Invalid));
        assert_eq!(peers(&live), [(public(2), vec![])]);
    }

    /// wireguard-go's semantics: an all-zero key removes ours, a get then
    /// writes no `private_key` line, peers come and go without a key, and
    /// a key given later applies to them.
    #[test]
    fn a_zero_private_key_removes_ours_and_a_get_omits_it() {
        let live = live();
        set(&live, &format!("public_key={}\n", hex(&public(2)))).unwrap();
        set(&live, &format!("private_key={}\n", "0".repeat(64))).unwrap();
        assert!(live.interface.local().is_none());
        let answer = write_get(&live.get());
        assert!(!answer.contains("private_key="), "{}", &*answer);
        let port = live.get().listen_port;
        assert!(
            answer.starts_with(&format!("listen_port={port}\n")),
            "{}",
            &*answer
        );
        // Our old public key names a peer now: there is no key of ours.
        set(
            &live,
            &format!(
                "public_key={}\npublic_key={}\n",
                hex(&public(1)),
                hex(&public(3))
            ),
        )
        .unwrap();
        assert_eq!(peers(&live).len(), 3);
        // A key that is one of the peers' removes that peer, as ever.
        set(&live, &format!("private_key={}\n", "01".repeat(32))).unwrap();
        assert_eq!(live.interface.local().unwrap().public, public(1));
        assert_eq!(
            peers(&live),
            [(public(2), vec![]), (public(3), vec![])],
            "the peer with our new key is gone"
        );
        let peer = live.interface.peer(&public(2)).unwrap();
        assert!(live.interface.handshake_keys(&peer).is_some());
    }

    /// wireguard-go's `listen_port`: the socket moves and a get reports the
    /// port bound; a port that is taken is EADDRINUSE and nothing moves; the
    /// port we are on already is no change.
    #[test]
    fn a_new_listen_port_moves_the_socket_or_is_refused() {
        let live = live();
        let first = live.get().listen_port;
        set(&live, &format!("listen_port={first}\n")).unwrap();
        assert_eq!(live.get().listen_port, first);
        let free = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        set(&live, &format!("listen_port={port}\n")).unwrap();
        assert_eq!(live.get().listen_port, port);
        UdpSocket::bind(("127.0.0.1", first)).expect("the first port is free again");

        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        assert_eq!(
            set(&live, &format!("listen_port={busy}\n")),
            Err(Errno::PortInUse)
        );
        assert_eq!(live.get().listen_port, port, "it stays where it was");
        // A set stops at the failed line, as wireguard-go's does.
        assert_eq!(
            set(
                &live,
                &format!("listen_port={busy}\npublic_key={}\n", hex(&public(2)))
            ),
            Err(Errno::PortInUse)
        );
        assert_eq!(peers(&live), []);
    }

    #[test]
    fn a_get_carries_the_stage_counters_after_the_device_lines() {
        let stats = Arc::new(Stats::default());
        stats
            .stage(crate::pipeline::stats::Stage::Encryptor)
            .pass(2, 200);
        stats.handshake_completed(7);
        let served = live().with_stats(stats.clone());
        let answer = write_get(&served.get());
        let back = crate::protocol::uapi::read_get(&answer).unwrap();
        let snap = crate::pipeline::stats::Snapshot::from_extras(&back.extra).unwrap();
        assert_eq!(snap, stats.snapshot());
        assert!(answer.contains("\npipevpn_stage=encryptor packets=2 bytes=200 "));
        assert!(answer.contains("\npipevpn_handshakes=last_ms=7 completed=1\n"));
        assert!(live().get().extra.is_empty(), "no counters, no extra lines");
    }

    #[test]
    fn last_handshake_is_wall_clock_time() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            since_epoch(wall, Duration::from_secs(100), Duration::from_secs(40)),
            Some(Duration::from_secs(1_000_000 - 60))
        );
        assert_eq!(
            since_epoch(
                UNIX_EPOCH,
                Duration::from_secs(100),
                Duration::from_secs(40)
            ),
            None
        );
        let live = live();
        set(&live, &format!("public_key={}\n", hex(&public(2)))).unwrap();
        let peer = live.interface.peer(&public(2)).unwrap();
        peer.last_handshake.set(live.interface.now());
        let got = live.get().peers[0].last_handshake.expect("a handshake");
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(
            real.saturating_sub(got) < Duration::from_secs(5),
            "{got:?} vs {real:?}"
        );
    }
}
