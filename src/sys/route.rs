//! Routes in the main table through SIOCADDRT / SIOCDELRT: an `rtentry` on
//! an AF_INET socket for IPv4, an `in6_rtmsg` on an AF_INET6 socket for IPv6.

use super::iface::{ifindex, prefix_mask};
use super::{control_socket, in6_addr, sockaddr_v4};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::AddressFamily;
use std::ffi::CString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

mod raw {
    nix::ioctl_write_ptr_bad!(siocaddrt, libc::SIOCADDRT, libc::rtentry);
    nix::ioctl_write_ptr_bad!(siocdelrt, libc::SIOCDELRT, libc::rtentry);
    nix::ioctl_write_ptr_bad!(siocaddrt6, libc::SIOCADDRT, super::In6Rtmsg);
    nix::ioctl_write_ptr_bad!(siocdelrt6, libc::SIOCDELRT, super::In6Rtmsg);
}

/// Metric of the IPv6 routes we add. SIOCDELRT matches it too, so deletion
/// takes our route and never an equal one someone else added with another
/// metric. (IPv4 routes keep the ioctl's default, 0.)
const METRIC_V6: u32 = 1;

/// A route as the kernel calls take it, borrowed from the caller's own
/// route type, so that this layer depends on nothing above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec<'a> {
    pub dest: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dev: Option<&'a str>,
}

/// `0.0.0.0/1 dev pv0`, `fd00::7/128 via fe80::1 dev eth0`: the form
/// `ip route` uses.
impl fmt::Display for RouteSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dest, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = self.dev {
            write!(f, " dev {dev}")?;
        }
        Ok(())
    }
}

/// Adds `r`. Returns `Ok(true)` when the kernel added it and `Ok(false)` when
/// the identical route was already there (EEXIST): such a route belongs to
/// someone else, so the caller must not record it as its own or delete it.
pub fn add_route(r: RouteSpec) -> Result<bool> {
    let op = format!("SIOCADDRT {r}");
    match route_ioctl(r, Action::Add, &op)? {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(Error::sys(op, e.into())),
    }
}

/// Deletes `r`. A route that is already gone counts as deleted: ESRCH, or
/// ENODEV when its device no longer exists (the kernel dropped the device's
/// routes with it, as happens to a crashed run's TUN routes).
pub fn del_route(r: RouteSpec) -> Result<()> {
    let op = format!("SIOCDELRT {r}");
    match route_ioctl(r, Action::Del, &op)? {
        Ok(()) | Err(Errno::ESRCH | Errno::ENODEV) => Ok(()),
        Err(e) => Err(Error::sys(op, e.into())),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Add,
    Del,
}

/// Makes the `action` call for `r` on a socket of its family. The outer
/// error is a failure to get that far; the inner one is the call's errno
/// (for IPv6 also ENODEV from looking up the device).
fn route_ioctl(r: RouteSpec, action: Action, op: &str) -> Result<nix::Result<()>> {
    if r.gateway.is_some_and(|gw| gw.is_ipv4() != r.dest.is_ipv4()) {
        return Err(Error::Input(format!(
            "{op}: the gateway is not of the route's address family"
        )));
    }
    let result = match r.dest {
        IpAddr::V4(dest) => {
            let entry = RtEntry::new(dest, r, op)?;
            let sock = control_socket(AddressFamily::Inet, op)?;
            // SAFETY: `entry.rt` is initialised and, with the device name it
            // points to, lives until the call returns.
            unsafe {
                match action {
                    Action::Add => raw::siocaddrt(sock.as_raw_fd(), &entry.rt),
                    Action::Del => raw::siocdelrt(sock.as_raw_fd(), &entry.rt),
                }
            }
        }
        IpAddr::V6(dest) => {
            let msg = match In6Rtmsg::new(dest, r) {
                Ok(msg) => msg,
                Err(e) => return Ok(Err(e)),
            };
            let sock = control_socket(AddressFamily::Inet6, op)?;
            // SAFETY: `msg` is an initialised in6_rtmsg that outlives the call.
            unsafe {
                match action {
                    Action::Add => raw::siocaddrt6(sock.as_raw_fd(), &msg),
                    Action::Del => raw::siocdelrt6(sock.as_raw_fd(), &msg),
                }
            }
        }
    };
    Ok(result.map(drop))
}

/// An rtentry together with the device name it points at, so the name lives
/// as long as the entry (a CString's bytes do not move with it).
struct RtEntry {
    rt: libc::rtentry,
    _dev: Option<CString>,
}

impl RtEntry {
    fn new(dest: Ipv4Addr, r: RouteSpec, op: &str) -> Result<RtEntry> {
        let mask = prefix_mask(r.prefix)
            .ok_or_else(|| Error::Input(format!("{op}: prefix length is longer than 32")))?;
        let dev = match r.dev {
            Some(d) => Some(
                CString::new(d)
                    .map_err(|_| Error::Input(format!("{op}: device name has a NUL byte")))?,
            ),
            None => None,
        };
        // SAFETY: rtentry is plain C data (integers, sockaddrs, one pointer)
        // for which all-zero bytes are a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_v4(dest);
        rt.rt_genmask = sockaddr_v4(mask);
        rt.rt_flags = libc::RTF_UP;
        if r.prefix == 32 {
            rt.rt_flags |= libc::RTF_HOST;
        }
        if let Some(IpAddr::V4(gw)) = r.gateway {
            rt.rt_gateway = sockaddr_v4(gw);
            rt.rt_flags |= libc::RTF_GATEWAY;
        }
        if let Some(d) = &dev {
            // The kernel only reads through this pointer.
            rt.rt_dev = d.as_ptr().cast_mut();
        }
        Ok(RtEntry { rt, _dev: dev })
    }
}

/// `struct in6_rtmsg` from <linux/ipv6_route.h> (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

impl In6Rtmsg {
    /// The request for route `r` to `dest`; ENODEV if its device does not
    /// exist.
    fn new(dest: Ipv6Addr, r: RouteSpec) -> nix::Result<In6Rtmsg> {
        let unspecified = in6_addr(Ipv6Addr::UNSPECIFIED);
        let mut msg = In6Rtmsg {
            dst: in6_addr(dest),
            src: unspecified,
            gateway: unspecified,
            kind: 0,
            dst_len: u16::from(r.prefix),
            src_len: 0,
            metric: METRIC_V6,
            info: 0,
            flags: u32::from(libc::RTF_UP),
            ifindex: match r.dev {
                Some(d) => ifindex(d)?,
                None => 0,
            },
        };
        if r.prefix == 128 {
            msg.flags |= u32::from(libc::RTF_HOST);
        }
        if let Some(IpAddr::V6(gw)) = r.gateway {
            msg.gateway = in6_addr(gw);
            msg.flags |= u32::from(libc::RTF_GATEWAY);
        }
        Ok(msg)
    }
}
