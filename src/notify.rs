//! systemd's service notifications (sd_notify(3)) for `pipevpn up` and
//! `pipevpnd -f` run as `Type=notify` units: READY=1 once the tunnel is up,
//! RELOADING=1 … READY=1 around a SIGHUP reload, STOPPING=1 when the
//! teardown starts, and WATCHDOG=1 every half `WatchdogSec=` while the
//! pipeline is alive ([`Judge`]). Without `NOTIFY_SOCKET` nothing is sent
//! (the sd-notify crate returns at once), and without `WATCHDOG_USEC` (or
//! with another process's `WATCHDOG_PID`) no watchdog thread starts.

use crate::control::Accepting;
use crate::pipeline::{stats::Stage, stats::Stats, Backlog, TunnelHandle};
use crate::{Error, Result};
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use sd_notify::NotifyState;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The tunnel serves: interface, addresses, routes, control socket and
/// PostUp are done (pipevpnd: the control socket serves).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload starts; systemd wants the monotonic clock with it
/// (sd_notify(3), RELOADING=1), to tell this reload from an earlier one.
/// [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => log::warn!("telling systemd of the reload: reading the clock: {e}"),
    }
}

/// The teardown starts.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A notification that cannot be sent is logged: the tunnel runs on, and
/// systemd acts on the silence (a start or watchdog timeout).
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        let what: Vec<String> = states.iter().map(ToString::to_string).collect();
        log::warn!("telling systemd {}: {e}", what.join(" "));
    }
}

/// One look at the pipeline: for each stage with an input channel, what
/// waits there and how far it got; and whether the control socket accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// (stage, work waiting for it: batches or messages in its channel plus
    /// its device calls under way, packets it passed or dropped so far).
    pub stages: Vec<(Stage, usize, u64)>,
    pub control_accepting: bool,
}

impl Look {
    /// The pipeline now: `backlog`'s channels and `stats`' counters, and
    /// whether the control socket accepts.
    pub fn take(backlog: &Backlog, stats: &Stats, control_accepting: bool) -> Look {
        Look {
            stages: backlog
                .waiting()
                .into_iter()
                .map(|(stage, waiting)| {
                    let s = stats.stage(stage);
                    let work = waiting as u64 + s.device_calls();
                    (stage, work as usize, s.packets() + s.total_drops())
                })
                .collect(),
            control_accepting,
        }
    }
}

/// How many looks, [`Watchdog`]'s half intervals apart, make the "whole
/// watchdog interval" a stuck stage must have stood still for.
const LOOKS: usize = 3;

/// Whether the pipeline is alive, from its last [`LOOKS`] looks. A stage
/// blocks in poll or on its input channel when idle, so standing still is
/// not being stuck: a stage is stuck when work waited in its input
/// channel, or one of its device calls was under way (a tun write that a
/// full tun holds, made by the tun_writer or by the receiver's lone-packet
/// shortcut in its name), at every one of those looks and its count (packets passed or
/// dropped) did not move between the first and the last. The readers
/// (tun_reader, udp_receiver) have no input channel: they wait on the
/// kernel, and a reader that ends is reported by the pipeline itself (the
/// tunnel then stops). The control socket is alive while its accept
/// thread runs. Pure: the looks are taken elsewhere.
#[derive(Debug, Default)]
pub struct Judge {
    looks: Vec<Look>,
}

/// What [`Judge::judge`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Alive,
    /// These stages had work waiting and did not move.
    Stuck(Vec<Stage>),
    /// The control socket's accept thread ended.
    ControlGone,
}

impl Judge {
    pub fn judge(&mut self, look: Look) -> Health {
        if self.looks.len() == LOOKS {
            self.looks.remove(0);
        }
        self.looks.push(look);
        let last = &self.looks[self.looks.len() - 1];
        if !last.control_accepting {
            return Health::ControlGone;
        }
        if self.looks.len() < LOOKS {
            return Health::Alive;
        }
        let first = &self.looks[0];
        let stuck: Vec<Stage> = last
            .stages
            .iter()
            .filter(|&&(stage, _, count)| {
                let at = |look: &Look| look.stages.iter().find(|s| s.0 == stage).copied();
                let waited = self.looks.iter().all(|l| at(l).is_some_and(|s| s.1 > 0));
                waited && at(first).is_some_and(|s| s.2 == count)
            })
            .map(|s| s.0)
            .collect();
        match stuck.is_empty() {
            true => Health::Alive,
            false => Health::Stuck(stuck),
        }
    }
}

/// The thread that sends WATCHDOG=1 every half watchdog interval while
/// the [`Judge`] finds the pipeline alive; stopped (and joined) by
/// [`Watchdog::stop`] or on drop, which the tunnel does before its
/// teardown.
pub struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread if systemd asked for a watchdog (`WATCHDOG_USEC`,
    /// for this process); None otherwise. A thread that cannot be started
    /// is logged: systemd, hearing nothing, restarts the tunnel.
    pub fn start(handle: &TunnelHandle, control: Arc<Accepting>) -> Option<Watchdog> {
        let interval = sd_notify::watchdog_enabled().filter(|i| !i.is_zero())?;
        match Watchdog::spawn(handle, control, interval) {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!("{e}");
                None
            }
        }
    }

    fn spawn(
        handle: &TunnelHandle,
        control: Arc<Accepting>,
        interval: Duration,
    ) -> Result<Watchdog> {
        let (backlog, stats) = (handle.backlog.clone(), handle.stats.clone());
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let period = interval / 2;
                let mut judge = Judge::default();
                let mut was = Health::Alive;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    let health = judge.judge(Look::take(&backlog, &stats, control.get()));
                    if health == Health::Alive {
                        send(&[NotifyState::Watchdog]);
                    } else if health != was {
                        log_unhealthy(&health, interval);
                    }
                    was = health;
                }
            })
            .map_err(|e| Error::sys("spawning thread watchdog", e))?;
        log::debug!("watchdog: WATCHDOG=1 every {:?}", interval / 2);
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn log_unhealthy(health: &Health, interval: Duration) {
    match health {
        Health::Stuck(stages) => {
            let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
            log::error!(
                "watchdog: stage {} had work waiting and did not move for {interval:?}: \
                 no more WATCHDOG=1, systemd will restart the tunnel",
                names.join(", ")
            )
        }
        Health::ControlGone => log::error!(
            "watchdog: the control socket no longer accepts: \
             no more WATCHDOG=1, systemd will restart the tunnel"
        ),
        Health::Alive => {}
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // A closed channel wakes the thread at once.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(stages: &[(Stage, usize, u64)]) -> Look {
        Look {
            stages: stages.to_vec(),
            control_accepting: true,
        }
    }

    fn verdicts(looks: &[Look]) -> Vec<Health> {
        let mut judge = Judge::default();
        looks.iter().map(|l| judge.judge(l.clone())).collect()
    }

    const E: Stage = Stage::Encryptor;
    const W: Stage = Stage::TunWriter;

    #[test]
    fn an_idle_stage_with_nothing_waiting_is_alive() {
        let idle = look(&[(E, 0, 7), (W, 0, 7)]);
        assert!(verdicts(&vec![idle; 6]).iter().all(|h| *h == Health::Alive));
    }

    #[test]
    fn a_stage_with_work_waiting_that_does_not_move_for_a_whole_interval_is_stuck() {
        let stuck = look(&[(E, 0, 7), (W, 4, 100)]);
        let v = verdicts(&[stuck.clone(), stuck.clone(), stuck.clone(), stuck]);
        assert_eq!(
            v,
            [
                Health::Alive,
                Health::Alive,
                Health::Stuck(vec![W]),
                Health::Stuck(vec![W])
            ]
        );
    }

    #[test]
    fn a_busy_stage_that_moves_is_alive_and_one_that_moves_again_recovers() {
        let v = verdicts(&[
            look(&[(W, 4, 100)]),
            look(&[(W, 4, 100)]),
            look(&[(W, 4, 101)]),
            look(&[(W, 4, 101)]),
            look(&[(W, 4, 101)]),
            look(&[(W, 4, 500)]),
        ]);
        use Health::*;
        assert_eq!(v, [Alive, Alive, Alive, Alive, Stuck(vec![W]), Alive]);
    }

    #[test]
    fn a_queue_that_emptied_in_between_is_not_a_stuck_stage() {
        // The count may stand still when a batch's packets all wait for a
        // session: what matters is that the channel was drained.
        let v = verdicts(&[
            look(&[(E, 1, 5)]),
            look(&[(E, 0, 5)]),
            look(&[(E, 1, 5)]),
            look(&[(E, 1, 5)]),
        ]);
        assert!(v.iter().all(|h| *h == Health::Alive), "{v:?}");
    }

    #[test]
    fn a_control_socket_that_stopped_accepting_stops_the_pings_at_once() {
        let mut gone = look(&[(E, 0, 0)]);
        gone.control_accepting = false;
        assert_eq!(verdicts(&[gone]), [Health::ControlGone]);
    }
}
