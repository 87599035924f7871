//! The kernel boundary: the TUN device, interface and route ioctls, route
//! requests through rtnetlink, batched UDP, a stop signal for blocked
//! threads, and volatile stores for wiping secrets.
//!
//! This is the only place in the crate with `unsafe`. Each system call sits in
//! a small function of its own and reports failures as [`crate::Error::Sys`]
//! (what was done on what) or as `io::Error` on the per-packet paths.

pub mod iface;
pub mod mem;
mod netlink;
pub mod poll;
pub mod privilege;
pub mod process;
pub mod route;
pub mod tun;
pub mod udp;

use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrLike};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

/// A datagram socket of `family` (Inet or Inet6), the handle the interface
/// and route ioctls go through: the kernel picks the IPv4 or IPv6 handler by
/// the socket's family. `what` names the operation, for the error.
fn control_socket(family: AddressFamily, what: &str) -> Result<OwnedFd> {
    let name = match family {
        AddressFamily::Inet6 => "AF_INET6",
        _ => "AF_INET",
    };
    socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::sys(format!("socket({name}) for {what}"), e.into()))
}

/// `ip` as the `in6_addr` that in6_ifreq and in6_rtmsg hold.
fn in6_addr(ip: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: ip.octets(),
    }
}

/// `ip` as the generic `sockaddr` that ifreq and rtentry hold.
fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = SockaddrIn::from(SocketAddrV4::new(ip, 0));
    // SAFETY: a sockaddr_in and a sockaddr are both 16 bytes; `as_ptr` points
    // at a live sockaddr_in owned by `sin`.
    unsafe { std::ptr::read_unaligned(sin.as_ptr()) }
}

/// Whether process `pid` exists (signal 0 reaches it, or is refused only for
/// lack of permission) and still has its /proc entry.
pub fn process_exists(pid: u32) -> bool {
    // Pid 0 would address our own process group.
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw == 0 {
        return false;
    }
    let reachable = matches!(
        nix::sys::signal::kill(Pid::from_raw(raw), None),
        Ok(()) | Err(Errno::EPERM)
    );
    reachable && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`,
/// Linux 5.14 and later), or `None` on an older kernel (ENOPROTOOPT). Unlike
/// the namespace's inode number, a cookie is never given to another
/// namespace while the system runs.
pub fn netns_cookie() -> Result<Option<u64>> {
    let op = "getsockopt(SO_NETNS_COOKIE)";
    let sock = control_socket(AddressFamily::Inet, op)?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are live and writable, and `len` holds the
    // size of `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::addr_of_mut!(cookie).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(Some(cookie)),
        _ => match Errno::last() {
            Errno::ENOPROTOOPT => Ok(None),
            e => Err(Error::sys(op, e.into())),
        },
    }
}

/// The effective user id of this process (root when it runs a tunnel).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The device and inode of this process's stderr (`fstat(2)`), or `None` if
/// it is closed.
pub fn stderr_identity() -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(std::io::stderr()).ok()?;
    Some((st.st_dev, st.st_ino))
}
