//! `pipevpn up`: config -> control socket (bound), tun, PreUp hooks,
//! addresses, UDP socket, routes -> pipeline, control socket (served),
//! PostUp hooks, READY=1 to systemd ([`crate::notify`]); then wait for a
//! terminating signal, a failed stage or the control socket's deletion,
//! run the PreDown hooks, undo everything, run the PostDown hooks.
//!
//! What `pipevpnd` ([`crate::daemon`]) does too is a function here that
//! both call: catching the stop signals, binding the control socket,
//! starting the pipeline and serving the socket, waiting for a stop.
//!
//! SIGHUP re-reads the config file and applies it live as `wg syncconf`
//! would (see [`crate::reload`]), through the control socket's handler: a
//! file that does not parse changes nothing and the tunnel runs on. The
//! endpoint host routes follow the live peers at once: a peer added (over
//! the socket or by a reload) gets its own, a removed one's goes; routes
//! for AllowedIPs stay as they were made at start, as with wg-quick.
//!
//! Every step that changes the system is undone by a guard's `Drop`, so a
//! failure at any step, a signal or a failed stage leaves `ip route` as it
//! was. Routes are also recorded in a state file before they are added, so a
//! run killed with SIGKILL is cleaned up by the next start.

use crate::cidr::Cidr;
use crate::config::{Config, Dns, Endpoint, Hook, PeerConfig, Table};
use crate::control::{self, handler::Live, ControlSocket, Handler, SOCKET_DIR};
use crate::last_endpoint;
use crate::notify::{self, Watchdog};
use crate::pipeline::{self, PeerSpec, TunnelConfig};
use crate::protocol::keys::PublicKey;
use crate::protocol::timers::Timing;
use crate::protocol::uapi::{Set, Snapshot};
use crate::reload;
use crate::routes::{self, InstalledRoutes};
use crate::rundir::{self, RUN_DIR};
use crate::sys::{
    iface, privilege,
    tun::Tun,
    udp::{bind_udp_any, set_mark},
};
use crate::tun::OffloadTun;
use crate::udp::Udp;
use crate::{Error, Result};
use crossbeam_channel::{bounded, select, tick};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub struct UpOptions {
    /// Interface name (already validated).
    pub interface: String,
    /// Crypto workers per direction (see `TunnelConfig::crypto_workers`).
    pub crypto_workers: usize,
}

/// The signals whose default action would end the process with its routes
/// and route record left behind: Ctrl-C, `kill`, Ctrl-\ end in the same
/// clean teardown; SIGHUP (by convention, "read your config again") reloads
/// `up` and stops `pipevpnd`.
const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

pub fn run(config: Config, opts: UpOptions) -> Result<()> {
    with_stop_signals(|signals| run_tunnel(&config, &opts, signals))
}

/// Runs `tunnel` confined to CAP_NET_ADMIN with no_new_privs (see
/// [`privilege`]), with the [`SIGNALS`] caught and delivered on the channel
/// it is given. Confined first, since capabilities are per thread and the
/// signal thread is the process's first: every thread, and every program a
/// thread runs (hooks, resolvconf), has only what is left. Then signals: a
/// SIGTERM during setup still ends in a clean teardown.
pub(crate) fn with_stop_signals<T>(
    tunnel: impl FnOnce(&crossbeam_channel::Receiver<i32>) -> Result<T>,
) -> Result<T> {
    privilege::keep_only_net_admin()?;
    let mut signals =
        Signals::new(SIGNALS).map_err(|e| Error::sys("installing signal handlers", e))?;
    let signal_handle = signals.handle();
    let (signal_tx, signal_rx) = bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Blocks while the tunnel handles the one before: a SIGTERM
            // after a SIGHUP waits for the reload, and is never lost.
            for sig in signals.forever() {
                if signal_tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::sys("spawning the signal thread", e))?;

    let result = tunnel(&signal_rx);
    signal_handle.close();
    result
}

/// The pipeline over `tun` and `udp` (its UDP socket, already marked with
/// `fwmark` if not 0), and the control socket served over it. If serving
/// fails, the pipeline is stopped again.
pub(crate) fn start_tunnel(
    control: ControlSocket,
    tun: Tun,
    udp: UdpSocket,
    config: TunnelConfig,
    fwmark: u32,
) -> Result<(pipeline::TunnelHandle, control::Server, Arc<Live>)> {
    tun.set_nonblocking()?;
    // Shared with the control socket, for `listen_port` and `fwmark`.
    let udp = Arc::new(Udp::new(udp)?);
    let handle = pipeline::spawn(config, Arc::new(OffloadTun::new(tun)), udp.clone())?;
    let live =
        Arc::new(Live::new(handle.interface.clone(), udp, fwmark).with_stats(handle.stats.clone()));
    match control::serve(control, live.clone(), control::Limits::default()) {
        Ok(server) => Ok((handle, server, live)),
        Err(e) => {
            stop_pipeline(handle);
            Err(e)
        }
    }
}

/// Stops the pipeline on the way out of a failed start; a stage's failure
/// is logged, the start's error is the one returned.
fn stop_pipeline(handle: pipeline::TunnelHandle) {
    if let Err(stage) = handle.shutdown() {
        log::error!("{stage}");
    }
}

/// What wakes [`wait_for_stop`]'s caller while the tunnel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A peer's endpoint moved.
    EndpointMoved,
    /// A peer was added or removed.
    PeersChanged,
    /// SIGHUP, when the caller reloads on it (else it stops).
    Reload,
    /// A second passed.
    Second,
}

/// Runs until the tunnel on interface `name` must stop, calling `wake` on
/// each [`Wake`]; logs why it stops. It stops on a stop signal, a stage
/// that ended, and, as in wireguard-go, when the control socket file or the
/// interface is deleted (the latter ends the tun's stages).
pub(crate) fn wait_for_stop(
    name: &str,
    handle: &pipeline::TunnelHandle,
    server: &control::Server,
    signals: &crossbeam_channel::Receiver<i32>,
    reloads: bool,
    mut wake: impl FnMut(Wake),
) {
    // A ticker, not a timeout: moves coming more often than once a second
    // must not hold back the checks made once a second.
    let second = tick(Duration::from_secs(1));
    let failure = loop {
        select! {
            recv(signals) -> sig => match sig {
                Ok(SIGHUP) if reloads => wake(Wake::Reload),
                sig => {
                    log::info!("signal {}: shutting down", sig.unwrap_or_default());
                    break None;
                }
            },
            recv(handle.exits()) -> exit => break exit.ok(),
            recv(handle.interface.endpoint_moves()) -> _ => wake(Wake::EndpointMoved),
            recv(handle.interface.peer_set_changes()) -> _ => wake(Wake::PeersChanged),
            recv(second) -> _ => {
                wake(Wake::Second);
                if !server.still_there() {
                    log::info!("{} was deleted: shutting down", server.path().display());
                    break None;
                }
            }
        }
    };
    match &failure {
        Some(_) if iface::ifindex(name) == Err(nix::errno::Errno::ENODEV) => {
            log::info!("interface {name} was removed: shutting down")
        }
        Some(exit) => log::error!("stage {} ended: shutting down", exit.stage.name()),
        None => {}
    }
}

fn run_tunnel(
    config: &Config,
    opts: &UpOptions,
    signals: &crossbeam_channel::Receiver<i32>,
) -> Result<()> {
    let name = opts.interface.as_str();
    // Everything that can be refused is, before anything is changed.
    // Table = off: no routes; a number: the routes go into that table.
    let routed = config.interface.table != Table::Off;
    let route_table = match config.interface.table {
        Table::Id { id, .. } => Some(id),
        Table::Auto | Table::Off => None,
    };
    let resolvconf = match &config.interface.dns {
        Some(dns) => Some((dns, find_resolvconf(&config.path, dns)?)),
        None => None,
    };
    let timing = test_timing()?;
    let ipv6 = inner_ipv6(config)?;
    bindable_port(config)?;
    let endpoints = resolve_endpoints(config)?;

    let state = routes::state_path(Path::new(RUN_DIR), name)?;
    routes::sweep_stale(&state)?;
    // For the peers without an Endpoint, remember where they were, and after
    // a restart initiate there at once (see `last_endpoint`).
    let memory = match endpoints.iter().any(Option::is_none) {
        true => Some(last_endpoint::path(Path::new(RUN_DIR), name)?),
        false => None,
    };
    let last_seen = match &memory {
        Some(path) => last_endpoint::load(path)?,
        None => Default::default(),
    };
    let remembered: Vec<Option<SocketAddr>> = config
        .peers
        .iter()
        .zip(&endpoints)
        .map(|(p, e)| {
            e.is_none()
                .then(|| last_seen.get(&p.public_key).copied())
                .flatten()
        })
        .collect();
    // Where the peers are, as up last looked. Peers this config does not
    // wait for are forgotten at once, so the file only ever names this run's.
    let mut located = Located::new(&config.peers, &endpoints, &remembered);
    let kept = located.to_remember();
    if let Some(path) = memory.as_ref().filter(|_| kept.len() != last_seen.len()) {
        last_endpoint::save(path, &kept)?;
    }

    // Bound before anything is made, so a refusal (not root, a file in the
    // way) changes nothing; served once the pipeline runs.
    let control = bind_control(name, WhenTaken::ServeElsewhere)?;

    // From here on, in wg-quick's order (wg-quick(8), cmd_up): the
    // interface, PreUp, addresses and MTU, DNS, routes, PostUp. A failure
    // drops what was made so far, in reverse: routes, DNS, the interface.
    let tun = Tun::open(name)?;
    let hooks = Hooks {
        file: &config.path,
        interface: name,
    };
    hooks.run("PreUp", &config.interface.pre_up)?;
    configure_interface(
        name,
        &config.interface.addresses,
        config.interface.mtu,
        ipv6,
    )?;
    let dns = match resolvconf {
        Some((dns, program)) => Some(Resolver::set(program, name, dns, &config.path)?),
        None => None,
    };
    let udp = bind_udp_any(config.interface.listen_port.unwrap_or(0))?;
    if let Some(mark) = config.interface.fw_mark {
        set_mark(&udp, mark)?;
    }
    let bound = udp
        .local_addr()
        .map_err(|e| Error::sys("reading the UDP socket's address", e))?;
    reachable_endpoints(config, &endpoints, bound)?;

    let mut installed = match routed {
        true => {
            let tables = routes::read_route_tables()?;
            let allowed: Vec<Cidr> = config
                .peers
                .iter()
                .flat_map(|p| p.allowed_ips.iter().copied())
                .collect();
            let hosts: Vec<IpAddr> = endpoints.iter().flatten().map(SocketAddr::ip).collect();
            let plan = routes::plan(&allowed, name, route_table, &hosts, &tables)?;
            Some(InstalledRoutes::install(state, name, &plan, &hosts)?)
        }
        false => None,
    };
    let peers = config
        .peers
        .iter()
        .zip(endpoints.iter().zip(&remembered))
        .map(|(p, (endpoint, remembered))| PeerSpec {
            public_key: p.public_key,
            preshared_key: p.preshared_key.clone(),
            endpoint: endpoint.or(*remembered),
            initiate_at_start: remembered.is_some(),
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: p
                .persistent_keepalive
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
        })
        .collect();
    // Served before PostUp, whose hooks may well run `wg`.
    let (handle, server, live) = start_tunnel(
        control,
        tun,
        udp,
        TunnelConfig {
            private_key: Some(config.interface.private_key.clone()),
            mtu: usize::from(config.interface.mtu),
            timing,
            peers,
            crypto_workers: opts.crypto_workers,
        },
        config.interface.fw_mark.unwrap_or(0),
    )?;
    if let Err(e) = hooks.run("PostUp", &config.interface.post_up) {
        // As wg-quick: no down hooks, everything made is undone.
        server.stop();
        stop_pipeline(handle);
        return Err(e);
    }
    match (config.peers.as_slice(), endpoints.as_slice(), remembered.as_slice()) {
        ([_], [Some(e)], _) => log::info!("{name} up, udp port {}, peer at {e}", bound.port()),
        ([_], _, [Some(e)]) => log::info!(
            "{name} up, udp port {}, waiting for the peer; initiating to where it last was, {e}",
            bound.port()
        ),
        ([_], _, _) => log::info!("{name} up, udp port {}, waiting for the peer", bound.port()),
        (all, _, _) => log::info!(
            "{name} up, udp port {}, {} peers: {} with an Endpoint, {} initiating to where they last were",
            bound.port(),
            all.len(),
            endpoints.iter().flatten().count(),
            remembered.iter().flatten().count()
        ),
    }
    let watchdog = Watchdog::start(&handle, server.accepting());
    notify::ready();
    // Where the peers are now, for the host routes and the memory of the
    // peers without an Endpoint: at once when a peer's endpoint moves (a
    // reply to its new address must not loop into a full tunnel) or a peer
    // comes or goes, and once a second, which retries a memory write that
    // failed.
    let mut follow = |handle: &pipeline::TunnelHandle| {
        let moved = located.update(&handle.interface);
        if let Some(installed) = installed.as_mut().filter(|_| !moved.is_empty()) {
            follow_endpoints(installed, &moved, &located);
        }
        if let Some(path) = memory.as_ref().filter(|_| located.unsaved) {
            match last_endpoint::save(path, &located.to_remember()) {
                Ok(()) => located.unsaved = false,
                Err(e) => log::warn!("remembering the peers' endpoints: {e}"),
            }
        }
    };

    // The file as last applied, and its peers' Endpoints resolved: what a
    // reload changes, and where SaveConfig finds the peers' host names.
    let mut applied = (config.clone(), endpoints);
    wait_for_stop(name, &handle, &server, signals, true, |wake| {
        match wake {
            Wake::Reload => {
                notify::reloading();
                match reread(config, bound) {
                    Ok(new) => {
                        apply_reload(config, &new, &live);
                        applied = new;
                    }
                    Err(e) => log::error!("SIGHUP: {e}; nothing changed, the tunnel runs on"),
                }
                notify::ready();
            }
            Wake::Second | Wake::EndpointMoved | Wake::PeersChanged => {}
        }
        follow(&handle);
    });
    follow(&handle);
    notify::stopping();
    drop(watchdog);
    // wg-quick's cmd_down: PreDown, the teardown, PostDown. A failed hook
    // does not stop the teardown; the first failure is the exit's error.
    let pre_down = hooks.run("PreDown", &config.interface.pre_down);
    // Then, as wg-quick, the config is saved while the tunnel still runs.
    let saved_config = match config.interface.save_config {
        true => save_config(&live_config(config, &applied, &live.get(), bound.port())),
        false => Ok(()),
    };
    server.stop();
    let result = handle.shutdown();
    if let Some(installed) = installed {
        installed.remove();
    }
    drop(dns);
    let post_down = hooks.run("PostDown", &config.interface.post_down);
    first_error([result, pre_down, saved_config, post_down])
}

/// What to do when an interface of the same name in another network
/// namespace holds the control socket's usual path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenTaken {
    /// Serve ours in this namespace's directory of records (`up`, which
    /// runs from its config file).
    ServeElsewhere,
    /// Refuse to start: whoever configures us through the usual path (as
    /// wg-quick does pipevpnd) would configure the other interface.
    Refuse,
}

/// The control socket `wg` reaches, `/var/run/wireguard/<name>.sock`. That
/// path is the same in every network namespace: if an interface of the same
/// name in another one holds it, `when_taken` says what to do; served in
/// this namespace's directory of records instead, the warning says how
/// `wg` reaches it there.
pub(crate) fn bind_control(name: &str, when_taken: WhenTaken) -> Result<ControlSocket> {
    let taken = match control::bind(Path::new(SOCKET_DIR), name)? {
        Ok(socket) => return Ok(socket),
        Err(taken) => taken,
    };
    let pid = |t: &control::Taken| t.pid.map_or("unknown".into(), |p| p.to_string());
    // Names are unique in a namespace: a holder here runs this interface.
    let in_use = |t: &control::Taken| {
        Error::Input(format!(
            "interface {name} is in use: pid {} serves its control socket {}",
            pid(t),
            t.path.display()
        ))
    };
    if taken.pid.is_some_and(|pid| in_this_netns(pid, name)) {
        return Err(in_use(&taken));
    }
    if when_taken == WhenTaken::Refuse {
        return Err(Error::Input(format!(
            "{} is taken by pid {} (an interface {name} in another network namespace): \
             wg and wg-quick would configure that one; choose another name",
            taken.path.display(),
            pid(&taken)
        )));
    }
    let dir = rundir::netns_dir(Path::new(RUN_DIR))?;
    let socket = control::bind(&dir, name)?.map_err(|again| in_use(&again))?;
    let holder = pid(&taken);
    log::warn!(
        "{} is taken by pid {holder} (an interface {name} in another network namespace): \
         serving ours at {} instead; in this network namespace, \
         `unshare -m sh -c 'mount --bind {} {SOCKET_DIR} && wg show {name}'` reaches it",
        taken.path.display(),
        socket.path().display(),
        dir.display(),
    );
    Ok(socket)
}

/// Whether process `pid`, which holds the control socket of interface
/// `name`, is in our network namespace (false if it has gone).
/// /proc/PID/ns/net is readable only by a process whose capabilities cover
/// the holder's (ptrace(2), "ptrace access mode checking"), so ours, reduced
/// to CAP_NET_ADMIN, cannot read that of an unconfined holder (wireguard-go,
/// say): then an interface `name` here says the holder is here, since names
/// are unique in a namespace.
fn in_this_netns(pid: i32, name: &str) -> bool {
    let inode = |path: String| fs::metadata(path).map(|m| m.ino());
    match inode(format!("/proc/{pid}/ns/net")) {
        Ok(theirs) => inode("/proc/thread-self/ns/net".into()).is_ok_and(|ours| ours == theirs),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => iface::ifindex(name).is_ok(),
        Err(_) => false,
    }
}

/// SaveConfig: writes `saved` over its file (through a symbolic link to
/// it, as wg-quick does), mode 0600, as [`Config::render`] writes it.
fn save_config(saved: &Config) -> Result<()> {
    let path = fs::canonicalize(&saved.path)
        .map_err(|e| Error::sys(format!("SaveConfig: finding {}", saved.path.display()), e))?;
    rundir::replace_file(&path, &saved.render())?;
    log::info!("SaveConfig: wrote {}", path.display());
    Ok(())
}

/// What SaveConfig writes, as wg-quick's save_config: the interface as it
/// runs (`live`, what `wg showconf` shows: the key, the port and mark, every
/// peer with its AllowedIPs, PSK, keepalive and Endpoint, including those
/// added or changed over the control socket) with the wg-quick keys of
/// `started` (the file `up` started with: Address, DNS, hooks... are
/// applied only then). A peer of the file last `applied` (with its
/// Endpoints resolved) keeps its Endpoint as written while that still
/// leads to where the peer is. ListenPort stays out if the file had none
/// and the port is still the one the kernel picked (`picked`).
fn live_config(
    started: &Config,
    applied: &(Config, Vec<Option<SocketAddr>>),
    live: &Snapshot,
    picked: u16,
) -> Config {
    let (file, resolved) = applied;
    let in_file: HashMap<PublicKey, (&PeerConfig, Option<SocketAddr>)> = file
        .peers
        .iter()
        .zip(resolved)
        .map(|(p, r)| (p.public_key, (p, *r)))
        .collect();
    let mut saved = started.clone();
    let i = &mut saved.interface;
    if let Some(key) = &live.private_key {
        i.private_key = key.clone();
    }
    i.listen_port = match (file.interface.listen_port, live.listen_port) {
        (None, port) if port == picked => None,
        (_, port) => Some(port),
    };
    i.fw_mark = Some(live.fwmark).filter(|&m| m != 0);
    saved.peers = live
        .peers
        .iter()
        .map(|p| {
            let (written, resolved) = match in_file.get(&p.public_key) {
                Some(&(peer, resolved)) => (peer.clone(), resolved),
                None => (
                    PeerConfig {
                        line: 0,
                        public_key: p.public_key,
                        preshared_key: None,
                        endpoint: None,
                        allowed_ips: Vec::new(),
                        persistent_keepalive: None,
                    },
                    None,
                ),
            };
            let mut peer = with_current_endpoint(&written, resolved, p.endpoint);
            peer.preshared_key = Some(p.preshared_key.clone()).filter(|k| *k != Default::default());
            peer.allowed_ips = p.allowed_ips.clone();
            peer.persistent_keepalive = Some(p.persistent_keepalive_interval).filter(|&s| s != 0);
            peer
        })
        .collect();
    saved
}

/// `peer` with its Endpoint replaced by `now`, where the peer is, unless
/// that is `resolved`, where the file's Endpoint led (a host name stays a
/// host name while it is right).
fn with_current_endpoint(
    peer: &PeerConfig,
    resolved: Option<SocketAddr>,
    now: Option<SocketAddr>,
) -> PeerConfig {
    let mut saved = peer.clone();
    if let Some(addr) = now.filter(|&a| Some(a) != resolved) {
        saved.endpoint = Some(Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            line: peer.line,
        });
    }
    saved
}

/// Where each peer is, as `up` last looked: the config's first, in its
/// order, then those added over the control socket or by a reload, as
/// they appear.
struct Located {
    keys: Vec<PublicKey>,
    /// The index of each key in `keys`.
    index: HashMap<PublicKey, usize>,
    /// None for a peer not yet seen anywhere, or no longer a peer.
    now: Vec<Option<SocketAddr>>,
    /// The peer has no Endpoint: where it is goes into the memory.
    waiting: Vec<bool>,
    /// A waiting peer moved since the memory was last written.
    unsaved: bool,
}

impl Located {
    fn new(
        peers: &[PeerConfig],
        endpoints: &[Option<SocketAddr>],
        remembered: &[Option<SocketAddr>],
    ) -> Located {
        let keys: Vec<PublicKey> = peers.iter().map(|p| p.public_key).collect();
        Located {
            index: keys.iter().enumerate().map(|(i, k)| (*k, i)).collect(),
            keys,
            now: endpoints
                .iter()
                .zip(remembered)
                .map(|(e, r)| e.or(*r))
                .collect(),
            waiting: endpoints.iter().map(Option::is_none).collect(),
            unsaved: false,
        }
    }

    /// Reads every peer's endpoint; returns (peer, old address) of those
    /// whose address changed, a removed peer's included (it is now at no
    /// address). A peer added over the control socket or by a reload is
    /// followed from then on (it is in no file `up` started with, so never
    /// remembered).
    fn update(&mut self, iface: &pipeline::interface::Interface) -> Vec<(usize, Option<IpAddr>)> {
        let mut moved = Vec::new();
        let mut seen = vec![false; self.keys.len()];
        for peer in iface.peers() {
            let i = *self.index.entry(peer.public_key).or_insert_with(|| {
                self.keys.push(peer.public_key);
                self.now.push(None);
                self.waiting.push(false);
                seen.push(false);
                self.keys.len() - 1
            });
            seen[i] = true;
            let now = peer.endpoint().map(|e| e.addr);
            if now.is_some() && now != self.now[i] {
                self.unsaved |= self.waiting[i];
                let old = self.now[i].map(|a| a.ip());
                if now.map(|a| a.ip()) != old {
                    moved.push((i, old));
                }
                self.now[i] = now;
            }
        }
        for (i, _) in seen.iter().enumerate().filter(|(_, &seen)| !seen) {
            if let Some(old) = self.now[i].take() {
                self.unsaved |= self.waiting[i];
                moved.push((i, Some(old.ip())));
            }
        }
        moved
    }

    /// What the memory holds: the peers without an Endpoint that were seen.
    fn to_remember(&self) -> Vec<(PublicKey, SocketAddr)> {
        self.keys
            .iter()
            .zip(&self.now)
            .zip(&self.waiting)
            .filter(|(_, &waiting)| waiting)
            .filter_map(|((k, now), _)| now.map(|a| (*k, a)))
            .collect()
    }

    /// Whether some peer other than `except` is at `ip`.
    fn used_by_another(&self, ip: IpAddr, except: usize) -> bool {
        self.now
            .iter()
            .enumerate()
            .any(|(i, a)| i != except && a.is_some_and(|a| a.ip() == ip))
    }
}

/// Moves the host routes of the peers that moved: whitepaper §2.1 lets a
/// peer's endpoint change with any authenticated packet, and a full tunnel
/// must keep the new address out of itself. A peer that is gone (no
/// address now) takes its host route with it.
fn follow_endpoints(
    installed: &mut InstalledRoutes,
    moved: &[(usize, Option<IpAddr>)],
    located: &Located,
) {
    let tables = match routes::read_route_tables() {
        Ok(t) => t,
        Err(e) => return log::warn!("following moved endpoints: {e}"),
    };
    for &(i, old) in moved {
        let still_used = old.is_some_and(|o| located.used_by_another(o, i));
        let Some(new) = located.now[i] else {
            let Some(old) = old else { continue };
            if let Err(e) = installed.forget_endpoint(old, still_used) {
                log::warn!(
                    "removing the host route of peer {}, gone, to {old}: {e}",
                    located.keys[i]
                );
            }
            continue;
        };
        match installed.follow_endpoint(old, new.ip(), still_used, &tables) {
            Ok(()) => log::debug!("routes follow peer {} to {new}", located.keys[i]),
            Err(e) => log::warn!(
                "moving the host route of peer {} to {new}: {e}",
                located.keys[i]
            ),
        }
    }
}

/// Each peer's Endpoint, resolved (the error names its line).
fn resolve_endpoints(config: &Config) -> Result<Vec<Option<SocketAddr>>> {
    config
        .peers
        .iter()
        .map(|p| {
            p.endpoint
                .as_ref()
                .map(|e| e.resolve(&config.path))
                .transpose()
        })
        .collect()
}

/// Where the ports that only CAP_NET_BIND_SERVICE may bind end, in the
/// calling thread's network namespace.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Refuses a ListenPort that needs CAP_NET_BIND_SERVICE (below
/// [`UNPRIVILEGED_PORT_START`], 1024 by default, for IPv4 and IPv6): `up`
/// keeps CAP_NET_ADMIN alone (see [`privilege`]).
fn bindable_port(config: &Config) -> Result<()> {
    let Some(port) = config.interface.listen_port else {
        return Ok(());
    };
    let read = fs::read_to_string(UNPRIVILEGED_PORT_START)
        .map_err(|e| Error::sys(format!("reading {UNPRIVILEGED_PORT_START}"), e))?;
    let start: u32 = read.trim().parse().map_err(|_| {
        Error::Input(format!(
            "{UNPRIVILEGED_PORT_START}: '{}' is not a port number",
            read.trim()
        ))
    })?;
    match u32::from(port) < start {
        true => Err(Error::Input(format!(
            "{}: ListenPort = {port} is below net.ipv4.ip_unprivileged_port_start ({start}), \
             so binding it needs CAP_NET_BIND_SERVICE, and pipevpn keeps only CAP_NET_ADMIN: \
             choose a port from {start} up",
            config.path.display()
        ))),
        false => Ok(()),
    }
}

/// Refuses an IPv6 Endpoint when the UDP socket, `bound`, is IPv4 only.
fn reachable_endpoints(
    config: &Config,
    endpoints: &[Option<SocketAddr>],
    bound: SocketAddr,
) -> Result<()> {
    for (peer, e) in config.peers.iter().zip(endpoints) {
        if let Some(e) = e.filter(|e| e.ip().to_canonical().is_ipv6() && bound.is_ipv4()) {
            return Err(Error::Config {
                file: config.path.clone(),
                line: peer.endpoint.as_ref().map_or(peer.line, |e| e.line),
                msg: format!("Endpoint {e} is IPv6, but this kernel has no IPv6"),
            });
        }
    }
    Ok(())
}

/// SIGHUP, first half: reads `started`'s file again and resolves its
/// Endpoints. Everything that can be refused is refused here, before
/// anything changes (the error names the file and line).
fn reread(started: &Config, bound: SocketAddr) -> Result<(Config, Vec<Option<SocketAddr>>)> {
    let new = Config::load(&started.path)?;
    let endpoints = resolve_endpoints(&new)?;
    reachable_endpoints(&new, &endpoints, bound)?;
    Ok((new, endpoints))
}

/// SIGHUP, second half: applies the file `reread` gave to `live` with `wg
/// syncconf`'s semantics ([`reload::sync_set`]), through the handler a `wg
/// set` goes through. A ListenPort the handler refuses is logged and the
/// rest applies; so is a failure of the set itself, which (as for `wg
/// set`) stops where it happened.
fn apply_reload(started: &Config, new: &(Config, Vec<Option<SocketAddr>>), live: &Live) {
    let (new, endpoints) = new;
    let file = new.path.display();
    let later = reload::restart_keys(&started.interface, &new.interface);
    if !later.is_empty() {
        log::warn!(
            "SIGHUP: {file}: {} changed: not applied, restart to apply",
            later.join(", ")
        );
    }
    let mut set = reload::sync_set(new, endpoints, &live.get());
    let port = set.listen_port.take();
    let changes = set.peers.len();
    let why = |errno: crate::protocol::uapi::Errno| io::Error::from_raw_os_error(-errno.code());
    let origin = format!("SIGHUP: {file}");
    if let Err(errno) = live.apply(set, &origin) {
        return log::error!(
            "SIGHUP: {file}: applying it failed ({}); the changes before the failing \
             one stay applied, the tunnel runs on",
            why(errno)
        );
    }
    if let Some(port) = port {
        let moved = live.apply(
            Set {
                listen_port: Some(port),
                ..Set::default()
            },
            &origin,
        );
        if let Err(errno) = moved {
            log::warn!(
                "SIGHUP: {file}: ListenPort = {port} not applied ({}); the rest is",
                why(errno)
            );
        }
    }
    log::info!(
        "SIGHUP: {file} applied: {} peers, {changes} added, changed or removed",
        new.peers.len()
    );
}

/// The first error of `results`, in order; later ones are logged.
fn first_error(results: impl IntoIterator<Item = Result<()>>) -> Result<()> {
    let mut first = Ok(());
    for result in results {
        match (&first, result) {
            (Ok(()), Err(e)) => first = Err(e),
            (Err(_), Err(e)) => log::error!("{e}"),
            (_, Ok(())) => {}
        }
    }
    first
}

/// Runs the hooks of one phase (wg-quick's PreUp, PostUp, PreDown,
/// PostDown) as wg-quick does: each with bash, `%i` replaced by the
/// interface name, in file order, stopping at the first that fails. Their
/// output goes to our stderr, beside the log.
struct Hooks<'a> {
    file: &'a Path,
    interface: &'a str,
}

impl Hooks<'_> {
    fn run(&self, key: &str, hooks: &[Hook]) -> Result<()> {
        for hook in hooks {
            let command = hook.command.replace("%i", self.interface);
            let fail = |msg: String| Error::Config {
                file: self.file.to_path_buf(),
                line: hook.line,
                msg: format!("{key} hook '{command}' {msg}"),
            };
            log::info!("[#] {command}");
            let stdout = io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| fail(format!("cannot be given our stderr: {e}")))?;
            let status = Command::new("bash")
                .arg("-c")
                .arg(&command)
                .stdin(Stdio::null())
                .stdout(stdout)
                .status()
                .map_err(|e| fail(format!("cannot be run by bash: {e}")))?;
            if !status.success() {
                return Err(fail(format!("failed ({status})")));
            }
        }
        Ok(())
    }
}

/// The `resolvconf` that `DNS` needs (wg-quick's way of setting the
/// resolver), from PATH: its absence is an error at the `DNS` line.
fn find_resolvconf(file: &Path, dns: &Dns) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("resolvconf"))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| Error::Config {
            file: file.to_path_buf(),
            line: dns.line,
            msg: "DNS needs resolvconf, which is not in PATH: install resolvconf or \
                  openresolv, or remove DNS"
                .into(),
        })
}

/// The name servers and search domains given to resolvconf for the
/// interface, taken back when dropped (wg-quick's set_dns and unset_dns).
struct Resolver {
    program: PathBuf,
    /// The interface's name in resolvconf's records.
    record: String,
}

impl Resolver {
    fn set(program: PathBuf, interface: &str, dns: &Dns, file: &Path) -> Result<Resolver> {
        let order = fs::read_to_string(INTERFACE_ORDER).ok();
        // A resolvconf that is a link (e.g. to resolvectl) has no such order.
        let linked = fs::symlink_metadata(&program).is_ok_and(|m| m.file_type().is_symlink());
        let prefix = match (order, linked) {
            (Some(order), false) => resolvconf_prefix(&order),
            _ => String::new(),
        };
        let record = format!("{prefix}{interface}");
        let mut text = String::new();
        for server in &dns.servers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !dns.search.is_empty() {
            text.push_str(&format!("search {}\n", dns.search.join(" ")));
        }
        run_resolvconf(&program, &["-a", &record, "-m", "0", "-x"], &text).map_err(|msg| {
            Error::Config {
                file: file.to_path_buf(),
                line: dns.line,
                msg: format!("DNS: {msg}"),
            }
        })?;
        Ok(Resolver { program, record })
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if let Err(msg) = run_resolvconf(&self.program, &["-d", &self.record, "-f"], "") {
            log::warn!("removing the DNS settings: {msg}");
        }
    }
}

/// Debian's resolvconf orders its records by this file's patterns.
const INTERFACE_ORDER: &str = "/etc/resolvconf/interface-order";

/// What wg-quick puts before the interface name for Debian's resolvconf:
/// the first pattern of interface-order that is a name and a `*` (`tun*`
/// gives `tun.`), so the tunnel's servers rank where tunnels rank.
fn resolvconf_prefix(order: &str) -> String {
    order
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_suffix('*'))
        .find(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(|name| format!("{name}."))
        .unwrap_or_default()
}

/// Runs resolvconf with `args`, `input` on its stdin and its stdout on our
/// stderr; the error says which command failed and how.
fn run_resolvconf(program: &Path, args: &[&str], input: &str) -> std::result::Result<(), String> {
    let command = format!("{} {}", program.display(), args.join(" "));
    log::info!("[#] {command}");
    let stdout = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot give {command} our stderr: {e}"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .map_err(|e| format!("cannot run {command}: {e}"))?;
    // A resolvconf that exits without reading is judged by its status.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {command}: {e}"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("{command} failed ({status})")),
    }
}

/// Protocol timers, shortened only by the integration tests through
/// `PIPEVPN_TEST_TIMING` (e.g. `rekey_after=10`) so a rekey can be watched
/// in seconds; deliberately not a documented option.
pub(crate) fn test_timing() -> Result<Timing> {
    let timing = Timing::default();
    match std::env::var("PIPEVPN_TEST_TIMING") {
        Ok(spec) => {
            let t = timing
                .with_overrides(&spec)
                .map_err(|e| Error::Input(format!("PIPEVPN_TEST_TIMING: {e}")))?;
            log::warn!("test timers in force: {t:?}");
            Ok(t)
        }
        Err(_) => Ok(timing),
    }
}

/// Whether the tunnel carries IPv6: an IPv6 Address or AllowedIPs prefix.
/// IPv6 needs an MTU of at least 1280 (the kernel turns it off below), which
/// is checked here, before anything is made.
fn inner_ipv6(config: &Config) -> Result<bool> {
    const IPV6_MIN_MTU: u16 = 1280;
    let ipv6 = config
        .interface
        .addresses
        .iter()
        .chain(config.peers.iter().flat_map(|p| &p.allowed_ips))
        .any(|c| c.addr.is_ipv6());
    if ipv6 && config.interface.mtu < IPV6_MIN_MTU {
        return Err(Error::Input(format!(
            "{}: IPv6 in Address or AllowedIPs needs an MTU of at least {IPV6_MIN_MTU}, not {}",
            config.path.display(),
            config.interface.mtu
        )));
    }
    Ok(ipv6)
}

/// IPv6 on (static addresses only) or off, MTU, addresses (the first IPv4
/// one as the interface's own, more as `name:N` aliases; IPv6 ones are
/// simply added), then up: in this order, so the kernel never sends IPv6
/// autoconfiguration into the tunnel.
fn configure_interface(name: &str, addresses: &[Cidr], mtu: u16, ipv6: bool) -> Result<()> {
    // IPv6 settings before the MTU: below 1280 the kernel removes the
    // device's IPv6 settings, and writing them would then fail.
    if ipv6 {
        iface::enable_static_ipv6(name)?;
    } else {
        iface::disable_ipv6(name)?;
    }
    iface::set_mtu(name, u32::from(mtu))?;
    let mut v4_count = 0;
    for cidr in addresses {
        match cidr.addr {
            IpAddr::V4(addr) => {
                let label = match v4_count {
                    0 => name.to_string(),
                    i => format!("{name}:{i}"),
                };
                v4_count += 1;
                iface::set_ipv4_address(&label, addr)?;
                iface::set_ipv4_netmask(&label, cidr.prefix)?;
            }
            IpAddr::V6(addr) => iface::set_ipv6_address(name, addr, cidr.prefix)?,
        }
    }
    iface::set_up(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_PEER: &str =
        "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                            Address = 10.0.0.1/24\n[Peer]\n\
                            PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
                            AllowedIPs = 10.0.0.2/32\n";

    #[test]
    fn saved_endpoint_is_where_the_peer_is() {
        let waiting = Config::parse(Path::new("t.conf"), ONE_PEER).unwrap();
        let named = Config::parse(
            Path::new("t.conf"),
            &format!("{ONE_PEER}Endpoint = vpn.example:51820\n"),
        )
        .unwrap();
        let endpoint = |p: &PeerConfig| p.endpoint.as_ref().map(ToString::to_string);
        let here: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        let moved: SocketAddr = "[2001:db8::9]:4000".parse().unwrap();
        // The waiting side saves the endpoint it learned, or none.
        assert_eq!(
            endpoint(&with_current_endpoint(&waiting.peers[0], None, Some(here))).as_deref(),
            Some("192.0.2.7:51820")
        );
        assert_eq!(
            endpoint(&with_current_endpoint(&waiting.peers[0], None, None)),
            None
        );
        // A host name that still leads to the peer is kept; a roam is saved.
        assert_eq!(
            endpoint(&with_current_endpoint(
                &named.peers[0],
                Some(here),
                Some(here)
            ))
            .as_deref(),
            Some("vpn.example:51820")
        );
        assert_eq!(
            endpoint(&with_current_endpoint(
                &named.peers[0],
                Some(here),
                Some(moved)
            ))
            .as_deref(),
            Some("[2001:db8::9]:4000")
        );
        assert_eq!(
            endpoint(&with_current_endpoint(&named.peers[0], Some(here), None)).as_deref(),
            Some("vpn.example:51820")
        );
    }

    #[test]
    fn saved_config_is_the_live_interface_with_the_wg_quick_keys_of_the_file() {
        use crate::protocol::keys::{PresharedKey, PrivateKey};
        use crate::protocol::uapi::PeerSnapshot;
        let key = |n: u8| PrivateKey::from_bytes([n; 32]);
        let started = Config::parse(
            Path::new("t.conf"),
            &format!(
                "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.1/24\nPostUp = echo up\n\
                 SaveConfig = true\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.0.0.2/32\n\
                 Endpoint = vpn.example:51820\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.0.0.4/32\n",
                &*key(1).to_base64(),
                key(2).public_key(),
                key(4).public_key()
            ),
        )
        .unwrap();
        let here: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        let applied = (started.clone(), vec![Some(here), None]);
        let peer = |n: u8, endpoint: &str, allowed: &[&str], psk: u8, keepalive| PeerSnapshot {
            public_key: key(n).public_key(),
            preshared_key: PresharedKey::from_bytes([psk; 32]),
            endpoint: Some(endpoint.parse().unwrap()),
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
            persistent_keepalive_interval: keepalive,
            allowed_ips: allowed.iter().map(|c| c.parse().unwrap()).collect(),
            extra: Vec::new(),
        };
        // Peer 2 got a prefix more over the socket, peer 4 was removed,
        // peer 3 added; the key and the mark were changed.
        let live = Snapshot {
            private_key: Some(key(5)),
            listen_port: 40000,
            fwmark: 0x20,
            extra: Vec::new(),
            peers: vec![
                peer(2, "192.0.2.7:51820", &["10.0.0.2/32", "10.0.5.0/24"], 0, 0),
                peer(3, "192.0.2.9:4000", &["10.0.0.3/32"], 7, 25),
            ],
        };
        let saved = live_config(&started, &applied, &live, 40000);
        let text = saved.render();
        let back = Config::parse(Path::new("t.conf"), &text).unwrap();
        assert_eq!(back.interface.private_key, key(5));
        assert_eq!(
            back.interface.listen_port, None,
            "the kernel's pick stays out"
        );
        assert_eq!(back.interface.fw_mark, Some(0x20));
        assert_eq!(back.interface.addresses, started.interface.addresses);
        assert_eq!(back.interface.post_up[0].command, "echo up");
        assert!(back.interface.save_config);
        let keys: Vec<_> = back.peers.iter().map(|p| p.public_key).collect();
        assert_eq!(keys, [key(2).public_key(), key(3).public_key()]);
        let (two, three) = (&back.peers[0], &back.peers[1]);
        assert_eq!(
            two.endpoint.as_ref().unwrap().to_string(),
            "vpn.example:51820"
        );
        assert_eq!(two.allowed_ips, live.peers[0].allowed_ips);
        assert_eq!(
            (two.preshared_key.is_none(), two.persistent_keepalive),
            (true, None)
        );
        assert_eq!(
            three.endpoint.as_ref().unwrap().to_string(),
            "192.0.2.9:4000"
        );
        assert_eq!(three.allowed_ips, live.peers[1].allowed_ips);
        assert_eq!(three.preshared_key, Some(PresharedKey::from_bytes([7; 32])));
        assert_eq!(three.persistent_keepalive, Some(25));
        // A port set over the socket is saved.
        let moved = Snapshot {
            listen_port: 40001,
            ..live
        };
        assert_eq!(
            live_config(&started, &applied, &moved, 40000)
                .interface
                .listen_port,
            Some(40001)
        );
    }

    #[test]
    fn a_reload_applies_the_rest_when_the_listen_port_is_refused() {
        use crate::pipeline::interface::Interface;
        use crate::protocol::keys::PrivateKey;

        let started = Config::parse(Path::new("t.conf"), ONE_PEER).unwrap();
        let iface = Arc::new(Interface::new(
            Some(started.interface.private_key.clone()),
            1420,
            Timing::default(),
        ));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let live = Live::new(iface.clone(), Arc::new(Udp::new(udp).unwrap()), 0);
        // A port another socket holds (refused), another MTU (not applied),
        // a new peer.
        let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let added = PrivateKey::from_bytes([2; 32]).public_key();
        let text = ONE_PEER.replace(
            "Address",
            &format!("ListenPort = {taken}\nMTU = 1380\nAddress"),
        ) + &format!("[Peer]\nPublicKey = {added}\nAllowedIPs = 10.0.0.3/32\n");
        let new = Config::parse(Path::new("t.conf"), &text).unwrap();
        apply_reload(&started, &(new, vec![None, None]), &live);
        let peers: Vec<PublicKey> = iface.peers().iter().map(|p| p.public_key).collect();
        assert_eq!(peers, [started.peers[0].public_key, added]);
        assert_eq!(
            iface
                .routes()
                .lookup("10.0.0.3".parse().unwrap())
                .map(|p| p.public_key),
            Some(added)
        );
        assert_eq!(iface.mtu, 1420, "MTU waits for a restart");
        assert_eq!(
            live.get().listen_port,
            port,
            "the refused port changes nothing"
        );
        drop(holder);
    }

    #[test]
    fn located_follows_peers_added_and_removed_live() {
        use crate::pipeline::interface::Interface;
        use crate::protocol::keys::PrivateKey;

        let config = Config::parse(Path::new("t.conf"), ONE_PEER).unwrap();
        let iface = Interface::new(
            Some(PrivateKey::from_bytes([1; 32])),
            1420,
            Timing::default(),
        );
        let spec = |key, endpoint: Option<&str>| PeerSpec {
            public_key: key,
            preshared_key: None,
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            initiate_at_start: false,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        };
        let waiting = config.peers[0].public_key;
        iface.add_peer(spec(waiting, None)).unwrap();
        let mut located = Located::new(&config.peers, &[None], &[None]);
        assert_eq!(located.update(&iface), []);

        // A peer added over the control socket is followed.
        let added = PrivateKey::from_bytes([2; 32]).public_key();
        iface
            .add_peer(spec(added, Some("192.0.2.9:51820")))
            .unwrap();
        assert_eq!(located.update(&iface), [(1, None)]);
        assert_eq!(located.now[1], Some("192.0.2.9:51820".parse().unwrap()));
        assert!(located.used_by_another("192.0.2.9".parse().unwrap(), 0));
        assert!(located.to_remember().is_empty(), "it is in no file");

        // Removed, it is at no address: a move, so its host route goes;
        // added again, it is followed again.
        iface.remove_peer(&added);
        assert_eq!(
            located.update(&iface),
            [(1, Some("192.0.2.9".parse().unwrap()))]
        );
        assert_eq!(located.update(&iface), [], "reported once");
        assert_eq!(located.now[1], None);
        assert!(!located.used_by_another("192.0.2.9".parse().unwrap(), 0));
        iface
            .add_peer(spec(added, Some("192.0.2.10:51820")))
            .unwrap();
        assert_eq!(located.update(&iface), [(1, None)]);
        assert_eq!(located.keys.len(), 2, "the same entry, not a new one");
    }

    #[test]
    fn resolvconf_prefix_as_wg_quick_finds_it() {
        // Debian's default interface-order, shortened.
        let debian = "lo.inet6\nlo.inet\nlo.@(dnsmasq|pdnsd)\nlo\n  tun*\ntap*\nhso*\neth*\n*\n";
        assert_eq!(resolvconf_prefix(debian), "tun.");
        assert_eq!(resolvconf_prefix("wg-x*\ntun*\n"), "wg-x.");
        assert_eq!(resolvconf_prefix("lo\n*\nen+([0-9])*\n"), "");
        assert_eq!(resolvconf_prefix(""), "");
    }
}
