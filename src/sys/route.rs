//! IPv4 routes in the main table through SIOCADDRT / SIOCDELRT.

use super::iface::prefix_mask;
use super::{inet_control_socket, sockaddr_v4};
use crate::routes::RouteV4;
use crate::{Error, Result};
use std::ffi::CString;
use std::os::fd::AsRawFd;

mod raw {
    nix::ioctl_write_ptr_bad!(siocaddrt, libc::SIOCADDRT, libc::rtentry);
    nix::ioctl_write_ptr_bad!(siocdelrt, libc::SIOCDELRT, libc::rtentry);
}

/// Adds `r`. Returns `Ok(true)` when the kernel added it and `Ok(false)` when
/// the identical route was already there (EEXIST): such a route belongs to
/// someone else, so the caller must not record it as its own or delete it.
pub fn add_route_v4(r: &RouteV4) -> Result<bool> {
    let op = format!("SIOCADDRT {r}");
    let entry = RtEntry::new(r, &op)?;
    let sock = inet_control_socket(&op)?;
    // SAFETY: `entry.rt` is initialised and, with the device name it points
    // to, lives until the call returns.
    match unsafe { raw::siocaddrt(sock.as_raw_fd(), &entry.rt) } {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        Err(e) => Err(Error::sys(op, e.into())),
    }
}

/// Deletes `r`. A route that is already gone counts as deleted: ESRCH, or
/// ENODEV when its device no longer exists (the kernel dropped the device's
/// routes with it, as happens to a crashed run's TUN routes).
pub fn del_route_v4(r: &RouteV4) -> Result<()> {
    let op = format!("SIOCDELRT {r}");
    let entry = RtEntry::new(r, &op)?;
    let sock = inet_control_socket(&op)?;
    // SAFETY: as in `add_route_v4`.
    match unsafe { raw::siocdelrt(sock.as_raw_fd(), &entry.rt) } {
        Ok(_) | Err(nix::errno::Errno::ESRCH | nix::errno::Errno::ENODEV) => Ok(()),
        Err(e) => Err(Error::sys(op, e.into())),
    }
}

/// An rtentry together with the device name it points at, so the name lives
/// as long as the entry (a CString's bytes do not move with it).
struct RtEntry {
    rt: libc::rtentry,
    _dev: Option<CString>,
}

impl RtEntry {
    fn new(r: &RouteV4, op: &str) -> Result<RtEntry> {
        let mask = prefix_mask(r.prefix)
            .ok_or_else(|| Error::Input(format!("{op}: prefix length is longer than 32")))?;
        let dev = match &r.dev {
            Some(d) => Some(
                CString::new(d.as_str())
                    .map_err(|_| Error::Input(format!("{op}: device name has a NUL byte")))?,
            ),
            None => None,
        };
        // SAFETY: rtentry is plain C data (integers, sockaddrs, one pointer)
        // for which all-zero bytes are a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_v4(r.dest);
        rt.rt_genmask = sockaddr_v4(mask);
        rt.rt_flags = libc::RTF_UP;
        if r.prefix == 32 {
            rt.rt_flags |= libc::RTF_HOST;
        }
        if let Some(gw) = r.gateway {
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
