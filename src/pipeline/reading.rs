//! A direction's reader: the device read, the [`Lone`] check and the
//! hand-off to the shortcut or the next stage, done by the direction's own
//! reader thread, or by the other direction's when an answer may be waiting
//! ([`run`]).
//!
//! A request brings its answer: when a lone packet went through one
//! direction's shortcut, an answer to it may already wait on the other
//! direction's device (the kernel makes a ping's echo reply inside the very
//! tun write that delivered the request). The thread that handled the
//! request looks once, at once, and takes what it finds through the other
//! direction's shortcut: the other reader's wake-up (tens of microseconds
//! on a small machine; a ping's RTT held four) leaves the answer's path.
//! Both threads read the same device, so whoever reads holds the
//! direction's turn from the read until the batch is handed on: batches
//! leave in the order they were read, and [`Lone`] sees every read.
//!
//! The look does not spin: looking for up to 200 µs after each lone packet
//! (for the answer a peer's turnaround brings back) cost 45 % more CPU
//! during a ping run here and cut no RTT measurably on this 2-core machine
//! (README, Performance).

use super::pool::{Batch, Lone, Pool};
use super::stats::StageStats;
use crate::sys::poll::StopFd;
use std::io;
use std::sync::{Mutex, PoisonError, TryLockError};

/// One direction's device and stages, as its reader sees them.
pub trait Direction {
    /// Waits until the device may have something; false once `stop` is set.
    fn wait(&self, stop: &StopFd) -> io::Result<bool>;
    /// Reads what is ready into `batch` without waiting, counting what it
    /// drops; false when nothing was ready.
    fn read(&self, batch: &mut Batch) -> io::Result<bool>;
    /// Takes a [`Lone`] batch through the direction's shortcut, or hands
    /// it back when it must take the long way.
    fn shortcut(&self, batch: Batch) -> Option<Batch>;
    /// Sends `batch` to the next stage; false once that has ended.
    fn hand_on(&self, batch: Batch) -> bool;
    /// The reader's counters.
    fn stats(&self) -> &StageStats;
}

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// Nothing was ready.
    Nothing,
    /// One lone packet, through the shortcut.
    Lone,
    /// A batch to the next stage, or nothing left of it after the checks;
    /// `full`: the device may hold more at once.
    Batch { full: bool },
    /// The next stage has ended.
    Ended,
}

/// A direction's reading: its device and stages, its batches, and its turn.
pub struct Reading<'a, D> {
    pub direction: D,
    pub pool: &'a Pool,
    /// Held from a read until its batch is handed on.
    pub turn: &'a Mutex<Lone>,
}

impl<D: Direction> Reading<'_, D> {
    /// The reader thread's next read: reads what is ready and hands it on,
    /// waiting for the device only when nothing was (so a busy device costs
    /// no poll(2) per batch). None once stopped.
    pub fn next(&self, stop: &StopFd) -> io::Result<Option<Handed>> {
        // Checked first: under constant traffic the device is always ready,
        // and a stop must still end the stage.
        while !stop.is_set() {
            {
                let mut lone = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
                let batch = self.pool.get();
                match self.read(&mut lone, batch)? {
                    Handed::Nothing => {}
                    handed => return Ok(Some(handed)),
                }
            }
            // The batch is back in the pool: one held while waiting would
            // make every read of the other thread look queued behind it.
            if !self.direction.wait(stop)? {
                break;
            }
        }
        Ok(None)
    }

    /// The other thread's read: what is ready now, unless the reader is at
    /// it or every batch is out. Reads on while batches come back full, so
    /// that nothing it read stays in the device's buffers while the reader
    /// sleeps in its wait. An error is left to the reader, which meets it
    /// on its own next read.
    pub fn try_read(&self) {
        let mut lone = match self.turn.try_lock() {
            Ok(lone) => lone,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let Some(mut batch) = self.pool.try_get() else {
            return;
        };
        loop {
            match self.read(&mut lone, batch) {
                Ok(Handed::Batch { full: true }) => batch = self.pool.get(),
                Ok(_) => return,
                Err(e) => {
                    log::debug!("reading for the other direction: {e}");
                    return;
                }
            }
        }
    }

    fn read(&self, lone: &mut Lone, mut batch: Batch) -> io::Result<Handed> {
        let d = &self.direction;
        if !d.read(&mut batch)? {
            return Ok(Handed::Nothing);
        }
        let full = batch.is_full();
        if !batch.has_packets() {
            return Ok(Handed::Batch { full });
        }
        d.stats().pass(batch.packets(), batch.bytes());
        let batch = match lone.check(&batch, self.pool) {
            true => match d.shortcut(batch) {
                Some(batch) => batch,
                None => return Ok(Handed::Lone),
            },
            false => batch,
        };
        Ok(match d.hand_on(batch) {
            true => Handed::Batch { full },
            false => Handed::Ended,
        })
    }
}

/// A reader thread: reads its own direction until stopped, and after each
/// lone packet it sent on looks once for an answer on the other direction.
/// Nothing is spent without traffic, and one non-blocking read per lone
/// packet when no answer comes.
pub fn run<A: Direction, B: Direction>(
    own: &Reading<A>,
    other: &Reading<B>,
    stop: &StopFd,
) -> io::Result<()> {
    while let Some(handed) = own.next(stop)? {
        match handed {
            Handed::Ended => break,
            Handed::Lone => other.try_read(),
            Handed::Nothing | Handed::Batch { .. } => {}
        }
    }
    Ok(())
}
