//! `pipevpn up`: config -> control socket (bound), tun, PreUp hooks,
//! addresses, UDP socket, routes -> pipeline, control socket (served),
//! PostUp hooks; then wait for a terminating signal, a failed stage or the
//! control socket's deletion, run the PreDown hooks, undo everything, run
//! the PostDown hooks.
//!
//! Every step that changes the system is undone by a guard's `Drop`, so a
//! failure at any step, a signal or a failed stage leaves `ip route` as it
//! was. Routes are also recorded in a state file before they are added, so a
//! run killed with SIGKILL is cleaned up by the next start.

use crate::cidr::Cidr;
use crate::config::{Config, Dns, Endpoint, Hook, PeerConfig, Table};
use crate::control::{self, handler::Live, ControlSocket, SOCKET_DIR};
use crate::last_endpoint;
use crate::pipeline::{self, PeerSpec, TunnelConfig};
use crate::protocol::keys::PublicKey;
use crate::protocol::timers::Timing;
use crate::routes::{self, InstalledRoutes};
use crate::rundir::{self, RUN_DIR};
use crate::sys::{
    iface,
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
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub struct UpOptions {
    /// Interface name (already validated).
    pub interface: String,
}

/// The signals whose default action would end the process with its routes
/// and route record left behind: Ctrl-C, `kill`, a closed terminal, Ctrl-\.
/// Each ends in the same clean teardown.
const STOP_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

pub fn run(config: Config, opts: UpOptions) -> Result<()> {
    // Signals first: a SIGTERM during setup still ends in a clean teardown.
    let mut signals =
        Signals::new(STOP_SIGNALS).map_err(|e| Error::sys("installing signal handlers", e))?;
    let signal_handle = signals.handle();
    let (signal_tx, signal_rx) = bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = signal_tx.send(sig);
            }
        })
        .map_err(|e| Error::sys("spawning the signal thread", e))?;

    let result = run_tunnel(&config, &opts, &signal_rx);
    signal_handle.close();
    result
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
    // Each peer's Endpoint, resolved (the error names its line).
    let endpoints = config
        .peers
        .iter()
        .map(|p| {
            p.endpoint
                .as_ref()
                .map(|e| e.resolve(&config.path))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;

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
    let control = bind_control(name)?;

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
    // The same socket, for the control socket's `fwmark`.
    let udp_for_mark = udp
        .try_clone()
        .map_err(|e| Error::sys("duplicating the UDP socket", e))?;
    for (peer, e) in config.peers.iter().zip(&endpoints) {
        if let Some(e) = e.filter(|e| e.ip().to_canonical().is_ipv6() && bound.is_ipv4()) {
            return Err(Error::Config {
                file: config.path.clone(),
                line: peer.endpoint.as_ref().map_or(peer.line, |e| e.line),
                msg: format!("Endpoint {e} is IPv6, but this kernel has no IPv6"),
            });
        }
    }

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
    tun.set_nonblocking()?;

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
    let handle = pipeline::spawn(
        TunnelConfig {
            private_key: config.interface.private_key.clone(),
            mtu: usize::from(config.interface.mtu),
            timing,
            peers,
        },
        Arc::new(OffloadTun::new(tun)),
        Arc::new(Udp::new(udp)),
    )?;
    // Served before PostUp, whose hooks may well run `wg`.
    let live = Live::new(
        handle.interface.clone(),
        udp_for_mark,
        bound.port(),
        config.interface.fw_mark.unwrap_or(0),
    )
    .with_stats(handle.stats.clone());
    let served = control::serve(control, Arc::new(live), control::Limits::default());
    let server = match served.and_then(|server| {
        hooks.run("PostUp", &config.interface.post_up)?;
        Ok(server)
    }) {
        Ok(server) => server,
        Err(e) => {
            // As wg-quick: no down hooks, everything made is undone.
            if let Err(stage) = handle.shutdown() {
                log::error!("{stage}");
            }
            return Err(e);
        }
    };
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
    // Where the peers are now, for the host routes and the memory of the
    // peers without an Endpoint: at once when a peer's endpoint moves (a
    // reply to its new address must not loop into a full tunnel), and once
    // a second, which retries a memory write that failed.
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

    // A ticker, not a timeout: moves coming more often than once a second
    // must not hold back the checks made once a second.
    let second = tick(Duration::from_secs(1));
    let failure = loop {
        select! {
            recv(signals) -> sig => {
                log::info!("signal {}: shutting down", sig.unwrap_or_default());
                break None;
            }
            recv(handle.exits()) -> exit => break exit.ok(),
            recv(handle.interface.endpoint_moves()) -> _ => follow(&handle),
            recv(second) -> _ => {
                follow(&handle);
                // As wireguard-go: deleting the socket asks the tunnel to go.
                if !server.still_there() {
                    log::info!("{} was deleted: shutting down", server.path().display());
                    break None;
                }
            }
        }
    };
    follow(&handle);
    match &failure {
        // As wireguard-go: deleting the interface asks the tunnel to go.
        Some(_) if iface::ifindex(name) == Err(nix::errno::Errno::ENODEV) => {
            log::info!("interface {name} was removed: shutting down")
        }
        Some(exit) => log::error!("stage {} ended: shutting down", exit.stage.name()),
        None => {}
    }
    // wg-quick's cmd_down: PreDown, the teardown, PostDown. A failed hook
    // does not stop the teardown; the first failure is the exit's error.
    let pre_down = hooks.run("PreDown", &config.interface.pre_down);
    // Then, as wg-quick, the config is saved while the tunnel still runs.
    let saved_config = match config.interface.save_config {
        true => save_config(config, &endpoints, &located.now),
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

/// The control socket `wg` reaches, `/var/run/wireguard/<name>.sock`. That
/// path is the same in every network namespace: if an interface of the same
/// name in another one holds it, ours goes into this namespace's directory
/// of records instead, and the warning says how `wg` reaches it there.
fn bind_control(name: &str) -> Result<ControlSocket> {
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
    if taken.pid.is_some_and(in_this_netns) {
        return Err(in_use(&taken));
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

/// Whether process `pid` is in our network namespace (false if it cannot
/// be told: it has gone, say).
fn in_this_netns(pid: i32) -> bool {
    let inode = |path: String| fs::metadata(path).map(|m| m.ino()).ok();
    let theirs = inode(format!("/proc/{pid}/ns/net"));
    theirs.is_some() && theirs == inode("/proc/thread-self/ns/net".into())
}

/// SaveConfig: writes the config back over its file (through a symbolic
/// link to it, as wg-quick does), mode 0600, as [`Config::render`] writes
/// it: the keys as read, comments gone, and the peer's Endpoint where the
/// peer is now if that is not where the file's Endpoint resolved to.
fn save_config(
    config: &Config,
    resolved: &[Option<SocketAddr>],
    now: &[Option<SocketAddr>],
) -> Result<()> {
    let mut saved = config.clone();
    for (peer, (resolved, now)) in saved.peers.iter_mut().zip(resolved.iter().zip(now)) {
        *peer = with_current_endpoint(peer, *resolved, *now);
    }
    let path = fs::canonicalize(&config.path)
        .map_err(|e| Error::sys(format!("SaveConfig: finding {}", config.path.display()), e))?;
    rundir::replace_file(&path, &saved.render())?;
    log::info!("SaveConfig: wrote {}", path.display());
    Ok(())
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
/// order, then those added over the control socket, as they appear.
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
    /// whose address changed. A peer added over the control socket is
    /// followed from then on (it is in no file, so never remembered); a
    /// removed one is forgotten: it is at no address (its host route, if
    /// any, stays until the tunnel goes down).
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
            if self.now[i].take().is_some() {
                self.unsaved |= self.waiting[i];
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
/// must keep the new address out of itself.
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
        let Some(new) = located.now[i] else { continue };
        let still_used = old.is_some_and(|o| located.used_by_another(o, i));
        match installed.follow_endpoint(old, new.ip(), still_used, &tables) {
            Ok(()) => log::debug!("routes follow peer {} to {new}", located.keys[i]),
            Err(e) => log::warn!(
                "moving the host route of peer {} to {new}: {e}",
                located.keys[i]
            ),
        }
    }
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
fn test_timing() -> Result<Timing> {
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
    fn located_follows_peers_added_and_removed_live() {
        use crate::pipeline::interface::Interface;
        use crate::protocol::keys::PrivateKey;

        let config = Config::parse(Path::new("t.conf"), ONE_PEER).unwrap();
        let iface = Interface::new(PrivateKey::from_bytes([1; 32]), 1420, Timing::default());
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

        // Removed, it is at no address; added again, it is followed again.
        iface.remove_peer(&added);
        assert_eq!(located.update(&iface), []);
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
