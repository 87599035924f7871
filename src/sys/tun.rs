//! The TUN device: IP packets in and out, no packet-info header, each behind
//! a 10-byte virtio_net_hdr (IFF_VNET_HDR) so the kernel can hand over and
//! take TCP super-segments of up to 64 KiB (TUNSETOFFLOAD); see
//! [`crate::tun::offload`] for what the header says.
//!
//! The device is not persistent: it exists while the file descriptor is open
//! and disappears, with its addresses and routes, when the process exits.

use super::iface::ifreq;
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

mod raw {
    nix::ioctl_write_ptr_bad!(fionbio, libc::FIONBIO, libc::c_int);
    nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_int_bad!(tunsetoffload, libc::TUNSETOFFLOAD);
}

/// Checksum offload plus TCP segmentation offload for IPv4 and IPv6: the
/// kernel may send unfinished checksums and TCP super-segments.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates the TUN interface `name` (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR),
    /// attaches to it and turns its offloads on.
    pub fn open(name: &str) -> Result<Tun> {
        let mut req = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| Error::sys(format!("creating TUN interface {name} (/dev/net/tun)"), e))?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
        // SAFETY: `req` is a valid, initialised ifreq that outlives the call;
        // the kernel writes the interface name back into it.
        unsafe { raw::tunsetiff(file.as_raw_fd(), &mut req) }.map_err(|e| match e {
            // Another process has the TUN device of that name open.
            nix::errno::Errno::EBUSY => Error::Input(format!("interface {name} is already in use")),
            // The name belongs to an interface that is not a TUN device.
            nix::errno::Errno::EINVAL | nix::errno::Errno::EEXIST => Error::Input(format!(
                "interface {name} already exists and is not a free TUN device"
            )),
            e => Error::sys(format!("TUNSETIFF {name} (/dev/net/tun)"), e.into()),
        })?;
        let tun = Tun {
            file,
            name: name.to_string(),
        };
        tun.set_offloads()?;
        Ok(tun)
    }

    fn set_offloads(&self) -> Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        unsafe { raw::tunsetoffload(self.as_raw_fd(), OFFLOADS as libc::c_int) }.map_err(|e| {
            Error::sys(
                format!("TUNSETOFFLOAD {OFFLOADS:#x} on {}", self.name),
                e.into(),
            )
        })?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `read` and `write` return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self) -> Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one c_int through the pointer, which is live.
        unsafe { raw::fionbio(self.as_raw_fd(), &on) }
            .map_err(|e| Error::sys(format!("FIONBIO on {}", self.name()), e.into()))?;
        Ok(())
    }

    /// Reads one virtio_net_hdr and the packet behind it; `WouldBlock` when
    /// non-blocking and none is queued. A packet longer than `buf` is cut.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one virtio_net_hdr and packet.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Writes one virtio_net_hdr and packet gathered from several pieces
    /// (writev(2)).
    pub fn write_vectored(&self, bufs: &[IoSlice]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
