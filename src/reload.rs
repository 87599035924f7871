//! What SIGHUP applies to a running `up`: the control socket's [`Set`] that
//! makes the interface what its config file now says, with the semantics of
//! `wg syncconf` (wireguard-tools): peers no longer in the file are removed,
//! every peer of the file gets its AllowedIPs (replacing the old ones), its
//! PresharedKey, Endpoint and PersistentKeepalive; the private key and FwMark
//! are the file's, and so is ListenPort if the file has one. The set goes to
//! the same handler as a `wg set`, so a reload has no applier of its own.
//!
//! Only what differs from the interface as it is ([`Snapshot`]) is in the
//! set: an unchanged file gives an empty set, and a peer whose lines did not
//! change is not touched at all. A changed peer keeps its sessions and
//! counters (the handler updates it in place, as wireguard-go does); one that
//! roamed away from its file's Endpoint is sent back there, as syncconf does.
//! Unlike syncconf, a PresharedKey or PersistentKeepalive taken out of the
//! file is cleared: the file is the whole truth about a peer.
//!
//! The keys only wg-quick acts on, when it brings the interface up
//! (Address, MTU, DNS, Table, the hooks, SaveConfig), are not applied:
//! [`restart_keys`] names those that changed, for one warning.

use crate::cidr::Cidr;
use crate::config::{Config, Hook, InterfaceConfig, Table};
use crate::protocol::uapi::{AllowedIpChange, PeerChange, PeerSnapshot, Set, Snapshot};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// The set that turns `live` into what `config` says; `endpoints` are its
/// peers' Endpoints, resolved, in its order.
pub fn sync_set(config: &Config, endpoints: &[Option<SocketAddr>], live: &Snapshot) -> Set {
    let ours = &config.interface;
    let fwmark = ours.fw_mark.unwrap_or(0);
    let in_file: HashSet<_> = config.peers.iter().map(|p| p.public_key).collect();
    let running: HashMap<_, &PeerSnapshot> = live.peers.iter().map(|p| (p.public_key, p)).collect();
    // Removals first, as syncconf sends them: an AllowedIP that moves from
    // a removed peer to another is then free when that one claims it.
    let mut peers: Vec<PeerChange> = live
        .peers
        .iter()
        .filter(|p| !in_file.contains(&p.public_key))
        .map(|p| PeerChange {
            remove: true,
            ..PeerChange::new(p.public_key)
        })
        .collect();
    for (peer, endpoint) in config.peers.iter().zip(endpoints) {
        let psk = peer.preshared_key.clone().unwrap_or_default();
        let keepalive = peer.persistent_keepalive.unwrap_or(0);
        let allowed: HashSet<Cidr> = peer.allowed_ips.iter().map(Cidr::network).collect();
        let mut c = PeerChange::new(peer.public_key);
        match running.get(&peer.public_key) {
            Some(now) => {
                c.preshared_key = (now.preshared_key != psk).then_some(psk);
                c.persistent_keepalive_interval =
                    (now.persistent_keepalive_interval != keepalive).then_some(keepalive);
                c.endpoint = endpoint.filter(|e| now.endpoint != Some(*e));
                let had: HashSet<Cidr> = now.allowed_ips.iter().map(Cidr::network).collect();
                c.replace_allowed_ips = had != allowed;
            }
            None => {
                c.preshared_key = peer.preshared_key.clone();
                c.persistent_keepalive_interval = peer.persistent_keepalive;
                c.endpoint = *endpoint;
                c.replace_allowed_ips = true;
            }
        }
        if c.replace_allowed_ips {
            c.allowed_ips = peer
                .allowed_ips
                .iter()
                .map(|a| AllowedIpChange::Add(a.network()))
                .collect();
        }
        // A new peer always replaces its (empty) AllowedIPs, so it is sent.
        let changed = c.preshared_key.is_some()
            || c.persistent_keepalive_interval.is_some()
            || c.endpoint.is_some()
            || c.replace_allowed_ips;
        if changed {
            peers.push(c);
        }
    }
    Set {
        private_key: (live.private_key.as_ref() != Some(&ours.private_key))
            .then(|| Some(ours.private_key.clone())),
        listen_port: ours.listen_port.filter(|&p| p != live.listen_port),
        fwmark: (fwmark != live.fwmark).then_some(fwmark),
        replace_peers: false,
        peers,
    }
}

/// The keys of `[Interface]` that wg-quick acts on only when it brings the
/// interface up, and that differ between `running` (the file `up` started
/// with) and `new`: a reload leaves them as they are.
pub fn restart_keys(running: &InterfaceConfig, new: &InterfaceConfig) -> Vec<&'static str> {
    // A hook's line number is where it is, not what it does.
    let commands =
        |hooks: &[Hook]| -> Vec<String> { hooks.iter().map(|h| h.command.clone()).collect() };
    let dns = |i: &InterfaceConfig| {
        i.dns
            .as_ref()
            .map(|d| (d.servers.clone(), d.search.clone()))
    };
    let table = |i: &InterfaceConfig| match i.table {
        Table::Id { id, .. } => Some(Some(id)),
        Table::Off => Some(None),
        Table::Auto => None,
    };
    [
        ("Address", running.addresses != new.addresses),
        ("MTU", running.mtu != new.mtu),
        ("DNS", dns(running) != dns(new)),
        ("Table", table(running) != table(new)),
        ("PreUp", commands(&running.pre_up) != commands(&new.pre_up)),
        (
            "PostUp",
            commands(&running.post_up) != commands(&new.post_up),
        ),
        (
            "PreDown",
            commands(&running.pre_down) != commands(&new.pre_down),
        ),
        (
            "PostDown",
            commands(&running.post_down) != commands(&new.post_down),
        ),
        ("SaveConfig", running.save_config != new.save_config),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::handler::tests::{cidrs, key, live_interface, public};
    use crate::control::handler::Live;
    use crate::control::Handler;
    use crate::protocol::keys::PresharedKey;
    use std::path::Path;
    use std::sync::Arc;

    /// A file of our key `ours` with `interface` lines and `peers` sections.
    fn file(ours: u8, interface: &str, peers: &[(u8, &str)]) -> Config {
        let mut text = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.1/24\n{interface}",
            &*key(ours).to_base64()
        );
        for (n, lines) in peers {
            text.push_str(&format!("[Peer]\nPublicKey = {}\n{lines}", public(*n)));
        }
        Config::parse(Path::new("t.conf"), &text).unwrap()
    }

    /// Each peer's Endpoint as an address (the tests write addresses only).
    fn resolved(config: &Config) -> Vec<Option<SocketAddr>> {
        let path = Path::new("t.conf");
        config
            .peers
            .iter()
            .map(|p| p.endpoint.as_ref().map(|e| e.resolve(path).unwrap()))
            .collect()
    }

    /// Applies `config` as a reload does; returns (a copy of) the set.
    fn reload(live: &Live, config: &Config) -> Set {
        let snapshot = live.get();
        let shown = sync_set(config, &resolved(config), &snapshot);
        live.set(sync_set(config, &resolved(config), &snapshot))
            .unwrap();
        shown
    }

    const PSK: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    #[test]
    fn every_key_of_a_new_file_is_in_the_set() {
        let (live, _) = live_interface();
        let port = live.get().listen_port;
        let config = file(
            5,
            &format!("ListenPort = {port}\nFwMark = 0x33\n"),
            &[
                (
                    2,
                    &format!(
                        "PresharedKey = {PSK}\nEndpoint = 192.0.2.1:4000\n\
                         PersistentKeepalive = 25\nAllowedIPs = 10.0.0.2/32, fd00::1/64\n"
                    ),
                ),
                (3, "AllowedIPs = 10.0.0.3/32\n"),
            ],
        );
        let set = reload(&live, &config);
        assert_eq!(set.private_key, Some(Some(key(5))));
        assert_eq!(set.listen_port, None, "the port is already the file's");
        assert_eq!(set.fwmark, Some(0x33));
        assert!(!set.replace_peers);
        let [a, b] = &set.peers[..] else {
            panic!("{:?}", set.peers)
        };
        assert_eq!(a.public_key, public(2));
        assert_eq!(a.preshared_key, Some(PresharedKey::from_bytes([7; 32])));
        assert_eq!(a.endpoint, Some("192.0.2.1:4000".parse().unwrap()));
        assert_eq!(a.persistent_keepalive_interval, Some(25));
        assert!(a.replace_allowed_ips && !a.remove && !a.update_only);
        assert_eq!(
            a.allowed_ips,
            cidrs(&["10.0.0.2/32", "fd00::/64"])
                .into_iter()
                .map(AllowedIpChange::Add)
                .collect::<Vec<_>>()
        );
        assert_eq!(b.public_key, public(3));
        assert_eq!(
            (
                b.preshared_key.clone(),
                b.endpoint,
                b.persistent_keepalive_interval
            ),
            (None, None, None)
        );
        // Applied, the interface is the file.
        let got = live.get();
        assert_eq!(got.private_key, Some(key(5)));
        assert_eq!(got.fwmark, 0x33);
        assert_eq!(got.peers.len(), 2);
        assert_eq!(got.peers[0].persistent_keepalive_interval, 25);
        assert_eq!(
            got.peers[0].allowed_ips,
            cidrs(&["10.0.0.2/32", "fd00::/64"])
        );
        assert_eq!(got.peers[1].allowed_ips, cidrs(&["10.0.0.3/32"]));
    }

    #[test]
    fn an_unchanged_file_gives_a_set_that_changes_nothing() {
        let (live, iface) = live_interface();
        // The file, peer 2's AllowedIPs as given.
        let with = |allowed: &str| {
            file(
                1,
                "FwMark = 7\n",
                &[
                    (
                        2,
                        &format!(
                            "PresharedKey = {PSK}\nEndpoint = [2001:db8::2]:51820\n\
                             PersistentKeepalive = 25\nAllowedIPs = {allowed}\n"
                        ),
                    ),
                    (3, "AllowedIPs = 10.0.0.3/32\n"),
                ],
            )
        };
        let config = with("10.0.0.2/32, 10.9.0.0/16");
        reload(&live, &config);
        let before: Vec<_> = iface.peers();
        assert_eq!(reload(&live, &config), Set::default());
        // The same peers, not new ones with the same keys.
        let after = iface.peers();
        assert_eq!(before.len(), after.len());
        assert!(before.iter().zip(&after).all(|(b, a)| Arc::ptr_eq(b, a)));
        // Host bits and the order of AllowedIPs do not make a change.
        assert_eq!(
            reload(&live, &with("10.9.1.1/16, 10.0.0.2/32")),
            Set::default()
        );
    }

    #[test]
    fn peers_gone_from_the_file_are_removed_and_changed_ones_updated_in_place() {
        let (live, iface) = live_interface();
        let first = file(
            1,
            "",
            &[
                (2, "AllowedIPs = 10.0.0.2/32\n"),
                (
                    3,
                    &format!("PresharedKey = {PSK}\nPersistentKeepalive = 25\nAllowedIPs = 10.0.0.3/32\nEndpoint = 192.0.2.3:51820\n"),
                ),
            ],
        );
        reload(&live, &first);
        let kept = iface.peer(&public(3)).unwrap();
        // 2 goes, 3 loses its PSK and keepalive and gets 2's prefix, 4 comes.
        let second = file(
            1,
            "",
            &[
                (
                    3,
                    "AllowedIPs = 10.0.0.3/32, 10.0.0.2/32\nEndpoint = 192.0.2.3:51820\n",
                ),
                (4, "AllowedIPs = 10.0.0.4/32\nEndpoint = 192.0.2.4:51820\n"),
            ],
        );
        let set = reload(&live, &second);
        assert_eq!((set.private_key.is_none(), set.fwmark), (true, None));
        let [gone, changed, new] = &set.peers[..] else {
            panic!("{:?}", set.peers)
        };
        assert_eq!((gone.public_key, gone.remove), (public(2), true));
        assert_eq!(changed.public_key, public(3));
        assert_eq!(changed.preshared_key, Some(PresharedKey::default()));
        assert_eq!(changed.persistent_keepalive_interval, Some(0));
        assert_eq!(changed.endpoint, None, "unchanged");
        assert!(changed.replace_allowed_ips);
        assert_eq!((new.public_key, new.remove), (public(4), false));
        let got = live.get();
        let keys: Vec<_> = got.peers.iter().map(|p| p.public_key).collect();
        assert_eq!(keys, [public(3), public(4)]);
        assert!(Arc::ptr_eq(&kept, &iface.peer(&public(3)).unwrap()));
        assert_eq!(got.peers[0].preshared_key, PresharedKey::default());
        assert_eq!(got.peers[0].persistent_keepalive_interval, 0);
        assert_eq!(
            got.peers[0].allowed_ips,
            cidrs(&["10.0.0.3/32", "10.0.0.2/32"])
        );
        // A peer that roamed is sent back to its file's Endpoint.
        kept.update_endpoint("192.0.2.99:4000".parse::<SocketAddr>().unwrap().into());
        let set = reload(&live, &second);
        assert_eq!(set.peers.len(), 1);
        assert_eq!(
            set.peers[0].endpoint,
            Some("192.0.2.3:51820".parse().unwrap())
        );
        // An empty file of peers removes them all.
        let set = reload(&live, &file(1, "", &[]));
        assert!(set.peers.iter().all(|p| p.remove) && set.peers.len() == 2);
        assert!(iface.peers().is_empty());
    }

    #[test]
    fn device_keys_follow_the_file() {
        let (live, _) = live_interface();
        live.set(Set {
            fwmark: Some(9),
            ..Set::default()
        })
        .unwrap();
        // No FwMark in the file: the mark goes, as with syncconf.
        let set = sync_set(&file(1, "ListenPort = 4000\n", &[]), &[], &live.get());
        assert_eq!(set.fwmark, Some(0));
        assert_eq!(set.listen_port, Some(4000));
        assert_eq!(set.private_key, None);
        // No ListenPort: the port stays where it is.
        let set = sync_set(&file(1, "FwMark = 9\n", &[]), &[], &live.get());
        assert_eq!(set, Set::default());
    }

    #[test]
    fn restart_keys_name_what_only_wg_quick_applies() {
        let base = file(1, "MTU = 1420\nPostUp = echo up\n", &[]).interface;
        // Keys applied live, and hooks only moved to another line, are not named.
        let moved = file(
            5,
            "\n\nPostUp = echo up\nListenPort = 4000\nFwMark = 1\n",
            &[],
        );
        assert_eq!(restart_keys(&base, &moved.interface), Vec::<&str>::new());
        let changed = Config::parse(
            Path::new("t.conf"),
            &format!(
                "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.9/24\nMTU = 1380\n\
                 DNS = 10.0.0.53\nTable = off\nPreUp = true\nPostUp = echo again\n\
                 PreDown = true\nPostDown = true\nSaveConfig = true\n",
                &*key(1).to_base64()
            ),
        )
        .unwrap();
        assert_eq!(
            restart_keys(&base, &changed.interface),
            [
                "Address",
                "MTU",
                "DNS",
                "Table",
                "PreUp",
                "PostUp",
                "PreDown",
                "PostDown",
                "SaveConfig"
            ]
        );
    }
}
