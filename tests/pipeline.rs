//! The whole pipeline, both directions, over in-memory tun and UDP fakes:
//! no root, no kernel. Two tunnels are joined back to back.

use pipevpn::cidr::Cidr;
use pipevpn::pipeline::device::UdpDevice;
use pipevpn::pipeline::fake::{FakeTun, FakeTunEnds, FakeUdp};
use pipevpn::pipeline::pool::{slot_size, Pool};
use pipevpn::pipeline::stats::{DropReason, Stage};
use pipevpn::pipeline::{spawn, TunnelConfig, TunnelHandle};
use pipevpn::protocol::handshake::{
    create_cookie_reply, create_initiation, make_cookie, tai64n, verify_mac1, verify_mac2,
    LocalStatic, PeerStatic,
};
use pipevpn::protocol::keys::{PresharedKey, PrivateKey};
use pipevpn::protocol::messages::{message_type, MessageType, Response};
use pipevpn::protocol::timers::Timing;
use pipevpn::sys::poll::StopFd;
use pipevpn::sys::udp::Endpoint;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";
const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 2);

/// A minimal IPv4 packet of `len` bytes (the pipeline checks the header's
/// version, length and addresses, not the checksum).
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, len: usize, tag: u8) -> Vec<u8> {
    let mut p = vec![tag; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

struct Side {
    handle: TunnelHandle,
    tun: FakeTunEnds,
}

/// Two tunnels joined by a fake UDP link; A knows B's endpoint and initiates.
fn pair(tun_capacity: usize) -> (Side, Side) {
    pair_with(tun_capacity, false, [1420, 1420])
}

/// As [`pair`]; with `both_know`, B also knows A's endpoint; `mtus` are A's
/// and B's tunnel MTUs.
fn pair_with(tun_capacity: usize, both_know: bool, mtus: [usize; 2]) -> (Side, Side) {
    pair_starting(tun_capacity, both_know, false, mtus)
}

/// As [`pair_with`]; with `b_initiates`, B starts a handshake with A's
/// endpoint at once, as a restarted `up` does with a remembered one.
fn pair_starting(
    tun_capacity: usize,
    both_know: bool,
    b_initiates: bool,
    mtus: [usize; 2],
) -> (Side, Side) {
    let (a_key, b_key) = ([0x11u8; 32], [0x22u8; 32]);
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    let b_addr: SocketAddr = B_ADDR.parse().unwrap();
    let (a_udp, b_udp) = FakeUdp::pair(a_addr, b_addr, 256);
    let cfg = |private, peer_private, endpoint, allowed: Ipv4Addr, mtu| TunnelConfig {
        private_key: PrivateKey::from_bytes(private),
        peer_public_key: PrivateKey::from_bytes(peer_private).public_key(),
        preshared_key: Some(PresharedKey::from_bytes([0x55; 32])),
        endpoint,
        initiate_at_start: false,
        allowed_ips: vec![Cidr::new(allowed.into(), 32).unwrap()],
        mtu,
        persistent_keepalive: None,
        timing: Timing::default(),
    };
    let side = |c: TunnelConfig, udp: FakeUdp| {
        let (tun, ends) = FakeTun::new(tun_capacity);
        let handle = spawn(c, Arc::new(tun), Arc::new(udp)).expect("pipeline starts");
        Side { handle, tun: ends }
    };
    (
        side(cfg(a_key, b_key, Some(b_addr), B_TUN, mtus[0]), a_udp),
        side(
            TunnelConfig {
                initiate_at_start: b_initiates,
                ..cfg(b_key, a_key, both_know.then_some(a_addr), A_TUN, mtus[1])
            },
            b_udp,
        ),
    )
}

fn shutdown_within_a_second(side: Side) {
    let started = Instant::now();
    side.handle.shutdown().expect("no stage failed");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "all threads joined within 1 s (took {:?})",
        started.elapsed()
    );
}

fn expect_delivery(to: &Side, want: &[u8]) {
    let got = to
        .tun
        .delivered
        .recv_timeout(Duration::from_secs(5))
        .expect("packet delivered through the tunnel");
    assert_eq!(got, want);
}

/// Feeds `burst` into `from`'s tun on a thread of its own (more than the
/// channels hold) and expects it out of `to`'s tun, whole and in order.
fn expect_burst_in_order(from: &Side, to: &Side, burst: Vec<Vec<u8>>) {
    let feeder = {
        let inject = from.tun.inject.clone();
        let burst = burst.clone();
        std::thread::spawn(move || burst.into_iter().for_each(|p| inject.send(p).unwrap()))
    };
    for p in &burst {
        expect_delivery(to, p);
    }
    feeder.join().unwrap();
}

#[test]
fn packets_cross_both_ways_and_threads_join() {
    let (a, b) = pair(64);
    // The first packet waits in the encryptor while the handshake runs.
    let p1 = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(p1.clone()).unwrap();
    expect_delivery(&b, &p1);
    // B learned A's endpoint from the handshake and answers.
    let p2 = ipv4(B_TUN, A_TUN, 1420, 2);
    b.tun.inject.send(p2.clone()).unwrap();
    expect_delivery(&a, &p2);
    // A burst keeps its order.
    let burst: Vec<_> = (0..500)
        .map(|i| ipv4(A_TUN, B_TUN, 60 + i % 1000, i as u8))
        .collect();
    expect_burst_in_order(&a, &b, burst);

    assert_eq!(
        a.handle.stats.handshakes(),
        1,
        "initiator completed one handshake"
    );
    assert_eq!(b.handle.stats.handshakes(), 1, "responder confirmed it");
    let sent = a.handle.stats.stage(Stage::Encryptor).packets();
    assert_eq!(sent, 501);
    assert_eq!(b.handle.stats.stage(Stage::TunWriter).packets(), 501);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

#[test]
fn a_lone_packet_never_overtakes_a_backlog() {
    // B's applications read nothing for now: its tun queue holds 8 packets,
    // so B's stages fill up with the rest of the burst.
    let (a, b) = pair(8);
    let first = ipv4(A_TUN, B_TUN, 100, 0);
    a.tun.inject.send(first.clone()).unwrap();
    expect_delivery(&b, &first);
    let burst: Vec<_> = (1..=12).map(|i| ipv4(A_TUN, B_TUN, 200, i)).collect();
    let feeder = {
        let inject = a.tun.inject.clone();
        let burst = burst.clone();
        std::thread::spawn(move || burst.into_iter().for_each(|p| inject.send(p).unwrap()))
    };
    // A quiet spell, then one packet: lone, but with packets still ahead of it
    // in B's stages it must queue behind them.
    std::thread::sleep(Duration::from_millis(20));
    let lone = ipv4(A_TUN, B_TUN, 300, 0xff);
    a.tun.inject.send(lone.clone()).unwrap();
    for p in burst.iter().chain([&lone]) {
        expect_delivery(&b, p);
    }
    feeder.join().unwrap();
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// A peer whose tunnel MTU is above ours (wireguard-go or kernel WireGuard
/// with MTU 1500, or jumbo frames) sends transport datagrams longer than a
/// slot of ours: as those implementations do, we deliver them whole and in
/// order among the others, and drop none.
#[test]
fn packets_above_our_mtu_from_a_peer_with_a_larger_one_are_delivered() {
    for b_mtu in [1420, 576] {
        let (a, b) = pair_with(64, false, [9000, b_mtu]);
        // What `ping -M dont -s 1452` sends from a peer with MTU 1500.
        let first = ipv4(A_TUN, B_TUN, 1480, 0);
        a.tun.inject.send(first.clone()).unwrap();
        expect_delivery(&b, &first);
        // Large packets among small ones, more than one batch of B's holds.
        let burst: Vec<_> = (0..300)
            .map(|i| ipv4(A_TUN, B_TUN, [60, b_mtu + 1, 9000, 4000][i % 4], i as u8))
            .collect();
        expect_burst_in_order(&a, &b, burst);
        let receiver = b.handle.stats.stage(Stage::UdpReceiver);
        assert_eq!(receiver.dropped(DropReason::Oversized), 0, "MTU {b_mtu}");
        assert_eq!(b.handle.stats.stage(Stage::TunWriter).packets(), 301);
        shutdown_within_a_second(a);
        shutdown_within_a_second(b);
    }
}

#[test]
fn a_remembered_endpoint_gets_a_handshake_at_start() {
    // Without the flag B waits for traffic, as before.
    let (a, b) = pair_starting(64, true, false, [1420, 1420]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.handle.stats.handshakes(), 0);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);

    let (a, b) = pair_starting(64, true, true, [1420, 1420]);
    let deadline = Instant::now() + Duration::from_secs(5);
    // B's keepalive after the handshake confirms the session to A.
    while a.handle.peer.sending_session().is_none() {
        assert!(
            Instant::now() < deadline,
            "B started no handshake by itself"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A only answered, and its first packet goes out on B's session.
    let current = a.handle.peer.keypairs().current.expect("A has a session");
    assert!(!current.we_initiated);
    let pa = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(pa.clone()).unwrap();
    expect_delivery(&b, &pa);
    let after = a.handle.peer.keypairs().current.expect("A has a session");
    assert_eq!(after.local_index, current.local_index);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

#[test]
fn simultaneous_initiation_converges() {
    let (a, b) = pair_with(64, true, [1420, 1420]);
    // Both sides have a packet waiting at once, so both initiate.
    let (pa, pb) = (ipv4(A_TUN, B_TUN, 84, 1), ipv4(B_TUN, A_TUN, 84, 2));
    a.tun.inject.send(pa.clone()).unwrap();
    b.tun.inject.send(pb.clone()).unwrap();
    expect_delivery(&b, &pa);
    expect_delivery(&a, &pb);
    // And traffic keeps flowing both ways afterwards.
    for i in 0..50u8 {
        let (pa, pb) = (ipv4(A_TUN, B_TUN, 100, i), ipv4(B_TUN, A_TUN, 100, i));
        a.tun.inject.send(pa.clone()).unwrap();
        b.tun.inject.send(pb.clone()).unwrap();
        expect_delivery(&b, &pa);
        expect_delivery(&a, &pb);
    }
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

#[test]
fn disallowed_destinations_and_sources_are_counted_drops() {
    let (a, b) = pair(64);
    let ok = ipv4(A_TUN, B_TUN, 60, 0);
    a.tun.inject.send(ok.clone()).unwrap();
    expect_delivery(&b, &ok);
    // Destination outside B's AllowedIPs on A: never sent.
    a.tun
        .inject
        .send(ipv4(A_TUN, Ipv4Addr::new(10, 96, 0, 9), 60, 0))
        .unwrap();
    // Not an IP packet.
    a.tun.inject.send(vec![0u8; 40]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let enc = a.handle.stats.stage(Stage::Encryptor);
    while enc.dropped(DropReason::NoRoute) + enc.dropped(DropReason::NotIp) < 2 {
        assert!(Instant::now() < deadline, "drops were counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    // B sends with a spoofed inner source: A drops it after decrypting.
    b.tun
        .inject
        .send(ipv4(Ipv4Addr::new(10, 96, 0, 77), A_TUN, 60, 0))
        .unwrap();
    let dec = a.handle.stats.stage(Stage::Decryptor);
    while dec.dropped(DropReason::SourceNotAllowed) < 1 {
        assert!(Instant::now() < deadline, "spoofed source was counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        a.tun.delivered.try_recv().is_err(),
        "nothing was delivered to A"
    );
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

#[test]
fn a_slow_sink_pushes_back_instead_of_growing() {
    // B's applications read nothing: its tun queue holds 8 packets.
    let (a, b) = pair(8);
    let first = ipv4(A_TUN, B_TUN, 100, 0);
    a.tun.inject.send(first.clone()).unwrap();
    expect_delivery(&b, &first);
    // Offer far more packets than the pipeline has room for. Those it
    // cannot hold are either refused at A's tun (the inject queue is full)
    // or lost on the UDP link, as a full socket buffer would lose them.
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..20_000 {
        match a.tun.inject.try_send(ipv4(A_TUN, B_TUN, 1000, i as u8)) {
            Ok(()) => accepted += 1,
            Err(_) => {
                refused += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    assert!(
        refused > 0,
        "A's tun queue filled: the pipeline pushed back"
    );
    // Memory is bounded by the pools: B's stages hold at most the batches of
    // its pool, so far fewer packets than were accepted wait inside it.
    let waiting = b.tun.delivered.len();
    assert!(waiting <= 8, "the fake tun holds at most its capacity");
    let held = b.handle.stats.stage(Stage::Decryptor).packets()
        - b.handle.stats.stage(Stage::TunWriter).packets();
    assert!(
        held <= 16 * 64,
        "at most a pool's worth of packets in flight inside B (held {held}, accepted {accepted})"
    );
    // Drain: traffic flows again once the sink reads.
    while b
        .tun
        .delivered
        .recv_timeout(Duration::from_millis(300))
        .is_ok()
    {}
    let last = ipv4(A_TUN, B_TUN, 100, 0xee);
    a.tun.inject.send(last.clone()).unwrap();
    expect_delivery(&b, &last);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// A tun whose reads fail: the stage must end, be reported, and turn the
/// tunnel's shutdown into an error naming it, while the others still join.
struct BrokenTun;

impl pipevpn::pipeline::device::TunDevice for BrokenTun {
    fn read_batch(
        &self,
        _batch: &mut pipevpn::pipeline::pool::Batch,
        _stop: &pipevpn::sys::poll::StopFd,
    ) -> std::io::Result<Option<usize>> {
        Err(std::io::Error::other("device vanished"))
    }

    fn write_batch(
        &self,
        _batch: &mut pipevpn::pipeline::pool::Batch,
    ) -> pipevpn::pipeline::device::Written {
        panic!("nothing should be written")
    }
}

#[test]
fn a_failing_stage_is_reported_and_everything_still_joins() {
    let (udp, _other) = FakeUdp::pair(A_ADDR.parse().unwrap(), B_ADDR.parse().unwrap(), 4);
    let handle = spawn(
        TunnelConfig {
            private_key: PrivateKey::from_bytes([0x11; 32]),
            peer_public_key: PrivateKey::from_bytes([0x22; 32]).public_key(),
            preshared_key: None,
            endpoint: None,
            initiate_at_start: false,
            allowed_ips: vec![],
            mtu: 1420,
            persistent_keepalive: None,
            timing: Timing::default(),
        },
        Arc::new(BrokenTun),
        Arc::new(udp),
    )
    .unwrap();
    let exit = handle
        .exits()
        .recv_timeout(Duration::from_secs(5))
        .expect("the failed stage reported its end");
    assert_eq!(exit.stage, Stage::TunReader);
    let err = handle.shutdown().expect_err("shutdown reports the failure");
    let msg = err.to_string();
    assert!(
        msg.contains("tun_reader") && msg.contains("device vanished"),
        "{msg}"
    );
}

/// The next handshake response that arrives at `udp`, within 5 s.
fn next_response(udp: &FakeUdp) -> Vec<u8> {
    let pool = Pool::new(1, slot_size(1420));
    let stop = Arc::new(StopFd::new().unwrap());
    let (done, finished) = crossbeam_channel::bounded::<()>(1);
    let watchdog = {
        let stop = stop.clone();
        thread::spawn(move || {
            if finished.recv_timeout(Duration::from_secs(5)).is_err() {
                stop.signal();
            }
        })
    };
    let found = 'wait: loop {
        let mut batch = pool.get();
        if udp.recv_batch(&mut batch, &stop).unwrap().is_none() {
            break None;
        }
        for i in 0..batch.count() {
            let d = &batch.slot(i)[..batch.len(i)];
            if message_type(d) == Ok(MessageType::Response) {
                break 'wait Some(d.to_vec());
            }
        }
    };
    let _ = done.send(());
    watchdog.join().unwrap();
    found.expect("a handshake response within 5 s")
}

/// The test plays an initiator under load against B: it answers B's
/// response with a cookie reply, and B's next response must carry mac2.
#[test]
fn a_cookie_reply_to_our_response_gives_the_next_one_mac2() {
    let (a_key, b_key) = ([0x11u8; 32], [0x22u8; 32]);
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    let (a_udp, b_udp) = FakeUdp::pair(a_addr, B_ADDR.parse().unwrap(), 64);
    let (tun, ends) = FakeTun::new(16);
    let b = spawn(
        TunnelConfig {
            private_key: PrivateKey::from_bytes(b_key),
            peer_public_key: PrivateKey::from_bytes(a_key).public_key(),
            preshared_key: None,
            endpoint: None,
            initiate_at_start: false,
            allowed_ips: vec![Cidr::new(A_TUN.into(), 32).unwrap()],
            mtu: 1420,
            persistent_keepalive: None,
            timing: Timing::default(),
        },
        Arc::new(tun),
        Arc::new(b_udp),
    )
    .expect("pipeline starts");
    let a = LocalStatic::new(PrivateKey::from_bytes(a_key));
    let a_peer = PeerStatic::new(&a, PrivateKey::from_bytes(b_key).public_key(), None).unwrap();
    let to_b = Endpoint {
        addr: B_ADDR.parse().unwrap(),
        local: None,
    };
    let initiation = |index, secs| {
        let ephemeral = PrivateKey::from_bytes([index as u8; 32]);
        create_initiation(&a, &a_peer, ephemeral, tai64n(secs, 0), index, None)
            .unwrap()
            .1
    };

    a_udp.send_to(&initiation(1, 1), to_b).unwrap();
    let first = next_response(&a_udp);
    assert!(verify_mac1(&a, &first));
    let first = Response::parse(&first).unwrap();
    assert_eq!(first.mac2, [0; 16], "B holds no cookie yet");
    let cookie = make_cookie(&[0x77; 32], a_addr);
    let reply = create_cookie_reply(&a, first.sender, &first.mac1, &cookie, [5; 24]);
    a_udp.send_to(&reply, to_b).unwrap();

    // Past B's 20 ms initiation-flood guard, with a newer timestamp.
    thread::sleep(Duration::from_millis(100));
    a_udp.send_to(&initiation(2, 2), to_b).unwrap();
    let second = next_response(&a_udp);
    let counters = b.stats.stage(Stage::Handshaker);
    assert_eq!(
        (
            counters.dropped(DropReason::UnexpectedMessage),
            counters.dropped(DropReason::BadCookie)
        ),
        (0, 0),
        "B took the cookie reply to its response"
    );
    assert!(
        verify_mac2(&cookie, &second),
        "B's next response carries mac2 made with the cookie"
    );
    shutdown_within_a_second(Side {
        handle: b,
        tun: ends,
    });
}
