//! The kernel's tun device with its TCP offloads on: a [`TunDevice`] that
//! reads TCP super-segments and cuts them into packets, and writes a batch's
//! in-order segments of a flow as one ([`offload`] does the cutting and
//! joining, [`crate::sys::tun`] the ioctls).

pub mod offload;

use crate::pipeline::device::{wait_for, TunDevice, Written};
use crate::pipeline::pool::{Batch, BATCH, HEADROOM, NO_ADDR};
use crate::sys::poll::StopFd;
use crate::sys::tun::Tun;
use offload::{Coalescer, Segments, Split, VnetHdr, VNET_HDR_LEN};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// The kernel's tun device with its offloads on (see [`offload`]):
/// a read may bring a TCP super-segment, cut here into packets, and a write
/// may carry a batch's in-order segments of a flow as one.
pub struct OffloadTun {
    tun: Tun,
    reader: Mutex<Reader>,
    coalescer: Mutex<Coalescer>,
    /// The interface was deleted (`ip link del`): nothing more comes.
    gone: AtomicBool,
}

/// The tun_reader's buffer: one read from the device, and what is left of
/// it when a super-segment had more packets than the batch had room.
struct Reader {
    buf: Box<[u8]>,
    pending: Option<Pending>,
}

struct Pending {
    len: usize,
    segments: Segments,
    next: usize,
}

// A plain packet is written with its virtio_net_hdr in the headroom.
const _: () = assert!(HEADROOM >= VNET_HDR_LEN);

impl OffloadTun {
    pub fn new(tun: Tun) -> OffloadTun {
        OffloadTun {
            tun,
            reader: Mutex::new(Reader {
                // A header and the largest super-segment, plus one byte to
                // tell a cut read from a full one.
                buf: vec![0; VNET_HDR_LEN + 65536].into_boxed_slice(),
                pending: None,
            }),
            coalescer: Mutex::default(),
            gone: AtomicBool::new(false),
        }
    }
}

impl Reader {
    /// Reads until `batch` is full or the device has nothing more; returns
    /// the packets dropped.
    fn fill(&mut self, tun: &Tun, batch: &mut Batch) -> io::Result<usize> {
        let mut dropped = 0;
        loop {
            dropped += self.drain(batch);
            if batch.is_full() {
                return Ok(dropped);
            }
            match tun.read(&mut self.buf) {
                Ok(n) => dropped += usize::from(!self.take(n, batch)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(dropped),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts a packet of `n` bytes just read into `batch` (not full), or
    /// keeps its segments pending. False when it must be dropped.
    fn take(&mut self, n: usize, batch: &mut Batch) -> bool {
        if n == self.buf.len() {
            return false; // cut
        }
        let Some((hdr, packet)) = self.buf[..n].split_first_chunk_mut() else {
            return false;
        };
        match offload::split(&VnetHdr::parse(hdr), packet) {
            Ok(Split::One) => {
                let slot = &mut batch.free_slots_mut().next().expect("batch not full")[HEADROOM..];
                let Some(dst) = slot.get_mut(..packet.len()) else {
                    return false;
                };
                dst.copy_from_slice(packet);
                batch.push(packet.len(), NO_ADDR);
                true
            }
            Ok(Split::Tcp(segments)) => {
                self.pending = Some(Pending {
                    len: n,
                    segments,
                    next: 0,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// Moves the pending segments into the free slots of `batch`; returns
    /// the packets dropped (1 for a super-segment whose packets do not fit a
    /// slot).
    fn drain(&mut self, batch: &mut Batch) -> usize {
        let Some(p) = &mut self.pending else {
            return 0;
        };
        let packet = &self.buf[VNET_HDR_LEN..p.len];
        while p.next < p.segments.count() {
            let Some(slot) = batch.free_slots_mut().next() else {
                return 0;
            };
            let Some(len) = p.segments.write(packet, p.next, &mut slot[HEADROOM..]) else {
                self.pending = None;
                return 1;
            };
            batch.push(len, NO_ADDR);
            p.next += 1;
        }
        self.pending = None;
        0
    }
}

impl TunDevice for OffloadTun {
    fn wait_readable(&self, stop: &StopFd) -> io::Result<bool> {
        if self.gone.load(Relaxed) {
            return Ok(false);
        }
        // Segments of a super-segment left over by the last read are ready.
        let pending = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .is_some();
        Ok(pending || wait_for(self.tun.as_raw_fd(), [stop, stop])?)
    }

    fn try_read_batch(&self, batch: &mut Batch) -> io::Result<Option<usize>> {
        // Held only while reading, never while waiting.
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        match reader.fill(&self.tun, batch) {
            Ok(dropped) => Ok((batch.count() > 0 || dropped > 0).then_some(dropped)),
            // Ending is no failure: whoever runs us sees the interface is gone.
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                self.gone.store(true, Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn write_batch(&self, batch: &mut Batch) -> Written {
        // The tun_writer and the readers' shortcuts write: one at a time.
        let mut coalescer = self
            .coalescer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = batch.count();
        let mut packets: [&[u8]; BATCH] = [&[]; BATCH];
        for (i, p) in packets[..count].iter_mut().enumerate() {
            *p = &batch.slot(i)[HEADROOM..HEADROOM + batch.len(i)];
        }
        coalescer.plan(&packets[..count]);
        for g in coalescer.groups() {
            let (head, len) = (g.head(), batch.len(g.head()));
            let slot = batch.slot_mut(head);
            let hdr = g.finish(&mut slot[HEADROOM..HEADROOM + len]);
            slot[HEADROOM - VNET_HDR_LEN..HEADROOM].copy_from_slice(&hdr.encode());
        }
        let mut written = Written::default();
        let mut iov = [IoSlice::new(&[]); BATCH];
        for g in coalescer.groups() {
            let head = g.head();
            let mut bytes = batch.len(head);
            iov[0] = IoSlice::new(&batch.slot(head)[HEADROOM - VNET_HDR_LEN..HEADROOM + bytes]);
            for (k, m) in coalescer.members(g).enumerate() {
                let len = batch.len(m);
                iov[k + 1] = IoSlice::new(&batch.slot(m)[HEADROOM + g.headers()..HEADROOM + len]);
                bytes += len;
            }
            match self.tun.write_vectored(&iov[..g.count()]) {
                Ok(_) => {
                    written.packets += g.count();
                    written.bytes += bytes;
                }
                Err(e) => {
                    written.failed += g.count();
                    written.error = Some(e);
                }
            }
        }
        written
    }
}
