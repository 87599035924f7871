//! The control thread: answers and makes handshakes, runs the timers of
//! whitepaper §6, installs keypairs, and sends keepalives. It is the only
//! stage that draws random numbers or reads the wall clock (for TAI64N).

use super::device::UdpDevice;
use super::handshake_queue::HandshakePacket;
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
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the timers are evaluated when nothing else wakes the thread.
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
    sent: Duration,
    retries: u32,
    jitter: Duration,
}

/// The handshaker's wiring, set up by [`super::spawn`].
pub struct Handshaker<'a> {
    pub local: LocalStatic,
    pub remote: PeerStatic,
    pub peer: &'a Peer,
    pub udp: &'a dyn UdpDevice,
    pub stats: &'a Stats,
    pub session_events: &'a Sender<SessionEvent>,
    pub persistent_keepalive: Option<Duration>,
    pub state: State,
}

impl State {
    /// The state at start; with `initiate`, a handshake is wanted at once,
    /// as if data were waiting, and given up after the usual attempts.
    pub fn new(initiate: bool) -> State {
        State {
            want_session: initiate,
            ..State::default()
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
}

/// What the handshaker remembers between messages and ticks.
#[derive(Default)]
pub struct State {
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
    gate: Gate,
}

impl Handshaker<'_> {
    fn counters(&self) -> &StageStats {
        self.stats.stage(Stage::Handshaker)
    }

    pub fn run(
        mut self,
        handshake_in: &Receiver<HandshakePacket>,
        want_session: &Receiver<()>,
        stop: &StopFd,
    ) {
        while !stop.is_set() {
            select! {
                recv(handshake_in) -> p => if let Ok(p) = p {
                    let waiting = handshake_in.len();
                    self.counters().queue(waiting);
                    self.state.gate.load.observe(waiting >= BUSY_QUEUE, self.peer.now());
                    self.handle(&p);
                },
                recv(want_session) -> w => if w.is_ok() {
                    self.state.want_session = true;
                },
                default(TICK) => {},
            }
            self.tick();
        }
    }

    /// Applies the timer rules to the current state.
    fn tick(&mut self) {
        let now = self.peer.now();
        self.state.gate.forget_idle(now);
        if self.peer.sending_session().is_some() {
            self.state.want_session = false;
        }
        let current = self.peer.keypairs().current;
        let ev = Events {
            now,
            sent_any: self.peer.sent_any.get(),
            sent_data_unanswered: self.peer.sent_data_unanswered.get(),
            recv_any: self.peer.recv_any.get(),
            recv_data: self.peer.recv_data.get(),
            session: current.as_ref().map(|s| SessionInfo {
                created: s.created,
                we_initiated: s.we_initiated,
                last_minute_done: s.last_minute_done.load(Relaxed),
                sent_messages: s.counter(),
            }),
            pending: self.state.attempt.as_ref().map(|a| Pending {
                sent: a.sent,
                retries: a.retries,
                jitter: a.jitter,
            }),
            handshake_sent: self.state.handshake_sent,
            session_derived: self.state.session_derived,
            persistent_keepalive: self.persistent_keepalive,
            want_session: self.state.want_session,
            have_endpoint: self.peer.endpoint().is_some(),
        };
        let due = timers::due(&self.peer.timing, &ev);
        if due.last_minute {
            if let Some(s) = &current {
                s.last_minute_done.store(true, Relaxed);
            }
        }
        if due.give_up {
            log::warn!(
                "no handshake after {} s: giving up until there is traffic again",
                self.peer.timing.rekey_attempt_time.as_secs()
            );
            self.state.attempt = None;
            self.state.want_session = false;
            // Only new traffic starts the next attempt.
            self.peer.sent_data_unanswered.clear();
            let _ = self.session_events.try_send(SessionEvent::GaveUp);
        }
        match due.initiate {
            Some(Initiate::Retry) => {
                let retries = self.state.attempt.as_ref().map_or(0, |a| a.retries) + 1;
                log::debug!("handshake retry {retries}");
                self.send_initiation(retries);
            }
            Some(Initiate::New) => self.send_initiation(0),
            None => {}
        }
        if due.keepalive {
            self.send_keepalive();
        }
        if due.zero_keys {
            // Dropping the sessions and the attempt overwrites their keys
            // (SessionKey, PrivateKey); a stage holding a snapshot of the
            // keypairs lets go of it when its batch is done.
            log::info!(
                "erasing session keys and handshake state after 3 x REJECT_AFTER_TIME without a new session"
            );
            self.peer.clear_keypairs();
            self.state.attempt = None;
            self.state.response_sent = None;
            self.state.session_derived = None;
        }
    }

    fn handle(&mut self, p: &HandshakePacket) {
        let result = match message_type(p.bytes()).map_err(DropReason::from) {
            Ok(MessageType::Initiation) => self.on_initiation(p),
            Ok(MessageType::Response) => self.on_response(p),
            Ok(MessageType::CookieReply) => self.on_cookie_reply(p),
            Ok(MessageType::Transport) => Err(DropReason::UnexpectedMessage),
            Err(r) => Err(r),
        };
        match result {
            Ok(()) => self.counters().pass(1, p.bytes().len()),
            Err(reason) => {
                log::debug!(
                    "dropped handshake message from {}: {}",
                    p.src,
                    reason.name()
                );
                self.counters().drop(reason);
            }
        }
    }

    /// Responder side (whitepaper §5.4.2, §5.4.3).
    fn on_initiation(&mut self, p: &HandshakePacket) -> Result<(), DropReason> {
        let msg = Initiation::parse(p.bytes()).map_err(DropReason::from)?;
        self.admit(p, msg.sender, &msg.mac1)?;
        let accepted =
            consume_initiation(&self.local, &msg).map_err(|_| DropReason::HandshakeFailed)?;
        if accepted.peer_public != self.remote.public {
            return Err(DropReason::UnknownPeer);
        }
        if self
            .state
            .last_timestamp
            .is_some_and(|t| accepted.timestamp <= t)
        {
            return Err(DropReason::StaleTimestamp);
        }
        let now = self.peer.now();
        if self
            .state
            .last_initiation_at
            .is_some_and(|t| now.saturating_sub(t) < INITIATION_FLOOD)
        {
            return Err(DropReason::InitiationFlood);
        }
        self.state.last_timestamp = Some(accepted.timestamp);
        self.state.last_initiation_at = Some(now);
        self.note_endpoint(p.src);

        let index = self.new_index();
        let cookie = self.cookie(now);
        let (keys, response) = create_response(
            &self.local,
            &self.remote,
            &accepted,
            random_private(),
            index,
            cookie.as_ref(),
        )
        .map_err(|_| DropReason::HandshakeFailed)?;
        self.peer.install_responded(Session::new(&keys, now, false));
        self.state.session_derived = Some(now);
        self.state.response_sent = Some((index, response_mac1(&response)));
        self.peer.received(now, false);
        self.send(&response, p.src, now);
        log::debug!("answered a handshake initiation from {}", p.src);
        Ok(())
    }

    /// Initiator side (whitepaper §5.4.3).
    fn on_response(&mut self, p: &HandshakePacket) -> Result<(), DropReason> {
        let msg = Response::parse(p.bytes()).map_err(DropReason::from)?;
        self.admit(p, msg.sender, &msg.mac1)?;
        let attempt = self.state.attempt_answered_by(msg.receiver)?;
        let keys = consume_response(&self.local, &self.remote, &attempt.state, &msg)
            .map_err(|_| DropReason::HandshakeFailed)?;
        let now = self.peer.now();
        let took = now.saturating_sub(attempt.sent);
        self.state.attempt = None;
        self.state.want_session = false;
        self.peer.install_initiated(Session::new(&keys, now, true));
        self.state.session_derived = Some(now);
        self.peer.received(now, false);
        self.note_endpoint(p.src);
        self.stats.handshake_completed(took.as_millis() as u64);
        log::info!(
            "handshake completed with {} in {} ms (initiator)",
            p.src,
            took.as_millis()
        );
        // Waiting packets go out now; the keepalive confirms the session to
        // the responder even when nothing waits (whitepaper §5.4.6).
        let _ = self.session_events.try_send(SessionEvent::Ready);
        self.send_keepalive();
        Ok(())
    }

    /// The cheap checks before any Diffie-Hellman work: mac1 always; under
    /// load also mac2, answering a missing one with a cookie reply, and then
    /// the per-source limit (whitepaper §5.3, §5.4.4,
    /// [`Gate`]).
    fn admit(
        &mut self,
        p: &HandshakePacket,
        sender: u32,
        mac1: &[u8; 16],
    ) -> Result<(), DropReason> {
        if !verify_mac1(&self.local, p.bytes()) {
            return Err(DropReason::BadMac1);
        }
        let now = self.peer.now();
        let cookie = match self
            .state
            .gate
            .admit(p.bytes(), p.src.addr, now, random_key)
        {
            Admission::Process => return Ok(()),
            Admission::RateLimited => return Err(DropReason::RateLimited),
            Admission::SendCookie(cookie) => cookie,
        };
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut nonce).expect("the OS random source is available");
        let reply = create_cookie_reply(&self.local, sender, mac1, &cookie, nonce);
        if let Err(e) = self.udp.send_to(&reply, p.src) {
            log::debug!("sending a cookie reply to {}: {e}", p.src);
        }
        Err(DropReason::UnderLoad)
    }

    fn on_cookie_reply(&mut self, p: &HandshakePacket) -> Result<(), DropReason> {
        let msg = CookieReply::parse(p.bytes()).map_err(DropReason::from)?;
        let mac1 = self.state.mac1_sent_with(msg.receiver)?;
        let cookie =
            consume_cookie_reply(&self.remote, &msg, &mac1).map_err(|_| DropReason::BadCookie)?;
        self.state.cookie = Some((cookie, self.peer.now()));
        log::debug!("received a cookie: the peer is under load");
        Ok(())
    }

    fn cookie(&self, now: Duration) -> Option<[u8; 16]> {
        self.state
            .cookie
            .filter(|(_, at)| now.saturating_sub(*at) < COOKIE_LIFETIME)
            .map(|(c, _)| c)
    }

    fn send_initiation(&mut self, retries: u32) {
        let Some(dest) = self.peer.endpoint() else {
            return;
        };
        let now = self.peer.now();
        let index = self.new_index();
        let cookie = self.cookie(now);
        match create_initiation(
            &self.local,
            &self.remote,
            random_private(),
            wall_clock_tai64n(),
            index,
            cookie.as_ref(),
        ) {
            Ok((state, msg)) => {
                self.state.attempt = Some(Attempt {
                    state,
                    sent: now,
                    retries,
                    jitter: Duration::from_millis(random_u64() % MAX_JITTER_MS),
                });
                self.send(&msg, dest, now);
                log::debug!("sent a handshake initiation to {dest}");
            }
            Err(e) => log::warn!("cannot create a handshake initiation: {e:?}"),
        }
    }

    fn send_keepalive(&self) {
        let (Some(session), Some(dest)) = (self.peer.sending_session(), self.peer.endpoint())
        else {
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
            self.peer.mtu,
        ) else {
            return;
        };
        let now = self.peer.now();
        if self.udp.send_to(&buf[..n], dest).is_ok() {
            self.peer.sent(now, false);
        }
    }

    fn send(&mut self, msg: &[u8], dest: Endpoint, now: Duration) {
        match self.udp.send_to(msg, dest) {
            Ok(()) => {
                self.state.handshake_sent = Some(now);
                self.peer.sent(now, false);
            }
            Err(e) => {
                log::debug!("sending a handshake message to {dest}: {e}");
                self.counters().drop(DropReason::SendError);
            }
        }
    }

    fn note_endpoint(&self, src: Endpoint) {
        if let Some(old) = self.peer.update_endpoint(src) {
            match old {
                Some(old) => log::info!("peer endpoint changed: {old} -> {src}"),
                None => log::info!("peer endpoint learned: {src}"),
            }
        }
    }

    /// A random index not used by any of our keypairs or our pending attempt.
    fn new_index(&self) -> u32 {
        let keypairs = self.peer.keypairs();
        loop {
            let i = random_u64() as u32;
            let pending = self.state.attempt.as_ref().map(|a| a.state.sender_index);
            if pending != Some(i) && keypairs.indices().all(|used| used != i) {
                return i;
            }
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
