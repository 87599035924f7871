//! The control thread: answers and makes handshakes with every peer, runs
//! the timers of whitepaper §6, installs keypairs, and sends keepalives. It
//! is the only stage that draws random numbers or reads the wall clock (for
//! TAI64N).
//!
//! The DoS gate (per-source limiter, cookie secret, load) is one for the
//! interface; the rest of the state is per peer. Timers sleep in one
//! deadline heap: each peer is evaluated when its next timer is due
//! ([`timers::next_due`]), after a handshake message or a request for a
//! session, and within a tick after the data stages stamped an event for it
//! (`Peer::timers_seen`). Idle peers cost nothing however many there are.

use super::device::UdpDevice;
use super::handshake_queue::HandshakePacket;
use super::interface::Interface;
use super::peer::{Peer, Session};
use super::stats::{DropReason, Stage, StageStats, Stats};
use super::SessionEvent;
use crate::protocol::dos::{Admission, Gate};
use crate::protocol::handshake::{
    consume_cookie_reply, consume_initiation, consume_response, create_cookie_reply,
    create_initiation, create_response, response_mac1, tai64n, verify_mac1, Initiating,
    LocalStatic, PeerStatic,
};
use crate::protocol::keys::{Key, PrivateKey};
use crate::protocol::messages::{message_type, CookieReply, Initiation, MessageType, Response};
use crate::protocol::session::seal_in_place;
use crate::protocol::timers::{self, Events, Initiate, Pending, SessionInfo};
use crate::sys::poll::StopFd;
use crate::sys::udp::Endpoint;
use crossbeam_channel::{select, Receiver, Sender};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the peers with new events are evaluated (and the DoS gate's
/// idle sources forgotten); also the shortest wait between two evaluations
/// of a peer by its own timers.
const TICK: Duration = Duration::from_millis(100);
/// Minimum time between two accepted initiations from the peer: the limit
/// kernel WireGuard and wireguard-go apply.
const INITIATION_FLOOD: Duration = Duration::from_millis(20);
/// A cookie is used for mac2 this long after it arrived (whitepaper §5.4.7).
const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// Upper bound of the random extra wait before a retransmission
/// (whitepaper §6.4); 334 ms as in wireguard-go.
const MAX_JITTER_MS: u64 = 334;
/// Handshake messages waiting in the queue that mean "under load" (1/8 of
/// the queue, as wireguard-go does).
const BUSY_QUEUE: usize = super::HANDSHAKE_QUEUE / 8;

/// Our own initiation, waiting for its response.
struct Attempt {
    state: Initiating,
    /// The peer's static keys it was made with: once they are replaced (a
    /// new PSK or private key), the attempt is dropped.
    keys: Arc<PeerStatic>,
    sent: Duration,
    retries: u32,
    jitter: Duration,
}

/// The handshaker's wiring and state, set up by [`super::spawn`].
pub struct Handshaker<'a> {
    iface: &'a Interface,
    udp: &'a dyn UdpDevice,
    stats: &'a Stats,
    session_events: &'a Sender<SessionEvent>,
    gate: Gate,
    /// By peer id.
    states: HashMap<u64, State>,
    /// When each peer's next timer is due; a peer without an entry has none
    /// armed until an event comes.
    due_at: HashMap<u64, Duration>,
    /// The same, earliest first; an entry that no longer matches `due_at`
    /// is stale and skipped.
    deadlines: BinaryHeap<Reverse<(Duration, u64)>>,
    /// [`Interface::removals`] when states were last swept.
    removals_seen: u64,
}

/// What the handshaker remembers of one peer between messages and ticks.
struct State {
    peer: Arc<Peer>,
    /// The peer's static keys when last evaluated: replaced ones (a new
    /// PSK or private key) end the attempt and the wait between
    /// initiations, as wireguard-go's ExpireCurrentKeypairs does.
    keys: Arc<PeerStatic>,
    attempt: Option<Attempt>,
    /// Greatest TAI64N accepted from the peer: older initiations are replays.
    last_timestamp: Option<[u8; 12]>,
    last_initiation_at: Option<Duration>,
    handshake_sent: Option<Duration>,
    session_derived: Option<Duration>,
    cookie: Option<([u8; 16], Duration)>,
    /// Sender index and mac1 of our last response: a peer under load answers
    /// it with a cookie reply, as it would our initiation.
    response_sent: Option<(u32, [u8; 16])>,
    want_session: bool,
}

impl State {
    /// The state at start; with `initiate_at_start`, a handshake is wanted at
    /// once, as if data were waiting, and given up after the usual attempts.
    fn new(peer: Arc<Peer>) -> State {
        // Events stamped before now are read when it is first planned.
        peer.timers_seen();
        State {
            want_session: peer.initiate_at_start,
            keys: peer.remote(),
            peer,
            attempt: None,
            last_timestamp: None,
            last_initiation_at: None,
            handshake_sent: None,
            session_derived: None,
            cookie: None,
            response_sent: None,
        }
    }

    /// Our pending attempt, if `receiver` is its index.
    fn attempt_answered_by(&self, receiver: u32) -> Result<&Attempt, DropReason> {
        self.attempt
            .as_ref()
            .filter(|a| a.state.sender_index == receiver)
            .ok_or(DropReason::UnexpectedMessage)
    }

    /// The mac1 of our handshake message whose sender index is `receiver`,
    /// the pending initiation or the last response: the associated data of a
    /// cookie reply to it (whitepaper §5.4.7).
    fn mac1_sent_with(&self, receiver: u32) -> Result<[u8; 16], DropReason> {
        match self.attempt_answered_by(receiver) {
            Ok(a) => Ok(a.state.mac1),
            Err(reason) => self
                .response_sent
                .filter(|(index, _)| *index == receiver)
                .map(|(_, mac1)| mac1)
                .ok_or(reason),
        }
    }

    fn cookie(&self, now: Duration) -> Option<[u8; 16]> {
        self.cookie
            .filter(|(_, at)| now.saturating_sub(*at) < COOKIE_LIFETIME)
            .map(|(c, _)| c)
    }
}

impl<'a> Handshaker<'a> {
    pub fn new(
        iface: &'a Interface,
        udp: &'a dyn UdpDevice,
        stats: &'a Stats,
        session_events: &'a Sender<SessionEvent>,
    ) -> Self {
        let mut hs = Handshaker {
            iface,
            udp,
            stats,
            session_events,
            gate: Gate::default(),
            states: HashMap::new(),
            due_at: HashMap::new(),
            deadlines: BinaryHeap::new(),
            removals_seen: 0,
        };
        let now = iface.now();
        for peer in iface.peers() {
            let st = State::new(peer);
            let due = timers::next_due(&iface.timing, &hs.events(&st, now));
            hs.schedule(st.peer.id, due);
            hs.states.insert(st.peer.id, st);
        }
        hs
    }

    fn counters(&self) -> &StageStats {
        self.stats.stage(Stage::Handshaker)
    }

    pub fn run(
        mut self,
        handshake_in: &Receiver<HandshakePacket>,
        want_session: &Receiver<Arc<Peer>>,
        stop: &StopFd,
    ) {
        let mut next_tick = self.iface.now();
        while !stop.is_set() {
            let wake = self
                .deadlines
                .peek()
                .map_or(next_tick, |d| d.0 .0.min(next_tick));
            let wait = wake.saturating_sub(self.iface.now());
            select! {
                recv(handshake_in) -> p => if let Ok(p) = p {
                    let waiting = handshake_in.len();
                    self.counters().queue(waiting);
                    self.gate.load.observe(waiting >= BUSY_QUEUE, self.iface.now());
                    if let Some(id) = self.handle(&p) {
                        self.evaluate(id);
                    }
                },
                recv(want_session) -> w => if let Ok(peer) = w {
                    peer.session_asked.store(false, Relaxed);
                    let id = peer.id;
                    self.state_of(peer).want_session = true;
                    self.evaluate(id);
                },
                default(wait) => {},
            }
            let now = self.iface.now();
            if now >= next_tick {
                self.tick_all(now);
                next_tick = now + TICK;
            }
            self.evaluate_due(now);
        }
    }

    /// The periodic work: the peers with new events, and forgetting the
    /// state of removed peers (only after a removal, not by a scan per tick).
    fn tick_all(&mut self, now: Duration) {
        self.gate.forget_idle(now);
        let removals = self.iface.removals();
        if removals != self.removals_seen {
            self.removals_seen = removals;
            self.states.retain(|_, st| !st.peer.is_removed());
            let states = &self.states;
            self.due_at.retain(|id, _| states.contains_key(id));
        }
        // At most one id per peer waits here.
        let touched: Vec<u64> = self.iface.timers_touched().try_iter().collect();
        for id in touched {
            if let Some(st) = self.states.get(&id) {
                st.peer.timers_seen();
                self.evaluate(id);
            }
        }
    }

    /// Evaluates the peers whose next timer is due by `now`.
    fn evaluate_due(&mut self, now: Duration) {
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            if self.due_at.get(&id) == Some(&at) {
                self.due_at.remove(&id);
                self.evaluate(id);
            }
        }
    }

    /// Arms peer `id`'s next timer at `at`, or none.
    fn schedule(&mut self, id: u64, at: Option<Duration>) {
        let Some(at) = at else {
            self.due_at.remove(&id);
            return;
        };
        if self.due_at.insert(id, at) == Some(at) {
            return;
        }
        self.deadlines.push(Reverse((at, id)));
        // Stale entries of peers planned again and again: drop them all.
        if self.deadlines.len() > 2 * self.due_at.len() + 64 {
            self.deadlines = self
                .due_at
                .iter()
                .map(|(&id, &at)| Reverse((at, id)))
                .collect();
        }
    }

    /// The state of `peer`, made on first use.
    fn state_of(&mut self, peer: Arc<Peer>) -> &mut State {
        self.states
            .entry(peer.id)
            .or_insert_with(|| State::new(peer))
    }

    /// Applies the timer rules to one peer, and arms its next timer.
    fn evaluate(&mut self, id: u64) {
        let Some(mut st) = self.states.remove(&id) else {
            self.due_at.remove(&id);
            return;
        };
        if st.peer.is_removed() {
            // Its indices went with it; the attempt's keys go now.
            self.due_at.remove(&id);
            return;
        }
        self.tick(&mut st);
        let now = self.iface.now();
        // Not sooner than a tick: an action that failed (no endpoint to
        // send to) is tried again then, as the timer rules are.
        let due = timers::next_due(&self.iface.timing, &self.events(&st, now))
            .map(|at| at.max(now + TICK));
        self.schedule(id, due);
        self.states.insert(id, st);
    }

    /// What the timer rules look at, for the state of one peer.
    fn events(&self, st: &State, now: Duration) -> Events {
        let peer = &st.peer;
        Events {
            now,
            sent_any: peer.sent_any.get(),
            sent_data_unanswered: peer.sent_data_unanswered.get(),
            recv_any: peer.recv_any.get(),
            recv_data: peer.recv_data.get(),
            session: peer.keypairs().current.as_ref().map(|s| SessionInfo {
                created: s.created,
                we_initiated: s.we_initiated,
                last_minute_done: s.last_minute_done.load(Relaxed),
                sent_messages: s.counter(),
            }),
            pending: st.attempt.as_ref().map(|a| Pending {
                sent: a.sent,
                retries: a.retries,
                jitter: a.jitter,
            }),
            handshake_sent: st.handshake_sent,
            session_derived: st.session_derived,
            persistent_keepalive: peer.persistent_keepalive(),
            want_session: st.want_session,
            // Without our private key, the key that comes wakes the peer
            // (`Interface::set_private_key` expires its keypairs).
            can_initiate: peer.endpoint().is_some() && self.iface.local().is_some(),
        }
    }

    /// Applies the timer rules to the state of one peer.
    fn tick(&self, st: &mut State) {
        let peer = st.peer.clone();
        let now = self.iface.now();
        let keys = peer.remote();
        if !Arc::ptr_eq(&st.keys, &keys) {
            st.keys = keys;
            self.forget_attempt(st);
            st.handshake_sent = None;
        }
        if peer.sending_session().is_some() {
            st.want_session = false;
        }
        if peer.take_keepalive_asked() {
            // A persistent keepalive was turned on: one goes now, or, with
            // no session to send it in, a handshake starts.
            if peer.sending_session().is_some() {
                self.send_keepalive(&peer);
            } else {
                st.want_session = true;
            }
        }
        let current = peer.keypairs().current;
        let ev = self.events(st, now);
        let due = timers::due(&self.iface.timing, &ev);
        if due.last_minute {
            if let Some(s) = &current {
                s.last_minute_done.store(true, Relaxed);
            }
        }
        if due.give_up {
            log::warn!(
                "no handshake with peer {} after {} s: giving up until there is traffic again",
                peer.public_key,
                self.iface.timing.rekey_attempt_time.as_secs()
            );
            self.forget_attempt(st);
            st.want_session = false;
            // Only new traffic starts the next attempt.
            peer.sent_data_unanswered.clear();
            let _ = self
                .session_events
                .try_send(SessionEvent::GaveUp(peer.clone()));
        }
        match due.initiate {
            Some(Initiate::Retry) => {
                let retries = st.attempt.as_ref().map_or(0, |a| a.retries) + 1;
                log::debug!("handshake retry {retries} with peer {}", peer.public_key);
                self.send_initiation(st, retries);
            }
            Some(Initiate::New) => self.send_initiation(st, 0),
            None => {}
        }
        if due.keepalive {
            self.send_keepalive(&peer);
        }
        if due.zero_keys {
            // Dropping the sessions and the attempt overwrites their keys
            // (SessionKey, PrivateKey); a stage holding a snapshot of the
            // keypairs lets go of it when its batch is done.
            log::info!(
                "erasing session keys and handshake state of peer {} after 3 x REJECT_AFTER_TIME without a new session",
                peer.public_key
            );
            self.iface.clear_keypairs(&peer);
            self.forget_attempt(st);
            st.response_sent = None;
            st.session_derived = None;
        }
    }

    /// Drops the pending attempt and frees its index.
    fn forget_attempt(&self, st: &mut State) {
        if let Some(a) = st.attempt.take() {
            self.iface
                .release_indices(&st.peer, &[a.state.sender_index]);
        }
    }

    /// Handles one message; returns the id of the peer it concerned.
    fn handle(&mut self, p: &HandshakePacket) -> Option<u64> {
        let result = match message_type(p.bytes()).map_err(DropReason::from) {
            // Nothing to answer or make a handshake with, as in wireguard-go.
            Ok(_) if self.iface.local().is_none() => Err(DropReason::NoPrivateKey),
            Ok(MessageType::Initiation) => self.on_initiation(p),
            Ok(MessageType::Response) => self.on_response(p),
            Ok(MessageType::CookieReply) => self.on_cookie_reply(p),
            Ok(MessageType::Transport) => Err(DropReason::UnexpectedMessage),
            Err(r) => Err(r),
        };
        match result {
            Ok(id) => {
                self.counters().pass(1, p.bytes().len());
                Some(id)
            }
            Err(reason) => {
                log::debug!(
                    "dropped handshake message from {}: {}",
                    p.src,
                    reason.name()
                );
                self.counters().drop(reason);
                None
            }
        }
    }

    /// Runs `f` on the state of `peer`.
    fn with_state<T>(
        &mut self,
        peer: Arc<Peer>,
        f: impl FnOnce(&Self, &mut State) -> Result<T, DropReason>,
    ) -> Result<T, DropReason> {
        let id = peer.id;
        let mut st = match self.states.remove(&id) {
            Some(st) => st,
            None => State::new(peer),
        };
        let result = f(self, &mut st);
        self.states.insert(id, st);
        result
    }

    /// The peer we gave receiver index `receiver` to.
    fn peer_by_index(&self, receiver: u32) -> Result<Arc<Peer>, DropReason> {
        self.iface
            .peer_by_index(receiver)
            .filter(|p| !p.is_removed())
            .ok_or(DropReason::UnexpectedMessage)
    }

    /// Responder side (whitepaper §5.4.2, §5.4.3).
    fn on_initiation(&mut self, p: &HandshakePacket) -> Result<u64, DropReason> {
        let msg = Initiation::parse(p.bytes()).map_err(DropReason::from)?;
        let local = self.admit(p, msg.sender, &msg.mac1)?;
        let accepted = consume_initiation(&local, &msg).map_err(|_| DropReason::HandshakeFailed)?;
        let peer = self
            .iface
            .peer(&accepted.peer_public)
            .ok_or(DropReason::UnknownPeer)?;
        self.with_state(peer, |hs, st| {
            if st.last_timestamp.is_some_and(|t| accepted.timestamp <= t) {
                return Err(DropReason::StaleTimestamp);
            }
            let now = hs.iface.now();
            if st
                .last_initiation_at
                .is_some_and(|t| now.saturating_sub(t) < INITIATION_FLOOD)
            {
                return Err(DropReason::InitiationFlood);
            }
            st.last_timestamp = Some(accepted.timestamp);
            st.last_initiation_at = Some(now);
            let peer = st.peer.clone();
            let (local_now, remote) = hs
                .iface
                .handshake_keys(&peer)
                .ok_or(DropReason::NoPrivateKey)?;
            if !Arc::ptr_eq(&local, &local_now) {
                // Our private key changed since the message was read.
                return Err(DropReason::HandshakeFailed);
            }
            note_endpoint(&peer, p.src);

            let index = hs.iface.new_index(&peer, || random_u64() as u32);
            let (keys, response) = create_response(
                &local,
                &remote,
                &accepted,
                random_private(),
                index,
                st.cookie(now).as_ref(),
            )
            .map_err(|_| {
                hs.iface.release_indices(&peer, &[index]);
                DropReason::HandshakeFailed
            })?;
            hs.iface
                .install_responded(&peer, Session::new(&keys, now, false));
            st.session_derived = Some(now);
            st.response_sent = Some((index, response_mac1(&response)));
            peer.received(now, false);
            hs.send(st, &response, p.src, now);
            log::debug!(
                "answered a handshake initiation from peer {} at {}",
                peer.public_key,
                p.src
            );
            Ok(peer.id)
        })
    }

    /// Initiator side (whitepaper §5.4.3).
    fn on_response(&mut self, p: &HandshakePacket) -> Result<u64, DropReason> {
        let msg = Response::parse(p.bytes()).map_err(DropReason::from)?;
        self.admit(p, msg.sender, &msg.mac1)?;
        let peer = self.peer_by_index(msg.receiver)?;
        self.with_state(peer, |hs, st| {
            let attempt = st.attempt_answered_by(msg.receiver)?;
            let peer = st.peer.clone();
            let (local, remote) = hs
                .iface
                .handshake_keys(&peer)
                .ok_or(DropReason::NoPrivateKey)?;
            if !Arc::ptr_eq(&attempt.keys, &remote) {
                // Made with keys since replaced: dropped at the next tick.
                return Err(DropReason::UnexpectedMessage);
            }
            let keys = consume_response(&local, &remote, &attempt.state, &msg)
                .map_err(|_| DropReason::HandshakeFailed)?;
            let now = hs.iface.now();
            let took = now.saturating_sub(attempt.sent);
            // The attempt's index lives on as the new keypair's.
            st.attempt = None;
            st.want_session = false;
            hs.iface
                .install_initiated(&peer, Session::new(&keys, now, true));
            st.session_derived = Some(now);
            peer.received(now, false);
            peer.last_handshake.set(now);
            note_endpoint(&peer, p.src);
            hs.stats.handshake_completed(took.as_millis() as u64);
            log::info!(
                "handshake completed with {} in {} ms (initiator; peer {})",
                p.src,
                took.as_millis(),
                peer.public_key
            );
            // Waiting packets go out now; the keepalive confirms the session
            // to the responder even when nothing waits (whitepaper §5.4.6).
            let _ = hs
                .session_events
                .try_send(SessionEvent::Ready(peer.clone()));
            hs.send_keepalive(&peer);
            Ok(peer.id)
        })
    }

    /// The cheap checks before any Diffie-Hellman work: mac1 always; under
    /// load also mac2, answering a missing one with a cookie reply, and then
    /// the per-source limit (whitepaper §5.3, §5.4.4,
    /// [`Gate`]). Returns our static keys the message was checked with.
    fn admit(
        &mut self,
        p: &HandshakePacket,
        sender: u32,
        mac1: &[u8; 16],
    ) -> Result<Arc<LocalStatic>, DropReason> {
        let local = self.iface.local().ok_or(DropReason::NoPrivateKey)?;
        if !verify_mac1(&local, p.bytes()) {
            return Err(DropReason::BadMac1);
        }
        let now = self.iface.now();
        let cookie = match self.gate.admit(p.bytes(), p.src.addr, now, random_key) {
            Admission::Process => return Ok(local),
            Admission::RateLimited => return Err(DropReason::RateLimited),
            Admission::SendCookie(cookie) => cookie,
        };
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut nonce).expect("the OS random source is available");
        let reply = create_cookie_reply(&local, sender, mac1, &cookie, nonce);
        if let Err(e) = self.udp.send_to(&reply, p.src) {
            log::debug!("sending a cookie reply to {}: {e}", p.src);
        }
        Err(DropReason::UnderLoad)
    }

    fn on_cookie_reply(&mut self, p: &HandshakePacket) -> Result<u64, DropReason> {
        let msg = CookieReply::parse(p.bytes()).map_err(DropReason::from)?;
        let peer = self.peer_by_index(msg.receiver)?;
        self.with_state(peer, |hs, st| {
            let mac1 = st.mac1_sent_with(msg.receiver)?;
            let cookie = consume_cookie_reply(&st.peer.remote(), &msg, &mac1)
                .map_err(|_| DropReason::BadCookie)?;
            st.cookie = Some((cookie, hs.iface.now()));
            log::debug!(
                "received a cookie: peer {} is under load",
                st.peer.public_key
            );
            Ok(st.peer.id)
        })
    }

    fn send_initiation(&self, st: &mut State, retries: u32) {
        let peer = st.peer.clone();
        let Some(dest) = peer.endpoint() else {
            return;
        };
        let now = self.iface.now();
        // A retry replaces the attempt: its index is freed.
        self.forget_attempt(st);
        let Some((local, remote)) = self.iface.handshake_keys(&peer) else {
            // The key went since the timers were read.
            return;
        };
        let index = self.iface.new_index(&peer, || random_u64() as u32);
        match create_initiation(
            &local,
            &remote,
            random_private(),
            wall_clock_tai64n(),
            index,
            st.cookie(now).as_ref(),
        ) {
            Ok((state, msg)) => {
                st.attempt = Some(Attempt {
                    state,
                    keys: remote,
                    sent: now,
                    retries,
                    jitter: Duration::from_millis(random_u64() % MAX_JITTER_MS),
                });
                self.send(st, &msg, dest, now);
                log::debug!(
                    "sent a handshake initiation to peer {} at {dest}",
                    peer.public_key
                );
            }
            Err(e) => {
                self.iface.release_indices(&peer, &[index]);
                log::warn!("cannot create a handshake initiation: {e:?}");
            }
        }
    }

    fn send_keepalive(&self, peer: &Peer) {
        let (Some(session), Some(dest)) = (peer.sending_session(), peer.endpoint()) else {
            return;
        };
        let Some(counter) = session.next_counter() else {
            return;
        };
        let mut buf = [0u8; 32];
        let Some(n) = seal_in_place(
            &session.send,
            session.remote_index,
            counter,
            &mut buf,
            0,
            self.iface.mtu,
        ) else {
            return;
        };
        let now = self.iface.now();
        if self.udp.send_to(&buf[..n], dest).is_ok() {
            peer.sent(now, false);
        }
    }

    fn send(&self, st: &mut State, msg: &[u8], dest: Endpoint, now: Duration) {
        match self.udp.send_to(msg, dest) {
            Ok(()) => {
                st.handshake_sent = Some(now);
                st.peer.sent(now, false);
            }
            Err(e) => {
                log::debug!("sending a handshake message to {dest}: {e}");
                self.counters().drop(DropReason::SendError);
            }
        }
    }
}

fn note_endpoint(peer: &Peer, src: Endpoint) {
    if let Some(old) = peer.update_endpoint(src) {
        match old {
            Some(old) => log::info!(
                "peer endpoint changed: {old} -> {src} ({})",
                peer.public_key
            ),
            None => log::info!("peer endpoint learned: {src} ({})", peer.public_key),
        }
    }
}

fn random_key() -> Key {
    let mut k = [0u8; 32];
    getrandom::getrandom(&mut k).expect("the OS random source is available");
    k
}

/// A fresh ephemeral key.
fn random_private() -> PrivateKey {
    PrivateKey::random_with(getrandom::getrandom).expect("the OS random source is available")
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    u64::from_le_bytes(b)
}

fn wall_clock_tai64n() -> [u8; 12] {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    tai64n(t.as_secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fake::FakeUdp;
    use crate::pipeline::peer::PeerSpec;
    use crate::protocol::timers::Timing;
    use std::net::SocketAddr;

    fn spec(n: u32) -> PeerSpec {
        let mut key = [7u8; 32];
        key[4..8].copy_from_slice(&n.to_le_bytes());
        PeerSpec {
            public_key: PrivateKey::from_bytes(key).public_key(),
            preshared_key: None,
            endpoint: Some(SocketAddr::from(([192, 0, 2, 2], 51820))),
            initiate_at_start: false,
            allowed_ips: vec![],
            persistent_keepalive: None,
        }
    }

    /// Idle peers have no timer armed, so nothing looks at them; a peer
    /// gets one when something may be due, loses it when nothing is, and
    /// is planned again after the data stages stamped an event for it.
    #[test]
    fn only_peers_with_something_due_have_a_timer() {
        let iface = Interface::new(
            Some(PrivateKey::from_bytes([0x11; 32])),
            1420,
            Timing::default(),
        );
        for n in 0..1000 {
            iface.add_peer(spec(n)).unwrap();
        }
        let keepalive = iface
            .add_peer(PeerSpec {
                persistent_keepalive: Some(Duration::from_secs(25)),
                ..spec(1000)
            })
            .unwrap();
        let starting = iface
            .add_peer(PeerSpec {
                initiate_at_start: true,
                ..spec(1001)
            })
            .unwrap();
        let (udp, _other) = FakeUdp::pair(
            "192.0.2.1:51820".parse().unwrap(),
            "192.0.2.2:51820".parse().unwrap(),
            16,
        );
        let stats = Stats::default();
        let (events, _e) = crossbeam_channel::bounded(4);
        let mut hs = Handshaker::new(&iface, &udp, &stats, &events);
        let armed = |hs: &Handshaker| {
            let mut ids: Vec<_> = hs.due_at.keys().copied().collect();
            ids.sort();
            ids
        };
        // A keepalive needs a session first: only the initiation is due.
        assert_eq!(armed(&hs), [starting.id]);

        hs.evaluate_due(iface.now());
        let attempt = hs.states[&starting.id]
            .attempt
            .as_ref()
            .expect("the initiation at start went out");
        let index = attempt.state.sender_index;
        assert_eq!(
            hs.due_at[&starting.id],
            attempt.sent + Timing::default().rekey_timeout + attempt.jitter,
            "the retransmission is next"
        );
        assert!(iface
            .peer_by_index(index)
            .is_some_and(|p| p.id == starting.id));
        assert_eq!(udp.sent_to("192.0.2.2:51820".parse().unwrap()), 1);

        // Data waiting for an idle peer arms it...
        let idle = iface.peers()[5].clone();
        hs.state_of(idle.clone()).want_session = true;
        hs.evaluate(idle.id);
        assert_eq!(armed(&hs), [idle.id, starting.id]);
        // ...until there is nothing left for a timer to do.
        if let Some(st) = hs.states.get_mut(&idle.id) {
            (st.attempt, st.want_session) = (None, false);
        }
        hs.evaluate(idle.id);
        assert_eq!(armed(&hs), [starting.id]);

        // An event stamped by a data stage wakes the handshaker once for
        // the peer, however many follow before it looks.
        assert_eq!(iface.timers_touched().len(), 2, "the initiations sent");
        hs.tick_all(iface.now());
        assert!(iface.timers_touched().is_empty());
        let now = iface.now();
        idle.received(now, true);
        idle.received(now, true);
        keepalive.sent(now, false);
        let touched: Vec<u64> = iface.timers_touched().try_iter().collect();
        assert_eq!(touched, [idle.id, keepalive.id]);
        idle.timers_seen();
        idle.received(now, true);
        assert_eq!(
            iface.timers_touched().try_iter().count(),
            1,
            "again once seen"
        );

        // A removed peer loses its timer and its state, armed or not.
        iface.remove_peer(&starting.public_key);
        iface.remove_peer(&idle.public_key);
        assert!(hs.states.contains_key(&idle.id));
        hs.tick_all(iface.now());
        assert_eq!(armed(&hs), Vec::<u64>::new());
        assert!(!hs.states.contains_key(&starting.id));
        assert!(!hs.states.contains_key(&idle.id));
        assert_eq!(hs.states.len(), 1000);
        assert!(iface.peer_by_index(index).is_none());
        hs.evaluate_due(iface.now() + Duration::from_secs(3600));
        assert!(hs.deadlines.is_empty(), "stale deadlines are skipped");
    }
}
