//! Interface configuration through the classic ioctls: IPv4 address and
//! netmask, IPv6 address, MTU, up; plus the interface's IPv6 settings.
//!
//! Call order that works: [`set_mtu`] (IPv6 needs at least 1280 and drops
//! the interface's IPv6 addresses below that), then either [`disable_ipv6`]
//! or [`enable_static_ipv6`], then [`set_ipv4_address`] (which also resets
//! the mask to the classful default), [`set_ipv4_netmask`],
//! [`set_ipv6_address`], and [`set_up`] last, so the kernel never starts
//! IPv6 autoconfiguration on the tunnel.

use super::{control_socket, in6_addr, sockaddr_v4};
use crate::{Error, Result};
use nix::sys::socket::AddressFamily;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

mod raw {
    nix::ioctl_write_ptr_bad!(siocsifaddr, libc::SIOCSIFADDR, libc::ifreq);
    nix::ioctl_write_ptr_bad!(siocsifaddr6, libc::SIOCSIFADDR, libc::in6_ifreq);
    nix::ioctl_write_ptr_bad!(siocsifnetmask, libc::SIOCSIFNETMASK, libc::ifreq);
    nix::ioctl_write_ptr_bad!(siocsifmtu, libc::SIOCSIFMTU, libc::ifreq);
    nix::ioctl_read_bad!(siocgifmtu, libc::SIOCGIFMTU, libc::ifreq);
    nix::ioctl_write_ptr_bad!(siocsifflags, libc::SIOCSIFFLAGS, libc::ifreq);
    nix::ioctl_read_bad!(siocgifflags, libc::SIOCGIFFLAGS, libc::ifreq);
}

/// Checks that `name` is usable as a Linux interface name as given: 1 to 15
/// bytes, none of `/ : %`, whitespace or NUL (the kernel would reject, or
/// for `%d` rename, such a name).
pub fn validate_name(name: &str) -> Result<()> {
    let bad_char = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '%' | '\0') || c.is_whitespace());
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        Err(Error::Input(format!(
            "interface name '{name}' must be 1 to {} bytes long",
            libc::IFNAMSIZ - 1
        )))
    } else if let Some(c) = bad_char {
        Err(Error::Input(format!(
            "interface name '{name}' contains '{}', which is not allowed",
            c.escape_default()
        )))
    } else {
        Ok(())
    }
}

/// An ifreq naming `name`, everything else zero.
/// `name` may be an address label `NAME:N`, which names an alias of NAME
/// (how an interface gets more than one IPv4 address through ioctls).
pub(super) fn ifreq(name: &str) -> Result<libc::ifreq> {
    let base = match name.split_once(':') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    validate_name(base)?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(Error::Input(format!(
            "address label '{name}' is longer than {} bytes",
            libc::IFNAMSIZ - 1
        )));
    }
    // SAFETY: ifreq is plain C data (a name array and a union of integers,
    // sockaddrs and pointers) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// Sets the interface's IPv4 address (SIOCSIFADDR).
pub fn set_ipv4_address(name: &str, addr: Ipv4Addr) -> Result<()> {
    let op = format!("SIOCSIFADDR {addr} on {name}");
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    let sock = control_socket(AddressFamily::Inet, &op)?;
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call.
    unsafe { raw::siocsifaddr(sock.as_raw_fd(), &req) }.map_err(|e| Error::sys(op, e.into()))?;
    Ok(())
}

/// Sets the interface's IPv4 netmask from a prefix length (SIOCSIFNETMASK).
pub fn set_ipv4_netmask(name: &str, prefix_len: u8) -> Result<()> {
    let op = format!("SIOCSIFNETMASK /{prefix_len} on {name}");
    let mask = prefix_mask(prefix_len)
        .ok_or_else(|| Error::Input(format!("{op}: prefix length is longer than 32")))?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
    let sock = control_socket(AddressFamily::Inet, &op)?;
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call.
    unsafe { raw::siocsifnetmask(sock.as_raw_fd(), &req) }.map_err(|e| Error::sys(op, e.into()))?;
    Ok(())
}

/// Adds an IPv6 address with its prefix length to the interface
/// (SIOCSIFADDR on an AF_INET6 socket, which adds rather than replaces).
pub fn set_ipv6_address(name: &str, addr: Ipv6Addr, prefix_len: u8) -> Result<()> {
    validate_name(name)?;
    let op = format!("SIOCSIFADDR {addr}/{prefix_len} on {name}");
    if prefix_len > 128 {
        return Err(Error::Input(format!(
            "{op}: prefix length is longer than 128"
        )));
    }
    let req = libc::in6_ifreq {
        ifr6_addr: in6_addr(addr),
        ifr6_prefixlen: u32::from(prefix_len),
        ifr6_ifindex: ifindex(name).map_err(|e| Error::sys(op.clone(), e.into()))?,
    };
    let sock = control_socket(AddressFamily::Inet6, &op)?;
    // SAFETY: `req` is a valid, initialised in6_ifreq that outlives the call.
    unsafe { raw::siocsifaddr6(sock.as_raw_fd(), &req) }.map_err(|e| Error::sys(op, e.into()))?;
    Ok(())
}

/// The index of interface `name`; ENODEV when there is none.
pub(crate) fn ifindex(name: &str) -> nix::Result<libc::c_int> {
    let index = nix::net::if_::if_nametoindex(name)?;
    libc::c_int::try_from(index).map_err(|_| nix::errno::Errno::EOVERFLOW)
}

/// The IPv4 netmask of a prefix length, `None` above 32.
pub(crate) fn prefix_mask(prefix_len: u8) -> Option<Ipv4Addr> {
    (prefix_len <= 32).then(|| {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0),
        )
    })
}

/// Sets the interface MTU (SIOCSIFMTU).
pub fn set_mtu(name: &str, mtu: u32) -> Result<()> {
    let op = format!("SIOCSIFMTU {mtu} on {name}");
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu =
        libc::c_int::try_from(mtu).map_err(|_| Error::Input(format!("{op}: MTU is too large")))?;
    let sock = control_socket(AddressFamily::Inet, &op)?;
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call.
    unsafe { raw::siocsifmtu(sock.as_raw_fd(), &req) }.map_err(|e| Error::sys(op, e.into()))?;
    Ok(())
}

/// The interface's MTU (SIOCGIFMTU).
pub fn mtu(name: &str) -> Result<u32> {
    let op = format!("SIOCGIFMTU on {name}");
    let mut req = ifreq(name)?;
    let sock = control_socket(AddressFamily::Inet, &op)?;
    // SAFETY: `req` is a valid ifreq the kernel fills in; it outlives the call.
    unsafe { raw::siocgifmtu(sock.as_raw_fd(), &mut req) }.map_err(|e| Error::sys(op, e.into()))?;
    // SAFETY: SIOCGIFMTU wrote the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Brings the interface up: reads its flags and writes them back with
/// IFF_UP | IFF_RUNNING added, so other flags stay as they are.
pub fn set_up(name: &str) -> Result<()> {
    let sock = control_socket(AddressFamily::Inet, &format!("bringing {name} up"))?;
    let flags = get_flags(&sock, name)?;
    set_flags(
        &sock,
        name,
        flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short,
    )
}

fn get_flags(sock: &OwnedFd, name: &str) -> Result<libc::c_short> {
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid ifreq the kernel fills in; it outlives the call.
    unsafe { raw::siocgifflags(sock.as_raw_fd(), &mut req) }
        .map_err(|e| Error::sys(format!("SIOCGIFFLAGS on {name}"), e.into()))?;
    // SAFETY: SIOCGIFFLAGS wrote the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

fn set_flags(sock: &OwnedFd, name: &str, flags: libc::c_short) -> Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call.
    unsafe { raw::siocsifflags(sock.as_raw_fd(), &req) }
        .map_err(|e| Error::sys(format!("SIOCSIFFLAGS {flags:#x} on {name}"), e.into()))?;
    Ok(())
}

/// Turns IPv6 off on the interface so the kernel sends no router
/// solicitations or other autoconfiguration traffic into the tunnel. A kernel
/// without IPv6 has nothing to turn off; that is not an error.
pub fn disable_ipv6(name: &str) -> Result<()> {
    match write_ipv6_conf(name, "disable_ipv6", "1") {
        Err(Error::Sys { source, .. })
            if source.kind() == io::ErrorKind::NotFound && !ipv6_in_kernel() =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Turns IPv6 on for static addresses only: no link-local address (so no
/// router solicitations either), no router advertisements, no
/// autoconfiguration. Call it while the interface is down.
pub fn enable_static_ipv6(name: &str) -> Result<()> {
    // addr_gen_mode 1 = IN6_ADDR_GEN_MODE_NONE.
    for (key, value) in [
        ("accept_ra", "0"),
        ("autoconf", "0"),
        ("addr_gen_mode", "1"),
        ("disable_ipv6", "0"),
    ] {
        write_ipv6_conf(name, key, value)?;
    }
    Ok(())
}

/// Writes `value` to /proc/sys/net/ipv6/conf/`name`/`key`.
fn write_ipv6_conf(name: &str, key: &str, value: &str) -> Result<()> {
    validate_name(name)?;
    let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
    std::fs::write(&path, value).map_err(|e| Error::sys(format!("writing {value} to {path}"), e))
}

fn ipv6_in_kernel() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("pv0").is_ok());
        assert!(validate_name("abcdefghijklmno").is_ok());
        assert!(validate_name("abcdefghijklmnop").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("pv%d").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("eth0:1").is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(0), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(prefix_mask(1), Some(Ipv4Addr::new(128, 0, 0, 0)));
        assert_eq!(prefix_mask(24), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(prefix_mask(32), Some(Ipv4Addr::BROADCAST));
        assert_eq!(prefix_mask(33), None);
    }
}
