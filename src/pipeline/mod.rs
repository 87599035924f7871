//! The packet pipeline: seven named threads joined by bounded channels,
//! serving every peer of the interface ([`interface`]).
//!
//! ```text
//!            outbound_plain        outbound_sealed
//! tun ─► [tun_reader] ──► [encryptor] ──► [udp_sender] ─► UDP ─► peer
//!                              ▲  want_session
//!                              │  session_events
//!                         [handshaker] ◄── handshake_in ──┐
//!                              │  keypairs (Peer)         │
//!                              ▼                          │
//! tun ◄─ [tun_writer] ◄── [decryptor] ◄── [udp_receiver] ◄─ UDP ◄─ peer
//!            inbound_opened        inbound_sealed
//! ```
//!
//! - Cryptokey routing (whitepaper §2): the encryptor gives each packet the
//!   peer its destination routes to, the udp_sender sends it to that peer's
//!   endpoint; the decryptor finds the peer by receiver index and checks the
//!   inner source routes back to it. Packets for a peer without a session
//!   wait in that peer's queue, so they never hold up the other peers.
//! - Channels carry [`pool::Batch`]es of up to 64 packets, so a thread
//!   wake-up is paid per batch, not per packet. A reader takes whatever is
//!   ready (at least one packet) and sends it on at once: a lone packet never
//!   waits for a batch to fill.
//! - Every channel is bounded and every batch comes from a fixed [`pool::Pool`],
//!   so a slow stage blocks the one before it and memory does not grow.
//! - Plaintext and sealed batches have distinct types ([`pool::Plain`],
//!   [`pool::Sealed`]), so stages cannot be wired the wrong way round.
//! - The stages reach the kernel only through the traits of [`device`];
//!   the real tun ([`crate::tun::OffloadTun`]) runs with the kernel's TCP
//!   offloads: one read brings up to 64 KiB of a TCP stream,
//!   cut into packets for the encryptor, and one write carries a batch's
//!   in-order segments of a flow. The stages still see one packet per slot.
//! - Crypto workers ([`parallel`]): the encryptor routes and gives every
//!   packet its counter in read order, and seal workers seal the numbered
//!   batches in parallel; the decryptor checks every datagram in read
//!   order, and open workers open them in parallel. The udp_sender and the
//!   tun_writer put the batches back in order, and the tun_writer accepts
//!   them there (replay window, key rotation, inner source, roaming:
//!   [`inbound`]). One order for a whole direction keeps each peer's order.
//! - Shutdown: the readers wake on a [`StopFd`] and return; every other stage
//!   ends when its input channel closes, so the pipeline drains in flow order.

pub mod device;
pub mod fake;
pub mod handshake_queue;
pub mod handshaker;
pub mod inbound;
pub mod interface;
pub mod outbound;
pub mod parallel;
pub mod peer;
pub mod pool;
pub mod reading;
pub mod stats;

use crate::protocol::keys::PrivateKey;
use crate::protocol::timers::Timing;
use crate::sys::poll::StopFd;
use crate::{Error, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use device::{TunDevice, UdpDevice};
use handshaker::Handshaker;
use inbound::{Acceptor, Decryptor, Inbound};
use interface::Interface;
use outbound::{Encryptor, Outbound, Sealer};
use parallel::Onward;
use peer::Peer;
pub use peer::PeerSpec;
use pool::{Lone, Pool};
use reading::Reading;
use stats::{Stage, Stats};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Batches that may wait in each data channel.
const CHANNEL_BATCHES: usize = 4;
/// Batches per direction: enough for every channel and every stage to hold
/// some at once, so the pool only runs dry when a stage is really behind.
const POOL_BATCHES: usize = 3 * CHANNEL_BATCHES + 4;
/// Handshake messages that may wait for the handshaker.
pub const HANDSHAKE_QUEUE: usize = 128;
/// Session requests and events that may wait: one per peer in a burst of
/// handshakes; one lost to a full queue is made up for (see
/// [`outbound::Encryptor`], [`Peer::session_asked`]).
const SESSION_QUEUE: usize = 1024;

/// The handshaker (or the tun_writer's acceptance, for a keypair the peer
/// confirmed) telling the encryptor about a peer's sessions.
#[derive(Clone)]
pub enum SessionEvent {
    /// A usable session exists: send what waited for it.
    Ready(Arc<Peer>),
    /// Handshake attempts gave up: drop what waited.
    GaveUp(Arc<Peer>),
}

/// Everything the pipeline needs to know, already validated.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// None for an interface that gets its key later (`wg set`).
    pub private_key: Option<PrivateKey>,
    pub mtu: usize,
    pub timing: Timing,
    pub peers: Vec<PeerSpec>,
    /// Threads sealing outbound batches beside the encryptor, and as many
    /// opening inbound ones beside the decryptor; 0: the two do it
    /// themselves. See [`default_crypto_workers`].
    pub crypto_workers: usize,
}

/// The crypto workers per direction for the cores this process may use:
/// `available_parallelism` counts the CPUs of its affinity mask, capped
/// by a cgroup's CPU quota.
pub fn default_crypto_workers() -> usize {
    crypto_workers_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// None up to 2 cores: the other stages keep both busy, and the encryptor
/// and decryptor doing the crypto themselves costs no hand-off (README,
/// Parallel crypto). Beyond, half the cores per direction: a transfer is
/// mostly one direction, and the stages take the rest.
fn crypto_workers_for(cores: usize) -> usize {
    if cores <= 2 {
        0
    } else {
        cores / 2
    }
}

/// Most crypto workers a tunnel starts per direction.
pub const MAX_CRYPTO_WORKERS: usize = 64;

/// How a stage thread ended.
#[derive(Debug)]
pub struct StageExit {
    pub stage: Stage,
    /// Err with the error or panic message.
    pub result: std::result::Result<(), String>,
}

/// A running tunnel.
pub struct TunnelHandle {
    stop: Arc<StopFd>,
    threads: Vec<JoinHandle<()>>,
    exits: Receiver<StageExit>,
    first_failure: Arc<Mutex<Option<Error>>>,
    pub stats: Arc<Stats>,
    /// The peers and their tables, for reading their state or changing them.
    pub interface: Arc<Interface>,
    /// What waits in each stage's input channel, for a watchdog.
    pub backlog: Arc<Backlog>,
}

/// How many batches (or handshake messages) wait in the input channel of
/// each stage that has one; read-only, for a watchdog. It holds a receiver
/// of each channel: while the tunnel runs, a stage sending to a neighbour
/// that ended blocks instead of failing (the tunnel stops on the first
/// stage that ends anyway), and [`TunnelHandle::shutdown`] drops these
/// receivers first, which wakes it.
pub struct Backlog(Mutex<Vec<(Stage, Waiting)>>);

type Waiting = Box<dyn Fn() -> usize + Send>;

impl Backlog {
    /// Each stage with an input channel and what waits in it now; none once
    /// the tunnel shuts down.
    pub fn waiting(&self) -> Vec<(Stage, usize)> {
        let inputs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        inputs.iter().map(|(stage, len)| (*stage, len())).collect()
    }
}

/// A view of the length of `rx`'s channel.
fn waiting<T: Send + 'static>(rx: &Receiver<T>) -> Waiting {
    let rx = rx.clone();
    Box::new(move || rx.len())
}

/// Starts the pipeline over the given devices.
pub fn spawn(
    cfg: TunnelConfig,
    tun: Arc<dyn TunDevice>,
    udp: Arc<dyn UdpDevice>,
) -> Result<TunnelHandle> {
    let iface = Interface::new(cfg.private_key, cfg.mtu, cfg.timing);
    iface.add_peers(cfg.peers)?;
    let iface = Arc::new(iface);
    let stop = Arc::new(StopFd::new()?);
    let stats = Arc::new(Stats::default());
    let workers = cfg.crypto_workers.min(MAX_CRYPTO_WORKERS);
    // One batch more in flight per worker.
    let batches = POOL_BATCHES + workers;
    let outbound_pool = Pool::new(batches, pool::slot_size(cfg.mtu));
    // A peer's MTU may be larger than ours: see `pool`.
    let inbound_pool = Pool::new(batches, pool::inbound_slot_size(cfg.mtu));

    let (outbound_plain_tx, outbound_plain) = bounded(CHANNEL_BATCHES);
    let (seal_jobs_tx, seal_jobs) = bounded(CHANNEL_BATCHES);
    let (outbound_sealed_tx, outbound_sealed) = bounded(CHANNEL_BATCHES);
    let (inbound_sealed_tx, inbound_sealed) = bounded(CHANNEL_BATCHES);
    let (open_jobs_tx, open_jobs) = bounded(CHANNEL_BATCHES);
    let (inbound_opened_tx, inbound_opened) = bounded(CHANNEL_BATCHES);
    let (handshake_in_tx, handshake_in) = bounded(HANDSHAKE_QUEUE);
    let (want_session_tx, want_session) = bounded(SESSION_QUEUE);
    let (session_events_tx, session_events) = bounded(SESSION_QUEUE);
    let (exits_tx, exits) = crossbeam_channel::unbounded();
    let backlog = Arc::new(Backlog(Mutex::new(vec![
        (Stage::Encryptor, {
            // The workers' input is the encryptor's work too.
            let (plain, jobs) = (waiting(&outbound_plain), waiting(&seal_jobs));
            Box::new(move || plain() + jobs())
        }),
        (Stage::UdpSender, waiting(&outbound_sealed)),
        (Stage::Decryptor, {
            let (sealed, jobs) = (waiting(&inbound_sealed), waiting(&open_jobs));
            Box::new(move || sealed() + jobs())
        }),
        (Stage::TunWriter, waiting(&inbound_opened)),
        (Stage::Handshaker, waiting(&handshake_in)),
    ])));

    let mut threads = Vec::new();
    let first_failure = Arc::new(Mutex::new(None));
    let mut start = |stage: Stage, name: String, body: Box<dyn FnOnce() -> Result<()> + Send>| {
        let exits_tx: Sender<StageExit> = exits_tx.clone();
        let first_failure = first_failure.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let result = match catch_unwind(AssertUnwindSafe(body)) {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(panic) => Err(panic_message(&panic)),
                };
                if let Err(msg) = &result {
                    if let Ok(mut first) = first_failure.lock() {
                        first.get_or_insert(Error::Stage {
                            stage: stage.name(),
                            msg: msg.clone(),
                        });
                    }
                }
                let _ = exits_tx.send(StageExit { stage, result });
            })
            .map(|h| threads.push(h))
            .map_err(|e| Error::sys(format!("spawning thread {}", stage.name()), e))
    };

    // What both reader threads need, each reading either direction.
    let readers = Readers {
        tun: tun.clone(),
        udp: udp.clone(),
        iface: iface.clone(),
        stats: stats.clone(),
        pools: [outbound_pool.clone(), inbound_pool],
        turns: Arc::default(),
        outbound_plain: outbound_plain_tx,
        inbound_sealed: inbound_sealed_tx,
        handshake_in: handshake_in_tx.clone(),
        session_events: session_events_tx.clone(),
    };
    {
        let (readers, stop) = (readers.clone(), stop.clone());
        start(
            Stage::TunReader,
            Stage::TunReader.name().into(),
            Box::new(move || {
                readers.with(|outbound, inbound| {
                    reading::run(outbound, inbound, &stop)
                        .map_err(|e| Error::sys("reading from the tun device", e))
                })
            }),
        )?;
    }
    for i in 0..workers {
        let (iface, seal_stats) = (iface.clone(), stats.clone());
        let (jobs, sealed) = (seal_jobs.clone(), outbound_sealed_tx.clone());
        start(
            Stage::Encryptor,
            format!("{}_{i}", Stage::Encryptor.name()),
            Box::new(move || {
                let sealer = Sealer {
                    iface: &iface,
                    stats: seal_stats.stage(Stage::Encryptor),
                };
                parallel::worker(&jobs, &sealed, sealer.stats, |p| sealer.seal(p));
                Ok(())
            }),
        )?;
        let stats = stats.clone();
        let (jobs, opened) = (open_jobs.clone(), inbound_opened_tx.clone());
        start(
            Stage::Decryptor,
            format!("{}_{i}", Stage::Decryptor.name()),
            Box::new(move || {
                let s = stats.stage(Stage::Decryptor);
                parallel::worker(&jobs, &opened, s, |b| inbound::open(b, s));
                Ok(())
            }),
        )?;
    }
    // Only the workers read them.
    drop((seal_jobs, open_jobs));
    {
        let (iface, stats) = (iface.clone(), stats.clone());
        start(
            Stage::Encryptor,
            Stage::Encryptor.name().into(),
            Box::new(move || {
                let sealer = Sealer {
                    iface: &iface,
                    stats: stats.stage(Stage::Encryptor),
                };
                let output = Onward::new(workers, &outbound_sealed_tx, &seal_jobs_tx);
                let enc = Encryptor::new(sealer, output, &want_session_tx, &outbound_pool);
                enc.run(&outbound_plain, &session_events);
                Ok(())
            }),
        )?;
    }
    {
        let (udp, stats) = (udp.clone(), stats.clone());
        start(
            Stage::UdpSender,
            Stage::UdpSender.name().into(),
            Box::new(move || {
                let s = stats.stage(Stage::UdpSender);
                outbound::udp_sender(&*udp, &outbound_sealed, batches, s);
                Ok(())
            }),
        )?;
    }
    {
        let stop = stop.clone();
        start(
            Stage::UdpReceiver,
            Stage::UdpReceiver.name().into(),
            Box::new(move || {
                readers.with(|outbound, inbound| {
                    reading::run(inbound, outbound, &stop)
                        .map_err(|e| Error::sys("receiving from the UDP socket", e))
                })
            }),
        )?;
    }
    {
        let (iface, stats) = (iface.clone(), stats.clone());
        start(
            Stage::Decryptor,
            Stage::Decryptor.name().into(),
            Box::new(move || {
                let dec = Decryptor {
                    iface: &iface,
                    stats: &stats,
                    handshake_in: &handshake_in_tx,
                };
                let output = Onward::new(workers, &inbound_opened_tx, &open_jobs_tx);
                dec.run(&inbound_sealed, output);
                Ok(())
            }),
        )?;
    }
    {
        let (tun, iface, stats) = (tun.clone(), iface.clone(), stats.clone());
        let events = session_events_tx.clone();
        start(
            Stage::TunWriter,
            Stage::TunWriter.name().into(),
            Box::new(move || {
                let acceptor = Acceptor {
                    iface: &iface,
                    stats: &stats,
                    session_events: &events,
                };
                let s = stats.stage(Stage::TunWriter);
                inbound::tun_writer(&*tun, &acceptor, &inbound_opened, batches, s);
                Ok(())
            }),
        )?;
    }
    {
        let (udp, iface, stats, stop) = (udp.clone(), iface.clone(), stats.clone(), stop.clone());
        start(
            Stage::Handshaker,
            Stage::Handshaker.name().into(),
            Box::new(move || {
                let hs = Handshaker::new(&iface, &*udp, &stats, &session_events_tx);
                hs.run(&handshake_in, &want_session, &stop);
                Ok(())
            }),
        )?;
    }

    Ok(TunnelHandle {
        stop,
        threads,
        exits,
        first_failure,
        stats,
        interface: iface,
        backlog,
    })
}

/// The devices, stages and channels the two readers share: each reads its
/// own direction and, for an answer, the other's ([`reading`]).
#[derive(Clone)]
struct Readers {
    tun: Arc<dyn TunDevice>,
    udp: Arc<dyn UdpDevice>,
    iface: Arc<Interface>,
    stats: Arc<Stats>,
    /// Outbound, inbound.
    pools: [Pool; 2],
    turns: Arc<[Mutex<Lone>; 2]>,
    outbound_plain: Sender<pool::Plain>,
    inbound_sealed: Sender<pool::Sealed>,
    handshake_in: Sender<handshake_queue::HandshakePacket>,
    session_events: Sender<SessionEvent>,
}

impl Readers {
    /// Runs `f` with the outbound and the inbound reading.
    fn with<T>(&self, f: impl FnOnce(&Reading<Outbound>, &Reading<Inbound>) -> T) -> T {
        let stats = &self.stats;
        let outbound = Reading {
            direction: Outbound {
                tun: &*self.tun,
                outbound_plain: &self.outbound_plain,
                shortcut: outbound::Shortcut {
                    sealer: Sealer {
                        iface: &self.iface,
                        stats: stats.stage(Stage::Encryptor),
                    },
                    udp: &*self.udp,
                    sender_stats: stats.stage(Stage::UdpSender),
                },
                stats: stats.stage(Stage::TunReader),
            },
            pool: &self.pools[0],
            turn: &self.turns[0],
        };
        let inbound = Reading {
            direction: Inbound {
                udp: &*self.udp,
                inbound_sealed: &self.inbound_sealed,
                shortcut: inbound::Shortcut {
                    decryptor: Decryptor {
                        iface: &self.iface,
                        stats,
                        handshake_in: &self.handshake_in,
                    },
                    acceptor: Acceptor {
                        iface: &self.iface,
                        stats,
                        session_events: &self.session_events,
                    },
                    tun: &*self.tun,
                    writer_stats: stats.stage(Stage::TunWriter),
                },
                stats: stats.stage(Stage::UdpReceiver),
            },
            pool: &self.pools[1],
            turn: &self.turns[1],
        };
        f(&outbound, &inbound)
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {msg}")
}

impl TunnelHandle {
    /// Reports each stage that ends. Before [`TunnelHandle::shutdown`] any
    /// report means a stage failed or its neighbour did.
    pub fn exits(&self) -> &Receiver<StageExit> {
        &self.exits
    }

    /// Stops every stage and joins it. Returns the first stage failure.
    pub fn shutdown(self) -> Result<()> {
        self.backlog
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.stop.signal();
        for t in self.threads {
            let _ = t.join();
        }
        let failure = self.first_failure.lock().ok().and_then(|mut f| f.take());
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::tests::assert_hidden;
    use crate::protocol::keys::PresharedKey;

    #[test]
    fn seal_workers_start_beyond_two_cores_at_half_of_them() {
        let workers: Vec<_> = [1, 2, 3, 4, 16].map(crypto_workers_for).into();
        assert_eq!(workers, [0, 0, 1, 2, 8]);
    }

    #[test]
    fn debug_of_a_tunnel_config_hides_its_secrets() {
        let private = PrivateKey::from_bytes([0x3c; 32]);
        let psk = [0xa7; 32];
        let cfg = TunnelConfig {
            private_key: Some(private.clone()),
            mtu: 1420,
            timing: Timing::default(),
            crypto_workers: 0,
            peers: vec![PeerSpec {
                public_key: PrivateKey::from_bytes([0x22; 32]).public_key(),
                preshared_key: Some(PresharedKey::from_bytes(psk)),
                endpoint: None,
                initiate_at_start: false,
                allowed_ips: vec![],
                persistent_keepalive: None,
            }],
        };
        let text = format!("{cfg:?}");
        assert_hidden(&text, private.as_bytes());
        assert_hidden(&text, &psk);
        assert!(
            text.contains(&cfg.peers[0].public_key.to_string()),
            "{text}"
        );
    }
}
