//! The whole pipeline, both directions, over in-memory tun and UDP fakes:
//! no root, no kernel. Two tunnels are joined back to back.

use pipevpn::cidr::Cidr;
use pipevpn::notify::{Health, Judge, Look};
use pipevpn::pipeline::device::{Sent, TunDevice, UdpDevice, Unfit, Written};
use pipevpn::pipeline::fake::{FakeTun, FakeTunEnds, FakeUdp};
use pipevpn::pipeline::interface::{AllowedIpChange, PeerUpdate};
use pipevpn::pipeline::peer::Peer;
use pipevpn::pipeline::pool::{slot_size, Batch, Pool};
use pipevpn::pipeline::stats::{DropReason, Stage};
use pipevpn::pipeline::{spawn, PeerSpec, TunnelConfig, TunnelHandle};
use pipevpn::protocol::handshake::{
    create_cookie_reply, create_initiation, make_cookie, tai64n, verify_mac1, verify_mac2,
    LocalStatic, PeerStatic,
};
use pipevpn::protocol::keys::{PresharedKey, PrivateKey};
use pipevpn::protocol::messages::{message_type, MessageType, Response};
use pipevpn::protocol::timers::Timing;
use pipevpn::sys::poll::StopFd;
use pipevpn::sys::udp::Endpoint;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
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

/// A tunnel with the one peer `spec`.
fn one_peer(private: [u8; 32], mtu: usize, spec: PeerSpec) -> TunnelConfig {
    TunnelConfig {
        private_key: Some(PrivateKey::from_bytes(private)),
        mtu,
        timing: Timing::default(),
        peers: vec![spec],
        crypto_workers: 0,
    }
}

/// A peer with key `private`'s public key, routed `allowed`.
fn peer_spec(private: [u8; 32], endpoint: Option<SocketAddr>, allowed: &[Cidr]) -> PeerSpec {
    PeerSpec {
        public_key: PrivateKey::from_bytes(private).public_key(),
        preshared_key: None,
        endpoint,
        initiate_at_start: false,
        allowed_ips: allowed.to_vec(),
        persistent_keepalive: None,
    }
}

fn host(ip: Ipv4Addr) -> Cidr {
    Cidr::new(ip.into(), 32).unwrap()
}

struct Side {
    handle: TunnelHandle,
    tun: FakeTunEnds,
}

impl Side {
    /// The one peer of a two-sided test.
    fn peer(&self) -> Arc<Peer> {
        self.handle.interface.peers()[0].clone()
    }
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
    let (a, b, _) = pair_answering(tun_capacity, both_know, b_initiates, mtus, 0, tun);
    (a, b)
}

/// A fake tun as it is.
fn tun(t: FakeTun) -> Arc<dyn TunDevice> {
    Arc::new(t)
}

/// As [`pair_starting`]; B's tun answers each packet written to it with
/// `b_answers` packets to A ([`FakeTun::answering`]), seen through
/// `b_tun`. Also returns B's UDP end, to tell which thread sent what.
fn pair_answering(
    tun_capacity: usize,
    both_know: bool,
    b_initiates: bool,
    mtus: [usize; 2],
    b_answers: u8,
    b_tun: fn(FakeTun) -> Arc<dyn TunDevice>,
) -> (Side, Side, Arc<FakeUdp>) {
    let (a_key, b_key) = ([0x11u8; 32], [0x22u8; 32]);
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    let b_addr: SocketAddr = B_ADDR.parse().unwrap();
    let (a_udp, b_udp) = FakeUdp::pair(a_addr, b_addr, 256);
    let cfg = |private, peer_private, endpoint, allowed: Ipv4Addr, mtu, initiate| {
        one_peer(
            private,
            mtu,
            PeerSpec {
                preshared_key: Some(PresharedKey::from_bytes([0x55; 32])),
                initiate_at_start: initiate,
                ..peer_spec(peer_private, endpoint, &[host(allowed)])
            },
        )
    };
    let side = |c: TunnelConfig, udp: Arc<FakeUdp>, answers, wrap: fn(FakeTun) -> _| {
        let (t, ends) = FakeTun::answering(tun_capacity, answers);
        let handle = spawn(c, wrap(t), udp).expect("pipeline starts");
        Side { handle, tun: ends }
    };
    let b_udp = Arc::new(b_udp);
    (
        side(
            cfg(a_key, b_key, Some(b_addr), B_TUN, mtus[0], false),
            Arc::new(a_udp),
            0,
            tun,
        ),
        side(
            cfg(
                b_key,
                a_key,
                both_know.then_some(a_addr),
                A_TUN,
                mtus[1],
                b_initiates,
            ),
            b_udp.clone(),
            b_answers,
            b_tun,
        ),
        b_udp,
    )
}

fn shutdown_within_a_second(side: Side) {
    // The test reads no more: let the tun_writer's delivery fail instead of
    // waiting for room in a full channel no one empties.
    let Side { handle, tun } = side;
    drop(tun);
    let started = Instant::now();
    handle.shutdown().expect("no stage failed");
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

/// A tun whose reader, woken, runs only 20 ms later, as a thread woken on
/// a busy machine may: what is ready at once goes to whoever looks first.
struct SlowToWake(FakeTun);

impl TunDevice for SlowToWake {
    fn wait_readable(&self, stop: &StopFd) -> std::io::Result<bool> {
        let ready = self.0.wait_readable(stop)?;
        thread::sleep(Duration::from_millis(20));
        Ok(ready)
    }

    fn try_read_batch(&self, batch: &mut Batch) -> std::io::Result<Option<usize>> {
        self.0.try_read_batch(batch)
    }

    fn write_batch(&self, batch: &mut Batch) -> Written {
        self.0.write_batch(batch)
    }
}

/// A request brings its answer (`pipeline::reading`): B's tun answers each
/// packet inside the write that delivers it, as the kernel answers a ping,
/// so B's udp_receiver, having written the request, finds the answer at
/// once and seals and sends it itself. B's tun_reader is slow to wake, so
/// that the race it could win on a busy machine does not decide the test:
/// without the look, it sends every answer.
#[test]
fn an_answer_ready_at_once_leaves_from_the_thread_that_delivered_the_request() {
    let slow = |t| -> Arc<dyn TunDevice> { Arc::new(SlowToWake(t)) };
    let (a, b, b_udp) = pair_answering(64, false, false, [1420, 1420], 1, slow);
    let b_receiver = Stage::UdpReceiver.name();
    for tag in 0..10 {
        // Further apart than a batch's quiet spell: each is lone.
        thread::sleep(Duration::from_millis(2));
        let request = ipv4(A_TUN, B_TUN, 84, tag);
        a.tun.inject.send(request.clone()).unwrap();
        expect_delivery(&b, &request);
        let mut answer = ipv4(B_TUN, A_TUN, 84, tag);
        answer[83] = 0;
        expect_delivery(&a, &answer);
    }
    assert!(a.tun.delivered.try_recv().is_err(), "each answer came once");
    let by_receiver = b_udp.sent_by(b_receiver);
    assert!(
        by_receiver >= 5,
        "{by_receiver} of 10 answers left from B's udp_receiver"
    );
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// While B's udp_receiver reads B's tun for answers, B's tun_reader reads
/// it too: each answer is read by one of them and they leave in the order
/// the tun gave them, three to each request, for lone requests and for a
/// burst of them.
#[test]
fn answers_read_by_either_thread_keep_their_order() {
    let (a, b, _) = pair_answering(256, false, false, [1420, 1420], 3, tun);
    let answers = |tag: u8| {
        (0..3).map(move |k| {
            let mut answer = ipv4(B_TUN, A_TUN, 84, tag);
            answer[83] = k;
            answer
        })
    };
    for tag in 0..20 {
        thread::sleep(Duration::from_millis(1));
        let request = ipv4(A_TUN, B_TUN, 84, tag);
        a.tun.inject.send(request.clone()).unwrap();
        expect_delivery(&b, &request);
        for answer in answers(tag) {
            expect_delivery(&a, &answer);
        }
    }
    let burst: Vec<_> = (20..80).map(|tag| ipv4(A_TUN, B_TUN, 84, tag)).collect();
    let feeder = {
        let inject = a.tun.inject.clone();
        let burst = burst.clone();
        thread::spawn(move || burst.into_iter().for_each(|p| inject.send(p).unwrap()))
    };
    for request in &burst {
        expect_delivery(&b, request);
    }
    for tag in 20..80 {
        for answer in answers(tag) {
            expect_delivery(&a, &answer);
        }
    }
    feeder.join().unwrap();
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
    while a.peer().sending_session().is_none() {
        assert!(
            Instant::now() < deadline,
            "B started no handshake by itself"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A only answered, and its first packet goes out on B's session.
    let current = a.peer().keypairs().current.expect("A has a session");
    assert!(!current.we_initiated);
    let pa = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(pa.clone()).unwrap();
    expect_delivery(&b, &pa);
    let after = a.peer().keypairs().current.expect("A has a session");
    assert_eq!(after.local_index, current.local_index);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

#[test]
fn a_moved_endpoint_wakes_the_follower_and_an_unchanged_one_does_not() {
    // B starts without A's endpoint; A's for B is where B is.
    let (a, b) = pair(64);
    let (a_moves, b_moves) = (
        a.handle.interface.endpoint_moves(),
        b.handle.interface.endpoint_moves(),
    );
    assert!(b_moves.try_recv().is_err(), "nothing moved before traffic");
    let first = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(first.clone()).unwrap();
    expect_delivery(&b, &first);
    b_moves
        .recv_timeout(Duration::from_secs(1))
        .expect("B learning A's endpoint wakes B's follower");
    // Traffic both ways from the same addresses moves nothing: no wake-up,
    // although A now also knows our side of B's path.
    for tag in 2..20 {
        let pa = ipv4(A_TUN, B_TUN, 84, tag);
        a.tun.inject.send(pa.clone()).unwrap();
        expect_delivery(&b, &pa);
        let pb = ipv4(B_TUN, A_TUN, 84, tag);
        b.tun.inject.send(pb.clone()).unwrap();
        expect_delivery(&a, &pb);
    }
    assert!(b_moves.try_recv().is_err(), "B woken without a move");
    assert!(a_moves.try_recv().is_err(), "A woken without a move");
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    assert_eq!(b.peer().endpoint().map(|e| e.addr), Some(a_addr));
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

/// Backpressure is counted where it is felt: once B's applications stop
/// reading and B's tun is full, B's tun_writer blocks in its write and the
/// decryptor, finding the channel to it full, counts and times its waits.
#[test]
fn a_stalled_tun_writer_makes_the_decryptor_count_its_waits() {
    let (a, b) = pair(1024);
    let first = ipv4(A_TUN, B_TUN, 100, 0);
    a.tun.inject.send(first.clone()).unwrap();
    expect_delivery(&b, &first);
    let dec = || b.handle.stats.stage(Stage::Decryptor);
    // A sends far more than B's tun holds, which nothing reads now.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0u32;
    while dec().blocked() == 0 {
        assert!(
            Instant::now() < deadline,
            "B's decryptor counted no wait for its stalled tun_writer after {sent} packets"
        );
        let packet = ipv4(A_TUN, B_TUN, 1000, sent as u8);
        if a.tun
            .inject
            .send_timeout(packet, Duration::from_millis(100))
            .is_ok()
        {
            sent += 1;
        }
    }
    assert!(sent > 1024, "B's tun held {sent} packets: it was not full");
    // Once B's applications read again, the wait ends and is timed.
    while b
        .tun
        .delivered
        .recv_timeout(Duration::from_millis(300))
        .is_ok()
    {}
    assert!(dec().blocked_ns() > 0, "the wait is timed");
    assert_eq!(
        b.handle.stats.stage(Stage::TunWriter).blocked(),
        0,
        "the tun_writer has no channel after it"
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
    fn wait_readable(&self, _stop: &pipevpn::sys::poll::StopFd) -> std::io::Result<bool> {
        Ok(true)
    }

    fn try_read_batch(
        &self,
        _batch: &mut pipevpn::pipeline::pool::Batch,
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
        one_peer([0x11; 32], 1420, peer_spec([0x22; 32], None, &[])),
        Arc::new(BrokenTun),
        Arc::new(udp),
    )
    .unwrap();
    // The stages after it may end cleanly (their input closed) and report
    // that first; the failure is among the reports, and is the error.
    let failed = loop {
        let exit = handle
            .exits()
            .recv_timeout(Duration::from_secs(5))
            .expect("the failed stage reported its end");
        if exit.result.is_err() {
            break exit.stage;
        }
    };
    assert_eq!(failed, Stage::TunReader);
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
        one_peer(b_key, 1420, peer_spec(a_key, None, &[host(A_TUN)])),
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

const HUB_KEY: [u8; 32] = [0x10; 32];
const HUB_ADDR: &str = "192.0.2.100:51820";
const HUB_TUN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

fn spoke_key(k: usize) -> [u8; 32] {
    [0x20 + k as u8; 32]
}

fn spoke_addr(k: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10 + k as u8], 51820))
}

/// Spoke `k`'s tunnel address, inside the /24 the hub routes to it.
fn spoke_tun(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, k as u8, 2)
}

/// A hub with three peers, the spokes, each on its own fake UDP link and
/// routed its own /24; the hub knows their endpoints. Spoke `k` runs once
/// [`Star::start`] is called for it.
struct Star {
    hub: Side,
    hub_udp: Arc<FakeUdp>,
    spokes: Vec<Option<Side>>,
    links: Vec<Option<FakeUdp>>,
}

fn star() -> Star {
    star_with(0).0
}

/// The hub's UDP seen from the wire: the message counter of every data
/// packet it sends, in sending order, by destination.
#[derive(Default)]
struct Wire(Mutex<HashMap<SocketAddr, Vec<u64>>>);

/// The hub's fake UDP, recording what it sends on the [`Wire`].
struct Tap {
    udp: Arc<FakeUdp>,
    wire: Arc<Wire>,
}

impl UdpDevice for Tap {
    fn wait_readable(&self, stop: &StopFd) -> std::io::Result<bool> {
        self.udp.wait_readable(stop)
    }

    fn try_recv_batch(&self, batch: &mut Batch) -> std::io::Result<Option<Unfit>> {
        self.udp.try_recv_batch(batch)
    }

    fn send_batch(&self, batch: &Batch) -> Sent {
        for i in (0..batch.count()).filter(|&i| batch.len(i) > 0) {
            self.record(&batch.slot(i)[..batch.len(i)], batch.addr(i));
        }
        self.udp.send_batch(batch)
    }

    fn send_to(&self, datagram: &[u8], dest: Endpoint) -> std::io::Result<()> {
        self.udp.send_to(datagram, dest)
    }
}

impl Tap {
    fn record(&self, datagram: &[u8], dest: Endpoint) {
        // Not keepalives (header and tag alone): the handshaker sends those
        // itself, so one may pass a data packet sealed before it.
        if message_type(datagram) == Ok(MessageType::Transport) && datagram.len() > 32 {
            let counter = u64::from_le_bytes(datagram[8..16].try_into().unwrap());
            let mut wire = self.wire.0.lock().unwrap();
            wire.entry(dest.addr).or_default().push(counter);
        }
    }
}

/// [`star`] with `crypto_workers` crypto workers on the hub, and the hub's
/// side of the wire.
fn star_with(crypto_workers: usize) -> (Star, Arc<Wire>) {
    let addrs: Vec<_> = (0..3).map(spoke_addr).collect();
    let (hub_udp, links) = FakeUdp::star(HUB_ADDR.parse().unwrap(), &addrs, 512);
    let hub_udp = Arc::new(hub_udp);
    let peers = (0..3)
        .map(|k| {
            let net = Cidr::new(spoke_tun(k).into(), 24).unwrap();
            peer_spec(spoke_key(k), Some(spoke_addr(k)), &[net])
        })
        .collect();
    let (tun, ends) = FakeTun::new(1024);
    let cfg = TunnelConfig {
        peers,
        crypto_workers,
        ..one_peer(HUB_KEY, 1420, peer_spec(HUB_KEY, None, &[]))
    };
    let wire = Arc::new(Wire::default());
    let tap = Tap {
        udp: hub_udp.clone(),
        wire: wire.clone(),
    };
    let handle = spawn(cfg, Arc::new(tun), Arc::new(tap)).expect("hub starts");
    let star = Star {
        hub: Side { handle, tun: ends },
        hub_udp,
        spokes: (0..3).map(|_| None).collect(),
        links: links.into_iter().map(Some).collect(),
    };
    (star, wire)
}

impl Star {
    fn start(&mut self, k: usize) {
        self.start_on(k, |udp| Arc::new(udp));
    }

    /// Starts spoke `k` on `device` over its link.
    fn start_on(&mut self, k: usize, device: impl FnOnce(FakeUdp) -> Arc<dyn UdpDevice>) {
        let udp = self.links[k].take().expect("spoke not started yet");
        let cfg = one_peer(
            spoke_key(k),
            1420,
            peer_spec(HUB_KEY, None, &[host(HUB_TUN)]),
        );
        let (tun, ends) = FakeTun::new(1024);
        let handle = spawn(cfg, Arc::new(tun), device(udp)).expect("spoke starts");
        self.spokes[k] = Some(Side { handle, tun: ends });
    }

    fn spoke(&self, k: usize) -> &Side {
        self.spokes[k].as_ref().expect("spoke started")
    }

    fn shutdown(self) {
        shutdown_within_a_second(self.hub);
        self.spokes
            .into_iter()
            .flatten()
            .for_each(shutdown_within_a_second);
    }
}

fn to_spoke(k: usize, tag: u8) -> Vec<u8> {
    ipv4(HUB_TUN, spoke_tun(k), 100 + k, tag)
}

/// One pipeline serves three peers: packets for all three, mixed in the
/// same batches, each reach their own peer, in order, sent to its endpoint.
#[test]
fn a_hub_sends_each_peer_its_own_packets() {
    let mut s = star();
    (0..3).for_each(|k| s.start(k));
    // Three handshakes at once, the first packets waiting in three queues.
    for k in 0..3 {
        s.hub.tun.inject.send(to_spoke(k, 0)).unwrap();
    }
    for k in 0..3 {
        expect_delivery(s.spoke(k), &to_spoke(k, 0));
    }
    // An interleaved burst: the tun_reader's batches hold all three peers.
    let burst: Vec<_> = (1..=200u8)
        .flat_map(|i| (0..3).map(move |k| to_spoke(k, i)))
        .collect();
    let feeder = {
        let inject = s.hub.tun.inject.clone();
        thread::spawn(move || burst.into_iter().for_each(|p| inject.send(p).unwrap()))
    };
    for i in 1..=200u8 {
        for k in 0..3 {
            expect_delivery(s.spoke(k), &to_spoke(k, i));
        }
    }
    feeder.join().unwrap();
    for k in 0..3 {
        // 201 data packets, plus the initiation (and maybe a keepalive).
        let sent = s.hub_udp.sent_to(spoke_addr(k));
        assert!((202..=204).contains(&sent), "spoke {k}: {sent} datagrams");
        assert!(s.spoke(k).tun.delivered.try_recv().is_err(), "nothing more");
        let peer = s.hub.handle.interface.peers()[k].clone();
        assert!(peer.tx_bytes.load(std::sync::atomic::Ordering::Relaxed) > 201 * 100);
        assert!(peer.last_handshake.get().is_some(), "spoke {k}");
    }
    assert_eq!(s.hub.handle.stats.handshakes(), 3);
    let sender = s.hub.handle.stats.stage(Stage::UdpSender);
    assert_eq!((sender.packets(), sender.total_drops()), (603, 0));
    s.shutdown();
}

/// Packet `i` of a stream to spoke `k`, its number in the payload; sizes
/// vary so that batches are sealed at different speeds.
fn numbered_to_spoke(k: usize, i: usize) -> Vec<u8> {
    let mut p = ipv4(HUB_TUN, spoke_tun(k), 40 + (i * 37 + k * 101) % 1300, 0);
    p[20..24].copy_from_slice(&(i as u32).to_be_bytes());
    p
}

/// Every peer's data packets on the wire, `packets` of them, had rising
/// counters (keepalives may have taken some in between).
fn assert_counters_in_order(wire: &Wire, packets: usize) {
    let wire = wire.0.lock().unwrap();
    for k in 0..3 {
        let counters = &wire[&spoke_addr(k)];
        let rising = counters.windows(2).all(|w| w[0] < w[1]);
        assert!(rising, "spoke {k}: counters {counters:?}");
        assert_eq!(counters.len(), packets, "spoke {k}");
    }
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Four seal workers: the hub's packets to three peers, mixed in its
/// batches, leave each in order with counters rising one by one, also a
/// lone packet right after a burst; and shutting the hub down right after
/// it read a burst still sends every packet of it.
#[test]
fn seal_workers_keep_each_peers_order_and_shutdown_drains_them() {
    let (mut s, wire) = star_with(4);
    // A thread names itself once it runs.
    wait_for("four seal worker threads", || {
        threads_named("encryptor_") >= 4
    });
    (0..3).for_each(|k| s.start(k));
    for k in 0..3 {
        s.hub.tun.inject.send(numbered_to_spoke(k, 0)).unwrap();
    }
    for k in 0..3 {
        expect_delivery(s.spoke(k), &numbered_to_spoke(k, 0));
    }
    const BURST: usize = 3000;
    let burst: Vec<_> = (1..=BURST)
        .flat_map(|i| (0..3).map(move |k| numbered_to_spoke(k, i)))
        .collect();
    let feeder = {
        let inject = s.hub.tun.inject.clone();
        thread::spawn(move || burst.into_iter().for_each(|p| inject.send(p).unwrap()))
    };
    for i in 1..=BURST {
        for k in 0..3 {
            expect_delivery(s.spoke(k), &numbered_to_spoke(k, i));
        }
    }
    feeder.join().unwrap();
    // A lone packet each, right behind the burst.
    for k in 0..3 {
        s.hub
            .tun
            .inject
            .send(numbered_to_spoke(k, BURST + 1))
            .unwrap();
        expect_delivery(s.spoke(k), &numbered_to_spoke(k, BURST + 1));
    }
    assert_counters_in_order(&wire, BURST + 2);

    // Less than the spokes' links and tuns hold, so nothing waits for the
    // test to read while the hub shuts down.
    const LAST: usize = 300;
    let read_before = s.hub.handle.stats.stage(Stage::TunReader).packets();
    for i in BURST + 2..BURST + 2 + LAST {
        for k in 0..3 {
            s.hub.tun.inject.send(numbered_to_spoke(k, i)).unwrap();
        }
    }
    let reader = s.hub.handle.stats.stage(Stage::TunReader);
    wait_for("the hub read the last burst", || {
        reader.packets() == read_before + 3 * LAST as u64
    });
    let Star {
        hub,
        hub_udp: _,
        spokes,
        links: _,
    } = s;
    let stats = hub.handle.stats.clone();
    shutdown_within_a_second(hub);
    let (sealed, sent) = (stats.stage(Stage::Encryptor), stats.stage(Stage::UdpSender));
    let total = 3 * (BURST as u64 + 2 + LAST as u64);
    assert_eq!((sealed.packets(), sealed.total_drops()), (total, 0));
    assert_eq!((sent.packets(), sent.total_drops()), (total, 0));
    for (k, spoke) in spokes.iter().enumerate() {
        let spoke = spoke.as_ref().unwrap();
        for i in BURST + 2..BURST + 2 + LAST {
            expect_delivery(spoke, &numbered_to_spoke(k, i));
        }
    }
    assert_counters_in_order(&wire, BURST + 2 + LAST);
    spokes
        .into_iter()
        .flatten()
        .for_each(shutdown_within_a_second);
}

/// A spoke's UDP that sends every data batch twice: each datagram comes
/// again a batch later, or in the same batch of the receiver.
struct Twice(FakeUdp);

impl UdpDevice for Twice {
    fn wait_readable(&self, stop: &StopFd) -> std::io::Result<bool> {
        self.0.wait_readable(stop)
    }

    fn try_recv_batch(&self, batch: &mut Batch) -> std::io::Result<Option<Unfit>> {
        self.0.try_recv_batch(batch)
    }

    fn send_batch(&self, batch: &Batch) -> Sent {
        let sent = self.0.send_batch(batch);
        self.0.send_batch(batch);
        sent
    }

    fn send_to(&self, datagram: &[u8], dest: Endpoint) -> std::io::Result<()> {
        self.0.send_to(datagram, dest)
    }
}

/// Packet `i` of spoke `k`'s stream to the hub, its number in the
/// payload; sizes vary so that batches are opened at different speeds.
fn numbered_from_spoke(k: usize, i: usize) -> Vec<u8> {
    let mut p = ipv4(spoke_tun(k), HUB_TUN, 40 + (i * 37 + k * 101) % 1300, 0);
    p[20..24].copy_from_slice(&(i as u32).to_be_bytes());
    p
}

/// Takes `count` packets from the hub's tun and checks that each spoke's
/// come in their numbered order, from `first` on.
fn expect_from_spokes_in_order(hub_tun: &FakeTunEnds, count: usize, first: usize) {
    let mut next = [first; 3];
    for _ in 0..count {
        let got = hub_tun
            .delivered
            .recv_timeout(Duration::from_secs(5))
            .expect("packet delivered through the tunnel");
        let k = (0..3)
            .find(|&k| got[12..16] == spoke_tun(k).octets())
            .expect("from a spoke");
        assert_eq!(got, numbered_from_spoke(k, next[k]), "spoke {k}");
        next[k] += 1;
    }
}

/// Four open workers: three peers' packets, mixed in the hub's batches and
/// each datagram received twice, reach its tun once each and in each
/// peer's order, the copies dropped as replays; and shutting the hub down
/// right after it received a burst still delivers every packet of it.
#[test]
fn open_workers_keep_each_peers_order_and_the_replay_window() {
    let (mut s, _) = star_with(4);
    wait_for("four open worker threads", || {
        threads_named("decryptor_") >= 4
    });
    (0..3).for_each(|k| s.start_on(k, |udp| Arc::new(Twice(udp))));
    // The spokes learn the hub's endpoint from its first packet.
    for k in 0..3 {
        s.hub.tun.inject.send(to_spoke(k, 0)).unwrap();
        expect_delivery(s.spoke(k), &to_spoke(k, 0));
    }
    let feed = |s: &Star, packets: std::ops::Range<usize>| {
        let feeders: Vec<_> = (0..3)
            .map(|k| {
                let inject = s.spoke(k).tun.inject.clone();
                let packets = packets.clone();
                thread::spawn(move || {
                    packets.for_each(|i| inject.send(numbered_from_spoke(k, i)).unwrap())
                })
            })
            .collect();
        feeders
    };
    const BURST: usize = 3000;
    let feeders = feed(&s, 0..BURST);
    expect_from_spokes_in_order(&s.hub.tun, 3 * BURST, 0);
    feeders.into_iter().for_each(|f| f.join().unwrap());
    let opened = s.hub.handle.stats.stage(Stage::Decryptor);
    // Each copy came a batch or more after its first, or beside it.
    wait_for("every copy dropped", || {
        opened.dropped(DropReason::Replay) == 3 * BURST as u64
    });
    assert_eq!(opened.packets(), 3 * BURST as u64);
    assert_eq!(opened.total_drops(), 3 * BURST as u64, "replays alone");

    // Less than the hub's tun holds, so nothing waits for the test to read
    // while the hub shuts down.
    const LAST: usize = 300;
    let received = s.hub.handle.stats.stage(Stage::UdpReceiver);
    let before = received.packets();
    feed(&s, BURST..BURST + LAST)
        .into_iter()
        .for_each(|f| f.join().unwrap());
    wait_for("the hub received the last burst", || {
        received.packets() == before + 2 * 3 * LAST as u64
    });
    let Star { hub, spokes, .. } = s;
    let (stats, tun) = (hub.handle.stats.clone(), hub.tun);
    let started = Instant::now();
    hub.handle.shutdown().expect("no stage failed");
    assert!(started.elapsed() < Duration::from_secs(1), "joined in 1 s");
    expect_from_spokes_in_order(&tun, 3 * LAST, BURST);
    let written = stats.stage(Stage::TunWriter);
    let total = 3 * (BURST + LAST) as u64;
    assert_eq!((written.packets(), written.total_drops()), (total, 0));
    spokes
        .into_iter()
        .flatten()
        .for_each(shutdown_within_a_second);
}

/// A peer without a session: its packets wait in its own bounded queue
/// while the other peers' go out, and follow once its handshake is done.
#[test]
fn a_peer_without_a_session_does_not_hold_up_the_others() {
    let mut s = star();
    s.start(0);
    s.start(1);
    // Spoke 2 is not running: the hub's initiation to it waits unanswered.
    let waiting: Vec<_> = (0..200).map(|i| to_spoke(2, i as u8)).collect();
    for p in &waiting {
        s.hub.tun.inject.send(p.clone()).unwrap();
    }
    for i in 0..20u8 {
        s.hub.tun.inject.send(to_spoke(0, i)).unwrap();
        s.hub.tun.inject.send(to_spoke(1, i)).unwrap();
    }
    for i in 0..20u8 {
        expect_delivery(s.spoke(0), &to_spoke(0, i));
        expect_delivery(s.spoke(1), &to_spoke(1, i));
    }
    let stats = s.hub.handle.stats.clone();
    let enc = stats.stage(Stage::Encryptor);
    assert_eq!(enc.dropped(DropReason::NoSessionQueueFull), 200 - 128);
    // Spoke 2 comes up and answers: the 128 that waited go out, in order.
    s.start(2);
    for p in &waiting[..128] {
        expect_delivery(s.spoke(2), p);
    }
    assert_eq!(enc.total_drops(), 200 - 128);
    s.shutdown();
}

/// Packets waiting for one peer's handshake keep only that peer's packets
/// off the lone-packet shortcut: a ping to another peer still goes out on
/// the tun_reader's own thread, without the two thread wake-ups.
#[test]
fn a_waiting_peer_leaves_the_others_their_shortcut() {
    let mut s = star();
    s.start(0);
    s.hub.tun.inject.send(to_spoke(0, 0)).unwrap();
    expect_delivery(s.spoke(0), &to_spoke(0, 0));
    // Spoke 2 is not running: its packets wait for the whole test.
    s.hub.tun.inject.send(to_spoke(2, 0)).unwrap();
    let stats = s.hub.handle.stats.clone();
    let enc = stats.stage(Stage::Encryptor);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.hub_udp.sent_to(spoke_addr(2)) == 0 {
        assert!(Instant::now() < deadline, "no initiation to spoke 2");
        thread::sleep(Duration::from_millis(1));
    }
    let before = s.hub_udp.sent_by(Stage::TunReader.name());
    // Lone packets, further apart than a batch's quiet spell.
    for i in 1..=10u8 {
        thread::sleep(Duration::from_millis(5));
        s.hub.tun.inject.send(to_spoke(0, i)).unwrap();
        expect_delivery(s.spoke(0), &to_spoke(0, i));
    }
    let shortcut = s.hub_udp.sent_by(Stage::TunReader.name()) - before;
    assert!(
        shortcut >= 5,
        "{shortcut} of 10 lone packets took the shortcut while spoke 2's waited"
    );
    assert_eq!(enc.total_drops(), 0, "spoke 2's packet still waits");
    s.shutdown();
}

/// Both ways a timer gets armed work: by an event the data stages stamp (a
/// received data packet arms the passive keepalive) and by the deadline the
/// handshaker planned itself (persistent keepalives while idle).
#[test]
fn keepalives_come_from_events_and_from_deadlines() {
    let timing = Timing::default().with_overrides("keepalive=0.3").unwrap();
    for persistent in [None, Some(Duration::from_millis(400))] {
        let (a_addr, b_addr): (SocketAddr, SocketAddr) =
            (A_ADDR.parse().unwrap(), B_ADDR.parse().unwrap());
        let (a_udp, b_udp) = FakeUdp::pair(a_addr, b_addr, 256);
        let b_udp = Arc::new(b_udp);
        let side = |private, spec, udp: Arc<FakeUdp>| {
            let (tun, ends) = FakeTun::new(64);
            let cfg = TunnelConfig {
                timing,
                ..one_peer(private, 1420, spec)
            };
            let handle = spawn(cfg, Arc::new(tun), udp).expect("pipeline starts");
            Side { handle, tun: ends }
        };
        let a = side(
            [0x11; 32],
            peer_spec([0x22; 32], Some(b_addr), &[host(B_TUN)]),
            Arc::new(a_udp),
        );
        let b = side(
            [0x22; 32],
            PeerSpec {
                persistent_keepalive: persistent,
                ..peer_spec([0x11; 32], None, &[host(A_TUN)])
            },
            b_udp.clone(),
        );
        let packet = ipv4(A_TUN, B_TUN, 60, 1);
        a.tun.inject.send(packet.clone()).unwrap();
        expect_delivery(&b, &packet);
        // B sent its response; then, with nothing to send back, keepalives.
        thread::sleep(Duration::from_millis(1500));
        let keepalives = b_udp.sent_to(a_addr) - 1;
        match persistent {
            None => assert_eq!(keepalives, 1, "one passive keepalive"),
            Some(_) => assert!(
                (2..=4).contains(&keepalives),
                "{keepalives} keepalives in 1.5 s at one per 0.4 s"
            ),
        }
        shutdown_within_a_second(a);
        shutdown_within_a_second(b);
    }
}

/// Removing a peer while a burst for it is in the pipeline: every packet is
/// delivered or counted as dropped, no stage fails, the others go on.
#[test]
fn a_peer_removed_while_its_packets_are_in_flight() {
    let mut s = star();
    (0..2).for_each(|k| s.start(k));
    for k in 0..2 {
        s.hub.tun.inject.send(to_spoke(k, 0)).unwrap();
        expect_delivery(s.spoke(k), &to_spoke(k, 0));
    }
    const BURST: usize = 3000;
    let feeder = {
        let inject = s.hub.tun.inject.clone();
        thread::spawn(move || (0..BURST).for_each(|i| inject.send(to_spoke(1, i as u8)).unwrap()))
    };
    // Somewhere in the burst.
    while s.spoke(1).tun.delivered.len() < 50 {
        thread::sleep(Duration::from_micros(200));
    }
    let key = PrivateKey::from_bytes(spoke_key(1)).public_key();
    let removed = s.hub.handle.interface.remove_peer(&key).expect("was there");
    assert!(removed.is_removed());
    feeder.join().unwrap();

    let stats = &s.hub.handle.stats;
    let (enc, sender) = (stats.stage(Stage::Encryptor), stats.stage(Stage::UdpSender));
    let accounted = || {
        sender.packets()
            + sender.dropped(DropReason::PeerRemoved)
            + enc.dropped(DropReason::NoRoute)
            + enc.dropped(DropReason::PeerRemoved)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while accounted() < 2 + BURST as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {BURST} accounted for",
            accounted()
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(accounted(), 2 + BURST as u64, "nothing counted twice");
    assert!(
        enc.dropped(DropReason::NoRoute) > 0,
        "the route went with the peer"
    );
    assert!(s.hub.handle.exits().try_recv().is_err(), "no stage ended");
    // Its session is gone too: what it still sends is an unknown index.
    s.spoke(1)
        .tun
        .inject
        .send(ipv4(spoke_tun(1), HUB_TUN, 60, 1))
        .unwrap();
    let dec = stats.stage(Stage::Decryptor);
    while dec.dropped(DropReason::UnknownIndex) < 1 {
        assert!(
            Instant::now() < deadline,
            "the removed peer's packet was counted"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // The other peer is served as before.
    s.hub.tun.inject.send(to_spoke(0, 9)).unwrap();
    expect_delivery(s.spoke(0), &to_spoke(0, 9));
    assert_eq!(s.hub.handle.interface.peers().len(), 2);
    s.shutdown();
}

/// Waits up to 5 s for `done`.
fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_within(Duration::from_secs(5), what, done)
}

fn wait_within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// AllowedIPs changed while a burst flows to the peer: packets to the
/// prefix it lost become `no_route` drops, the rest all go through, and the
/// peer keeps its session and counters (no new handshake).
#[test]
fn allowed_ips_changed_while_a_burst_flows_keep_the_session() {
    let mut s = star();
    s.start(1);
    s.hub.tun.inject.send(to_spoke(1, 0)).unwrap();
    expect_delivery(s.spoke(1), &to_spoke(1, 0));
    let iface = s.hub.handle.interface.clone();
    let key = PrivateKey::from_bytes(spoke_key(1)).public_key();
    let peer = iface.peer(&key).unwrap();
    let index = peer.keypairs().current.unwrap().local_index;
    let tx_before = peer.tx_bytes.load(Relaxed);

    // Even packets to 10.96.1.2 (kept), odd ones to 10.96.1.200 (lost).
    const BURST: usize = 2000;
    let (kept, lost) = (spoke_tun(1), Ipv4Addr::new(10, 96, 1, 200));
    let packet = move |i: usize| {
        let dst = if i % 2 == 0 { kept } else { lost };
        ipv4(HUB_TUN, dst, 100, i as u8)
    };
    let drain = {
        let delivered = s.spoke(1).tun.delivered.clone();
        thread::spawn(move || {
            let mut to = [0usize; 2];
            while let Ok(p) = delivered.recv_timeout(Duration::from_secs(2)) {
                to[usize::from(p[16..20] != kept.octets())] += 1;
            }
            to
        })
    };
    let (halfway_tx, halfway) = crossbeam_channel::bounded::<()>(0);
    let (changed, go_on) = crossbeam_channel::bounded::<()>(0);
    let feeder = {
        let inject = s.hub.tun.inject.clone();
        thread::spawn(move || {
            for i in 0..BURST {
                if i == BURST / 2 {
                    halfway_tx.send(()).unwrap();
                    go_on.recv().unwrap();
                }
                inject.send(packet(i)).unwrap();
            }
        })
    };
    // The first half is in the pipeline when the change lands.
    halfway.recv().unwrap();
    let update = PeerUpdate {
        replace_allowed_ips: true,
        allowed_ips: vec![AllowedIpChange::Add("10.96.1.0/25".parse().unwrap())],
        ..PeerUpdate::default()
    };
    let same = iface.update_peer(&key, update).unwrap();
    assert!(Arc::ptr_eq(&same, &peer));
    changed.send(()).unwrap();
    feeder.join().unwrap();

    let stats = s.hub.handle.stats.clone();
    let (enc, sender) = (stats.stage(Stage::Encryptor), stats.stage(Stage::UdpSender));
    wait_for("every packet sent or dropped", || {
        sender.packets() + enc.dropped(DropReason::NoRoute) == 1 + BURST as u64
    });
    let [to_kept, to_lost] = drain.join().unwrap();
    let no_route = enc.dropped(DropReason::NoRoute) as usize;
    assert_eq!(to_kept, BURST / 2, "every packet to the kept prefix");
    assert_eq!(
        to_lost + no_route,
        BURST / 2,
        "the others: delivered or counted"
    );
    assert!(
        no_route >= BURST / 4,
        "all after the change are no_route ({no_route})"
    );
    assert_eq!(stats.handshakes(), 1, "no new handshake");
    assert_eq!(peer.keypairs().current.unwrap().local_index, index);
    assert!(peer.tx_bytes.load(Relaxed) >= tx_before + (to_kept + to_lost) as u64 * 100);
    assert_eq!(peer.allowed_ips(), ["10.96.1.0/25".parse().unwrap()]);
    s.shutdown();
}

/// Sets the PSK of `side`'s one peer.
fn set_psk(side: &Side, psk: u8) {
    let update = PeerUpdate {
        preshared_key: Some(Some(PresharedKey::from_bytes([psk; 32]))),
        ..PeerUpdate::default()
    };
    let key = side.peer().public_key;
    side.handle.interface.update_peer(&key, update).unwrap();
}

/// A PSK changed on both sides of a running session: a handshake with one
/// side changed fails, and once the other follows, the next one completes
/// at once (the attempt made with the old PSK is dropped rather than
/// retried after REKEY_TIMEOUT, 5 s).
#[test]
fn a_psk_changed_live_on_both_sides_gives_a_working_handshake() {
    let (a, b) = pair(64);
    let p1 = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(p1.clone()).unwrap();
    expect_delivery(&b, &p1);
    set_psk(&b, 0x66);
    // A new handshake, from A with the old PSK, once REKEY_TIMEOUT after
    // the first allows it: B's response fails at A.
    a.handle.interface.clear_keypairs(&a.peer());
    let p2 = ipv4(A_TUN, B_TUN, 84, 2);
    a.tun.inject.send(p2.clone()).unwrap();
    let hs = a.handle.stats.stage(Stage::Handshaker);
    wait_within(
        Duration::from_secs(7),
        "the response to the old PSK failed",
        || hs.dropped(DropReason::HandshakeFailed) >= 1,
    );
    assert_eq!(a.handle.stats.handshakes(), 1);
    // Past the 2^24 ns grain of TAI64N: B takes the next initiation as new.
    thread::sleep(Duration::from_millis(50));
    set_psk(&a, 0x66);
    let got = b
        .tun
        .delivered
        .recv_timeout(Duration::from_secs(3))
        .expect("delivered after a new handshake, well before a retry");
    assert_eq!(got, p2);
    assert_eq!(a.handle.stats.handshakes(), 2);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// A's private key changes; B learns A's new public key as a new peer
/// (taking over A's AllowedIP): the next packet starts a handshake under
/// the new key at once (not REKEY_TIMEOUT, 5 s, after the last one), and
/// traffic flows both ways.
#[test]
fn after_a_new_private_key_the_next_handshake_uses_it() {
    let (a, b) = pair(64);
    let p1 = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(p1.clone()).unwrap();
    expect_delivery(&b, &p1);
    let new_key = [0x33u8; 32];
    let old = b.peer();
    let new = b
        .handle
        .interface
        .add_peer(PeerSpec {
            preshared_key: Some(PresharedKey::from_bytes([0x55; 32])),
            ..peer_spec(new_key, None, &[host(A_TUN)])
        })
        .unwrap();
    assert_eq!(old.allowed_ips(), [], "A_TUN moved to the new key");
    a.handle
        .interface
        .set_private_key(Some(PrivateKey::from_bytes(new_key)))
        .unwrap();
    assert!(
        a.peer().sending_session().is_none(),
        "old keys send no more"
    );
    let p2 = ipv4(A_TUN, B_TUN, 84, 2);
    a.tun.inject.send(p2.clone()).unwrap();
    let got = b
        .tun
        .delivered
        .recv_timeout(Duration::from_secs(3))
        .expect("delivered after a handshake under the new key");
    assert_eq!(got, p2);
    assert_eq!(a.handle.stats.handshakes(), 2);
    wait_for("B confirmed the new session", || {
        new.sending_session().is_some()
    });
    let p3 = ipv4(B_TUN, A_TUN, 84, 3);
    b.tun.inject.send(p3.clone()).unwrap();
    expect_delivery(&a, &p3);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// A persistent keepalive turned on live: one keepalive at once (the
/// interval is far longer than the test), then a shorter interval set live
/// is followed from the next deadline on.
#[test]
fn a_persistent_keepalive_set_live_starts_keepalives() {
    let (a, b) = pair(64);
    let p1 = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(p1.clone()).unwrap();
    expect_delivery(&b, &p1);
    let rx = || a.peer().rx_bytes.load(Relaxed);
    // B's response is in; B sends nothing more for 10 s (passive keepalive).
    thread::sleep(Duration::from_millis(300));
    let before = rx();
    let keepalive = |secs: f64| PeerUpdate {
        persistent_keepalive: Some(Some(Duration::from_secs_f64(secs))),
        ..PeerUpdate::default()
    };
    let key = b.peer().public_key;
    b.handle
        .interface
        .update_peer(&key, keepalive(25.0))
        .unwrap();
    wait_for("a keepalive at once", || rx() > before);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(rx() - before, 32, "one keepalive (32 bytes), no more");
    b.handle
        .interface
        .update_peer(&key, keepalive(0.4))
        .unwrap();
    let before = rx();
    thread::sleep(Duration::from_millis(1500));
    let keepalives = (rx() - before) / 32;
    assert!(
        (2..=4).contains(&keepalives),
        "{keepalives} keepalives in 1.5 s at one per 0.4 s"
    );
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// wireguard-go's interface without a private key (how `pipevpnd` starts):
/// it answers no initiation and makes none, its packets wait; the key given
/// later starts the handshake for them at once, and removing the key again
/// stops its sending.
#[test]
fn a_keyless_side_answers_nothing_until_it_gets_a_key_and_stops_without_it() {
    let (a_key, b_key) = ([0x11u8; 32], [0x22u8; 32]);
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    let b_addr: SocketAddr = B_ADDR.parse().unwrap();
    let (a_udp, b_udp) = FakeUdp::pair(a_addr, b_addr, 256);
    let side = |c: TunnelConfig, udp: FakeUdp| {
        let (tun, ends) = FakeTun::new(64);
        let handle = spawn(c, Arc::new(tun), Arc::new(udp)).expect("pipeline starts");
        Side { handle, tun: ends }
    };
    let a = side(
        one_peer(a_key, 1420, peer_spec(b_key, Some(b_addr), &[host(B_TUN)])),
        a_udp,
    );
    let b = side(
        TunnelConfig {
            private_key: None,
            ..one_peer(b_key, 1420, peer_spec(a_key, Some(a_addr), &[host(A_TUN)]))
        },
        b_udp,
    );
    let b_hs = b.handle.stats.stage(Stage::Handshaker);
    let a_hs = a.handle.stats.stage(Stage::Handshaker);

    let p1 = ipv4(A_TUN, B_TUN, 84, 1);
    a.tun.inject.send(p1.clone()).unwrap();
    wait_for("B counted A's initiation as no_private_key", || {
        b_hs.dropped(DropReason::NoPrivateKey) >= 1
    });
    let p2 = ipv4(B_TUN, A_TUN, 84, 2);
    b.tun.inject.send(p2.clone()).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(a_hs.packets(), 0, "B sent A no handshake message");
    assert_eq!(a_hs.dropped(DropReason::BadMac1), 0);
    assert!(b.tun.delivered.try_recv().is_err() && a.tun.delivered.try_recv().is_err());
    assert_eq!(b_hs.packets(), 0, "B handled nothing");

    // The key: B's waiting packet starts a handshake at once (well before
    // A's retry, 5 s after its first initiation), and both packets cross.
    b.handle
        .interface
        .set_private_key(Some(PrivateKey::from_bytes(b_key)))
        .unwrap();
    let got = a
        .tun
        .delivered
        .recv_timeout(Duration::from_secs(3))
        .expect("B's packet delivered after B's handshake");
    assert_eq!(got, p2);
    expect_delivery(&b, &p1);
    assert_eq!(b.handle.stats.handshakes(), 1, "B initiated");

    // Without the key again B sends nothing (its keypair still decrypts).
    b.handle.interface.set_private_key(None).unwrap();
    assert!(b.peer().sending_session().is_none());
    let sent = a_hs.packets();
    b.tun.inject.send(ipv4(B_TUN, A_TUN, 84, 3)).unwrap();
    thread::sleep(Duration::from_millis(500));
    assert!(a.tun.delivered.try_recv().is_err(), "B sent no data");
    assert_eq!(a_hs.packets(), sent, "nor a handshake message");
    let p4 = ipv4(A_TUN, B_TUN, 84, 4);
    a.tun.inject.send(p4.clone()).unwrap();
    expect_delivery(&b, &p4);
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
}

/// Three looks at `side` for the watchdog's judge, a little apart (the
/// judge counts looks, not time: the pause only lets the stages run).
fn watchdog_verdict(side: &Side) -> Health {
    let mut judge = Judge::default();
    let mut health = Health::Alive;
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(100));
        let look = Look::take(&side.handle.backlog, &side.handle.stats, true);
        health = judge.judge(look);
    }
    health
}

#[test]
fn the_watchdog_finds_an_idle_pipeline_alive_and_a_stuck_stage_stuck() {
    // B's applications read nothing: its tun (8 packets) fills, and its
    // tun_writer blocks with batches waiting, as a hung stage would.
    let (a, b) = pair(8);
    let first = ipv4(A_TUN, B_TUN, 100, 0);
    a.tun.inject.send(first.clone()).unwrap();
    expect_delivery(&b, &first);
    assert_eq!(watchdog_verdict(&b), Health::Alive, "idle is alive");
    assert_eq!(watchdog_verdict(&a), Health::Alive, "idle is alive");

    // Bursts, judged after each until the tun_writer is found stuck (a look
    // may catch it still draining into the tun's last free slots). The
    // write the full tun holds may be the tun_writer's or one the
    // receiver's lone-packet shortcut makes in its name: stuck either way.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u32;
    let verdict = loop {
        for _ in 0..32 {
            let _ = a.tun.inject.try_send(ipv4(A_TUN, B_TUN, 1000, i as u8));
            i = i.wrapping_add(1);
        }
        match watchdog_verdict(&b) {
            Health::Stuck(stages) if stages.contains(&Stage::TunWriter) => break Ok(()),
            other if Instant::now() > deadline => break Err(other),
            _ => thread::sleep(Duration::from_millis(1)),
        }
    };
    if let Err(last) = verdict {
        panic!(
            "B's tun_writer is stuck, judged {last:?}; waiting: {:?}",
            b.handle.backlog.waiting()
        );
    }
    // Once the applications read again, B is alive again.
    let drain = {
        let delivered = b.tun.delivered.clone();
        thread::spawn(move || while delivered.recv_timeout(Duration::from_millis(500)).is_ok() {})
    };
    assert_eq!(watchdog_verdict(&b), Health::Alive, "moving again");
    drain.join().unwrap();
    let backlog = b.handle.backlog.clone();
    shutdown_within_a_second(a);
    shutdown_within_a_second(b);
    assert!(backlog.waiting().is_empty(), "released at shutdown");
}
