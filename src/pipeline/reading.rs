//! A direction's reader: the device read, the [`Lone`] check and the
//! hand-off to the shortcut or the next stage, done by the direction's own
//! reader thread, or by the other direction's when an answer may be waiting
//! ([`Answer`]).
//!
//! A request brings its answer: when a lone packet went through one
//! direction's shortcut, an answer to it (a ping's echo reply, a TCP ACK)
//! often arrives on the other direction's device at once (the kernel makes
//! an echo reply inside the very tun write that delivered the request) or
//! one peer's turnaround later. The thread that handled the request takes
//! it, through the other direction's shortcut: the other reader's wake-up
//! (tens of microseconds on a small machine, a ping's RTT holds four) is
//! saved. Both threads read the same device, so whoever reads holds the
//! direction's turn from the read until the batch is handed on: batches
//! leave in the order they were read, and [`Lone`] sees every read.

use super::pool::{Batch, Lone, Pool};
use super::stats::StageStats;
use crate::sys::poll::StopFd;
use std::io;
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

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
    /// Nothing was ready (or another thread was reading).
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
    pub fn try_read(&self) -> Handed {
        let mut lone = match self.turn.try_lock() {
            Ok(lone) => lone,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Handed::Nothing,
        };
        let Some(mut batch) = self.pool.try_get() else {
            return Handed::Nothing;
        };
        loop {
            match self.read(&mut lone, batch) {
                Ok(Handed::Batch { full: true }) => batch = self.pool.get(),
                Ok(handed) => return handed,
                Err(e) => {
                    log::debug!("reading for the other direction: {e}");
                    return Handed::Nothing;
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
/// lone packet it sent on looks for an answer on the other direction.
pub fn run<A: Direction, B: Direction>(
    own: &Reading<A>,
    other: &Reading<B>,
    stop: &StopFd,
) -> io::Result<()> {
    let mut answer = Answer::default();
    while let Some(handed) = own.next(stop)? {
        match handed {
            Handed::Ended => break,
            Handed::Lone => {
                answer.look(|| other.try_read() != Handed::Nothing);
            }
            Handed::Nothing | Handed::Batch { .. } => {}
        }
    }
    Ok(())
}

/// How long a reader thread looks for an answer on the other direction's
/// device after a lone packet went out: first at once, then, while the
/// budget lasts, in a loop (that does not yield the CPU: on a busy
/// machine a yield can hand it to another task for milliseconds). The budget
/// adapts: every answer found restores it to [`Answer::MAX`]; every miss
/// halves it, down to none below [`Answer::MIN`] (the look at once only);
/// then every [`Answer::PROBE`]th lone packet looks for the whole of
/// [`Answer::MAX`] again, in case answers come back. Nothing is spent
/// without traffic: it runs only after a lone packet.
#[derive(Debug)]
pub struct Answer {
    budget: Duration,
    /// Lone packets since the budget ran out or the last probe.
    since_probe: u32,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            budget: Answer::MAX,
            since_probe: 0,
        }
    }
}

impl Answer {
    /// Longer than a peer's turnaround on a small machine (two thread
    /// wake-ups and the crypto, about 100 µs), shorter than what a wake-up
    /// of our own reader costs twice over.
    pub const MAX: Duration = Duration::from_micros(200);
    pub const MIN: Duration = Duration::from_micros(20);
    pub const PROBE: u32 = 16;

    /// The time to look this time.
    pub fn budget(&mut self) -> Duration {
        if !self.budget.is_zero() {
            return self.budget;
        }
        self.since_probe += 1;
        if self.since_probe < Answer::PROBE {
            return Duration::ZERO;
        }
        self.since_probe = 0;
        Answer::MAX
    }

    /// Notes whether the look found an answer.
    pub fn found(&mut self, found: bool) {
        if found {
            (self.budget, self.since_probe) = (Answer::MAX, 0);
        } else if !self.budget.is_zero() {
            self.budget /= 2;
            if self.budget < Answer::MIN {
                self.budget = Duration::ZERO;
            }
        }
    }

    /// Looks with `attempt` (true: it found something) until it finds or
    /// the budget passes; returns whether it found.
    pub fn look(&mut self, attempt: impl FnMut() -> bool) -> bool {
        self.look_by(Instant::now, attempt)
    }

    /// [`Answer::look`] by the clock `now`.
    fn look_by(
        &mut self,
        mut now: impl FnMut() -> Instant,
        mut attempt: impl FnMut() -> bool,
    ) -> bool {
        let budget = self.budget();
        let start = now();
        let found = loop {
            if attempt() {
                break true;
            }
            if now().saturating_duration_since(start) >= budget {
                break false;
            }
            std::hint::spin_loop();
        };
        self.found(found);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_shrink_the_budget_to_nothing_and_an_answer_restores_it() {
        let mut a = Answer::default();
        assert_eq!(a.budget(), Answer::MAX);
        let mut seen = vec![];
        while !a.budget().is_zero() {
            seen.push(a.budget());
            a.found(false);
        }
        assert_eq!(
            seen,
            [200, 100, 50, 25].map(Duration::from_micros),
            "halved by each miss, none below MIN"
        );
        a.found(true);
        assert_eq!(a.budget(), Answer::MAX, "an answer restores it");
    }

    #[test]
    fn without_answers_only_every_probeth_lone_packet_waits() {
        let mut a = Answer::default();
        while !a.budget().is_zero() {
            a.found(false);
        }
        // The loop's last look counted as the first of the period.
        let waits: Vec<bool> = (0..3 * Answer::PROBE)
            .map(|_| {
                let b = a.budget();
                a.found(false);
                !b.is_zero()
            })
            .collect();
        let probes: Vec<usize> = (0..waits.len()).filter(|&i| waits[i]).collect();
        assert_eq!(probes.len(), 3, "{waits:?}");
        assert!(probes
            .windows(2)
            .all(|w| w[1] - w[0] == Answer::PROBE as usize));
        // A probe that finds an answer brings the whole budget back.
        while a.budget().is_zero() {
            a.found(false);
        }
        a.found(true);
        assert_eq!(a.budget(), Answer::MAX);
    }

    /// A clock that moves on by `step` each time it is read.
    fn ticking(step: Duration) -> impl FnMut() -> Instant {
        let mut t = Instant::now();
        move || {
            t += step;
            t
        }
    }

    /// Tries made by one look, by a clock ticking 10 µs a read, with an
    /// attempt that finds something at its `finds`th try.
    fn tries(a: &mut Answer, finds: usize) -> (bool, usize) {
        let mut tries = 0;
        let found = a.look_by(ticking(Duration::from_micros(10)), || {
            tries += 1;
            tries == finds
        });
        (found, tries)
    }

    #[test]
    fn a_look_tries_at_once_then_until_the_budget_passes_or_it_finds() {
        let mut a = Answer::default();
        // 200 µs at 10 µs a try: 20 tries, then a miss.
        assert_eq!(tries(&mut a, usize::MAX), (false, 20));
        assert_eq!(tries(&mut a, 3), (true, 3), "budget 100 µs, found at once");
        assert_eq!(a.budget(), Answer::MAX);
        while !a.budget().is_zero() {
            a.found(false);
        }
        assert_eq!(tries(&mut a, usize::MAX), (false, 1), "no budget: one look");
        assert_eq!(tries(&mut a, 1), (true, 1), "which may still find");
        assert_eq!(a.budget(), Answer::MAX);
    }
}
