//! The TUN device: IP packets in and out, no packet-info header.
//!
//! The device is not persistent: it exists while the file descriptor is open
//! and disappears, with its addresses and routes, when the process exits.

use super::iface::validate_name;
use crate::{Error, Result};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tun_tap::{Iface, Mode};

mod raw {
    nix::ioctl_write_ptr_bad!(fionbio, libc::FIONBIO, libc::c_int);
}

#[derive(Debug)]
pub struct Tun {
    iface: Iface,
}

impl Tun {
    /// Creates the TUN interface `name` (IFF_TUN | IFF_NO_PI) and attaches to it.
    pub fn open(name: &str) -> Result<Tun> {
        validate_name(name)?;
        Iface::without_packet_info(name, Mode::Tun)
            .map(|iface| Tun { iface })
            .map_err(|e| match e.raw_os_error() {
                // Another process has the TUN device of that name open.
                Some(libc::EBUSY) => Error::Input(format!("interface {name} is already in use")),
                // The name belongs to an interface that is not a TUN device.
                Some(libc::EINVAL | libc::EEXIST) => Error::Input(format!(
                    "interface {name} already exists and is not a free TUN device"
                )),
                _ => Error::sys(format!("creating TUN interface {name} (/dev/net/tun)"), e),
            })
    }

    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// Makes `read` and `write` return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self) -> Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one c_int through the pointer, which is live.
        unsafe { raw::fionbio(self.as_raw_fd(), &on) }
            .map_err(|e| Error::sys(format!("FIONBIO on {}", self.name()), e.into()))?;
        Ok(())
    }

    /// Reads one packet; `WouldBlock` when non-blocking and none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.iface.recv(buf)
    }

    /// Writes one packet.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.iface.send(buf)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
}
