//! Parallel crypto that keeps order, for both directions (as wireguard-go:
//! parallel crypto, in-order sending). The stage before the workers does
//! the half of its work that must stay in order and numbers each batch; the
//! workers seal or open batches in whatever order they reach them; the
//! stage after them puts the batches back in that order ([`in_order`]).
//!
//! ```text
//!               Onward::Workers    worker_0      Numbered<Done>
//! [stage] ──── Numbered<Job> ───►  worker_1  ──────────────────► [stage after]
//!    │                             ...                              ▲  Reorder
//!    └───── Onward::Done: the work done here, Numbered<Done> ───────┘
//! ```
//!
//! One order for the whole direction keeps each peer's order.

use super::stats::StageStats;
use crossbeam_channel::{Receiver, Sender};

/// A batch numbered in flow order by the stage before parallel workers,
/// so that the stage after them can put the batches back in that order.
pub struct Numbered<T> {
    pub seq: u64,
    pub batch: T,
}

/// Puts [`Numbered`] batches, arriving in any order, back in sequence.
/// Every batch in flight comes from one [`Pool`](super::pool::Pool), so no more than the pool's
/// batches can be ahead of the next one due: the ring never needs more room.
pub struct Reorder<T> {
    ring: Box<[Option<T>]>,
    next: u64,
}

impl<T> Reorder<T> {
    /// For a direction with `batches` batches in its pool.
    pub fn new(batches: usize) -> Self {
        Reorder {
            ring: (0..batches).map(|_| None).collect(),
            next: 0,
        }
    }

    /// Takes `n` and returns the batches now due, in sequence (none while
    /// an earlier one is still missing).
    pub fn put(&mut self, n: Numbered<T>) -> impl Iterator<Item = T> + '_ {
        let ahead = n.seq.wrapping_sub(self.next);
        let size = self.ring.len() as u64;
        // A pool's batches cannot be further apart: a broken invariant,
        // which ends the stage with a report.
        assert!(ahead < size, "batch {} arrived {ahead} ahead", n.seq);
        self.ring[(n.seq % size) as usize] = Some(n.batch);
        std::iter::from_fn(move || {
            let due = self.ring[(self.next % size) as usize].take()?;
            self.next += 1;
            Some(due)
        })
    }
}

/// Where the stage before the workers sends a batch it numbered.
pub enum Onward<'a, Job, Done> {
    /// No workers: the stage does the work itself and sends the result to
    /// the stage after them.
    Done(&'a Sender<Numbered<Done>>),
    /// To the workers.
    Workers(&'a Sender<Numbered<Job>>),
}

impl<Job, Done> Clone for Onward<'_, Job, Done> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Job, Done> Copy for Onward<'_, Job, Done> {}

impl<'a, Job, Done> Onward<'a, Job, Done> {
    /// To `jobs` when there are `workers`, else the stage's own work goes
    /// straight to `done`.
    pub fn new(
        workers: usize,
        done: &'a Sender<Numbered<Done>>,
        jobs: &'a Sender<Numbered<Job>>,
    ) -> Self {
        match workers {
            0 => Onward::Done(done),
            _ => Onward::Workers(jobs),
        }
    }

    /// Sends batch number `seq` on, doing `work` on it first when there
    /// are no workers. Returns false once the next stage has ended.
    pub fn send(
        self,
        stats: &StageStats,
        seq: u64,
        job: Job,
        work: impl FnOnce(Job) -> Done,
    ) -> bool {
        match self {
            Onward::Done(tx) => {
                let batch = work(job);
                stats.send(tx, Numbered { seq, batch }).is_ok()
            }
            Onward::Workers(tx) => stats.send(tx, Numbered { seq, batch: job }).is_ok(),
        }
    }
}

/// A crypto worker: does `work` on each batch in whatever order they reach
/// it and passes it on with its number. Its sends count as the stage's
/// before it (`stats`), whose work it shares.
pub fn worker<Job, Done>(
    jobs: &Receiver<Numbered<Job>>,
    done: &Sender<Numbered<Done>>,
    stats: &StageStats,
    work: impl Fn(Job) -> Done,
) {
    for Numbered { seq, batch } in jobs.iter() {
        let batch = work(batch);
        if stats.send(done, Numbered { seq, batch }).is_err() {
            return;
        }
    }
}

/// The stage after the workers: takes the numbered batches of a direction
/// whose pool holds `batches`, and hands each to `each` in sequence.
pub fn in_order<T>(
    rx: &Receiver<Numbered<T>>,
    batches: usize,
    stats: &StageStats,
    mut each: impl FnMut(T),
) {
    let mut order = Reorder::new(batches);
    for numbered in rx.iter() {
        stats.queue(rx.len());
        order.put(numbered).for_each(&mut each);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_in_sequence_whatever_the_arrival() {
        let mut r = Reorder::new(4);
        let mut out = Vec::new();
        // 0..12 arriving in windows of 4, each window reversed.
        for window in 0..3u64 {
            for seq in (window * 4..window * 4 + 4).rev() {
                let due: Vec<u64> = r.put(Numbered { seq, batch: seq }).collect();
                out.push(due);
            }
        }
        let flat: Vec<u64> = out.iter().flatten().copied().collect();
        assert_eq!(flat, (0..12).collect::<Vec<_>>());
        assert_eq!(out[0], Vec::<u64>::new(), "3 waits for 0");
        assert_eq!(out[3], vec![0, 1, 2, 3], "0 releases those behind it");
    }

    #[test]
    #[should_panic(expected = "ahead")]
    fn reorder_refuses_a_batch_beyond_the_pool() {
        let mut r = Reorder::new(4);
        let _ = r.put(Numbered { seq: 4, batch: () }).count();
    }
}
