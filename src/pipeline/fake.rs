//! In-memory tun and UDP devices, so the pipeline runs in `cargo test` (and in
//! the criterion benchmark) without root. Their channels are bounded, so a
//! slow consumer pushes back exactly as a full kernel queue would.

use super::device::{run_datagrams, Sent, TunDevice, UdpDevice, Unfit, Written};
use super::pool::{Batch, HEADROOM, NO_ADDR};
use crate::sys::poll::StopFd;
use crate::sys::udp::{Endpoint, Local};
use crossbeam_channel::{bounded, Receiver, Select, Sender, TryRecvError};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How often a blocked fake read looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `rx` has an item or every sender is gone (true: a read
/// finds which), or stop is set or a read found every sender gone
/// (`closed`; false), without taking the item: a reader of the same device
/// on another thread may take it first.
fn wait_ready<T>(rx: &Receiver<T>, closed: &AtomicBool, stop: &StopFd) -> bool {
    let mut sel = Select::new();
    sel.recv(rx);
    while !stop.is_set() && !closed.load(Relaxed) {
        if sel.ready_timeout(POLL).is_ok() {
            return true;
        }
    }
    false
}

/// Takes whatever is ready without waiting, until `put` says the batch can
/// take no more; whether anything was taken. Sets `closed` when every
/// sender is gone.
fn take_ready<T>(
    rx: &Receiver<T>,
    closed: &AtomicBool,
    batch: &mut Batch,
    mut put: impl FnMut(&mut Batch, T) -> bool,
) -> bool {
    let mut took = false;
    while !batch.is_full() {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                closed.store(true, Relaxed);
                break;
            }
        };
        took = true;
        if !put(batch, item) {
            break;
        }
    }
    took
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "fake device closed")
}

/// A tun device whose "applications" are the test: it sends packets in
/// through [`FakeTunEnds::inject`] and reads what the pipeline delivered from
/// [`FakeTunEnds::delivered`].
pub struct FakeTun {
    from_apps: Receiver<Vec<u8>>,
    to_apps: Sender<Vec<u8>>,
    /// Answers to what is written, and how many to each packet.
    answers: Option<(Sender<Vec<u8>>, u8)>,
    reading: Mutex<()>,
    /// Every sender of `from_apps` is gone.
    closed: AtomicBool,
}

pub struct FakeTunEnds {
    pub inject: Sender<Vec<u8>>,
    pub delivered: Receiver<Vec<u8>>,
}

impl FakeTun {
    /// `capacity` packets may wait in each direction.
    pub fn new(capacity: usize) -> (FakeTun, FakeTunEnds) {
        FakeTun::answering(capacity, 0)
    }

    /// As [`FakeTun::new`], and each packet written is answered with
    /// `answers` packets, put in the device's own read queue before the
    /// write returns, as the kernel answers a ping inside the tun write that
    /// delivers it: each the packet with its IPv4 source and destination
    /// swapped and its last byte set to the answer's number (0, 1, ...).
    pub fn answering(capacity: usize, answers: u8) -> (FakeTun, FakeTunEnds) {
        let (inject, from_apps) = bounded(capacity);
        let (to_apps, delivered) = bounded(capacity);
        (
            FakeTun {
                answers: (answers > 0).then(|| (inject.clone(), answers)),
                from_apps,
                to_apps,
                reading: Mutex::default(),
                closed: AtomicBool::new(false),
            },
            FakeTunEnds { inject, delivered },
        )
    }
}

impl TunDevice for FakeTun {
    fn wait_readable(&self, stop: &StopFd) -> io::Result<bool> {
        Ok(wait_ready(&self.from_apps, &self.closed, stop))
    }

    fn try_read_batch(&self, batch: &mut Batch) -> io::Result<Option<usize>> {
        // One reader at a time, as the real tun's buffer lock: what one
        // read takes, in order, goes into one batch.
        let _reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        let took = take_ready(&self.from_apps, &self.closed, batch, |b, pkt: Vec<u8>| {
            let slot = b.free_slots_mut().next().expect("batch not full");
            let n = pkt.len().min(slot.len() - HEADROOM);
            slot[HEADROOM..HEADROOM + n].copy_from_slice(&pkt[..n]);
            b.push(n, NO_ADDR);
            true
        });
        Ok(took.then_some(0))
    }

    /// Packet by packet: the fake has no offloads.
    fn write_batch(&self, batch: &mut Batch) -> Written {
        let mut written = Written::default();
        for i in (0..batch.count()).filter(|&i| batch.len(i) > 0) {
            let len = batch.len(i);
            let packet = batch.slot(i)[HEADROOM..HEADROOM + len].to_vec();
            if let Some((answer, n)) = &self.answers {
                for k in 0..*n {
                    let _ = answer.try_send(answered(&packet, k));
                }
            }
            // Blocks when the test reads slowly: that is the backpressure.
            match self.to_apps.send(packet) {
                Ok(()) => {
                    written.packets += 1;
                    written.bytes += len;
                }
                Err(_) => {
                    written.failed += 1;
                    written.error = Some(closed());
                }
            }
        }
        written
    }
}

/// Answer number `k` to an IPv4 `packet` (see [`FakeTun::answering`]).
fn answered(packet: &[u8], k: u8) -> Vec<u8> {
    let mut a = packet.to_vec();
    if a.len() >= 20 {
        let (src, dst) = a[12..20].split_at_mut(4);
        src.swap_with_slice(dst);
    }
    if let Some(last) = a.last_mut() {
        *last = k;
    }
    a
}

type Datagram = (Vec<u8>, SocketAddr);

/// One end of an in-memory UDP network between pipelines.
pub struct FakeUdp {
    addr: SocketAddr,
    rx: Receiver<Datagram>,
    /// Every sender of `rx` is gone.
    closed: AtomicBool,
    /// A datagram longer than the room left in the last batch, for the next.
    held: Mutex<Option<Datagram>>,
    /// The ends this one reaches, by address.
    links: Vec<(SocketAddr, Sender<Datagram>)>,
    /// Datagrams sent to each destination, reached or not, for tests.
    sent_to: Mutex<HashMap<SocketAddr, usize>>,
    /// Datagrams sent by each thread, by its name: which stage sent them.
    sent_by: Mutex<HashMap<String, usize>>,
}

impl FakeUdp {
    fn new(addr: SocketAddr, rx: Receiver<Datagram>) -> FakeUdp {
        FakeUdp {
            addr,
            rx,
            closed: AtomicBool::new(false),
            held: Mutex::default(),
            links: Vec::new(),
            sent_to: Mutex::default(),
            sent_by: Mutex::default(),
        }
    }

    /// Two ends joined to each other; `capacity` datagrams may be in flight
    /// each way. A datagram to any other address is lost, as on a network.
    pub fn pair(a: SocketAddr, b: SocketAddr, capacity: usize) -> (FakeUdp, FakeUdp) {
        let (hub, mut spokes) = FakeUdp::star(a, &[b], capacity);
        (hub, spokes.remove(0))
    }

    /// A hub joined to each of the `spokes` (which reach only the hub), as
    /// a server with its clients; `capacity` datagrams may wait at each end.
    pub fn star(
        hub: SocketAddr,
        spokes: &[SocketAddr],
        capacity: usize,
    ) -> (FakeUdp, Vec<FakeUdp>) {
        let (hub_tx, hub_rx) = bounded(capacity);
        let mut center = FakeUdp::new(hub, hub_rx);
        let ends = spokes
            .iter()
            .map(|&addr| {
                let (tx, rx) = bounded(capacity);
                center.links.push((addr, tx));
                let mut end = FakeUdp::new(addr, rx);
                end.links.push((hub, hub_tx.clone()));
                end
            })
            .collect();
        (center, ends)
    }

    /// Counted once per run, not per datagram, to keep the benchmark's
    /// fake cheap.
    fn record(&self, dest: Endpoint, datagrams: usize) {
        let mut sent = self.sent_to.lock().unwrap_or_else(PoisonError::into_inner);
        *sent.entry(dest.addr).or_default() += datagrams;
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        let mut by = self.sent_by.lock().unwrap_or_else(PoisonError::into_inner);
        // The name is copied once per thread, not once per run.
        match by.get_mut(name) {
            Some(n) => *n += datagrams,
            None => {
                by.insert(name.to_owned(), datagrams);
            }
        }
    }

    /// A datagram to an address no link reaches is lost, as on a network.
    fn deliver(&self, datagram: &[u8], dest: Endpoint) -> io::Result<()> {
        match self.links.iter().find(|(addr, _)| *addr == dest.addr) {
            Some((_, tx)) => tx
                .send((datagram.to_vec(), self.addr))
                .map_err(|_| closed()),
            None => Ok(()),
        }
    }

    /// How many datagrams were sent to `dest` so far.
    pub fn sent_to(&self, dest: SocketAddr) -> usize {
        let sent = self.sent_to.lock().unwrap_or_else(PoisonError::into_inner);
        sent.get(&dest).copied().unwrap_or(0)
    }

    /// How many datagrams the thread named `thread` sent so far.
    pub fn sent_by(&self, thread: &str) -> usize {
        let by = self.sent_by.lock().unwrap_or_else(PoisonError::into_inner);
        by.get(thread).copied().unwrap_or(0)
    }
}

impl UdpDevice for FakeUdp {
    fn wait_readable(&self, stop: &StopFd) -> io::Result<bool> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_some() {
            return Ok(true);
        }
        drop(held);
        Ok(wait_ready(&self.rx, &self.closed, stop))
    }

    fn try_recv_batch(&self, batch: &mut Batch) -> io::Result<Option<Unfit>> {
        let mut unfit = Unfit::default();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let earlier = held.take();
        // As the real socket's: a datagram goes whole into the space left, or
        // waits for an empty batch; one longer than that is oversized.
        let mut put = |b: &mut Batch, (dgram, from): Datagram| {
            let truncated = dgram.len() > b.room();
            if truncated && b.count() > 0 {
                *held = Some((dgram, from));
                return false;
            }
            let len = dgram.len().min(b.room());
            b.free_mut()[..len].copy_from_slice(&dgram[..len]);
            let from = Endpoint {
                addr: from,
                local: Some(Local {
                    addr: self.addr.ip(),
                    ifindex: 0,
                }),
            };
            b.push_datagram(unfit.check(len, truncated), from);
            true
        };
        let took = match earlier {
            Some(d) => {
                put(batch, d);
                true
            }
            None => take_ready(&self.rx, &self.closed, batch, put),
        };
        Ok(took.then_some(unfit))
    }

    fn send_batch(&self, batch: &Batch) -> Sent {
        let mut sent = Sent::default();
        for (dest, run) in batch.runs() {
            let before = sent.datagrams;
            for d in run_datagrams(batch, run) {
                match self.deliver(d, dest) {
                    Ok(()) => sent.add(std::iter::once(d)),
                    Err(e) => sent.error = Some(e),
                }
            }
            self.record(dest, sent.datagrams - before);
        }
        sent
    }

    fn send_to(&self, datagram: &[u8], dest: Endpoint) -> io::Result<()> {
        self.deliver(datagram, dest)?;
        self.record(dest, 1);
        Ok(())
    }
}
