//! One direction of the pipeline in packets per second: packets written to
//! A's (fake) tun come out of B's, through A's tun_reader, encryptor and
//! udp_sender, the in-memory UDP link, and B's udp_receiver, decryptor and
//! tun_writer. No kernel: this is the pipeline's own cost (threads,
//! channels, batches, crypto) plus the fakes' copies. Once with one peer
//! on each side, and once with each side serving 10 000 more peers (one /32
//! each, no traffic): the same stream then looks its destination (A) and its
//! source (B) up among 10 001 peers.
//!
//! Both at 0, 1, 2 and 4 crypto workers on each side (A's seal workers,
//! B's open workers), and A's half alone (`outbound_only`): tun_reader,
//! encryptor, seal workers and udp_sender,
//! B shut down after the handshake, so A's datagrams are lost at the fake
//! link (counted as send errors) and cost B nothing.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipevpn::cidr::Cidr;
use pipevpn::pipeline::fake::{FakeTun, FakeTunEnds, FakeUdp};
use pipevpn::pipeline::stats::{DropReason, Stage};
use pipevpn::pipeline::{spawn, PeerSpec, TunnelConfig, TunnelHandle};
use pipevpn::protocol::keys::PrivateKey;
use pipevpn::protocol::timers::Timing;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 2);
/// Packets each fake queue holds: about what a tun or socket queue holds.
const QUEUE: usize = 1024;
const WAIT: Duration = Duration::from_secs(10);
/// Crypto workers on each side: 0 is the encryptor and decryptor doing
/// the crypto themselves.
const WORKERS: [usize; 4] = [0, 1, 2, 4];

fn ipv4(len: usize) -> Vec<u8> {
    let mut p = vec![0x42; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&A_TUN.octets());
    p[16..20].copy_from_slice(&B_TUN.octets());
    p
}

/// Peers served besides the other side: keys of their own, a /32 each in
/// 10.200.0.0/16, no endpoint.
fn idle_peers(n: u32) -> Vec<PeerSpec> {
    (0..n)
        .map(|i| {
            let mut private = [0x33u8; 32];
            // Not in byte 0: X25519 clears its low 3 bits.
            private[1..5].copy_from_slice(&i.to_le_bytes());
            let host = Ipv4Addr::from(0x0ac8_0000 + i + 1);
            PeerSpec {
                public_key: PrivateKey::from_bytes(private).public_key(),
                preshared_key: None,
                endpoint: None,
                initiate_at_start: false,
                allowed_ips: vec![Cidr::new(host.into(), 32).unwrap()],
                persistent_keepalive: None,
            }
        })
        .collect()
}

/// Two tunnels joined by the fake UDP link, with a session established;
/// each serves `idle` more peers and has `workers` crypto workers.
fn pair(idle: u32, workers: usize) -> [(TunnelHandle, FakeTunEnds); 2] {
    let (a_key, b_key) = ([0x11u8; 32], [0x22u8; 32]);
    let a_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let (a_udp, b_udp) = FakeUdp::pair(a_addr, b_addr, QUEUE);
    let side = |private, peer_private, endpoint, allowed: Ipv4Addr, udp, idle, workers| {
        let mut peers = idle_peers(idle);
        peers.push(PeerSpec {
            public_key: PrivateKey::from_bytes(peer_private).public_key(),
            preshared_key: None,
            endpoint,
            initiate_at_start: false,
            allowed_ips: vec![Cidr::new(allowed.into(), 32).unwrap()],
            persistent_keepalive: None,
        });
        let cfg = TunnelConfig {
            private_key: Some(PrivateKey::from_bytes(private)),
            mtu: 1420,
            timing: Timing::default(),
            peers,
            crypto_workers: workers,
        };
        let (tun, ends) = FakeTun::new(QUEUE);
        (spawn(cfg, Arc::new(tun), Arc::new(udp)).unwrap(), ends)
    };
    let a = side(a_key, b_key, Some(b_addr), B_TUN, a_udp, idle, workers);
    let b = side(b_key, a_key, None, A_TUN, b_udp, idle, workers);
    a.1.inject.send(ipv4(64)).unwrap();
    b.1.delivered
        .recv_timeout(WAIT)
        .expect("handshake and first packet");
    [a, b]
}

fn one_direction(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_one_direction");
    g.measurement_time(Duration::from_secs(8));
    let runs = WORKERS
        .iter()
        .map(|&w| (format!("packets_workers_{w}"), 0, w, &[64, 1420][..]))
        .chain([("packets_10000_peers".to_string(), 10_000, 0, &[64][..])]);
    for (name, idle, workers, sizes) in runs {
        let [(a, a_tun), (b, b_tun)] = pair(idle, workers);
        for &size in sizes {
            let packet = ipv4(size);
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(&name, size), |bench| {
                bench.iter_custom(|iters| {
                    let inject = a_tun.inject.clone();
                    let packet = packet.clone();
                    let started = Instant::now();
                    // A separate feeder: the queues are bounded, so one thread
                    // both writing and reading would block itself.
                    let feeder = std::thread::spawn(move || {
                        for _ in 0..iters {
                            inject.send(packet.clone()).unwrap();
                        }
                    });
                    for _ in 0..iters {
                        let got = b_tun.delivered.recv_timeout(WAIT).expect("delivered");
                        assert_eq!(got.len(), size);
                    }
                    let elapsed = started.elapsed();
                    feeder.join().unwrap();
                    elapsed
                })
            });
        }
        a.shutdown().unwrap();
        b.shutdown().unwrap();
    }
    g.finish();
}

fn outbound_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_outbound_only");
    g.measurement_time(Duration::from_secs(8));
    for workers in WORKERS {
        let [(a, a_tun), (b, b_tun)] = pair(0, workers);
        drop(b_tun);
        b.shutdown().unwrap();
        let sender = a.stats.clone();
        let done = move || {
            let s = sender.stage(Stage::UdpSender);
            s.packets() + s.dropped(DropReason::SendError)
        };
        for size in [64, 1420] {
            let packet = ipv4(size);
            g.throughput(Throughput::Elements(1));
            let id = BenchmarkId::new(format!("workers_{workers}"), size);
            g.bench_function(id, |bench| {
                bench.iter_custom(|iters| {
                    let inject = a_tun.inject.clone();
                    let packet = packet.clone();
                    let target = done() + iters;
                    let started = Instant::now();
                    let feeder = std::thread::spawn(move || {
                        for _ in 0..iters {
                            inject.send(packet.clone()).unwrap();
                        }
                    });
                    while done() < target {
                        assert!(started.elapsed() < WAIT + WAIT, "sent");
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    let elapsed = started.elapsed();
                    feeder.join().unwrap();
                    elapsed
                })
            });
        }
        a.shutdown().unwrap();
    }
    g.finish();
}

criterion_group!(benches, one_direction, outbound_only);
criterion_main!(benches);
