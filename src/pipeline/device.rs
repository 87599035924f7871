//! The kernel behind two small traits, so the whole pipeline runs over
//! in-memory fakes in `cargo test` (see [`super::fake`]) and over a real tun
//! device and UDP socket in `pipevpn up`.

use super::pool::{Batch, HEADROOM, NO_ADDR};
use crate::sys::poll::{wait_readable, Ready, StopFd};
use crate::sys::tun::Tun;
use crate::sys::udp::{recv_many, send_many, RecvMeta, MAX_BATCH};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// The tun side: IP packets in and out.
pub trait TunDevice: Send + Sync {
    /// Waits for packets, then reads what is ready into the free slots of
    /// `batch` (plaintext at [`HEADROOM`]). Returns false once `stop` is set.
    fn read_batch(&self, batch: &mut Batch, stop: &StopFd) -> io::Result<bool>;
    fn write_packet(&self, packet: &[u8]) -> io::Result<()>;
}

/// The UDP side: WireGuard datagrams to and from the peer.
pub trait UdpDevice: Send + Sync {
    /// Waits for datagrams, then receives what is ready into the free slots
    /// of `batch` (at offset 0, with source addresses). A datagram too big
    /// for a slot is pushed with length 0 and counted by the caller through
    /// the return value's second field. Returns None once `stop` is set.
    fn recv_batch(&self, batch: &mut Batch, stop: &StopFd) -> io::Result<Option<usize>>;
    /// Sends the datagrams of the given slots to `dest`.
    fn send_batch(&self, batch: &Batch, dest: SocketAddr) -> io::Result<()>;
    fn send_to(&self, datagram: &[u8], dest: SocketAddr) -> io::Result<()>;
}

/// Repeats a non-blocking `attempt` until it yields or `stop` is set,
/// sleeping in poll(2) on `fd` between tries.
fn read_when_ready<T>(
    fd: i32,
    stop: &StopFd,
    mut attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    loop {
        // Checked first: under constant traffic the device is always ready,
        // and a stop must still end the stage.
        if stop.is_set() {
            return Ok(None);
        }
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
        if let Some(Ready::Stopped) = wait_readable(fd, stop, None)? {
            return Ok(None);
        }
    }
}

impl TunDevice for Tun {
    fn read_batch(&self, batch: &mut Batch, stop: &StopFd) -> io::Result<bool> {
        let got = read_when_ready(self.as_raw_fd(), stop, || {
            while !batch.is_full() {
                let slot = batch.free_slots_mut().next().expect("batch not full");
                match self.read(&mut slot[HEADROOM..]) {
                    Ok(n) => batch.push(n, NO_ADDR),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok((batch.count() > 0).then_some(()))
        })?;
        Ok(got.is_some())
    }

    fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        self.write(packet).map(|_| ())
    }
}

impl UdpDevice for UdpSocket {
    fn recv_batch(&self, batch: &mut Batch, stop: &StopFd) -> io::Result<Option<usize>> {
        let mut meta = [RecvMeta {
            len: 0,
            addr: NO_ADDR,
            truncated: false,
        }; MAX_BATCH];
        read_when_ready(self.as_raw_fd(), stop, || {
            match recv_many(self, batch.free_slots_mut(), &mut meta) {
                Ok(n) => {
                    let mut truncated = 0;
                    for m in &meta[..n] {
                        truncated += usize::from(m.truncated);
                        batch.push(if m.truncated { 0 } else { m.len }, m.addr);
                    }
                    Ok(Some(truncated))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn send_batch(&self, batch: &Batch, dest: SocketAddr) -> io::Result<()> {
        let datagrams = (0..batch.count())
            .filter(|&i| batch.len(i) > 0)
            .map(|i| &batch.slot(i)[..batch.len(i)]);
        send_many(self, datagrams, dest).map(|_| ())
    }

    fn send_to(&self, datagram: &[u8], dest: SocketAddr) -> io::Result<()> {
        UdpSocket::send_to(self, datagram, dest).map(|_| ())
    }
}
