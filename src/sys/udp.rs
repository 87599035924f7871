//! The tunnel's UDP socket and batched I/O: one recvmmsg(2) or sendmmsg(2)
//! moves up to [`MAX_BATCH`] datagrams (sendmmsg with UDP GSO, several
//! equal-sized datagrams per message), with all the kernel-facing arrays on
//! the stack so no call allocates.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage,
};
use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most datagrams one `recv_many` or `send_many` call handles.
pub const MAX_BATCH: usize = 64;

/// Socket buffer size we ask for: room for a few thousand full datagrams, so
/// bursts wait in the kernel instead of being dropped.
const SOCKET_BUFFER: usize = 4 << 20;

/// A peer as the socket sees it: its address, and our side of its path.
/// Sends to it go out from that side when it is known (`local`), as in
/// kernel WireGuard and wireguard-go: a server with several addresses then
/// answers from the one the client chose, which a NAT or a stateful firewall
/// in front of the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub local: Option<Local>,
}

/// The local address a peer's packets reached, and the interface they came
/// in on. Sending from the address out of that interface (as wireguard-go
/// does) keeps a host that has moved to another network with the old one
/// still up from sending the old address out of the new interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub addr: IpAddr,
    pub ifindex: u32,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, local: None }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// What `recv_many` learned about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes stored in the buffer (at most its length).
    pub len: usize,
    /// Sender; an IPv4-mapped IPv6 source is given as the plain IPv4 address.
    pub addr: SocketAddr,
    /// The datagram's destination, one of our addresses, and the interface
    /// it came in on, once [`enable_pktinfo`] is on.
    pub local: Option<Local>,
    /// The datagram was longer than the buffer and was cut.
    pub truncated: bool,
    /// With UDP GRO on ([`enable_gro`]): 0 for a single datagram, else the
    /// buffer holds datagrams of this size back to back, the last maybe
    /// shorter.
    pub segment: usize,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: None,
            truncated: false,
            segment: 0,
        }
    }
}

/// The tunnel's socket: UDP `port` (0 = any) on every local address, over
/// IPv6 and IPv4 alike ([`bind_udp`] on `[::]`), or IPv4 only when the kernel
/// has no IPv6 (booted with `ipv6.disable=1`: no AF_INET6 sockets).
pub fn bind_udp_any(port: u16) -> Result<UdpSocket> {
    match bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Err(Error::Sys { source, .. })
            if source.raw_os_error() == Some(Errno::EAFNOSUPPORT as i32) =>
        {
            log::info!("the kernel has no IPv6: UDP over IPv4 only");
            bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
        other => other,
    }
}

/// Binds a blocking UDP socket to `addr` with ~4 MiB send and receive
/// buffers. The FORCE variants (root only) go past the sysctl limits; without
/// the privilege the plain options give what the limits allow.
///
/// An IPv6 socket is dual-stack whatever the `bindv6only` sysctl says, so
/// `[::]:port` serves IPv4 peers too: they show as plain IPv4 sources in
/// [`recv_many`], and a plain IPv4 destination is accepted by the kernel on
/// the send paths ([`send_many`], `send_to`).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    let op = format!("UDP {addr}");
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::sys(format!("socket for {op}"), e.into()))?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)
            .map_err(|e| Error::sys(format!("IPV6_V6ONLY off on {op}"), e.into()))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(|e| Error::sys(format!("bind {op}"), e.into()))?;
    let sock = UdpSocket::from(fd);
    if setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUFFER)
            .map_err(|e| Error::sys(format!("SO_RCVBUF on {op}"), e.into()))?;
    }
    if setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUFFER)
            .map_err(|e| Error::sys(format!("SO_SNDBUF on {op}"), e.into()))?;
    }
    Ok(sock)
}

/// Receives up to `min(MAX_BATCH, meta.len())` datagrams without waiting,
/// one per buffer from `bufs`, and fills `meta[i]` for each of the `n`
/// returned. Fails with `WouldBlock` when nothing is queued.
pub fn recv_many<'a>(
    sock: &UdpSocket,
    bufs: impl Iterator<Item = &'a mut [u8]>,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    // SAFETY: iovec, sockaddr_storage and mmsghdr are plain C data for which
    // all-zero bytes (null pointers, zero lengths) are valid values.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut names: [libc::sockaddr_storage; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut controls = [Control::new(); MAX_BATCH];
    let mut n = 0;
    for buf in bufs.take(MAX_BATCH.min(meta.len())) {
        iovs[n] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    for (((hdr, iov), name), control) in hdrs
        .iter_mut()
        .zip(&mut iovs)
        .zip(&mut names)
        .zip(&mut controls)
        .take(n)
    {
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = control.bytes.as_mut_ptr().cast();
        hdr.msg_hdr.msg_controllen = CONTROL_SPACE as _;
    }
    let got = recvmmsg(sock, &mut hdrs[..n])?;
    for ((m, hdr), name) in meta.iter_mut().zip(&hdrs).zip(&names).take(got) {
        let (segment, local) = received_controls(&hdr.msg_hdr);
        *m = RecvMeta {
            len: hdr.msg_len as usize,
            addr: socket_addr(name, hdr.msg_hdr.msg_namelen)?,
            local,
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            segment,
        };
    }
    Ok(got)
}

/// Puts socket `new` in the place of `sock`: `sock`'s descriptor refers to
/// `new` from now on, in every thread (a call already under way ends on
/// the old socket), and the old socket closes with its last reference
/// (`sock` must hold the only descriptor of it). The descriptor stays
/// close-on-exec. One dup3(2); `new`'s own descriptor is closed after it.
pub fn replace_socket(sock: &UdpSocket, new: UdpSocket) -> Result<()> {
    // SAFETY: dup3 takes two descriptors and no pointers; `sock` keeps its
    // descriptor, open and owned by it, only the socket behind it changes.
    let r = unsafe { libc::dup3(new.as_raw_fd(), sock.as_raw_fd(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Error::sys(
            "putting the new UDP socket in place",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Marks every packet the socket sends with `mark` (SO_MARK, root only), so
/// that policy routing (`ip rule fwmark`) can tell the tunnel's own packets
/// apart, as wg's FwMark does.
pub fn set_mark(sock: &UdpSocket, mark: u32) -> Result<()> {
    setsockopt(sock, sockopt::Mark, &mark)
        .map_err(|e| Error::sys(format!("SO_MARK {mark:#x} on the UDP socket"), e.into()))
}

/// Asks the kernel to tell each datagram's destination address: IP_PKTINFO
/// on an IPv4 socket, IPV6_RECVPKTINFO on an IPv6 one (whose IPv4 datagrams
/// then come with an IPv4-mapped address). Returns whether it agreed.
pub fn enable_pktinfo(sock: &UdpSocket) -> bool {
    match sock.local_addr() {
        Ok(SocketAddr::V6(_)) => setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true).is_ok(),
        _ => setsockopt(sock, sockopt::Ipv4PacketInfo, &true).is_ok(),
    }
}

/// Asks the kernel to hand over a burst of equal-sized datagrams from one
/// sender as one buffer, with their size in a control message (UDP_GRO,
/// Linux 5.0 on). Returns whether it agreed.
pub fn enable_gro(sock: &UdpSocket) -> bool {
    setsockopt(sock, sockopt::UdpGroSegment, &true).is_ok()
}

/// The GRO segment size (0: a single datagram) and our side of the path
/// from the control messages the kernel wrote for `msg`.
fn received_controls(msg: &libc::msghdr) -> (usize, Option<Local>) {
    let (mut segment, mut local) = (0, None);
    let start = msg.msg_control as usize;
    // A message cut short by a full buffer (MSG_CTRUNC) keeps its full
    // length in its header: its data is read only if all of it was written.
    // The lengths are size_t on glibc but socklen_t on musl.
    #[allow(clippy::unnecessary_cast)]
    let whole = |c: &libc::cmsghdr, size: usize| {
        // SAFETY: CMSG_LEN only computes a size.
        let needed = unsafe { libc::CMSG_LEN(size as u32) } as usize;
        c.cmsg_len as usize >= needed
            && c as *const libc::cmsghdr as usize - start + needed <= msg.msg_controllen as usize
    };
    // SAFETY: `msg` is a header recvmmsg(2) filled: its control pointer and
    // length describe control messages the kernel wrote, which the CMSG
    // macros walk without leaving that length, and each data, checked to be
    // whole, is read as the type its level and type promise, unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while let Some(c) = cmsg.as_ref() {
            let data = libc::CMSG_DATA(c);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::SOL_UDP, libc::UDP_GRO) if whole(c, mem::size_of::<libc::c_int>()) => {
                    let size = data.cast::<libc::c_int>().read_unaligned();
                    segment = usize::try_from(size).unwrap_or(0);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if whole(c, mem::size_of::<libc::in_pktinfo>()) =>
                {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    local = Some(Local {
                        addr: IpAddr::V4(ip),
                        ifindex: info.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if whole(c, mem::size_of::<libc::in6_pktinfo>()) =>
                {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    local = Some(Local {
                        addr: ip.to_canonical(),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, c);
        }
    }
    (segment, local)
}

/// One non-blocking recvmmsg(2) over `hdrs`; the count of filled headers.
fn recvmmsg(sock: &UdpSocket, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: every header points at a live iovec over a live, exclusively
    // borrowed buffer and at a live sockaddr_storage of the stated size.
    let r = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// The sender address the kernel wrote, with IPv4-mapped IPv6 unmapped so a
/// dual-stack socket reports the same address an IPv4 socket would.
fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<SocketAddr> {
    // SAFETY: `name` is a sockaddr_storage of which the kernel wrote `len` bytes.
    let storage = unsafe {
        SockaddrStorage::from_raw((name as *const libc::sockaddr_storage).cast(), Some(len))
    };
    let storage = storage.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "recvmmsg gave no source address",
        )
    })?;
    if let Some(v4) = storage.as_sockaddr_in() {
        Ok(SocketAddr::V4((*v4).into()))
    } else if let Some(v6) = storage.as_sockaddr_in6() {
        let v6 = std::net::SocketAddrV6::from(*v6);
        Ok(match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::from((ip, v6.port())),
            None => SocketAddr::V6(v6),
        })
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "recvmmsg gave a source address that is neither IPv4 nor IPv6",
        ))
    }
}

/// Most datagrams in one GSO send. The kernel takes up to 64, but a run
/// arrives at the peer's socket all at once: against Debian's wireguard-go
/// (208 KiB receive buffer) at 300 Mbit/s, runs of 16 halved its receive
/// buffer drops compared with 64, for no throughput loss in
/// integration/bench.sh (runs of 8 cost ~10 %).
const GSO_MAX_SEGMENTS: usize = 16;

/// Most payload bytes in one GSO send: the IP length field's limit less the
/// UDP header and an IPv6 header (the larger of the two IP headers).
const GSO_MAX_BYTES: usize = 65535 - 8 - 40;

/// How many of the datagrams whose lengths start `lens` can go out as one
/// UDP_SEGMENT send: equal-sized ones, and after them at most one shorter
/// (the kernel cuts the buffer into `lens[0]`-byte segments, so only the last
/// may be short), within the kernel's segment and size limits. An empty
/// datagram always goes alone: as a segment it would vanish.
fn gso_run(lens: &[usize]) -> usize {
    let Some(&size) = lens.first() else {
        return 0;
    };
    let (mut n, mut total) = (1, size);
    while let Some(&len) = lens.get(n) {
        if n == GSO_MAX_SEGMENTS || len == 0 || len > size || total + len > GSO_MAX_BYTES {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            break;
        }
    }
    n
}

/// Whether the kernel knows UDP_SEGMENT (Linux 4.18 on). Older kernels
/// ignore a control message they do not know, which would send a whole run
/// as one datagram: GSO must not be tried there.
pub fn gso_supported(sock: &UdpSocket) -> bool {
    socket::getsockopt(sock, sockopt::UdpGsoSegment).is_ok()
}

/// Room for the control messages of one message, sent or received: the
/// segment size (UDP_SEGMENT's u16 out, UDP_GRO's int in) and IP_PKTINFO or
/// IPV6_PKTINFO (the larger, 20 bytes), each CMSG_SPACE long.
// SAFETY: CMSG_SPACE only computes a size.
const CONTROL_SPACE: usize = unsafe {
    libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32)
        + libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32)
} as usize;

/// One message's control messages, laid out as the kernel reads and writes
/// them, aligned for `cmsghdr`; `len` bytes are used when sending.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control {
    bytes: [u8; CONTROL_SPACE],
    len: usize,
}

impl Control {
    fn new() -> Control {
        Control {
            bytes: [0; CONTROL_SPACE],
            len: 0,
        }
    }

    /// Appends a control message carrying `data`. At most one segment size
    /// and one source address are appended, which the buffer has room for.
    fn push<T: Copy>(&mut self, level: libc::c_int, kind: libc::c_int, data: T) {
        let size = mem::size_of::<T>() as u32;
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len, offset) = unsafe {
            (
                libc::CMSG_SPACE(size) as usize,
                libc::CMSG_LEN(size),
                libc::CMSG_LEN(0) as usize,
            )
        };
        // SAFETY: cmsghdr is plain C data; all-zero bytes are a valid value.
        let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
        hdr.cmsg_len = len as _;
        hdr.cmsg_level = level;
        hdr.cmsg_type = kind;
        let at = &mut self.bytes[self.len..self.len + space];
        // SAFETY: `at` holds CMSG_SPACE(size) bytes: the header, then the
        // data from CMSG_LEN(0) on; both writes stay inside it.
        unsafe {
            at.as_mut_ptr().cast::<libc::cmsghdr>().write_unaligned(hdr);
            at.as_mut_ptr()
                .add(offset)
                .cast::<T>()
                .write_unaligned(data);
        }
        self.len += space;
    }

    /// A source address and interface for a message to `dest`, when both
    /// addresses are of one family (IP_PKTINFO also serves IPv4 destinations
    /// of an IPv6 socket).
    fn push_source(&mut self, local: Local, dest: SocketAddr) {
        match (local.addr, dest) {
            (IpAddr::V4(ip), SocketAddr::V4(_)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: local.ifindex as libc::c_int,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                self.push(libc::IPPROTO_IP, libc::IP_PKTINFO, info);
            }
            (IpAddr::V6(ip), SocketAddr::V6(_)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: local.ifindex,
                };
                self.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
            }
            _ => {}
        }
    }
}

/// Sends up to `MAX_BATCH` datagrams from `bufs` to `dest`, looping over
/// partial sendmmsg(2) results. Returns how many were sent. An error before
/// anything was sent is returned as is; an error after some were sent ends
/// the batch early with that count, and the caller's next send will meet the
/// error again if it persists.
///
/// They go out from `dest.local` when it is set. If the kernel refuses that
/// (ENETUNREACH, EINVAL, EADDRNOTAVAIL, ENODEV: the address or interface is
/// gone or down), the rest of the batch goes where routing sends it.
///
/// While `gso` is set, each run of equal-sized datagrams ([`gso_run`]) goes
/// to the kernel as one message with UDP_SEGMENT: it crosses the UDP/IP stack
/// once and is cut into datagrams at the device (or in software). When the
/// kernel refuses that (EIO, EINVAL or EMSGSIZE: a route it cannot offload
/// on, or segments longer than the path MTU), `gso` is cleared for good and
/// the datagrams go one per message.
pub fn send_many<'a>(
    sock: &UdpSocket,
    bufs: impl Iterator<Item = &'a [u8]>,
    dest: Endpoint,
    gso: &AtomicBool,
) -> io::Result<usize> {
    let mut source = dest.local.map(|local| (local, dest.addr));
    let dest = SockaddrStorage::from(dest.addr);
    // SAFETY: as in `recv_many`: plain C data, all-zero is valid.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut n = 0;
    for buf in bufs.take(MAX_BATCH) {
        iovs[n] = libc::iovec {
            // The kernel only reads from send buffers.
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        n += 1;
    }
    let mut lens = [0; MAX_BATCH];
    for (len, iov) in lens.iter_mut().zip(&iovs[..n]) {
        *len = iov.iov_len;
    }
    let mut sent = 0;
    while sent < n {
        let segment = gso.load(Ordering::Relaxed);
        let mut control = Control::new();
        if let Some((local, to)) = source {
            control.push_source(local, to);
        }
        match send_runs(
            sock,
            &mut iovs[sent..n],
            &lens[sent..n],
            &dest,
            segment,
            control,
        ) {
            Ok(0) => break,
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Tried before blaming GSO, which EINVAL may also mean.
            Err(e)
                if source.is_some()
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::ENETUNREACH | libc::EINVAL | libc::EADDRNOTAVAIL | libc::ENODEV)
                    ) =>
            {
                log::debug!("source address refused ({e}): sending from the routed one");
                source = None;
            }
            // The failed message is the first: blame GSO only if it used it.
            Err(e)
                if segment
                    && gso_run(&lens[sent..n]) > 1
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                    ) =>
            {
                log::info!("UDP GSO refused ({e}): sending datagrams one by one");
                gso.store(false, Ordering::Relaxed);
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// One sendmmsg(2) of the datagrams in `iovs`: one message per GSO run with
/// `segment`, else one per datagram, each with the control messages in
/// `control` (and its segment size). Returns the count of datagrams sent.
fn send_runs(
    sock: &UdpSocket,
    iovs: &mut [libc::iovec],
    lens: &[usize],
    dest: &SockaddrStorage,
    segment: bool,
    control: Control,
) -> io::Result<usize> {
    // SAFETY: as in `recv_many`: plain C data, all-zero is valid.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut controls = [control; MAX_BATCH];
    // Datagrams carried by each message.
    let mut counts = [0; MAX_BATCH];
    let (mut msgs, mut i) = (0, 0);
    while i < lens.len() {
        let k = if segment { gso_run(&lens[i..]) } else { 1 };
        let hdr = &mut hdrs[msgs].msg_hdr;
        // The kernel only reads the destination address.
        hdr.msg_name = dest.as_ptr().cast_mut().cast();
        hdr.msg_namelen = dest.len();
        hdr.msg_iov = iovs[i..].as_mut_ptr();
        hdr.msg_iovlen = k as _;
        let control = &mut controls[msgs];
        if k > 1 {
            // A run is at most GSO_MAX_BYTES long, so its size fits a u16.
            control.push(libc::SOL_UDP, libc::UDP_SEGMENT, lens[i] as u16);
        }
        if control.len > 0 {
            hdr.msg_control = control.bytes.as_mut_ptr().cast();
            hdr.msg_controllen = control.len as _;
        }
        counts[msgs] = k;
        msgs += 1;
        i += k;
    }
    let done = sendmmsg(sock, &mut hdrs[..msgs])?;
    Ok(counts[..done].iter().sum())
}

/// One sendmmsg(2) over `hdrs`; the count of messages sent.
fn sendmmsg(sock: &UdpSocket, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: every header points at live iovecs over live buffers, at the
    // live destination address of the stated size, and at a live control
    // message of the stated size or none.
    let r = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            0,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs `gso_run` cuts `lens` into, as lengths.
    fn runs(lens: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < lens.len() {
            let k = gso_run(&lens[i..]);
            assert!(k > 0);
            out.push(k);
            i += k;
        }
        out
    }

    #[test]
    fn equal_sizes_make_one_run_and_a_shorter_one_ends_it() {
        assert_eq!(runs(&[]), Vec::<usize>::new());
        assert_eq!(runs(&[100]), [1]);
        assert_eq!(runs(&[100, 100, 100]), [3]);
        assert_eq!(runs(&[100, 100, 60, 100, 100]), [3, 2]);
        assert_eq!(runs(&[100, 60, 60]), [2, 1]);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        assert_eq!(runs(&[60, 60, 100, 100]), [2, 2]);
        assert_eq!(runs(&[60, 100, 140]), [1, 1, 1]);
    }

    #[test]
    fn empty_datagrams_go_alone() {
        assert_eq!(runs(&[100, 0, 100]), [1, 1, 1]);
        assert_eq!(runs(&[0, 0]), [1, 1]);
    }

    #[test]
    fn runs_keep_to_the_segment_and_size_limits() {
        // GSO_MAX_SEGMENTS at most.
        assert_eq!(runs(&[8; 40]), [16, 16, 8]);
        assert_eq!(runs(&[1452; 40]), [16, 16, 8]);
        // 64 KiB at most: 13 datagrams of 5000 bytes (jumbo MTU) fit, not 14.
        assert_eq!(runs(&[5000; 16]), [13, 3]);
        // A short last one that would pass the limit waits for the next run.
        let mut lens = vec![5000; 13];
        lens.push(600);
        assert_eq!(runs(&lens), [13, 1]);
        lens[12] = 4000;
        assert_eq!(runs(&lens), [13, 1]);
    }
}
