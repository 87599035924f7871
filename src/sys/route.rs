//! Routes in the main table through SIOCADDRT / SIOCDELRT: an `rtentry` on
//! an AF_INET socket for IPv4, an `in6_rtmsg` on an AF_INET6 socket for IPv6.
//! Those carry no table, so a route into a numbered table (wg-quick's
//! `Table = N`) goes through rtnetlink instead: RTM_NEWROUTE / RTM_DELROUTE
//! with RTA_TABLE.

use super::iface::{ifindex, prefix_mask};
use super::{control_socket, in6_addr, netlink, sockaddr_v4};
use crate::{Error, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily as NlFamily, RouteNetlinkMessage};
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
/// metric. (IPv4 routes keep the ioctl's default, 0.) Routes in a numbered
/// table have the same metrics.
const METRIC_V6: u32 = 1;

/// A route as the kernel calls take it, borrowed from the caller's own
/// route type, so that this layer depends on nothing above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec<'a> {
    pub dest: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dev: Option<&'a str>,
    /// A routing table by number; `None` is the main table, through the
    /// ioctls.
    pub table: Option<u32>,
}

/// `0.0.0.0/1 dev pv0`, `fd00::7/128 via fe80::1 dev eth0`,
/// `10.0.0.0/8 dev pv0 table 1234`: the form `ip route` uses.
impl fmt::Display for RouteSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dest, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(table) = self.table {
            write!(f, " table {table}")?;
        }
        Ok(())
    }
}

/// Adds `r`. Returns `Ok(true)` when the kernel added it and `Ok(false)` when
/// the identical route was already there (EEXIST): such a route belongs to
/// someone else, so the caller must not record it as its own or delete it.
pub fn add_route(r: RouteSpec) -> Result<bool> {
    let (op, result) = route_call(r, Action::Add)?;
    match result {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(Error::sys(op, e.into())),
    }
}

/// Deletes `r`. A route that is already gone counts as deleted: ESRCH, or
/// ENODEV when its device no longer exists (the kernel dropped the device's
/// routes with it, as happens to a crashed run's TUN routes).
pub fn del_route(r: RouteSpec) -> Result<()> {
    let (op, result) = route_call(r, Action::Del)?;
    match result {
        Ok(()) | Err(Errno::ESRCH | Errno::ENODEV) => Ok(()),
        Err(e) => Err(Error::sys(op, e.into())),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Add,
    Del,
}

/// Makes the `action` call for `r`: an ioctl for the main table, an
/// rtnetlink request for a numbered one. Returns the call and the route,
/// for errors, and the call's errno (also ENODEV from looking up the
/// device); the outer error is a failure to get that far.
fn route_call(r: RouteSpec, action: Action) -> Result<(String, nix::Result<()>)> {
    let call = match (r.table, action) {
        (None, Action::Add) => "SIOCADDRT",
        (None, Action::Del) => "SIOCDELRT",
        (Some(_), Action::Add) => "RTM_NEWROUTE",
        (Some(_), Action::Del) => "RTM_DELROUTE",
    };
    let op = format!("{call} {r}");
    if r.gateway.is_some_and(|gw| gw.is_ipv4() != r.dest.is_ipv4()) {
        return Err(Error::Input(format!(
            "{op}: the gateway is not of the route's address family"
        )));
    }
    let result = match r.table {
        None => route_ioctl(r, action, &op)?,
        Some(table) => route_netlink(r, table, action, &op)?,
    };
    Ok((op, result))
}

/// The rtnetlink request for `r` in `table`.
fn route_netlink(r: RouteSpec, table: u32, action: Action, op: &str) -> Result<nix::Result<()>> {
    let oif = match r.dev.map(ifindex).transpose() {
        Ok(oif) => oif.map(libc::c_int::unsigned_abs),
        Err(e) => return Ok(Err(e)),
    };
    let msg = route_message(r, table, oif, action);
    match action {
        Action::Add => netlink::request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            op,
        ),
        Action::Del => netlink::request(RouteNetlinkMessage::DelRoute(msg), 0, op),
    }
}

/// The body of RTM_NEWROUTE / RTM_DELROUTE for `r` in `table` through
/// interface `oif`, as `ip route add|del ... table N` sends it: an added
/// route is a unicast one of protocol "boot" (the ioctls' too), scope link
/// without a gateway; a deletion leaves type, protocol and scope open so
/// that they match whatever the route has. The header's table byte holds
/// numbers below 256, RTA_TABLE every number.
fn route_message(r: RouteSpec, table: u32, oif: Option<u32>, action: Action) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match r.dest {
        IpAddr::V4(_) => NlFamily::Inet,
        IpAddr::V6(_) => NlFamily::Inet6,
    };
    msg.header.destination_prefix_length = r.prefix;
    msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    (msg.header.kind, msg.header.protocol, msg.header.scope) = match (action, r.gateway) {
        (Action::Add, None) => (RouteType::Unicast, RouteProtocol::Boot, RouteScope::Link),
        (Action::Add, Some(_)) => (
            RouteType::Unicast,
            RouteProtocol::Boot,
            RouteScope::Universe,
        ),
        (Action::Del, _) => (
            RouteType::Unspec,
            RouteProtocol::Unspec,
            RouteScope::NoWhere,
        ),
    };
    msg.attributes.push(RouteAttribute::Table(table));
    msg.attributes
        .push(RouteAttribute::Destination(r.dest.into()));
    if let Some(gw) = r.gateway {
        msg.attributes.push(RouteAttribute::Gateway(gw.into()));
    }
    if let Some(oif) = oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if r.dest.is_ipv6() {
        msg.attributes.push(RouteAttribute::Priority(METRIC_V6));
    }
    msg
}

/// Makes the `action` ioctl for `r` on a socket of its family; the inner
/// error is the call's errno.
fn route_ioctl(r: RouteSpec, action: Action, op: &str) -> Result<nix::Result<()>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(dest: &str, prefix: u8, gateway: Option<&str>, table: u32) -> RouteSpec<'a> {
        RouteSpec {
            dest: dest.parse().unwrap(),
            prefix,
            gateway: gateway.map(|g| g.parse().unwrap()),
            dev: Some("pv0"),
            table: Some(table),
        }
    }

    #[test]
    fn numbered_table_routes_are_shown_with_their_table() {
        assert_eq!(
            spec("10.0.0.0", 8, None, 1234).to_string(),
            "10.0.0.0/8 dev pv0 table 1234"
        );
        assert_eq!(
            route_call(spec("10.0.0.0", 8, Some("fe80::1"), 7), Action::Add)
                .unwrap_err()
                .to_string(),
            "RTM_NEWROUTE 10.0.0.0/8 via fe80::1 dev pv0 table 7: the gateway is not of the \
             route's address family"
        );
    }

    #[test]
    fn route_messages_name_the_table_and_the_route() {
        let add = route_message(spec("10.0.0.0", 8, None, 1234), 1234, Some(9), Action::Add);
        assert_eq!(add.header.address_family, NlFamily::Inet);
        assert_eq!(add.header.destination_prefix_length, 8);
        // Above 255 the header's byte says "unspecified" and RTA_TABLE rules.
        assert_eq!(add.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(
            (add.header.kind, add.header.protocol, add.header.scope),
            (RouteType::Unicast, RouteProtocol::Boot, RouteScope::Link)
        );
        assert_eq!(
            add.attributes,
            [
                RouteAttribute::Table(1234),
                RouteAttribute::Destination("10.0.0.0".parse::<IpAddr>().unwrap().into()),
                RouteAttribute::Oif(9),
            ]
        );
        let host6 = spec("2a00::7", 128, Some("fe80::1"), 100);
        let add6 = route_message(host6, 100, Some(3), Action::Add);
        assert_eq!(add6.header.address_family, NlFamily::Inet6);
        assert_eq!(add6.header.table, 100);
        assert_eq!(add6.header.scope, RouteScope::Universe);
        assert_eq!(
            add6.attributes,
            [
                RouteAttribute::Table(100),
                RouteAttribute::Destination(host6.dest.into()),
                RouteAttribute::Gateway(host6.gateway.unwrap().into()),
                RouteAttribute::Oif(3),
                RouteAttribute::Priority(METRIC_V6),
            ]
        );
        let del = route_message(host6, 100, None, Action::Del);
        assert_eq!(
            (del.header.kind, del.header.protocol, del.header.scope),
            (
                RouteType::Unspec,
                RouteProtocol::Unspec,
                RouteScope::NoWhere
            )
        );
        assert_eq!(del.attributes.len(), 4, "{:?}", del.attributes);
    }
}
