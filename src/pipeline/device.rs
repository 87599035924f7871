//! The kernel behind two small traits, so the whole pipeline runs over
//! in-memory fakes in `cargo test` (see [`super::fake`]) and over a real tun
//! device and UDP socket in `pipevpn up` ([`crate::tun::OffloadTun`],
//! [`crate::udp::Udp`]).

use super::pool::Batch;
use crate::sys::poll::{wait_readable_or, Ready, StopFd};
use crate::sys::udp::Endpoint;
use std::io;

/// The tun side: IP packets in and out. Reads are split into a wait and a
/// read that never blocks, so that another thread than the tun_reader may
/// take what is ready (see [`super::outbound::Reading`]): both are safe
/// from two threads at once.
pub trait TunDevice: Send + Sync {
    /// Waits until a read may find packets; false once `stop` is set (or
    /// the device is gone for good).
    fn wait_readable(&self, stop: &StopFd) -> io::Result<bool>;
    /// Reads what is ready into the free slots of `batch` (plaintext at
    /// [`HEADROOM`](super::pool::HEADROOM)) without waiting. Returns how
    /// many packets read from the device could not be made into slots
    /// (dropped), or None when nothing was ready.
    fn try_read_batch(&self, batch: &mut Batch) -> io::Result<Option<usize>>;
    /// Waits for packets, then reads what is ready; None once `stop` is set.
    fn read_batch(&self, batch: &mut Batch, stop: &StopFd) -> io::Result<Option<usize>> {
        wait_then(
            stop,
            |stop| self.wait_readable(stop),
            || self.try_read_batch(batch),
        )
    }
    /// Writes the packets of `batch` (plaintext at [`HEADROOM`](super::pool::HEADROOM)); may
    /// rewrite the slots while doing so.
    fn write_batch(&self, batch: &mut Batch) -> Written;
}

/// What became of the packets of a batch written to the tun.
#[derive(Debug, Default)]
pub struct Written {
    pub packets: usize,
    pub bytes: usize,
    /// Packets lost to failed writes.
    pub failed: usize,
    /// The last write error.
    pub error: Option<io::Error>,
}

/// The UDP side: WireGuard datagrams to and from the peer. Receives are a
/// wait and a receive that never blocks, as the [`TunDevice`]'s reads.
pub trait UdpDevice: Send + Sync {
    /// Waits until a receive may find datagrams; false once `stop` is set.
    fn wait_readable(&self, stop: &StopFd) -> io::Result<bool>;
    /// Receives what is ready into the free space of `batch` (one slot
    /// each, [`Batch::push_datagram`], at offset 0, with source addresses)
    /// without waiting; one longer than the room left waits for the next
    /// batch. A datagram that is empty or too big for an empty batch takes
    /// a slot of length 0 and is reported in [`Unfit`] for the caller to
    /// count. Returns None when nothing was ready.
    fn try_recv_batch(&self, batch: &mut Batch) -> io::Result<Option<Unfit>>;
    /// Waits for datagrams, then receives what is ready; None once `stop`
    /// is set.
    fn recv_batch(&self, batch: &mut Batch, stop: &StopFd) -> io::Result<Option<Unfit>> {
        wait_then(
            stop,
            |stop| self.wait_readable(stop),
            || self.try_recv_batch(batch),
        )
    }
    /// Sends the datagrams of `batch`, each to its slot's address: one send
    /// per run of slots for the same address ([`Batch::runs`]), so a GSO run
    /// ends where the destination changes. Returns what was really sent.
    fn send_batch(&self, batch: &Batch) -> Sent;
    fn send_to(&self, datagram: &[u8], dest: Endpoint) -> io::Result<()>;
}

/// What became of the datagrams of a batch sent.
#[derive(Debug, Default)]
pub struct Sent {
    pub datagrams: usize,
    pub bytes: usize,
    /// The last send error; the datagrams not counted were lost to it.
    pub error: Option<io::Error>,
}

impl Sent {
    /// Counts `datagrams` as sent.
    pub fn add<'a>(&mut self, datagrams: impl Iterator<Item = &'a [u8]>) {
        for d in datagrams {
            self.datagrams += 1;
            self.bytes += d.len();
        }
    }
}

/// The datagrams of the slots in `run` that hold one.
pub fn run_datagrams(
    batch: &Batch,
    run: std::ops::Range<usize>,
) -> impl Iterator<Item = &[u8]> + Clone {
    run.filter(|&i| batch.len(i) > 0)
        .map(|i| &batch.slot(i)[..batch.len(i)])
}

/// Datagrams a receive took off the socket but could not keep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unfit {
    pub oversized: usize,
    pub empty: usize,
}

impl Unfit {
    /// Notes a datagram of `len` bytes (`truncated` if it did not fit);
    /// returns the length to keep, 0 for one that is unfit.
    pub fn check(&mut self, len: usize, truncated: bool) -> usize {
        if truncated {
            self.oversized += 1;
            0
        } else {
            self.empty += usize::from(len == 0);
            len
        }
    }
}

/// Repeats `wait` and a non-blocking `attempt` until the attempt yields or
/// the wait says to stop: a device's blocking read. Another thread may
/// take what woke the wait, so an attempt can find nothing.
fn wait_then<T>(
    stop: &StopFd,
    mut wait: impl FnMut(&StopFd) -> io::Result<bool>,
    mut attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    while wait(stop)? {
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Sleeps in poll(2) until `fd` is readable or one of `stops` is set (the
/// same one twice for one); false for a stop: how a device's wait honours
/// `stop`.
pub fn wait_for(fd: i32, stops: [&StopFd; 2]) -> io::Result<bool> {
    // Checked first: under constant traffic the device is always ready,
    // and a stop must still end the stage.
    if stops.iter().any(|s| s.is_set()) {
        return Ok(false);
    }
    Ok(wait_readable_or(fd, stops, None)? != Some(Ready::Stopped))
}
