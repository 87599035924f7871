//! The tunnel's UDP socket and batched I/O: one recvmmsg(2) or sendmmsg(2)
//! moves up to [`MAX_BATCH`] datagrams, with all the kernel-facing arrays on
//! the stack so no call allocates.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage,
};
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Most datagrams one `recv_many` or `send_many` call handles.
pub const MAX_BATCH: usize = 64;

/// Socket buffer size we ask for: room for a few thousand full datagrams, so
/// bursts wait in the kernel instead of being dropped.
const SOCKET_BUFFER: usize = 4 << 20;

/// What `recv_many` learned about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes stored in the buffer (at most its length).
    pub len: usize,
    /// Sender; an IPv4-mapped IPv6 source is given as the plain IPv4 address.
    pub addr: SocketAddr,
    /// The datagram was longer than the buffer and was cut.
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            truncated: false,
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
    for ((hdr, iov), name) in hdrs.iter_mut().zip(&mut iovs).zip(&mut names).take(n) {
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    let got = recvmmsg(sock, &mut hdrs[..n])?;
    for ((m, hdr), name) in meta.iter_mut().zip(&hdrs).zip(&names).take(got) {
        *m = RecvMeta {
            len: hdr.msg_len as usize,
            addr: socket_addr(name, hdr.msg_hdr.msg_namelen)?,
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(got)
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

/// Sends up to `MAX_BATCH` datagrams from `bufs` to `dest`, looping over
/// partial sendmmsg(2) results. Returns how many were sent. An error before
/// anything was sent is returned as is; an error after some were sent ends
/// the batch early with that count, and the caller's next send will meet the
/// error again if it persists.
pub fn send_many<'a>(
    sock: &UdpSocket,
    bufs: impl Iterator<Item = &'a [u8]>,
    dest: SocketAddr,
) -> io::Result<usize> {
    let dest = SockaddrStorage::from(dest);
    // SAFETY: as in `recv_many`: plain C data, all-zero is valid.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut n = 0;
    for buf in bufs.take(MAX_BATCH) {
        iovs[n] = libc::iovec {
            // The kernel only reads from send buffers.
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        n += 1;
    }
    for (hdr, iov) in hdrs.iter_mut().zip(&mut iovs).take(n) {
        // The kernel only reads the destination address.
        hdr.msg_hdr.msg_name = dest.as_ptr().cast_mut().cast();
        hdr.msg_hdr.msg_namelen = dest.len();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < n {
        match sendmmsg(sock, &mut hdrs[sent..n]) {
            Ok(0) => break,
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// One sendmmsg(2) over `hdrs`; the count of datagrams sent.
fn sendmmsg(sock: &UdpSocket, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: every header points at a live iovec over a live buffer and at
    // the live destination address of the stated size.
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
