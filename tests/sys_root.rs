//! Real-kernel tests of `sys` and `routes`. They need root.
//!
//! Each test runs on a thread of its own that first moves into a fresh,
//! anonymous network namespace (namespaces are per thread in Linux), so it
//! cannot touch the host's interfaces or routes, and everything it creates
//! (tun, veth, routes) vanishes with the namespace when the thread ends.
//! Commands such as `ip` are spawned from that thread and so inherit its
//! namespace.

mod common;

use common::in_netns;
use pipevpn::pipeline::device::{TunDevice, UdpDevice};
use pipevpn::pipeline::pool::{slot_size, Pool};
use pipevpn::routes::{
    plan, read_route_tables, state_path, sweep_stale, InstalledRoutes, Route, RouteRecord,
    SweepOutcome,
};
use pipevpn::rundir::{self, Netns};
use pipevpn::sys::iface::{
    disable_ipv6, enable_static_ipv6, set_ipv4_address, set_ipv4_netmask, set_ipv6_address,
    set_mtu, set_up,
};
use pipevpn::sys::poll::{wait_readable, Ready, StopFd};
use pipevpn::sys::privilege::keep_only_net_admin;
use pipevpn::sys::route::{add_route, del_route};
use pipevpn::sys::tun::Tun;
use pipevpn::sys::udp::{
    bind_udp, bind_udp_any, enable_gro, enable_pktinfo, recv_many, send_many, set_mark, Endpoint,
    Local, RecvMeta, MAX_BATCH,
};
use pipevpn::tun::offload::{VnetHdr, VNET_HDR_LEN};
use pipevpn::tun::OffloadTun;
use pipevpn::udp::Udp;
use pipevpn::Error;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `ip ARGS` in the calling thread's namespace; its stdout, or a panic.
fn ip(args: &str) -> String {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The IPv4 main routing table of this thread's namespace, in `Route` text
/// form, read from /proc (independent of the code under test).
fn table() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
    let addr = |hex: &str| Ipv4Addr::from(u32::from_str_radix(hex, 16).unwrap().to_ne_bytes());
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f[3], 16).unwrap();
            let prefix = u32::from(addr(f[7])).count_ones();
            let via = if flags & 2 != 0 {
                format!(" via {}", addr(f[2]))
            } else {
                String::new()
            };
            format!("{}/{prefix}{via} dev {}", addr(f[1]), f[0])
        })
        .collect()
}

/// The IPv6 routes of this thread's namespace (all tables) that are not
/// local or anycast entries, in `Route` text form followed by ` metric N`,
/// read from /proc.
fn table6() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/thread-self/net/ipv6_route").unwrap();
    let addr = |hex: &str| Ipv6Addr::from(u128::from_str_radix(hex, 16).unwrap());
    let hex = |v: &str| u32::from_str_radix(v, 16).unwrap();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = hex(f[8]);
            if flags & 0x8010_0000 != 0 {
                return None;
            }
            let via = if flags & 2 != 0 {
                format!(" via {}", addr(f[4]))
            } else {
                String::new()
            };
            let (dest, prefix, metric) = (addr(f[0]), hex(f[1]), hex(f[5]));
            Some(format!("{dest}/{prefix}{via} dev {} metric {metric}", f[9]))
        })
        .collect()
}

/// Whether `route` is in the table of its family (IPv6 ones with our metric).
fn has_route(route: &str) -> bool {
    if route.contains(':') {
        table6().iter().any(|r| *r == format!("{route} metric 1"))
    } else {
        table().iter().any(|r| r == route)
    }
}

fn route(s: &str) -> Route {
    s.parse().unwrap()
}

/// Opens tun `name` with `addr/24`, MTU 1420, IPv6 off, up.
fn tun_up(name: &str, addr: Ipv4Addr) -> Tun {
    let tun = Tun::open(name).unwrap();
    assert_eq!(tun.name(), name);
    set_ipv4_address(name, addr).unwrap();
    set_ipv4_netmask(name, 24).unwrap();
    set_mtu(name, 1420).unwrap();
    disable_ipv6(name).unwrap();
    set_up(name).unwrap();
    tun
}

/// Opens tun `name` with `addr4/24` and `addr6/64`, MTU 1420, IPv6 static
/// only, up: in the order `pipevpn up` uses.
fn tun_up_dual(name: &str, addr4: Ipv4Addr, addr6: Ipv6Addr) -> Tun {
    let tun = Tun::open(name).unwrap();
    enable_static_ipv6(name).unwrap();
    set_mtu(name, 1420).unwrap();
    set_ipv4_address(name, addr4).unwrap();
    set_ipv4_netmask(name, 24).unwrap();
    set_ipv6_address(name, addr6, 64).unwrap();
    set_up(name).unwrap();
    tun
}

/// A directory for route records, unique to this test and run; removed when
/// dropped, so also when the test fails.
struct RunDir(PathBuf);

impl std::ops::Deref for RunDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_dir(test: &str) -> RunDir {
    let dir = std::env::temp_dir().join(format!("pipevpn-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    RunDir(dir)
}

/// An IPv4/UDP packet with header checksum and no UDP checksum.
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum: u32 = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn tun_is_configured_and_carries_packets() {
    in_netns(|| {
        let tun = tun_up("pvt0", Ipv4Addr::new(10, 99, 0, 1));
        let addr = ip("-o -4 addr show dev pvt0");
        assert!(addr.contains("inet 10.99.0.1/24"), "{addr}");
        let link = ip("-o link show dev pvt0");
        assert!(link.contains("mtu 1420") && link.contains(",UP"), "{link}");
        let v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/pvt0/disable_ipv6").unwrap();
        assert_eq!(v6.trim(), "1");
        assert!(ip("-o -6 addr show dev pvt0").is_empty());

        // Kernel -> tun: a datagram to a peer address on the tunnel subnet,
        // behind a virtio_net_hdr that describes no offload work done.
        tun.set_nonblocking().unwrap();
        let mut buf = [0u8; 2048];
        let err = tun.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        let app = UdpSocket::bind("10.99.0.1:0").unwrap();
        app.send_to(b"hello", "10.99.0.2:9999").unwrap();
        let stop = StopFd::new().unwrap();
        let ready = wait_readable(tun.as_raw_fd(), &stop, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ready, Some(Ready::Readable));
        let n = tun.read(&mut buf).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 20 + 8 + 5);
        let hdr = VnetHdr::parse(buf[..VNET_HDR_LEN].try_into().unwrap());
        assert_eq!(hdr.gso_type, 0, "{hdr:?}");
        let packet = &buf[VNET_HDR_LEN..n];
        assert_eq!(packet[0] >> 4, 4, "not IPv4: {packet:?}");
        assert_eq!(&packet[16..20], &[10, 99, 0, 2]);
        assert_eq!(&packet[28..], b"hello");

        // tun -> kernel: a datagram from the peer reaches the local socket.
        let port = app.local_addr().unwrap().port();
        let pkt = udp_packet(
            Ipv4Addr::new(10, 99, 0, 2),
            Ipv4Addr::new(10, 99, 0, 1),
            9999,
            port,
            b"back",
        );
        let framed = [&[0; VNET_HDR_LEN][..], &pkt].concat();
        assert_eq!(tun.write(&framed).unwrap(), framed.len());
        app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = app.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"back"[..], "10.99.0.2:9999".parse().unwrap())
        );

        // The name is taken while we hold it; a non-TUN name is refused.
        let busy = Tun::open("pvt0").unwrap_err();
        assert!(matches!(busy, Error::Input(_)), "{busy:?}");
        assert_eq!(busy.to_string(), "interface pvt0 is already in use");
        let not_tun = Tun::open("lo").unwrap_err().to_string();
        assert!(not_tun.contains("not a free TUN device"), "{not_tun}");

        // Not persistent: closing it removes the interface.
        drop(tun);
        assert!(!ip("-o link show").contains("pvt0"));
    });
}

/// Packets and transmitted packets of interface `name` in the calling
/// thread's namespace, as the kernel counts them: (rx, tx).
fn packet_counters(name: &str) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} not in /proc/net/dev:\n{text}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (f[1], f[9])
}

/// Byte `i` of the test stream: no period a misplaced segment could hide in.
fn stream_byte(i: usize) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i >> 16) as u8
}

/// Moves batches from one tun to the other until `stop`, as the pipeline's
/// tun_reader and tun_writer would; returns the packets moved.
fn relay(from: Arc<OffloadTun>, to: Arc<OffloadTun>, stop: Arc<StopFd>) -> u64 {
    let pool = Pool::new(2, slot_size(1420));
    let mut moved = 0;
    loop {
        let mut batch = pool.get();
        match from.read_batch(&mut batch, &stop).unwrap() {
            None => return moved,
            Some(dropped) => assert_eq!(dropped, 0, "packets dropped on reading"),
        }
        moved += batch.packets() as u64;
        let written = to.write_batch(&mut batch);
        assert_eq!(written.failed, 0, "write failed: {:?}", written.error);
        assert_eq!(written.packets, batch.packets());
    }
}

/// Two namespaces with a tun each, joined by a relay through the offload
/// device code. A TCP stream across arrives intact, and the kernels count
/// fewer packets on the tuns than the relay moved: the sender's
/// super-segments were cut on reading and joined again on writing.
#[test]
fn tun_offloads_carry_a_tcp_stream_in_super_segments() {
    const BYTES: usize = 16 << 20;
    // Each side stays in its namespace to read its counters at the end.
    let (x_report_tx, x_report) = std::sync::mpsc::channel::<()>();
    let (y_report_tx, y_report) = std::sync::mpsc::channel::<()>();
    // Side X listens.
    let (x_tx, x_rx) = std::sync::mpsc::channel();
    let x = std::thread::spawn(move || {
        in_netns(move || {
            let tun = tun_up("pvo0", Ipv4Addr::new(10, 77, 0, 1));
            tun.set_nonblocking().unwrap();
            let listener = TcpListener::bind("10.77.0.1:5201").unwrap();
            x_tx.send((OffloadTun::new(tun), listener)).unwrap();
            let _ = x_report.recv();
            packet_counters("pvo0")
        })
    });
    let (tun_x, listener) = x_rx.recv().unwrap();
    // Side Y connects and sends once the relay runs.
    let (y_tx, y_rx) = std::sync::mpsc::channel();
    let y = std::thread::spawn(move || {
        in_netns(move || {
            let tun = tun_up("pvo1", Ipv4Addr::new(10, 77, 0, 2));
            tun.set_nonblocking().unwrap();
            y_tx.send(OffloadTun::new(tun)).unwrap();
            let addr = "10.77.0.1:5201".parse().unwrap();
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            conn.set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let data: Vec<u8> = (0..BYTES).map(stream_byte).collect();
            conn.write_all(&data).unwrap();
            drop(conn);
            let _ = y_report.recv();
            packet_counters("pvo1")
        })
    });
    let tun_y = y_rx.recv().unwrap();
    let (tun_x, tun_y) = (Arc::new(tun_x), Arc::new(tun_y));
    let stop = Arc::new(StopFd::new().unwrap());
    let y_to_x = {
        let (a, b, s) = (tun_y.clone(), tun_x.clone(), stop.clone());
        std::thread::spawn(move || relay(a, b, s))
    };
    let x_to_y = {
        let (a, b, s) = (tun_x.clone(), tun_y.clone(), stop.clone());
        std::thread::spawn(move || relay(a, b, s))
    };

    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::with_capacity(BYTES);
    conn.read_to_end(&mut got).unwrap();
    y_report_tx.send(()).unwrap();
    x_report_tx.send(()).unwrap();
    let (_, y_tun_tx) = y.join().unwrap();
    let (x_tun_rx, _) = x.join().unwrap();
    stop.signal();
    let moved = y_to_x.join().unwrap();
    x_to_y.join().unwrap();

    assert_eq!(got.len(), BYTES);
    let first_bad = got
        .iter()
        .enumerate()
        .position(|(i, &b)| b != stream_byte(i));
    assert_eq!(first_bad, None, "the stream arrived changed");
    // At least some 1420-byte packets would fill 16 MiB: 11800 of them.
    assert!(moved > (BYTES / 1420) as u64, "moved {moved} packets");
    assert!(
        y_tun_tx * 4 < moved,
        "reads: {y_tun_tx} packets left Y's kernel, {moved} were relayed"
    );
    assert!(
        x_tun_rx * 4 < moved,
        "writes: {x_tun_rx} packets reached X's kernel, {moved} were relayed"
    );
}

#[test]
fn routes_are_added_and_deleted() {
    in_netns(|| {
        let _tun = tun_up("pvt1", Ipv4Addr::new(10, 99, 1, 1));
        for text in [
            "10.50.0.0/16 dev pvt1",
            "10.60.0.0/16 via 10.99.1.2 dev pvt1",
            "203.0.113.7/32 dev pvt1",
        ] {
            let r = route(text);
            assert!(add_route(r.spec()).unwrap(), "{text} not added");
            assert!(has_route(text), "{text} missing: {:?}", table());
            assert!(!add_route(r.spec()).unwrap(), "{text} added twice");
            del_route(r.spec()).unwrap();
            assert!(!has_route(text), "{text} still there");
            // Already gone is fine.
            del_route(r.spec()).unwrap();
        }
        let no_dev = route("10.51.0.0/16 dev nosuchdev0");
        // Deleting through a device that is gone is fine: so are its routes.
        del_route(no_dev.spec()).unwrap();
        let err = add_route(no_dev.spec()).unwrap_err();
        assert!(matches!(err, Error::Sys { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("SIOCADDRT 10.51.0.0/16 dev nosuchdev0: "),
            "{err}"
        );
    });
}

/// The calling thread's capability sets and no_new_privs, as
/// /proc/thread-self/status shows them, on one line.
fn confinement() -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn confined_to_cap_net_admin_a_thread_still_sets_a_tunnel_up() {
    let before = confinement();
    in_netns(|| {
        keep_only_net_admin().unwrap();
        let confined = "CapInh: 0000000000000000, CapPrm: 0000000000001000, \
                        CapEff: 0000000000001000, CapBnd: 0000000000001000, \
                        CapAmb: 0000000000000000, NoNewPrivs: 1";
        assert_eq!(confinement(), confined);
        // A thread started from here on copies it.
        assert_eq!(std::thread::spawn(confinement).join().unwrap(), confined);
        // What `up` does at setup: TUNSETIFF, the interface ioctls and the
        // disable_ipv6 sysctl, the UDP socket with its FORCE buffers and a
        // mark, a route.
        let _tun = tun_up("pvt20", Ipv4Addr::new(10, 99, 20, 1));
        let udp = bind_udp_any(0).unwrap();
        set_mark(&udp, 0x99).unwrap();
        let rcvbuf = nix::sys::socket::getsockopt(&udp, nix::sys::socket::sockopt::RcvBuf).unwrap();
        // The plain option stops at net.core.rmem_max (208 KiB by default).
        assert!(rcvbuf >= 4 << 20, "SO_RCVBUFFORCE not applied: {rcvbuf}");
        let r = route("10.50.0.0/16 dev pvt20");
        assert!(add_route(r.spec()).unwrap());
        del_route(r.spec()).unwrap();
        // A port below 1024 needs CAP_NET_BIND_SERVICE, which is gone.
        let err = bind_udp_any(80).unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
    });
    assert_eq!(confinement(), before, "capabilities are per thread");
}

/// The routes of table `table` (both families) in this thread's namespace,
/// in `Route` text form, from `ip -j route show table N` (independent of the
/// code under test); IPv6 ones followed by ` metric N`.
fn table_n(table: u32) -> Vec<String> {
    let mut routes = Vec::new();
    for (family, all, host) in [("-4", "0.0.0.0/0", "/32"), ("-6", "::/0", "/128")] {
        let out = Command::new("ip")
            .args(["-j", family, "route", "show", "table", &table.to_string()])
            .output()
            .expect("running ip");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A table with no IPv6 route left does not exist for the kernel.
        if !out.status.success() && stderr.contains("FIB table does not exist") {
            continue;
        }
        assert!(
            out.status.success(),
            "ip route show table {table}: {stderr}"
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        for r in list.as_array().expect("a list of routes") {
            let text = |key: &str| r[key].as_str().map(str::to_string);
            let dst = match text("dst").expect("a dst").as_str() {
                "default" => all.to_string(),
                d if d.contains('/') => d.to_string(),
                d => format!("{d}{host}"),
            };
            let via = text("gateway").map_or(String::new(), |g| format!(" via {g}"));
            let dev = text("dev").expect("a dev");
            let metric = match family {
                "-6" => format!(" metric {}", r["metric"]),
                _ => String::new(),
            };
            routes.push(format!("{dst}{via} dev {dev} table {table}{metric}"));
        }
    }
    routes
}

/// Whether `route` (with its `table N`) is in table N, IPv6 ones with our
/// metric.
fn in_table(route: &Route) -> bool {
    let table = route.table.expect("a route of a numbered table");
    let text = match route.net.addr.is_ipv6() {
        true => format!("{route} metric 1"),
        false => route.to_string(),
    };
    table_n(table).contains(&text)
}

/// The main tables of both families (/proc's IPv6 one shows every table).
fn main_tables() -> (Vec<String>, String) {
    // The kernel adds a link's fe80::/64 route when its link-local address
    // is configured, some time after the link came up: not ours to compare.
    let v6 = ip("-6 route show table main")
        .lines()
        .filter(|l| !l.starts_with("fe80::/64 "))
        .collect::<Vec<_>>()
        .join("\n");
    (table(), v6)
}

#[test]
fn routes_in_a_numbered_table_are_added_and_deleted() {
    in_netns(|| {
        let _tun = tun_up_dual(
            "pvt10",
            Ipv4Addr::new(10, 99, 10, 1),
            "fd00:99:10::1".parse().unwrap(),
        );
        let main = main_tables();
        for text in [
            "10.50.0.0/16 dev pvt10 table 1234",
            "0.0.0.0/0 dev pvt10 table 1234",
            "fd00:50::/32 dev pvt10 table 1234",
            "::/0 dev pvt10 table 100",
            "10.60.0.0/16 via 10.99.10.2 dev pvt10 table 100",
            "203.0.113.7/32 dev pvt10 table 70000",
        ] {
            let r = route(text);
            assert!(add_route(r.spec()).unwrap(), "{text} not added");
            assert!(
                in_table(&r),
                "{text} missing: {:?}",
                table_n(r.table.unwrap())
            );
            assert_eq!(main_tables(), main, "{text} went into the main table");
            // Someone else's identical route is not ours.
            assert!(!add_route(r.spec()).unwrap(), "{text} added twice");
            del_route(r.spec()).unwrap();
            assert!(!in_table(&r), "{text} still there");
            // Already gone is fine.
            del_route(r.spec()).unwrap();
        }
        // The deletion takes our route only: not one with another metric.
        ip("-6 route add fd00:51::/32 dev pvt10 table 1234 metric 5");
        del_route(route("fd00:51::/32 dev pvt10 table 1234").spec()).unwrap();
        assert_eq!(
            table_n(1234),
            ["fd00:51::/32 dev pvt10 table 1234 metric 5"]
        );
        let no_dev = route("10.51.0.0/16 dev nosuchdev0 table 1234");
        // Deleting through a device that is gone is fine: so are its routes.
        del_route(no_dev.spec()).unwrap();
        let err = add_route(no_dev.spec()).unwrap_err();
        assert!(matches!(err, Error::Sys { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("RTM_NEWROUTE 10.51.0.0/16 dev nosuchdev0 table 1234: "),
            "{err}"
        );
    });
}

#[test]
fn numbered_table_routes_are_recorded_undone_and_swept() {
    in_netns(|| {
        default_route_via_veth();
        let _tun = tun_up_dual(
            "pvt11",
            Ipv4Addr::new(10, 99, 11, 1),
            "fd00:99:11::1".parse().unwrap(),
        );
        let dir = run_dir("table-n");
        let state = state_path(&dir, "pvt11").unwrap();
        let main = main_tables();
        let endpoint: IpAddr = "203.0.113.7".parse().unwrap();
        let allowed = [
            "0.0.0.0/0".parse().unwrap(),
            "::/0".parse().unwrap(),
            "10.61.0.0/16".parse().unwrap(),
        ];
        let routes = plan(
            &allowed,
            "pvt11",
            Some(1234),
            &[endpoint],
            &read_route_tables().unwrap(),
        )
        .unwrap();
        let wanted = [
            "0.0.0.0/0 dev pvt11 table 1234",
            "::/0 dev pvt11 table 1234",
            "10.61.0.0/16 dev pvt11 table 1234",
        ];
        assert_eq!(
            routes.iter().map(Route::to_string).collect::<Vec<_>>(),
            wanted
        );
        let installed =
            InstalledRoutes::install(state.clone(), "pvt11", &routes, &[endpoint]).unwrap();
        let listed: Vec<&Route> = routes.iter().collect();
        assert_eq!(
            state_text(&state),
            record_text(Some("203.0.113.7"), &listed)
        );
        assert!(routes.iter().all(in_table), "{:?}", table_n(1234));
        // Nothing in the main table: no split, no endpoint host route.
        assert_eq!(main_tables(), main);
        installed.remove();
        assert_eq!(table_n(1234), Vec::<String>::new());
        assert!(!state.exists());

        // A crashed run's record: the next start deletes its routes from
        // table 1234, and only those.
        for r in &routes {
            assert!(add_route(r.spec()).unwrap());
        }
        ip("route add 10.62.0.0/16 dev pvt11 table 1234");
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let record = RouteRecord {
            pid: gone.id(),
            netns: Netns::current().unwrap().cookie,
            endpoints: vec![endpoint],
            routes: routes.clone(),
        };
        rundir::write(&state, &record.render()).unwrap();
        assert_eq!(
            sweep_stale(&state).unwrap(),
            SweepOutcome::Swept {
                pid: gone.id(),
                routes: routes.clone()
            }
        );
        assert_eq!(table_n(1234), ["10.62.0.0/16 dev pvt11 table 1234"]);
        assert_eq!(main_tables(), main);
        assert!(!state.exists());
    });
}

fn state_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The record text of this process in this thread's namespace.
fn record_text(endpoint: Option<&str>, routes: &[&Route]) -> String {
    let mut text = format!(
        "pid {}\nnetns {}\nendpoint {}\n",
        std::process::id(),
        Netns::current()
            .unwrap()
            .cookie
            .expect("Linux 5.14 or later"),
        endpoint.unwrap_or("-")
    );
    for r in routes {
        text.push_str(&format!("{r}\n"));
    }
    text
}

#[test]
fn installed_routes_are_recorded_and_undone() {
    in_netns(|| {
        let _tun = tun_up("pvt2", Ipv4Addr::new(10, 99, 2, 1));
        let dir = run_dir("install");
        let state = state_path(&dir, "pvt2").unwrap();
        // Someone else's route: install must leave it out of the record and in place.
        let foreign = route("10.71.0.0/16 dev pvt2");
        assert!(add_route(foreign.spec()).unwrap());

        let wanted = [route("10.70.0.0/16 dev pvt2"), foreign.clone()];
        let installed = InstalledRoutes::install(state.clone(), "pvt2", &wanted, &[]).unwrap();
        assert_eq!(installed.routes(), &wanted[..1]);
        assert_eq!(state_text(&state), record_text(None, &[&wanted[0]]));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&state), 0o600);
        assert_eq!(mode(state.parent().unwrap()), 0o700);
        assert!(has_route("10.70.0.0/16 dev pvt2"));
        installed.remove();
        assert!(!has_route("10.70.0.0/16 dev pvt2"));
        assert!(has_route("10.71.0.0/16 dev pvt2"));
        // The namespace's directory goes with its last record.
        assert!(!state.parent().unwrap().exists());

        // A failure half-way undoes the routes already added and the record.
        let failing = [
            route("10.72.0.0/16 dev pvt2"),
            route("10.73.0.0/16 dev nosuchdev0"),
        ];
        let err = InstalledRoutes::install(state.clone(), "pvt2", &failing, &[]).unwrap_err();
        assert!(err.to_string().contains("nosuchdev0"), "{err}");
        assert!(!has_route("10.72.0.0/16 dev pvt2"));
        assert!(!state.parent().unwrap().exists());
    });
}

/// Thousands of AllowedIPs: the record lists exactly the routes added (not
/// the one that was there before), and exactly those are removed.
#[test]
fn many_routes_are_recorded_and_removed_exactly() {
    in_netns(|| {
        let _tun = tun_up("pvt9", Ipv4Addr::new(10, 99, 9, 1));
        let dir = run_dir("many");
        let state = state_path(&dir, "pvt9").unwrap();
        let wanted: Vec<Route> = (0..2000)
            .map(|i| route(&format!("10.{}.{}.0/24 dev pvt9", 100 + i / 256, i % 256)))
            .collect();
        let foreign = &wanted[1000];
        assert!(add_route(foreign.spec()).unwrap());
        let installed = InstalledRoutes::install(state.clone(), "pvt9", &wanted, &[]).unwrap();
        let ours: Vec<&Route> = wanted.iter().filter(|r| *r != foreign).collect();
        assert_eq!(installed.routes().len(), 1999);
        assert_eq!(state_text(&state), record_text(None, &ours));
        // The 2000, and the tun's own subnet.
        assert_eq!(table().len(), 2001);
        drop(installed);
        let mut left = table();
        left.sort();
        assert_eq!(left, [foreign.to_string(), "10.99.9.0/24 dev pvt9".into()]);
        assert!(!state.exists());
    });
}

#[test]
fn stale_records_are_swept_unless_their_owner_lives() {
    in_netns(|| {
        let _tun = tun_up("pvt3", Ipv4Addr::new(10, 99, 3, 1));
        let dir = run_dir("sweep");
        let state = state_path(&dir, "pvt3").unwrap();
        let left = route("10.80.0.0/16 dev pvt3");
        assert!(add_route(left.spec()).unwrap());
        // 10.81.0.0/16 is listed but already gone, and so is the host route
        // to the endpoint (its device went, as a crashed run's TUN does).
        let routes = vec![
            route("192.0.2.7/32 via 10.99.3.2 dev pvgone0"),
            left.clone(),
            route("10.81.0.0/16 dev pvt3"),
        ];
        let record = |pid: u32| RouteRecord {
            pid,
            netns: Netns::current().unwrap().cookie,
            endpoints: vec!["192.0.2.7".parse().unwrap()],
            routes: routes.clone(),
        };

        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        rundir::write(&state, &record(sleeper.id()).render()).unwrap();
        let err = sweep_stale(&state).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("interface pvt3 is in use by pipevpn pid {}", sleeper.id())
        );
        assert!(has_route("10.80.0.0/16 dev pvt3") && state.exists());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();

        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        rundir::write(&state, &record(gone.id()).render()).unwrap();
        let outcome = sweep_stale(&state).unwrap();
        assert_eq!(
            outcome,
            SweepOutcome::Swept {
                pid: gone.id(),
                routes: routes.clone()
            }
        );
        assert!(!has_route("10.80.0.0/16 dev pvt3"));
        assert!(!state.exists());
        assert_eq!(sweep_stale(&state).unwrap(), SweepOutcome::Clean);
    });
}

/// The attacks of the security review on the sweep: each record lists a
/// route that is not the tunnel's, and the sweep must refuse it and leave
/// that route alone.
#[test]
fn untrusted_or_foreign_records_delete_nothing() {
    in_netns(|| {
        ip("link add pvv8 type veth peer name pvv9");
        ip("addr add 192.0.2.1/24 dev pvv8");
        ip("link set pvv9 up");
        ip("link set pvv8 up");
        let _tun = tun_up("pvt8", Ipv4Addr::new(10, 99, 8, 1));
        let unrelated = route("10.88.0.0/16 via 192.0.2.254 dev pvv8");
        assert!(add_route(unrelated.spec()).unwrap());
        let tunnel = route("10.89.0.0/16 dev pvt8");
        let dir = run_dir("untrusted");
        let state = state_path(&dir, "pvt8").unwrap();
        let ns_dir = state.parent().unwrap().to_path_buf();
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let netns = Netns::current().unwrap().cookie;
        let text = |routes: &[&Route]| {
            RouteRecord {
                pid: gone.id(),
                netns,
                endpoints: vec!["203.0.113.7".parse().unwrap()],
                routes: routes.iter().map(|r| (*r).clone()).collect(),
            }
            .render()
        };
        let expect_refused = |why: &str| {
            assert!(add_route(tunnel.spec()).unwrap());
            let err = sweep_stale(&state).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert!(has_route(&unrelated.to_string()), "{why}: {:?}", table());
            assert!(has_route(&tunnel.to_string()), "{why}: {:?}", table());
            del_route(tunnel.spec()).unwrap();
        };

        // A symbolic link to a record that nobody's user owns.
        rundir::write(&ns_dir.join("placeholder"), "").unwrap();
        let nobodys = dir.join("nobody.routes");
        std::fs::write(&nobodys, text(&[&tunnel, &unrelated])).unwrap();
        std::os::unix::fs::chown(&nobodys, Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::symlink(&nobodys, &state).unwrap();
        expect_refused("it is a symbolic link");
        std::fs::remove_file(&state).unwrap();

        // The same file in place, owned by nobody.
        std::fs::rename(&nobodys, &state).unwrap();
        expect_refused("it is owned by uid 65534");
        std::fs::remove_file(&state).unwrap();

        // Root's own file, but listing a route that is not through pvt8 nor
        // a host route to the endpoint.
        rundir::write(&state, &text(&[&tunnel, &unrelated])).unwrap();
        expect_refused("it lists 10.88.0.0/16 via 192.0.2.254 dev pvv8, which pipevpn never adds");

        // A record from an earlier namespace with this inode: discarded, and
        // not even the routes through pvt8 are touched.
        assert!(add_route(tunnel.spec()).unwrap());
        let foreign = RouteRecord {
            pid: gone.id(),
            netns: netns.map(|c| c + 1),
            endpoints: vec![],
            routes: vec![tunnel.clone()],
        };
        rundir::write(&state, &foreign.render()).unwrap();
        assert_eq!(
            sweep_stale(&state).unwrap(),
            SweepOutcome::Discarded { pid: gone.id() }
        );
        assert!(!state.exists());
        assert!(has_route(&tunnel.to_string()) && has_route(&unrelated.to_string()));
    });
}

/// An underlay for full-tunnel tests: veth pvv0 192.0.2.1/24 with the
/// default route via 192.0.2.254.
fn default_route_via_veth() {
    ip("link add pvv0 type veth peer name pvv1");
    ip("addr add 192.0.2.1/24 dev pvv0");
    ip("link set pvv1 up");
    ip("link set pvv0 up");
    ip("route add default via 192.0.2.254 dev pvv0");
}

#[test]
fn full_tunnel_keeps_the_endpoint_on_the_old_default_route() {
    in_netns(|| {
        default_route_via_veth();
        let _tun = tun_up("pvt4", Ipv4Addr::new(10, 99, 4, 1));

        let endpoint: SocketAddr = "203.0.113.7:51820".parse().unwrap();
        let all = ["0.0.0.0/0".parse().unwrap()];
        let routes = plan(
            &all,
            "pvt4",
            None,
            &[endpoint.ip()],
            &read_route_tables().unwrap(),
        )
        .unwrap();
        let shown: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(
            shown,
            [
                "203.0.113.7/32 via 192.0.2.254 dev pvv0",
                "0.0.0.0/1 dev pvt4",
                "128.0.0.0/1 dev pvt4"
            ]
        );
        let dir = run_dir("full");
        let installed = InstalledRoutes::install(
            state_path(&dir, "pvt4").unwrap(),
            "pvt4",
            &routes,
            &[endpoint.ip()],
        )
        .unwrap();
        for r in &shown {
            assert!(has_route(r), "{r} missing: {:?}", table());
        }
        let to_endpoint = ip("-4 route get 203.0.113.7");
        assert!(
            to_endpoint.contains("via 192.0.2.254 dev pvv0"),
            "{to_endpoint}"
        );
        let elsewhere = ip("-4 route get 198.51.100.1");
        assert!(elsewhere.contains("dev pvt4"), "{elsewhere}");
        drop(installed);
        assert!(shown.iter().all(|r| !has_route(r)), "{:?}", table());
        assert!(has_route("0.0.0.0/0 via 192.0.2.254 dev pvv0"));
    });
}

/// Two peers' endpoints both captured by a full tunnel; one moves, and its
/// host route follows: the new one is recorded and added, the old one removed,
/// and the other peer's stays. Then it goes, and its host route with it.
#[test]
fn a_moved_endpoint_takes_its_host_route_along() {
    in_netns(|| {
        default_route_via_veth();
        let _tun = tun_up("pvt5", Ipv4Addr::new(10, 99, 5, 1));
        let (one, two, moved): (IpAddr, IpAddr, IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
            "198.51.100.9".parse().unwrap(),
        );
        let all = ["0.0.0.0/0".parse().unwrap()];
        let routes = plan(
            &all,
            "pvt5",
            None,
            &[one, two],
            &read_route_tables().unwrap(),
        )
        .unwrap();
        let dir = run_dir("follow");
        let state = state_path(&dir, "pvt5").unwrap();
        let mut installed =
            InstalledRoutes::install(state.clone(), "pvt5", &routes, &[one, two]).unwrap();
        let host = |ip: IpAddr| format!("{ip}/32 via 192.0.2.254 dev pvv0");
        assert!(
            has_route(&host(one)) && has_route(&host(two)),
            "{:?}",
            table()
        );

        installed
            .follow_endpoint(Some(two), moved, false, &read_route_tables().unwrap())
            .unwrap();
        assert!(has_route(&host(moved)), "{:?}", table());
        assert!(!has_route(&host(two)), "{:?}", table());
        assert!(has_route(&host(one)), "{:?}", table());
        let via = ip("-4 route get 198.51.100.9");
        assert!(via.contains("via 192.0.2.254 dev pvv0"), "{via}");
        let text = state_text(&state);
        assert!(
            text.contains("\nendpoint 203.0.113.7 198.51.100.9\n")
                && text.contains(&host(moved))
                && !text.contains(&host(two)),
            "{text}"
        );
        // Another peer still at the old address keeps its host route.
        installed
            .follow_endpoint(Some(one), two, true, &read_route_tables().unwrap())
            .unwrap();
        assert!(
            has_route(&host(one)) && has_route(&host(two)),
            "{:?}",
            table()
        );
        // A peer that is gone takes its host route along, unless another
        // peer is still at its address.
        installed.forget_endpoint(moved, true).unwrap();
        assert!(has_route(&host(moved)), "{:?}", table());
        installed.forget_endpoint(moved, false).unwrap();
        assert!(!has_route(&host(moved)), "{:?}", table());
        let text = state_text(&state);
        assert!(
            !text.contains("198.51.100.9") && text.contains(&host(one)),
            "{text}"
        );

        drop(installed);
        for gone in [one, two, moved] {
            assert!(!has_route(&host(gone)), "{:?}", table());
        }
        assert!(!has_route("0.0.0.0/1 dev pvt5"));
        assert!(!state.exists());
    });
}

/// Receives until `want` datagrams arrived (or panics after 5 s of silence).
fn recv_all(sock: &UdpSocket, want: usize, buf_len: usize) -> Vec<(Vec<u8>, RecvMeta)> {
    let stop = StopFd::new().unwrap();
    let mut got = Vec::new();
    while got.len() < want {
        let ready = wait_readable(sock.as_raw_fd(), &stop, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            ready,
            Some(Ready::Readable),
            "timed out after {} datagrams",
            got.len()
        );
        let mut bufs = vec![vec![0u8; buf_len]; 16];
        let mut meta = [RecvMeta::default(); 16];
        let n = recv_many(sock, bufs.iter_mut().map(Vec::as_mut_slice), &mut meta).unwrap();
        assert!(n > 0);
        for (buf, m) in bufs.into_iter().zip(meta).take(n) {
            got.push((buf[..m.len].to_vec(), m));
        }
    }
    assert_eq!(got.len(), want);
    got
}

#[test]
fn udp_batches_go_out_and_come_back() {
    in_netns(|| {
        for (a, b) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("[::1]:0", "[::1]:0"),
            ("127.0.0.1:0", "[::]:0"),
        ] {
            let tx = bind_udp(a.parse().unwrap()).unwrap();
            let rx = bind_udp(b.parse().unwrap()).unwrap();
            let rcvbuf =
                nix::sys::socket::getsockopt(&rx, nix::sys::socket::sockopt::RcvBuf).unwrap();
            assert!(rcvbuf >= 4 << 20, "SO_RCVBUF {rcvbuf}");
            let mut meta = [RecvMeta::default(); 4];
            let mut spare = [0u8; 64];
            let err = recv_many(&rx, std::iter::once(&mut spare[..]), &mut meta).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);

            let mut dest = rx.local_addr().unwrap();
            if dest.ip().is_unspecified() {
                dest.set_ip("127.0.0.1".parse().unwrap());
            }
            let payloads: Vec<Vec<u8>> = (0..10u8)
                .map(|i| vec![i; 10 * (usize::from(i) + 1)])
                .collect();
            assert_eq!(
                send_many(
                    &tx,
                    payloads.iter().map(Vec::as_slice),
                    dest.into(),
                    &AtomicBool::new(true)
                )
                .unwrap(),
                10
            );
            let got = recv_all(&rx, 10, 2048);
            // IPv4 senders show as IPv4 even on a dual-stack socket.
            let from = tx.local_addr().unwrap();
            for ((data, m), sent) in got.iter().zip(&payloads) {
                assert_eq!(
                    (data, m.len, m.addr, m.truncated),
                    (sent, sent.len(), from, false)
                );
            }

            // A datagram longer than its buffer is cut and flagged.
            assert_eq!(
                send_many(
                    &tx,
                    std::iter::once(&[7u8; 100][..]),
                    dest.into(),
                    &AtomicBool::new(true)
                )
                .unwrap(),
                1
            );
            let cut = recv_all(&rx, 1, 10);
            assert_eq!((cut[0].1.len, cut[0].1.truncated), (10, true));

            // One call sends at most MAX_BATCH.
            let many = vec![[1u8; 8]; MAX_BATCH + 36];
            assert_eq!(
                send_many(
                    &tx,
                    many.iter().map(|p| &p[..]),
                    dest.into(),
                    &AtomicBool::new(true)
                )
                .unwrap(),
                MAX_BATCH
            );
            assert_eq!(recv_all(&rx, MAX_BATCH, 64).len(), MAX_BATCH);
        }
    });
}

/// Datagrams of the sizes in `lens`, each filled with its own index.
fn numbered(lens: &[usize]) -> Vec<Vec<u8>> {
    lens.iter()
        .enumerate()
        .map(|(i, &len)| vec![i as u8; len])
        .collect()
}

/// Sends `payloads` with GSO on (one call), receives them, and checks every
/// datagram arrived whole, alone and in order; returns whether GSO stayed on.
fn gso_round_trip(tx: &UdpSocket, rx: &UdpSocket, payloads: &[Vec<u8>]) -> bool {
    let gso = AtomicBool::new(true);
    let dest = rx.local_addr().unwrap();
    let sent = send_many(tx, payloads.iter().map(Vec::as_slice), dest.into(), &gso).unwrap();
    assert_eq!(sent, payloads.len());
    let got = recv_all(rx, payloads.len(), 8192);
    for (i, ((data, m), want)) in got.iter().zip(payloads).enumerate() {
        assert_eq!((data, m.truncated), (want, false), "datagram {i}");
    }
    gso.load(Ordering::Relaxed)
}

#[test]
fn udp_gso_runs_arrive_as_the_datagrams_sent() {
    in_netns(|| {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let tx = bind_udp(addr.parse().unwrap()).unwrap();
            let rx = bind_udp(addr.parse().unwrap()).unwrap();
            // Runs of equal sizes, a shorter one ending a run, a longer one
            // starting one, one datagram alone, runs cut by the segment limit
            // (20 of 1452 bytes) and by the 64 KiB limit (14 of 5000 bytes,
            // as a jumbo MTU gives).
            let mut lens = vec![1000; 10];
            lens.extend([400, 1000, 1000, 1200, 1200, 1200, 90]);
            lens.extend([1452; 20]);
            lens.extend([5000; 14]);
            let payloads = numbered(&lens);
            assert!(
                gso_round_trip(&tx, &rx, &payloads),
                "GSO was refused on lo ({addr})"
            );
        }
    });
}

/// A batch for several peers: each run of slots for one destination is its
/// own send (equal sizes throughout, so a GSO run that crossed a change of
/// destination would deliver datagrams to the wrong peer), and a run that
/// fails costs only its own datagrams, which the count leaves out.
#[test]
fn a_batch_for_several_destinations_sends_each_run_to_its_own() {
    in_netns(|| {
        let tx = Udp::new(bind_udp("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
        let rx: Vec<_> = (0..2)
            .map(|_| bind_udp("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let to = |i: usize| Endpoint::from(rx[i].local_addr().unwrap());
        // An IPv6 destination on an IPv4 socket: that send fails.
        let unreachable = Endpoint::from("[::1]:9".parse::<SocketAddr>().unwrap());
        let plan = [(0, 5), (1, 5), (2, 3), (0, 2), (1, 1)];
        let pool = Pool::new(1, slot_size(1420));
        let mut batch = pool.get();
        let mut tag = 0u8;
        for (dest, n) in plan {
            for _ in 0..n {
                batch.free_slots_mut().next().unwrap()[..1000].fill(tag);
                let dest = if dest < 2 { to(dest) } else { unreachable };
                batch.push(1000, dest);
                tag += 1;
            }
        }
        let sent = tx.send_batch(&batch);
        assert_eq!((sent.datagrams, sent.bytes), (13, 13_000));
        assert!(sent.error.is_some(), "the failed run is reported");
        let tags = |i: usize, n| -> Vec<u8> {
            recv_all(&rx[i], n, 2048)
                .into_iter()
                .map(|(d, m)| {
                    assert_eq!(m.len, 1000);
                    d[0]
                })
                .collect()
        };
        assert_eq!(tags(0, 7), [0, 1, 2, 3, 4, 13, 14]);
        assert_eq!(tags(1, 6), [5, 6, 7, 8, 9, 15]);
    });
}

#[test]
fn udp_gso_refused_falls_back_to_one_datagram_per_message() {
    in_netns(|| {
        // Segments longer than the device MTU cannot be sent with GSO
        // (EINVAL); plain datagrams that long are fragmented and still arrive.
        ip("link set lo mtu 1280");
        let tx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let rx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let payloads = numbered(&[1400; 8]);
        assert!(
            !gso_round_trip(&tx, &rx, &payloads),
            "GSO should be refused"
        );
    });
}

#[test]
fn udp_gro_hands_over_a_run_as_one_buffer() {
    in_netns(|| {
        let tx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let rx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(enable_gro(&rx), "UDP_GRO refused");
        let mut lens = vec![1000; 10];
        lens.push(400);
        let payloads = numbered(&lens);
        let gso = AtomicBool::new(true);
        let dest = rx.local_addr().unwrap();
        let sent = send_many(&tx, payloads.iter().map(Vec::as_slice), dest.into(), &gso).unwrap();
        assert_eq!(sent, payloads.len());
        let got = recv_all(&rx, 1, 1 << 16);
        let (data, meta) = &got[0];
        assert_eq!((meta.len, meta.segment), (10_400, 1000), "{meta:?}");
        let datagrams: Vec<_> = data.chunks(meta.segment).map(<[u8]>::to_vec).collect();
        assert_eq!(datagrams, payloads);
    });
}

#[test]
fn stop_fd_wakes_a_thread_blocked_on_a_socket() {
    in_netns(|| {
        let sock = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let stop = Arc::new(StopFd::new().unwrap());
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                wait_readable(sock.as_raw_fd(), &stop, Some(Duration::from_secs(10)))
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        stop.signal();
        assert_eq!(waiter.join().unwrap().unwrap(), Some(Ready::Stopped));
    });
}

/// Reads what the tun has for us within `wait`: packets, one per entry.
/// The IP packets the kernel hands to the tun (without their vnet header).
fn tun_packets(tun: &Tun, wait: Duration) -> Vec<Vec<u8>> {
    let stop = StopFd::new().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while wait_readable(tun.as_raw_fd(), &stop, Some(wait)).unwrap() == Some(Ready::Readable) {
        let n = tun.read(&mut buf).unwrap();
        got.push(buf[VNET_HDR_LEN..n].to_vec());
    }
    got
}

#[test]
fn ipv6_address_is_set_and_the_tun_stays_quiet() {
    in_netns(|| {
        let addr6: Ipv6Addr = "fd00:99:5::1".parse().unwrap();
        let tun = tun_up_dual("pvt5", Ipv4Addr::new(10, 99, 5, 1), addr6);
        let v6 = ip("-o -6 addr show dev pvt5");
        assert!(v6.contains("inet6 fd00:99:5::1/64"), "{v6}");
        // Static addresses only: no link-local address.
        assert_eq!(v6.lines().count(), 1, "{v6}");
        let v4 = ip("-o -4 addr show dev pvt5");
        assert!(v4.contains("inet 10.99.5.1/24"), "{v4}");
        let conf = |key: &str| {
            let path = format!("/proc/sys/net/ipv6/conf/pvt5/{key}");
            std::fs::read_to_string(path).unwrap().trim().to_string()
        };
        let settings = ["disable_ipv6", "accept_ra", "autoconf", "addr_gen_mode"].map(conf);
        assert_eq!(settings, ["0", "0", "0", "1"]);
        assert!(has_route_any("fd00:99:5::/64 dev pvt5"), "{:?}", table6());

        // Nothing of the kernel's own (router solicitations, MLD reports)
        // comes out of the tunnel.
        tun.set_nonblocking().unwrap();
        let noise = tun_packets(&tun, Duration::from_millis(1500));
        assert!(noise.is_empty(), "the kernel sent {noise:?}");

        // Kernel -> tun: an IPv6 datagram to a peer on the tunnel subnet.
        let app = UdpSocket::bind("[fd00:99:5::1]:0").unwrap();
        app.send_to(b"hello6", "[fd00:99:5::2]:9999").unwrap();
        let got = tun_packets(&tun, Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{got:?}");
        let p = &got[0];
        assert_eq!((p[0] >> 4, p[6]), (6, 17), "not IPv6/UDP: {p:?}");
        assert_eq!(&p[8..24], &addr6.octets());
        assert_eq!(
            p[24..40],
            "fd00:99:5::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&p[48..], b"hello6");

        // A prefix longer than 128 is refused before any call.
        let err = set_ipv6_address("pvt5", addr6, 129).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        // A missing device is named in the error.
        let err = set_ipv6_address("nosuchdev0", addr6, 64).unwrap_err();
        assert!(err.to_string().contains("nosuchdev0"), "{err}");
    });
}

/// Whether some IPv6 route reads `route` (whatever its metric).
fn has_route_any(route: &str) -> bool {
    table6().iter().any(|r| {
        r.strip_prefix(route)
            .is_some_and(|m| m.starts_with(" metric"))
    })
}

#[test]
fn ipv6_routes_are_added_and_deleted() {
    in_netns(|| {
        let _tun = tun_up_dual(
            "pvt6",
            Ipv4Addr::new(10, 99, 6, 1),
            "fd00:99:6::1".parse().unwrap(),
        );
        for text in [
            "fd00:50::/32 dev pvt6",
            "fd00:60::/32 via fd00:99:6::2 dev pvt6",
            "2001:db8::7/128 dev pvt6",
            "::/1 dev pvt6",
            "8000::/1 dev pvt6",
        ] {
            let r = route(text);
            assert!(add_route(r.spec()).unwrap(), "{text} not added");
            assert!(has_route(text), "{text} missing: {:?}", table6());
            assert!(!add_route(r.spec()).unwrap(), "{text} added twice");
            del_route(r.spec()).unwrap();
            assert!(!has_route_any(text), "{text} still there");
            del_route(r.spec()).unwrap();
        }
        // Deleting takes only our metric: the kernel's own prefix route of
        // the same destination stays.
        let prefix = route("fd00:99:6::/64 dev pvt6");
        assert!(add_route(prefix.spec()).unwrap());
        del_route(prefix.spec()).unwrap();
        assert!(has_route_any("fd00:99:6::/64 dev pvt6"), "{:?}", table6());

        let no_dev = route("fd00:51::/32 dev nosuchdev0");
        del_route(no_dev.spec()).unwrap();
        let err = add_route(no_dev.spec()).unwrap_err();
        assert!(matches!(err, Error::Sys { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("SIOCADDRT fd00:51::/32 dev nosuchdev0: "),
            "{err}"
        );
        let mixed = Route {
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1).into()),
            ..route("fd00:52::/32 dev pvt6")
        };
        assert!(matches!(add_route(mixed.spec()), Err(Error::Input(_))));
    });
}

#[test]
fn ipv6_full_tunnel_keeps_the_endpoint_on_the_old_default_route() {
    in_netns(|| {
        ip("link add pvv2 type veth peer name pvv3");
        ip("addr add fd00:98::1/64 dev pvv2 nodad");
        ip("link set pvv3 up");
        ip("link set pvv2 up");
        ip("-6 route add default via fd00:98::fe dev pvv2");
        let _tun = tun_up_dual(
            "pvt7",
            Ipv4Addr::new(10, 99, 7, 1),
            "fd00:99:7::1".parse().unwrap(),
        );

        let endpoint: SocketAddr = "[2001:db8::7]:51820".parse().unwrap();
        let all = ["::/0".parse().unwrap(), "0.0.0.0/0".parse().unwrap()];
        let routes = plan(
            &all,
            "pvt7",
            None,
            &[endpoint.ip()],
            &read_route_tables().unwrap(),
        )
        .unwrap();
        let shown: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(
            shown,
            [
                "2001:db8::7/128 via fd00:98::fe dev pvv2",
                "::/1 dev pvt7",
                "8000::/1 dev pvt7",
                "0.0.0.0/1 dev pvt7",
                "128.0.0.0/1 dev pvt7"
            ]
        );
        let dir = run_dir("full6");
        let state = state_path(&dir, "pvt7").unwrap();
        let installed =
            InstalledRoutes::install(state.clone(), "pvt7", &routes, &[endpoint.ip()]).unwrap();
        for r in &shown {
            assert!(has_route(r), "{r} missing: {:?} {:?}", table6(), table());
        }
        assert!(state_text(&state).ends_with(&format!("{}\n", shown.join("\n"))));
        let to_endpoint = ip("-6 route get 2001:db8::7");
        assert!(
            to_endpoint.contains("via fd00:98::fe dev pvv2"),
            "{to_endpoint}"
        );
        for elsewhere in ["2001:db8::8", "fc00::1", "c000::1"] {
            let via = ip(&format!("-6 route get {elsewhere}"));
            assert!(via.contains("dev pvt7"), "{elsewhere}: {via}");
        }
        drop(installed);
        assert!(shown.iter().all(|r| !has_route(r)), "{:?}", table6());
        assert!(has_route_any("::/0 via fd00:98::fe dev pvv2"));
        assert!(!state.exists());
    });
}

#[test]
fn dual_stack_socket_talks_to_ipv4_and_ipv6_peers() {
    in_netns(|| {
        let dual = bind_udp_any(0).unwrap();
        let local = dual.local_addr().unwrap();
        assert!(local.is_ipv6() && local.ip().is_unspecified(), "{local}");
        for peer_addr in ["127.0.0.1:0", "[::1]:0"] {
            let peer = bind_udp(peer_addr.parse().unwrap()).unwrap();
            let peer_at = peer.local_addr().unwrap();
            let dual_at = SocketAddr::new(peer_at.ip(), local.port());

            // Out through send_many and through send_to, to a plain address
            // of either family.
            let payloads = [b"one".to_vec(), b"two".to_vec()];
            assert_eq!(
                send_many(
                    &dual,
                    payloads.iter().map(Vec::as_slice),
                    peer_at.into(),
                    &AtomicBool::new(true)
                )
                .unwrap(),
                2
            );
            dual.send_to(b"three", peer_at).unwrap();
            let got = recv_all(&peer, 3, 64);
            let data: Vec<&[u8]> = got.iter().map(|(d, _)| d.as_slice()).collect();
            assert_eq!(data, [&b"one"[..], b"two", b"three"]);
            assert!(got.iter().all(|(_, m)| m.addr == dual_at), "{got:?}");

            // Back in: the source is reported in the peer's own family.
            send_many(
                &peer,
                std::iter::once(&b"back"[..]),
                dual_at.into(),
                &AtomicBool::new(true),
            )
            .unwrap();
            let back = recv_all(&dual, 1, 64);
            assert_eq!(
                (back[0].0.as_slice(), back[0].1.addr),
                (&b"back"[..], peer_at)
            );
        }
    });
}

/// A server with two addresses answers from the one the client sent to,
/// not from the one routing would pick: with the address and interface
/// learnt from IPV6_PKTINFO, through a GSO run and a lone datagram; and an
/// address or an interface that has gone falls back to routing's choice.
#[test]
fn answers_leave_from_the_address_the_peer_reached() {
    in_netns(|| {
        for a in ["10.55.0.1/32", "10.55.0.2/32"] {
            ip(&format!("addr add {a} dev lo"));
        }
        for a in ["fd00:55::1/128", "fd00:55::2/128"] {
            ip(&format!("-6 addr add {a} dev lo nodad"));
        }
        // An IPv6 address's local route comes from the kernel's address
        // work queue, even without DAD: under load, after `ip` returned.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ip("-6 route show table local").matches("fd00:55::").count() < 2 {
            assert!(
                Instant::now() < deadline,
                "no local routes for fd00:55::1, ::2"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let server = bind_udp_any(0).unwrap();
        assert!(enable_pktinfo(&server), "IPV6_RECVPKTINFO refused");
        let port = server.local_addr().unwrap().port();
        let gso = AtomicBool::new(true);
        for (client_ip, server_ip, gone) in [
            ("10.55.0.1", "10.55.0.2", "10.55.0.9"),
            ("fd00:55::1", "fd00:55::2", "fd00:55::9"),
        ] {
            let (server_ip, gone): (IpAddr, IpAddr) =
                (server_ip.parse().unwrap(), gone.parse().unwrap());
            let client = bind_udp(SocketAddr::new(client_ip.parse().unwrap(), 0)).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let client_at = client.local_addr().unwrap();
            client.send_to(b"hello", (server_ip, port)).unwrap();
            let got = recv_all(&server, 1, 64);
            let from = Endpoint {
                addr: got[0].1.addr,
                local: got[0].1.local,
            };
            let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap();
            let here = Local {
                addr: server_ip,
                ifindex: lo.trim().parse().unwrap(),
            };
            assert_eq!(
                from,
                Endpoint {
                    addr: client_at,
                    local: Some(here)
                }
            );

            let reply_sources = |dest: Endpoint, payloads: &[&[u8]]| {
                let sent = send_many(&server, payloads.iter().copied(), dest, &gso).unwrap();
                assert_eq!(sent, payloads.len());
                let mut buf = [0u8; 64];
                (0..sent)
                    .map(|_| client.recv_from(&mut buf).unwrap().1.ip())
                    .collect::<Vec<_>>()
            };
            // Routing alone answers from the client's own address here.
            let routed = reply_sources(client_at.into(), &[b"plain"]);
            assert_ne!(
                routed,
                [server_ip],
                "the test needs routing to pick another address"
            );
            assert_eq!(
                reply_sources(from, &[b"run1", b"run2", b"run3"]),
                [server_ip; 3]
            );
            assert_eq!(reply_sources(from, &[b"lone"]), [server_ip]);
            for local in [
                Local { addr: gone, ..here },
                Local {
                    ifindex: 9999,
                    ..here
                },
            ] {
                let stale = Endpoint {
                    addr: client_at,
                    local: Some(local),
                };
                assert_eq!(reply_sources(stale, &[b"gone1", b"gone2"]), [routed[0]; 2]);
            }
        }
    });
}

#[test]
fn more_ipv4_addresses_go_on_alias_labels_and_small_mtus_work() {
    in_netns(|| {
        let _tun = tun_up("pvt9", Ipv4Addr::new(10, 99, 9, 1));
        set_ipv4_address("pvt9:1", Ipv4Addr::new(10, 99, 19, 1)).unwrap();
        set_ipv4_netmask("pvt9:1", 24).unwrap();
        let v4 = ip("-o -4 addr show dev pvt9");
        assert!(v4.contains("inet 10.99.9.1/24"), "{v4}");
        assert!(
            v4.contains("inet 10.99.19.1/24") && v4.contains("pvt9:1"),
            "{v4}"
        );
        assert!(set_ipv4_address("pvt9:x", Ipv4Addr::new(10, 99, 29, 1)).is_err());
        // The order `up` uses: IPv6 off, then an MTU below IPv6's minimum.
        let _small = Tun::open("pvt10").unwrap();
        disable_ipv6("pvt10").unwrap();
        set_mtu("pvt10", 1200).unwrap();
        set_up("pvt10").unwrap();
    });
}
