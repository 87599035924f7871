//! The kernel's UDP socket as a [`UdpDevice`]: sends with UDP GSO and
//! receives with UDP GRO where the kernel has them, cutting what arrives
//! into a batch's slots ([`crate::sys::udp`] holds the system calls).
//!
//! [`Udp::rebind`] moves the device to another port while the stages run
//! (`wg set listen-port`): the new socket takes the old one's descriptor,
//! so the senders use it from their next send and check nothing per batch
//! or packet; the receiver, which may be asleep in poll(2) on the old
//! socket, is woken by that socket's own stop flag, polled beside the
//! pipeline's.

use crate::pipeline::device::{run_datagrams, wait_for, Sent, UdpDevice, Unfit};
use crate::pipeline::pool::{Batch, MAX_DATAGRAM};
use crate::sys::poll::StopFd;
use crate::sys::udp::{
    bind_udp, enable_gro, enable_pktinfo, gso_supported, recv_many, replace_socket, send_many,
    set_mark, Endpoint, RecvMeta, MAX_BATCH,
};
use crate::{Error, Result};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// The kernel's UDP socket, sending with UDP GSO where the kernel has it and
/// until it refuses it (see [`send_many`]), and receiving through
/// `RecvBuffers`, with UDP GRO where the kernel has it.
pub struct Udp {
    /// The same descriptor for the device's life; [`Udp::rebind`] puts
    /// another socket behind it.
    sock: UdpSocket,
    gso: AtomicBool,
    received: Mutex<Receiving>,
    /// Signalled when the socket now behind `sock` is replaced (a fresh
    /// flag for each socket, since a stop flag stays set); held for the
    /// whole of a rebind, so rebinds go one at a time.
    replaced: Mutex<Arc<StopFd>>,
}

/// The receiver's own state: the buffers, and the `replaced` flag of the
/// socket it waits on.
struct Receiving {
    buffers: RecvBuffers,
    replaced: Arc<StopFd>,
}

impl Udp {
    pub fn new(sock: UdpSocket) -> Result<Udp> {
        let gso = AtomicBool::new(prepare(&sock));
        let replaced = Arc::new(StopFd::new()?);
        let received = Mutex::new(Receiving {
            buffers: RecvBuffers::new(),
            replaced: replaced.clone(),
        });
        Ok(Udp {
            sock,
            gso,
            received,
            replaced: Mutex::new(replaced),
        })
    }

    /// The address the socket is bound to now.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.sock
            .local_addr()
            .map_err(|e| Error::sys("reading the UDP socket's address", e))
    }

    /// Marks what the socket sends from now on with `mark` (see [`set_mark`]).
    pub fn set_mark(&self, mark: u32) -> Result<()> {
        set_mark(&self.sock, mark)
    }

    /// Moves to UDP `port` (0: one the kernel picks), as wireguard-go does
    /// for a new `listen_port`: a socket bound as the first one was (same
    /// address and family, dual-stack, buffers: [`bind_udp`]), marked with
    /// `mark` (0: none) and with the same options, replaces the old one,
    /// which closes. Returns the port now bound. On an error (the port is
    /// taken: EADDRINUSE) nothing changes and the old socket stays.
    pub fn rebind(&self, port: u16, mark: u32) -> Result<u16> {
        let mut replaced = self.replaced.lock().unwrap_or_else(PoisonError::into_inner);
        let mut addr = self.local_addr()?;
        addr.set_port(port);
        let new = bind_udp(addr)?;
        if mark != 0 {
            set_mark(&new, mark)?;
        }
        let gso = prepare(&new);
        let flag = Arc::new(StopFd::new()?);
        let bound = new
            .local_addr()
            .map_err(|e| Error::sys("reading the new UDP socket's address", e))?;
        replace_socket(&self.sock, new)?;
        self.gso.store(gso, Relaxed);
        // The receiver wakes, takes the new flag and waits on the new socket.
        std::mem::replace(&mut *replaced, flag).signal();
        Ok(bound.port())
    }
}

/// The descriptor, for socket options (it outlives every rebind).
impl AsFd for Udp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Sets a socket's receive options; returns whether it may send with GSO.
fn prepare(sock: &UdpSocket) -> bool {
    // Without GRO every message holds one datagram: the same path serves.
    if !enable_gro(sock) {
        log::debug!("UDP GRO refused: receiving datagrams one by one");
    }
    // Without it, answers go out from whichever address routing picks.
    if !enable_pktinfo(sock) {
        log::warn!("IP_PKTINFO refused: answers may come from another local address");
    }
    gso_supported(sock)
}

/// Largest buffer one GRO receive may fill: a whole UDP datagram's worth,
/// which an empty batch has room for.
const GRO_BUFFER: usize = MAX_DATAGRAM;

/// Where received messages wait to be cut into a batch's slots: each, a
/// lone datagram or (with UDP GRO) a burst of equal-sized ones from one
/// sender, lands in its own 64 KiB buffer and is cut into slots, one
/// datagram per slot. What does not fit the batch waits for the next one.
struct RecvBuffers {
    bufs: Box<[u8]>,
    meta: [RecvMeta; MAX_BATCH],
    /// Messages received into `bufs`.
    received: usize,
    /// The next datagram to cut: message index and offset in its buffer.
    next: (usize, usize),
}

impl RecvBuffers {
    fn new() -> RecvBuffers {
        RecvBuffers {
            // Pages are only touched as datagrams arrive.
            bufs: vec![0; MAX_BATCH * GRO_BUFFER].into_boxed_slice(),
            meta: [RecvMeta::default(); MAX_BATCH],
            received: 0,
            next: (0, 0),
        }
    }

    /// Receives what is ready without waiting, replacing the messages held
    /// (all of them must have been cut).
    fn receive(&mut self, sock: &UdpSocket) -> io::Result<()> {
        let n = recv_many(sock, self.bufs.chunks_exact_mut(GRO_BUFFER), &mut self.meta)?;
        (self.received, self.next) = (n, (0, 0));
        Ok(())
    }

    /// Whether every datagram received has been moved into a batch.
    fn all_cut(&self) -> bool {
        self.next.0 >= self.received
    }

    /// Moves received datagrams into the free space of `batch`, in order,
    /// until it is full or none is left. One longer than the room left waits
    /// for the next batch, which has room for any (see [`super::pool`]).
    fn cut(&mut self, batch: &mut Batch, unfit: &mut Unfit) {
        while !self.all_cut() && !batch.is_full() {
            let (m, offset) = self.next;
            let meta = self.meta[m];
            let (start, len, next) = datagram_at(&meta, offset);
            let fits = len <= batch.room();
            if !fits && batch.count() > 0 {
                return;
            }
            let kept = unfit.check(len, meta.truncated || !fits);
            if kept > 0 {
                let data = &self.bufs[m * GRO_BUFFER..][start..start + len];
                batch.free_mut()[..len].copy_from_slice(data);
            }
            let from = Endpoint {
                addr: meta.addr,
                local: meta.local,
            };
            batch.push_datagram(kept, from);
            self.next = next.map_or((m + 1, 0), |o| (m, o));
        }
    }
}

/// Where the datagram at `offset` (0, or an offset this returned) of a
/// received message lies: its start and length, and the offset of the next
/// one in the same buffer (`None`: the message is done). A buffer holds one
/// datagram, or with a GRO segment size datagrams of that size, the last
/// maybe shorter; of a truncated one only the first is taken (to be counted
/// as unfit). Public for the fuzz target (fuzz/fuzz_targets/udp_gro.rs).
pub fn datagram_at(meta: &RecvMeta, offset: usize) -> (usize, usize, Option<usize>) {
    let (start, len) = match meta.segment {
        0 => (0, meta.len),
        s => (offset, s.min(meta.len - offset)),
    };
    let end = start + len;
    let next = (end < meta.len && !meta.truncated).then_some(end);
    (start, len, next)
}

impl UdpDevice for Udp {
    fn wait_readable(&self, stop: &StopFd) -> io::Result<bool> {
        loop {
            let replaced = {
                let receiving = self.received.lock().unwrap_or_else(PoisonError::into_inner);
                // What is left of the last receive is ready.
                if !receiving.buffers.all_cut() {
                    return Ok(true);
                }
                receiving.replaced.clone()
            };
            if wait_for(self.sock.as_raw_fd(), [stop, &replaced])? {
                return Ok(true);
            }
            if stop.is_set() {
                return Ok(false);
            }
            // The socket was replaced ([`Udp::rebind`]): wait on the new one.
            let now = self
                .replaced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            self.received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replaced = now;
        }
    }

    fn try_recv_batch(&self, batch: &mut Batch) -> io::Result<Option<Unfit>> {
        // Held only while receiving, never while waiting.
        let mut receiving = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        let buffers = &mut receiving.buffers;
        let mut unfit = Unfit::default();
        buffers.cut(batch, &mut unfit);
        if batch.count() > 0 {
            // The rest of the last receive may fill only part of the batch
            // (long datagrams took the room of more, or a GRO run was cut in
            // two): top it up with what is ready, so batches stay full under
            // load. An error is met again by the next receive.
            if buffers.all_cut() && !batch.is_full() && buffers.receive(&self.sock).is_ok() {
                buffers.cut(batch, &mut unfit);
            }
            return Ok(Some(unfit));
        }
        match buffers.receive(&self.sock) {
            Ok(()) => {
                buffers.cut(batch, &mut unfit);
                Ok(Some(unfit))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send_batch(&self, batch: &Batch) -> Sent {
        let mut sent = Sent::default();
        for (dest, run) in batch.runs() {
            let datagrams = run_datagrams(batch, run);
            match send_many(&self.sock, datagrams.clone(), dest, &self.gso) {
                Ok(n) => sent.add(datagrams.take(n)),
                Err(e) => sent.error = Some(e),
            }
        }
        sent
    }

    fn send_to(&self, datagram: &[u8], dest: Endpoint) -> io::Result<()> {
        send_many(&self.sock, std::iter::once(datagram), dest, &self.gso).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::pool::{Pool, BATCH, NO_ADDR};
    use crate::sys::udp::Local;

    #[test]
    fn a_buffer_holds_one_datagram_or_a_run_of_segments() {
        let meta = |len, segment, truncated| RecvMeta {
            len,
            segment,
            truncated,
            ..RecvMeta::default()
        };
        assert_eq!(datagram_at(&meta(300, 0, false), 0), (0, 300, None));
        assert_eq!(datagram_at(&meta(250, 100, false), 0), (0, 100, Some(100)));
        assert_eq!(datagram_at(&meta(250, 100, false), 200), (200, 50, None));
        assert_eq!(datagram_at(&meta(250, 100, true), 0), (0, 100, None));
        assert_eq!(datagram_at(&meta(0, 100, false), 0), (0, 0, None));
    }

    /// A reader holding `messages` (length, segment size, source port),
    /// each buffer filled with its message index plus the segment's, each
    /// message received on local address 192.0.2.<source port>.
    fn reader(messages: &[(usize, usize, u16)]) -> RecvBuffers {
        let mut r = RecvBuffers::new();
        for (m, &(len, segment, port)) in messages.iter().enumerate() {
            let per = if segment == 0 { len.max(1) } else { segment };
            for (k, b) in r.bufs[m * GRO_BUFFER..][..len].iter_mut().enumerate() {
                *b = (m * 10 + k / per) as u8;
            }
            r.meta[m] = RecvMeta {
                len,
                addr: std::net::SocketAddr::from(([10, 0, 0, 1], port)),
                local: Some(Local {
                    addr: std::net::IpAddr::from([192, 0, 2, port as u8]),
                    ifindex: 7,
                }),
                truncated: false,
                segment,
            };
        }
        r.received = messages.len();
        r
    }

    #[test]
    fn runs_are_cut_into_slots_and_the_rest_waits_for_the_next_batch() {
        let pool = Pool::new(2, 256);
        let mut r = reader(&[(250, 100, 1), (40, 0, 2), (0, 0, 3), (300, 0, 4)]);
        let mut first = pool.get();
        for _ in 0..BATCH - 3 {
            first.push(1, NO_ADDR);
        }
        let mut unfit = Unfit::default();
        r.cut(&mut first, &mut unfit);
        assert!(first.is_full());
        let tail: Vec<_> = (BATCH - 3..BATCH)
            .map(|i| (first.len(i), first.slot(i)[0], first.addr(i).addr.port()))
            .collect();
        assert_eq!(tail, [(100, 0, 1), (100, 1, 1), (50, 2, 1)]);
        assert_eq!(unfit, Unfit::default());

        let mut second = pool.get();
        r.cut(&mut second, &mut unfit);
        let got: Vec<_> = (0..second.count()).map(|i| second.len(i)).collect();
        // Each datagram keeps its source and the local address its message reached.
        for (i, port) in [(0, 2), (1, 3), (2, 4)] {
            let addr = std::net::IpAddr::from([192, 0, 2, port as u8]);
            assert_eq!(second.addr(i).addr.port(), port);
            assert_eq!(second.addr(i).local, Some(Local { addr, ifindex: 7 }));
        }
        // The empty datagram takes an empty slot; the one longer than a
        // slot, only the room it fills.
        assert_eq!(got, [40, 0, 300]);
        assert_eq!(second.slot(0)[..40], [10; 40]);
        assert_eq!(second.slot(2).len(), 320);
        assert_eq!(second.slot(2)[..300], [30; 300]);
        assert_eq!((unfit.empty, unfit.oversized), (1, 0));
        r.cut(&mut second, &mut unfit);
        assert_eq!(second.count(), 3, "nothing is left");
    }

    /// Over loopback: the rest of a receive that leaves a batch part empty
    /// is topped up from the socket, so batches stay full under load.
    #[test]
    fn a_batch_left_part_empty_by_the_last_receive_is_topped_up() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let to = sock.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // 51 of the long ones fill a batch of 64 256-byte slots (320 bytes
        // each); one receive takes 64 datagrams.
        for len in [300; 60].into_iter().chain([10; 64]) {
            sender.send_to(&vec![len as u8; len], to).unwrap();
        }
        let (udp, stop) = (Udp::new(sock).unwrap(), StopFd::new().unwrap());
        let pool = Pool::new(3, 256);
        let lens = |b: &Batch| -> Vec<usize> { (0..b.count()).map(|i| b.len(i)).collect() };
        let mut first = pool.get();
        udp.recv_batch(&mut first, &stop).unwrap().unwrap();
        assert_eq!(lens(&first), [300; 51]);
        // 9 long and 4 short ones are left of that receive.
        let mut second = pool.get();
        udp.recv_batch(&mut second, &stop).unwrap().unwrap();
        assert_eq!(lens(&second), [[300; 9].as_slice(), &[10; 55]].concat());
        let mut third = pool.get();
        udp.recv_batch(&mut third, &stop).unwrap().unwrap();
        assert_eq!(lens(&third), [10; 9]);
    }

    #[test]
    fn a_datagram_longer_than_the_room_left_waits_for_the_next_batch() {
        let pool = Pool::new(3, 256);
        let room = BATCH * 256;
        let mut r = reader(&[(40, 0, 1), (room, 0, 2), (room + 1, 0, 3), (60, 0, 4)]);
        let mut unfit = Unfit::default();
        let mut first = pool.get();
        r.cut(&mut first, &mut unfit);
        assert_eq!((first.count(), first.len(0)), (1, 40));
        let mut second = pool.get();
        r.cut(&mut second, &mut unfit);
        assert!(second.is_full(), "one datagram fills the whole batch");
        assert_eq!((second.len(0), second.slot(0).len()), (room, room));
        assert!(second.slot(0).iter().all(|&b| b == 10));
        // Longer than any batch of this pool: dropped as oversized, and the
        // next one follows it.
        let mut third = pool.get();
        r.cut(&mut third, &mut unfit);
        assert_eq!((third.len(0), third.len(1), third.count()), (0, 60, 2));
        assert_eq!(third.addr(1).addr.port(), 4);
        assert_eq!(
            unfit,
            Unfit {
                oversized: 1,
                empty: 0
            }
        );
    }

    /// A rebind while the receiver sleeps in poll(2): the receiver wakes
    /// and receives on the new port, sends leave from it, the old port is
    /// free again; a port that is taken changes nothing.
    #[test]
    fn a_rebind_moves_the_receiver_and_the_sender_to_the_new_port() {
        let udp = Arc::new(Udp::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap());
        let old = udp.local_addr().unwrap();
        let stop = Arc::new(StopFd::new().unwrap());
        let (got_tx, got) = std::sync::mpsc::channel();
        let receiver = {
            let (udp, stop) = (udp.clone(), stop.clone());
            std::thread::spawn(move || {
                let pool = Pool::new(2, 256);
                loop {
                    let mut batch = pool.get();
                    if udp.recv_batch(&mut batch, &stop).unwrap().is_none() {
                        return;
                    }
                    let datagram = batch.slot(0)[..batch.len(0)].to_vec();
                    got_tx.send((datagram, batch.addr(0).addr)).unwrap();
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = udp
            .rebind(taken.local_addr().unwrap().port(), 0)
            .unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert_eq!(udp.local_addr().unwrap(), old, "nothing changed");

        let port = udp.rebind(0, 0).unwrap();
        let new = udp.local_addr().unwrap();
        assert_eq!((new.ip(), new.port()), (old.ip(), port));
        assert_ne!(port, old.port());
        peer.send_to(b"to the new port", new).unwrap();
        let timeout = std::time::Duration::from_secs(5);
        let (data, from) = got.recv_timeout(timeout).expect("received on the new port");
        assert_eq!(
            (&data[..], from),
            (&b"to the new port"[..], peer.local_addr().unwrap())
        );
        // Sent from the new port too, and the old one is closed.
        udp.send_to(b"back", Endpoint::from(peer.local_addr().unwrap()))
            .unwrap();
        let mut buf = [0; 16];
        peer.set_read_timeout(Some(timeout)).unwrap();
        let (n, src) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], src), (&b"back"[..], new));
        UdpSocket::bind(old).expect("the old port is free");

        stop.signal();
        receiver.join().unwrap();
        assert!(got.try_recv().is_err(), "nothing else arrived");
    }
}
