//! The routes a tunnel adds: which ones ([`plan`], pure), and a record on
//! disk of those actually added ([`InstalledRoutes`]) so they are undone at
//! exit, or swept by the next run ([`sweep_stale`]) after a crash.
//!
//! The record lives in `RUN_DIR/<netns inode>/<iface>.routes`, under the
//! rules of [`rundir`] (root's, 0600, no symbolic links, namespace cookie):
//!
//! ```text
//! pid 4242
//! netns 8195
//! endpoint 203.0.113.7 198.51.100.2
//! 203.0.113.7/32 via 192.168.1.1 dev eth0
//! 198.51.100.2/32 via 192.168.1.1 dev eth0
//! 0.0.0.0/1 dev pv0
//! 128.0.0.0/1 dev pv0
//! ::/1 dev pv0
//! 8000::/1 dev pv0
//! ```
//!
//! With `Table = N` the lines are those of table N, as `ip route` writes
//! them (`10.0.0.0/8 dev pv0 table 1234`); a line without `table` is one of
//! the main table, so records written before tables were supported read as
//! they always did.
//!
//! The whole plan is written before the first route is added, so a crash
//! half-way leaves at worst lines for routes that do not exist, which the
//! sweep skips. The sweep deletes only what pipevpn could have added for
//! that interface: routes through it, and host routes to the recorded
//! endpoints (one line lists the endpoints of every peer). When a peer's
//! endpoint moves, [`InstalledRoutes::follow_endpoint`] records the new host
//! route before adding it, and removes the old one; when a peer goes,
//! [`InstalledRoutes::forget_endpoint`] removes its host route.

use crate::cidr::Cidr;
use crate::rundir::{self, Netns};
use crate::sys::route::{add_route, del_route, RouteSpec};
use crate::{Error, Result};
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The routing tables of the calling thread's network namespace.
/// (`/proc/net/...` shows the main thread's, which differs in a thread
/// that switched namespaces.)
const ROUTE_TABLE_V4: &str = "/proc/thread-self/net/route";
const ROUTE_TABLE_V6: &str = "/proc/thread-self/net/ipv6_route";

/// An IPv4 or IPv6 route. `net` has no host bits set and `gateway` is of
/// the same address family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub net: Cidr,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    /// The routing table by number (`Table = N`); `None` is the main table.
    pub table: Option<u32>,
}

impl Route {
    /// The route as the kernel calls take it.
    pub fn spec(&self) -> RouteSpec<'_> {
        RouteSpec {
            dest: self.net.addr,
            prefix: self.net.prefix,
            gateway: self.gateway,
            dev: self.dev.as_deref(),
            table: self.table,
        }
    }

    fn via_dev(net: Cidr, dev: &str, table: Option<u32>) -> Route {
        Route {
            net,
            gateway: None,
            dev: Some(dev.to_string()),
            table,
        }
    }
}

/// `0.0.0.0/1 dev pv0`, `fd00::7/128 via fe80::1 dev eth0`,
/// `10.0.0.0/8 dev pv0 table 1234`: the form `ip route` uses, and the form
/// of the record's lines.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spec().fmt(f)
    }
}

impl FromStr for Route {
    type Err = String;

    /// Parses the [`Display`](fmt::Display) form back.
    fn from_str(s: &str) -> std::result::Result<Route, String> {
        let mut words = s.split_whitespace();
        let net: Cidr = words
            .next()
            .ok_or("empty route")?
            .parse()
            .map_err(|e| format!("route '{s}': {e}"))?;
        let mut route = Route {
            net,
            gateway: None,
            dev: None,
            table: None,
        };
        while let Some(word) = words.next() {
            let value = words
                .next()
                .ok_or_else(|| format!("route '{s}': '{word}' needs a value"))?;
            match word {
                "via"
                    if route.gateway.is_none() && route.dev.is_none() && route.table.is_none() =>
                {
                    let gw: IpAddr = value
                        .parse()
                        .map_err(|_| format!("route '{s}': bad gateway '{value}'"))?;
                    if gw.is_ipv4() != net.addr.is_ipv4() {
                        return Err(format!(
                            "route '{s}': gateway '{value}' is of another address family"
                        ));
                    }
                    route.gateway = Some(gw);
                }
                "dev" if route.dev.is_none() && route.table.is_none() => {
                    route.dev = Some(value.to_string())
                }
                "table" if route.table.is_none() => {
                    let table = value
                        .parse()
                        .map_err(|_| format!("route '{s}': bad table '{value}'"))?;
                    route.table = Some(table);
                }
                _ => return Err(format!("route '{s}': unexpected '{word}'")),
            }
        }
        Ok(route)
    }
}

/// The text of the routing tables as the kernel shows them, for [`plan`].
#[derive(Debug, Clone, Default)]
pub struct RouteTables {
    /// /proc/net/route.
    pub v4: String,
    /// /proc/net/ipv6_route; empty when the kernel has no IPv6.
    pub v6: String,
}

/// Reads the routing tables of the calling thread's network namespace.
pub fn read_route_tables() -> Result<RouteTables> {
    let read =
        |path: &str| fs::read_to_string(path).map_err(|e| Error::sys(format!("reading {path}"), e));
    let v6 = match read(ROUTE_TABLE_V6) {
        Err(Error::Sys { source, .. }) if source.kind() == io::ErrorKind::NotFound => String::new(),
        other => other?,
    };
    Ok(RouteTables {
        v4: read(ROUTE_TABLE_V4)?,
        v6,
    })
}

/// A usable route of the kernel's tables.
#[derive(Debug)]
struct KernelRoute {
    net: Cidr,
    gateway: Option<IpAddr>,
    dev: String,
    metric: u32,
}

// Route flags from <linux/route.h> and <linux/ipv6_route.h>.
const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;
const RTF_ANYCAST: u32 = 0x0010_0000;
const RTF_LOCAL: u32 = 0x8000_0000;

/// The routes in /proc/net/route text that can carry traffic: up, not
/// reject routes. Malformed lines are skipped.
fn kernel_routes_v4(text: &str) -> impl Iterator<Item = KernelRoute> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
        // The kernel prints each address as the native-endian integer of its
        // network-order bytes.
        let addr = |i: usize| hex(i).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
        let (dest, gateway, flags, mask) = (addr(1)?, addr(2)?, hex(3)?, addr(7)?);
        let metric = f.get(6)?.parse().ok()?;
        let mask = u32::from(mask);
        let prefix = mask.count_ones();
        let contiguous = mask.checked_shl(prefix).unwrap_or(0) == 0;
        let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && contiguous;
        usable.then(|| KernelRoute {
            net: Cidr {
                addr: dest.into(),
                prefix: prefix as u8,
            },
            gateway: (flags & RTF_GATEWAY != 0).then_some(gateway.into()),
            dev: f[0].to_string(),
            metric,
        })
    })
}

/// The routes in /proc/net/ipv6_route text (all tables) that can carry
/// traffic to another host: up, not reject routes, not the local and anycast
/// entries of the host's own addresses, not source-specific. Malformed lines
/// are skipped.
fn kernel_routes_v6(text: &str) -> impl Iterator<Item = KernelRoute> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
        let addr = |i: usize| {
            let v = f.get(i).filter(|v| v.len() == 32)?;
            u128::from_str_radix(v, 16).ok().map(Ipv6Addr::from)
        };
        let (dest, prefix, src_prefix) = (addr(0)?, hex(1)?, hex(3)?);
        let (gateway, metric, flags, dev) = (addr(4)?, hex(5)?, hex(8)?, f.get(9)?);
        let net = Cidr::new(dest.into(), u8::try_from(prefix).ok()?)?;
        let excluded = RTF_REJECT | RTF_LOCAL | RTF_ANYCAST;
        let usable = flags & RTF_UP != 0 && flags & excluded == 0 && src_prefix == 0;
        usable.then(|| KernelRoute {
            net,
            gateway: (flags & RTF_GATEWAY != 0).then_some(gateway.into()),
            dev: dev.to_string(),
            metric,
        })
    })
}

/// The route the kernel uses for `ip` now: longest prefix, then lowest
/// metric; without the routes through `skip`, if given (the tunnel's own,
/// once they are in place).
fn current_route_to(ip: IpAddr, tables: &RouteTables, skip: Option<&str>) -> Option<KernelRoute> {
    kernel_routes_v4(&tables.v4)
        .chain(kernel_routes_v6(&tables.v6))
        .filter(|r| r.net.contains(ip) && Some(r.dev.as_str()) != skip)
        .min_by_key(|r| (std::cmp::Reverse(r.net.prefix), r.metric))
}

/// The routes for a tunnel on `iface`, in the order to add them.
///
/// With a `table` number (`Table = N`), as wg-quick's `add_route`: each
/// AllowedIPs prefix goes into that table as written, a /0 as a /0 (there
/// is no default route to win over in a table of the tunnel's own), and no
/// host route to an endpoint: the main table, which routes the tunnel's
/// own packets unless the user's policy rules say otherwise, gains nothing
/// that could capture one. Sending the encrypted packets around table N is
/// the job of the rules the user adds (`FwMark` with a `not fwmark` rule,
/// as wg-quick does for its own full tunnel).
///
/// In the main table (`table` is `None`), each AllowedIPs prefix becomes a
/// route through `iface`; `0.0.0.0/0`
/// becomes `0.0.0.0/1` and `128.0.0.0/1`, `::/0` becomes `::/1` and
/// `8000::/1`, which win over the default route without replacing it. If the
/// endpoint lies inside a tunnelled prefix that is at least as specific as
/// the route the kernel uses for it now (normally the default route), a host
/// route to the endpoint through that current route comes first, so the
/// encrypted packets do not loop into the tunnel. `allowed_ips` are those of
/// every peer, `endpoints` the peers' known endpoints (a peer with none, the
/// waiting side, needs no host route).
pub fn plan(
    allowed_ips: &[Cidr],
    iface: &str,
    table: Option<u32>,
    endpoints: &[IpAddr],
    tables: &RouteTables,
) -> Result<Vec<Route>> {
    let mut tunnel = Vec::new();
    for net in allowed_ips.iter().map(Cidr::network) {
        if net.prefix == 0 && table.is_none() {
            tunnel.extend(halves(net.addr).map(|half| Route::via_dev(half, iface, None)));
        } else {
            tunnel.push(Route::via_dev(net, iface, table));
        }
    }
    let mut routes = Vec::new();
    for ep in endpoints {
        routes.extend(endpoint_route(
            ep.to_canonical(),
            &tunnel,
            iface,
            tables,
            false,
        )?);
    }
    // A set, not a scan of the list: thousands of AllowedIPs stay linear, and
    // two peers behind one address share a host route.
    let mut seen = HashSet::new();
    routes.retain(|r| seen.insert(r.clone()));
    routes.extend(tunnel.into_iter().filter(|r| seen.insert(r.clone())));
    Ok(routes)
}

/// The two /1 prefixes that together cover the whole address family of
/// `addr`.
fn halves(addr: IpAddr) -> [Cidr; 2] {
    let (low, high): (IpAddr, IpAddr) = match addr {
        IpAddr::V4(_) => (
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::new(128, 0, 0, 0).into(),
        ),
        IpAddr::V6(_) => (
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0).into(),
        ),
    };
    [low, high].map(|addr| Cidr { addr, prefix: 1 })
}

/// The host route that keeps traffic to the endpoint `ep` out of the tunnel,
/// if the tunnel's main-table routes would otherwise capture it (routes in
/// a numbered table capture nothing there, see [`plan`]). `tunnel_up`: the
/// tunnel's routes are in the kernel's tables already, so the route to take
/// is the best one not through `iface`.
fn endpoint_route(
    ep: IpAddr,
    tunnel: &[Route],
    iface: &str,
    tables: &RouteTables,
    tunnel_up: bool,
) -> Result<Option<Route>> {
    let Some(captured_by) = tunnel
        .iter()
        .filter(|r| r.table.is_none() && r.net.contains(ep))
        .map(|r| r.net.prefix)
        .max()
    else {
        return Ok(None);
    };
    let Some(current) = current_route_to(ep, tables, tunnel_up.then_some(iface)) else {
        log::warn!("no route to endpoint {ep}; its packets would go into {iface}");
        return Ok(None);
    };
    if current.dev == iface {
        return Err(Error::Input(format!(
            "the route to endpoint {ep} already goes through {iface}"
        )));
    }
    Ok((current.net.prefix <= captured_by).then(|| Route {
        net: Cidr::host(ep),
        gateway: current.gateway,
        dev: Some(current.dev),
        table: None,
    }))
}

/// `run_dir/<netns inode>/<iface>.routes`: tunnels with the same interface
/// name in different namespaces keep separate records (see [`rundir`]).
pub fn state_path(run_dir: &Path, iface: &str) -> Result<PathBuf> {
    Ok(Netns::current()?
        .dir(run_dir)
        .join(format!("{iface}.routes")))
}

/// A route record: who wrote it, where, and the routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    pub pid: u32,
    /// The cookie of the namespace it was written in ([`rundir`]).
    pub netns: Option<u64>,
    /// The peers' endpoints: the only addresses the record may hold host
    /// routes to.
    pub endpoints: Vec<IpAddr>,
    pub routes: Vec<Route>,
}

impl RouteRecord {
    pub fn render(&self) -> String {
        let endpoints: Vec<String> = self.endpoints.iter().map(IpAddr::to_string).collect();
        let endpoints = match endpoints.is_empty() {
            true => "-".to_string(),
            false => endpoints.join(" "),
        };
        let mut text = format!(
            "pid {}\nnetns {}\nendpoint {endpoints}\n",
            self.pid,
            rundir::render_cookie(self.netns)
        );
        for r in &self.routes {
            text.push_str(&format!("{r}\n"));
        }
        text
    }

    /// Parses [`RouteRecord::render`]'s form back; the error names the line.
    pub fn parse(text: &str) -> std::result::Result<RouteRecord, String> {
        let mut lines = text.lines();
        let mut header = |n: usize, key: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|v| v.strip_prefix(' '))
                .ok_or(format!("line {n}: expected '{key} ...'"))
        };
        let pid = header(1, "pid")?;
        let pid = pid
            .parse()
            .map_err(|_| format!("line 1: bad pid '{pid}'"))?;
        let netns =
            rundir::parse_cookie(header(2, "netns")?).map_err(|e| format!("line 2: {e}"))?;
        let endpoints = match header(3, "endpoint")? {
            "-" => Vec::new(),
            list => list
                .split(' ')
                .map(|e| {
                    e.parse()
                        .map_err(|_| format!("line 3: bad endpoint address '{e}'"))
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        let routes = lines
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| l.parse().map_err(|e| format!("line {}: {e}", i + 4)))
            .collect::<std::result::Result<_, _>>()?;
        Ok(RouteRecord {
            pid,
            netns,
            endpoints,
            routes,
        })
    }

    /// Whether `r` is a route pipevpn adds for `iface`: a route through
    /// `iface` (in any table), or a host route to a recorded endpoint in the
    /// main table (see [`plan`]).
    fn could_have_added(&self, r: &Route, iface: &str) -> bool {
        let host = r.net == Cidr::host(r.net.addr) && r.table.is_none();
        let through_tunnel = r.dev.as_deref() == Some(iface) && r.gateway.is_none();
        through_tunnel
            || (host && self.endpoints.contains(&r.net.addr) && r.dev.as_deref() != Some(iface))
    }
}

/// Routes this process added, recorded at `state`; dropping it deletes them
/// (in reverse order) and the record.
#[derive(Debug)]
pub struct InstalledRoutes {
    state: PathBuf,
    /// `routes` holds exactly the routes this process added.
    record: RouteRecord,
    /// The routes through the tunnel in the plan, added or not: what a moved
    /// endpoint may be captured by.
    tunnel: Vec<Route>,
    iface: String,
}

impl InstalledRoutes {
    /// Adds `routes` (a [`plan`] for `iface`) in order, for peers at
    /// `endpoints`. The whole plan is
    /// recorded in one write before the first is added, so a crash half-way
    /// leaves at worst lines for routes that do not exist, which the sweep
    /// skips. A route that already exists is someone else's: it is not
    /// deleted later, and the record is rewritten once at the end without
    /// it. On failure everything added so far is deleted again, the record
    /// removed, and the error returned.
    pub fn install(
        state: PathBuf,
        iface: &str,
        routes: &[Route],
        endpoints: &[IpAddr],
    ) -> Result<InstalledRoutes> {
        let mut endpoints: Vec<IpAddr> = endpoints.iter().map(IpAddr::to_canonical).collect();
        endpoints.dedup();
        let record = RouteRecord {
            pid: std::process::id(),
            netns: Netns::current()?.cookie,
            endpoints,
            routes: routes.to_vec(),
        };
        rundir::write(&state, &record.render())?;
        // From here on, an early return drops `installed`, which undoes it.
        let mut installed = InstalledRoutes {
            state,
            record: RouteRecord {
                routes: Vec::with_capacity(routes.len()),
                ..record
            },
            tunnel: routes
                .iter()
                .filter(|r| r.dev.as_deref() == Some(iface) && r.gateway.is_none())
                .cloned()
                .collect(),
            iface: iface.to_string(),
        };
        for r in routes {
            if add_route(r.spec())? {
                installed.record.routes.push(r.clone());
            } else {
                log::info!("route {r} already exists; leaving it alone");
            }
        }
        if installed.record.routes.len() != routes.len() {
            installed.write()?;
        }
        Ok(installed)
    }

    fn write(&self) -> Result<()> {
        rundir::write(&self.state, &self.record.render())
    }

    /// The routes this process added, in the order added.
    pub fn routes(&self) -> &[Route] {
        &self.record.routes
    }

    /// A peer's endpoint moved from `from` to `to`: if the tunnel captures
    /// `to`, a host route to it through the best route outside the tunnel
    /// (`tables` as they are now), recorded before it is added; then the host
    /// route to `from` goes, unless `from_still_used` (another peer is
    /// there). On an error the record still matches the kernel's tables.
    pub fn follow_endpoint(
        &mut self,
        from: Option<IpAddr>,
        to: IpAddr,
        from_still_used: bool,
        tables: &RouteTables,
    ) -> Result<()> {
        let to = to.to_canonical();
        if !self.record.endpoints.contains(&to) {
            let host = endpoint_route(to, &self.tunnel, &self.iface, tables, true)?;
            self.record.endpoints.push(to);
            match host.filter(|h| !self.record.routes.contains(h)) {
                Some(h) => {
                    self.record.routes.push(h.clone());
                    self.write()?;
                    let added = add_route(h.spec());
                    if !matches!(added, Ok(true)) {
                        // Someone else's route, or none: not ours to delete.
                        self.record.routes.retain(|r| *r != h);
                        self.write()?;
                    }
                    added?;
                }
                None => self.write()?,
            }
        }
        match from.map(|f| f.to_canonical()).filter(|f| *f != to) {
            Some(from) => self.forget_endpoint(from, from_still_used),
            None => Ok(()),
        }
    }

    /// No peer is at `from` any more (it moved or was removed): its host
    /// route goes, unless `still_used` (another peer is there), and so does
    /// the address from the record.
    pub fn forget_endpoint(&mut self, from: IpAddr, still_used: bool) -> Result<()> {
        let from = from.to_canonical();
        if still_used {
            return Ok(());
        }
        let iface = self.iface.as_str();
        let host = |r: &Route| r.net == Cidr::host(from) && r.dev.as_deref() != Some(iface);
        if let Some(old) = self.record.routes.iter().find(|r| host(r)).cloned() {
            del_route(old.spec())?;
            self.record.routes.retain(|r| *r != old);
        }
        self.record.endpoints.retain(|e| *e != from);
        self.write()
    }

    /// Deletes the routes and the record now (the same as dropping it).
    pub fn remove(self) {}
}

impl Drop for InstalledRoutes {
    /// Routes that cannot be deleted stay in the record, so the next run's
    /// sweep tries again; the record goes only when all are gone.
    fn drop(&mut self) {
        let mut left = Vec::new();
        for r in self.record.routes.iter().rev() {
            if let Err(e) = del_route(r.spec()) {
                log::warn!("could not remove route: {e}");
                left.insert(0, r.clone());
            }
        }
        let done = if left.is_empty() {
            rundir::remove(&self.state)
        } else {
            self.record.routes = left;
            self.write()
        };
        if let Err(e) = done {
            log::warn!("{e}");
        }
    }
}

/// What [`sweep_stale`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepOutcome {
    /// No record: nothing to clean up.
    Clean,
    /// A record left by process `pid`, which is gone; its routes are deleted.
    Swept { pid: u32, routes: Vec<Route> },
    /// A record from an earlier namespace that had this one's inode: its
    /// routes went with that namespace, so only the record is deleted.
    Discarded { pid: u32 },
}

/// Cleans up after a pipevpn that died without undoing its routes: deletes
/// every route the record at `state` lists (already-gone ones are fine),
/// then the record. Refuses, deleting nothing, if the record is not to be
/// trusted ([`rundir::read`]), does not parse, lists a route pipevpn would
/// not have added for this interface, or if the process that wrote it still
/// runs.
pub fn sweep_stale(state: &Path) -> Result<SweepOutcome> {
    let Some(text) = rundir::read(state)? else {
        return Ok(SweepOutcome::Clean);
    };
    let bad = |msg: String| {
        Error::Input(format!(
            "{}: {msg}; nothing in it was deleted: delete the routes it lists by hand, then the file",
            state.display()
        ))
    };
    let record = RouteRecord::parse(&text).map_err(bad)?;
    let pid = record.pid;
    if !Netns::current()?.wrote(record.netns) {
        log::warn!(
            "{}: left by pipevpn pid {pid} in an earlier network namespace that had this one's \
             inode number; its routes went with that namespace, so only the record is removed",
            state.display()
        );
        rundir::remove(state)?;
        return Ok(SweepOutcome::Discarded { pid });
    }
    let iface = state.file_stem().unwrap_or_default().to_string_lossy();
    if pid != std::process::id() && crate::sys::process_exists(pid) {
        return Err(Error::Input(format!(
            "interface {iface} is in use by pipevpn pid {pid}"
        )));
    }
    if let Some(r) = record
        .routes
        .iter()
        .find(|r| !record.could_have_added(r, &iface))
    {
        return Err(bad(format!(
            "it lists {r}, which pipevpn never adds for {iface} (only routes through {iface} \
             and a host route to the recorded endpoint)"
        )));
    }
    for r in record.routes.iter().rev() {
        del_route(r.spec())?;
    }
    if !record.routes.is_empty() {
        let list: Vec<String> = record.routes.iter().map(Route::to_string).collect();
        log::info!(
            "removed routes left by pipevpn pid {pid}: {}",
            list.join(", ")
        );
    }
    rundir::remove(state)?;
    Ok(SweepOutcome::Swept {
        pid,
        routes: record.routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::{tests::TestDir, RUN_DIR};
    use std::os::unix::fs::PermissionsExt;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    /// An IPv4 table with two default routes (metrics 600 and 100), the LAN
    /// 192.168.1.0/24 on wlan0 and a reject route.
    fn table_v4() -> String {
        HEADER.to_string()
            + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
            + "eth0\t00000000\t010010AC\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
            + "wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
            + "eth0\t000010AC\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0\n"
            + "lo\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0\n"
    }

    /// An IPv6 table as /proc/net/ipv6_route shows it (all tables): the
    /// default via fe80::1 dev eth0, the LAN fd00:98::/64 on eth0 with the
    /// host's own fd00:98::1 (local) and its anycast entry, 2001:db8::/32
    /// twice (metric 50 via wlan0, 20 via eth0), an unreachable /48 inside
    /// it, a source-specific route, multicast, the table's null entry, and
    /// a malformed line.
    fn table_v6() -> String {
        const ZERO: &str = "00000000000000000000000000000000";
        [
            ("20010db8000100000000000000000000 30", ZERO, "00000400", "00200200", "lo"),
            ("20010db8000000000000000000000000 20", "fe800000000000000000000000000002", "00000032", "00000003", "wlan0"),
            ("20010db8000000000000000000000000 20", "fe800000000000000000000000000003", "00000014", "00000003", "eth0"),
            ("fd000098000000000000000000000000 40", ZERO, "00000100", "00000001", "eth0"),
            ("fd000098000000000000000000000001 80", ZERO, "00000000", "80200001", "eth0"),
            ("fd000098000000000000000000000000 80", ZERO, "00000000", "00300001", "eth0"),
            ("ff000000000000000000000000000000 08", ZERO, "00000100", "00000001", "eth0"),
            ("00000000000000000000000000000000 00", "fe800000000000000000000000000001", "00000400", "00000003", "eth0"),
            ("00000000000000000000000000000000 00", ZERO, "ffffffff", "00200200", "lo"),
        ]
        .iter()
        .map(|(dest, gw, metric, flags, dev)| {
            format!("{dest} {ZERO} 00 {gw} {metric} 00000001 00000000 {flags} {dev:>8}\n")
        })
        .chain([
            format!("20010db8000500000000000000000000 30 20010db8000600000000000000000000 30 {ZERO} 00000001 00000001 00000000 00000001     eth1\n"),
            "20010db8 20 garbage\n".to_string(),
        ])
        .collect()
    }

    fn tables() -> RouteTables {
        RouteTables {
            v4: table_v4(),
            v6: table_v6(),
        }
    }

    fn r(s: &str) -> Route {
        s.parse().unwrap()
    }

    /// The address of an endpoint written `host:port`, as a list of one.
    fn eps(endpoint: &str) -> Vec<IpAddr> {
        vec![endpoint.parse::<std::net::SocketAddr>().unwrap().ip()]
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn shown(routes: &[Route]) -> Vec<String> {
        routes.iter().map(Route::to_string).collect()
    }

    /// The route the kernel would use for `ip`, in `Route` text form.
    fn current(ip: &str, tables: &RouteTables) -> Option<String> {
        current_route_to(ip.parse().unwrap(), tables, None).map(|k| {
            Route {
                net: k.net,
                gateway: k.gateway,
                dev: Some(k.dev),
                table: None,
            }
            .to_string()
        })
    }

    #[test]
    fn current_route_prefers_longest_prefix_then_lowest_metric() {
        let t = tables();
        assert_eq!(
            current("192.168.1.9", &t).unwrap(),
            "192.168.1.0/24 dev wlan0"
        );
        // 10.0.0.0/8 is a reject route, so the default route with the lower
        // metric applies.
        assert_eq!(
            current("10.1.2.3", &t).unwrap(),
            "0.0.0.0/0 via 172.16.0.1 dev eth0"
        );
        let only_header = RouteTables {
            v4: HEADER.to_string(),
            v6: String::new(),
        };
        assert_eq!(current("10.1.2.3", &only_header), None);
        assert_eq!(current("2001:db8::1", &only_header), None);
    }

    #[test]
    fn ipv6_route_table_is_parsed() {
        let t = tables();
        let all: Vec<String> = kernel_routes_v6(&t.v6)
            .map(|k| format!("{} {:?} {} {}", k.net, k.gateway, k.dev, k.metric))
            .collect();
        assert_eq!(
            all,
            [
                "2001:db8::/32 Some(fe80::2) wlan0 50",
                "2001:db8::/32 Some(fe80::3) eth0 20",
                "fd00:98::/64 None eth0 256",
                "ff00::/8 None eth0 256",
                "::/0 Some(fe80::1) eth0 1024",
            ]
        );
        assert_eq!(
            current("2001:db8:5::1", &t).unwrap(),
            "2001:db8::/32 via fe80::3 dev eth0"
        );
        // Inside the unreachable /48: the /32 applies.
        assert_eq!(
            current("2001:db8:1::1", &t).unwrap(),
            "2001:db8::/32 via fe80::3 dev eth0"
        );
        // The host's own address is on the LAN route, not its local entry.
        assert_eq!(current("fd00:98::1", &t).unwrap(), "fd00:98::/64 dev eth0");
        assert_eq!(current("2a00::7", &t).unwrap(), "::/0 via fe80::1 dev eth0");
        // An IPv4 address never matches an IPv6 route, nor the other way.
        let v6_only = RouteTables {
            v4: HEADER.to_string(),
            v6: table_v6(),
        };
        assert_eq!(current("10.1.2.3", &v6_only), None);
    }

    #[test]
    fn route_text_round_trips() {
        for s in [
            "0.0.0.0/1 dev pv0",
            "203.0.113.7/32 via 10.0.0.1 dev eth0",
            "10.0.0.0/8 via 10.1.1.1",
            "192.168.0.0/16",
            "::/1 dev pv0",
            "8000::/1 dev pv0",
            "2a00::7/128 via fe80::1 dev eth0",
            "fd00::/8",
            "10.0.0.0/8 dev pv0 table 1234",
            "0.0.0.0/0 dev pv0 table 7",
            "fd00::/8 dev pv0 table 4294967295",
        ] {
            assert_eq!(r(s).to_string(), s);
        }
        assert_eq!(r("10.0.0.0/8 dev pv0 table 1234").table, Some(1234));
        assert_eq!(r("10.0.0.0/8 dev pv0").table, None);
        for bad in [
            "",
            "10.0.0.0/8 dev",
            "10.0.0.0/8 via x",
            "10.0.0.0/8 dev a dev b",
            "10.0.0.0/8 dev a via 1.1.1.1",
            "10.0.0.0/8 via fe80::1 dev eth0",
            "fd00::/8 via 10.0.0.1 dev eth0",
            "fd00::/129 dev pv0",
            "10.0.0.0/8 metric 5",
            "10.0.0.0/8 dev pv0 table",
            "10.0.0.0/8 dev pv0 table x",
            "10.0.0.0/8 dev pv0 table -1",
            "10.0.0.0/8 dev pv0 table 4294967296",
            "10.0.0.0/8 dev pv0 table 1 table 2",
            "10.0.0.0/8 table 1 dev pv0",
            "10.0.0.0/8 table 1 via 10.1.1.1",
        ] {
            assert!(bad.parse::<Route>().is_err(), "{bad:?} parsed");
        }
    }

    fn record(
        pid: u32,
        netns: Option<u64>,
        endpoint: Option<&str>,
        routes: &[&str],
    ) -> RouteRecord {
        RouteRecord {
            pid,
            netns,
            endpoints: endpoint.iter().map(|e| e.parse().unwrap()).collect(),
            routes: routes.iter().map(|s| r(s)).collect(),
        }
    }

    #[test]
    fn record_text_round_trips() {
        let full = record(
            4242,
            Some(8195),
            Some("203.0.113.7"),
            &[
                "203.0.113.7/32 via 172.16.0.1 dev eth0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0",
                "2a00::7/128 via fe80::1 dev eth0",
                "::/1 dev pv0",
                "8000::/1 dev pv0",
            ],
        );
        let text = full.render();
        assert!(text.starts_with("pid 4242\nnetns 8195\nendpoint 203.0.113.7\n203.0.113.7/32"));
        assert_eq!(RouteRecord::parse(&text), Ok(full.clone()));
        let two = RouteRecord {
            endpoints: vec!["203.0.113.7".parse().unwrap(), "2a00::7".parse().unwrap()],
            ..full.clone()
        };
        assert!(two
            .render()
            .contains("\nendpoint 203.0.113.7 2a00::7\n203.0.113.7/32"));
        assert_eq!(RouteRecord::parse(&two.render()), Ok(two));
        let tabled = record(
            4242,
            Some(8195),
            None,
            &[
                "10.0.0.0/8 dev pv0 table 1234",
                "0.0.0.0/0 dev pv0 table 1234",
            ],
        );
        assert!(tabled
            .render()
            .ends_with("\n10.0.0.0/8 dev pv0 table 1234\n0.0.0.0/0 dev pv0 table 1234\n"));
        assert_eq!(RouteRecord::parse(&tabled.render()), Ok(tabled));
        // A record of a pipevpn from before tables: its routes are the main table's.
        let old = RouteRecord::parse(
            "pid 7\nnetns 1\nendpoint 203.0.113.7\n203.0.113.7/32 via 172.16.0.1 dev eth0\n\
             0.0.0.0/1 dev pv0\n",
        )
        .unwrap();
        assert_eq!(old.routes.len(), 2);
        assert!(old.routes.iter().all(|r| r.table.is_none()), "{old:?}");
        assert_eq!(old.routes[1].to_string(), "0.0.0.0/1 dev pv0");
        let empty = record(7, None, None, &[]);
        assert_eq!(empty.render(), "pid 7\nnetns -\nendpoint -\n");
        assert_eq!(RouteRecord::parse(&empty.render()), Ok(empty));
        for (bad, why) in [
            ("", "line 1: expected 'pid ...'"),
            ("pid x\n", "line 1: bad pid 'x'"),
            ("pid 7\n", "line 2: expected 'netns ...'"),
            ("pid 7\nnetns\n", "line 2: expected 'netns ...'"),
            ("pid 7\nnetns 1x\n", "line 2: bad netns cookie '1x'"),
            (
                "pid 7\nnetns 1\n0.0.0.0/1 dev pv0\n",
                "line 3: expected 'endpoint ...'",
            ),
            (
                "pid 7\nnetns 1\nendpoint 1.2.3\n",
                "line 3: bad endpoint address '1.2.3'",
            ),
            (
                "pid 7\nnetns 1\nendpoint 1.2.3.4  5.6.7.8\n",
                "line 3: bad endpoint address ''",
            ),
            (
                "pid 7\nnetns 1\nendpoint -\n0.0.0.0/1 dev pv0\nnonsense\n",
                "line 5:",
            ),
            // The format of the pipevpn before the netns cookie.
            ("pid 7\n0.0.0.0/1 dev pv0\n", "line 2: expected 'netns ...'"),
        ] {
            let err = RouteRecord::parse(bad).unwrap_err();
            assert!(err.starts_with(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn full_tunnel_puts_endpoint_route_first() {
        let ep = eps("203.0.113.7:51820");
        let routes = plan(&cidrs(&["0.0.0.0/0"]), "pv0", None, &ep, &tables()).unwrap();
        assert_eq!(
            shown(&routes),
            [
                "203.0.113.7/32 via 172.16.0.1 dev eth0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0"
            ]
        );
        // An IPv4-mapped endpoint is an IPv4 one.
        let mapped = eps("[::ffff:203.0.113.7]:51820");
        assert_eq!(
            plan(&cidrs(&["0.0.0.0/0"]), "pv0", None, &mapped, &tables()).unwrap(),
            routes
        );
    }

    #[test]
    fn every_captured_endpoint_gets_one_host_route() {
        let mut endpoints = eps("203.0.113.7:51820");
        endpoints.extend(eps("198.51.100.2:51820"));
        // Two peers behind one address share a host route.
        endpoints.extend(eps("203.0.113.7:4000"));
        // Not captured: 10.0.0.0/8 is not tunnelled.
        endpoints.extend(eps("10.1.2.3:51820"));
        let routes = plan(&cidrs(&["0.0.0.0/0"]), "pv0", None, &endpoints, &tables()).unwrap();
        assert_eq!(
            shown(&routes),
            [
                "203.0.113.7/32 via 172.16.0.1 dev eth0",
                "198.51.100.2/32 via 172.16.0.1 dev eth0",
                "10.1.2.3/32 via 172.16.0.1 dev eth0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0"
            ]
        );
        let split = plan(
            &cidrs(&["203.0.113.0/24"]),
            "pv0",
            None,
            &endpoints,
            &tables(),
        )
        .unwrap();
        assert_eq!(
            shown(&split),
            [
                "203.0.113.7/32 via 172.16.0.1 dev eth0",
                "203.0.113.0/24 dev pv0"
            ]
        );
    }

    #[test]
    fn ipv6_full_tunnel_puts_endpoint_route_first() {
        let ep = eps("[2a00::7]:51820");
        let routes = plan(&cidrs(&["::/0"]), "pv0", None, &ep, &tables()).unwrap();
        assert_eq!(
            shown(&routes),
            [
                "2a00::7/128 via fe80::1 dev eth0",
                "::/1 dev pv0",
                "8000::/1 dev pv0"
            ]
        );
        // Both families: only the endpoint's family needs a host route.
        let both = cidrs(&["0.0.0.0/0", "::/0"]);
        assert_eq!(
            shown(&plan(&both, "pv0", None, &ep, &tables()).unwrap()),
            [
                "2a00::7/128 via fe80::1 dev eth0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0",
                "::/1 dev pv0",
                "8000::/1 dev pv0"
            ]
        );
        let ep4 = eps("203.0.113.7:51820");
        assert_eq!(
            shown(&plan(&both, "pv0", None, &ep4, &tables()).unwrap())[0],
            "203.0.113.7/32 via 172.16.0.1 dev eth0"
        );
    }

    #[test]
    fn full_tunnel_without_endpoint_or_gateway_has_no_host_route() {
        let halves = ["0.0.0.0/1 dev pv0", "128.0.0.0/1 dev pv0"];
        let all = cidrs(&["0.0.0.0/0"]);
        assert_eq!(
            shown(&plan(&all, "pv0", None, &[], &tables()).unwrap()),
            halves
        );
        let ep = eps("203.0.113.7:51820");
        let empty = RouteTables::default();
        assert_eq!(
            shown(&plan(&all, "pv0", None, &ep, &empty).unwrap()),
            halves
        );
        // An IPv6 endpoint is not captured by IPv4 routes.
        let ep6 = eps("[2001:db8::1]:51820");
        assert_eq!(
            shown(&plan(&all, "pv0", None, &ep6, &tables()).unwrap()),
            halves
        );
        let all6 = cidrs(&["::/0"]);
        assert_eq!(
            shown(&plan(&all6, "pv0", None, &ep6, &empty).unwrap()),
            ["::/1 dev pv0", "8000::/1 dev pv0"]
        );
    }

    #[test]
    fn endpoint_on_a_more_specific_route_needs_no_host_route() {
        // 192.168.1.0/24 on wlan0 beats the /1 halves for the endpoint.
        let ep = eps("192.168.1.20:51820");
        let routes = plan(&cidrs(&["0.0.0.0/0"]), "pv0", None, &ep, &tables()).unwrap();
        assert_eq!(shown(&routes), ["0.0.0.0/1 dev pv0", "128.0.0.0/1 dev pv0"]);
        // A tunnelled /24 that ties with it does need one.
        let routes = plan(&cidrs(&["192.168.1.0/24"]), "pv0", None, &ep, &tables()).unwrap();
        assert_eq!(
            shown(&routes),
            ["192.168.1.20/32 dev wlan0", "192.168.1.0/24 dev pv0"]
        );
        // The same for IPv6, with the on-link fd00:98::/64.
        let ep6 = eps("[fd00:98::2]:51820");
        let routes = plan(&cidrs(&["::/0"]), "pv0", None, &ep6, &tables()).unwrap();
        assert_eq!(shown(&routes), ["::/1 dev pv0", "8000::/1 dev pv0"]);
        let routes = plan(&cidrs(&["fd00:98::/64"]), "pv0", None, &ep6, &tables()).unwrap();
        assert_eq!(
            shown(&routes),
            ["fd00:98::2/128 dev eth0", "fd00:98::/64 dev pv0"]
        );
    }

    #[test]
    fn prefixes_are_masked_and_deduped() {
        let ep = eps("198.51.100.1:51820");
        let allowed = cidrs(&[
            "10.96.0.1/24",
            "10.96.0.0/24",
            "fd00::1/8",
            "0.0.0.0/0",
            "0.0.0.0/1",
            "fd00::/8",
            "::/0",
        ]);
        let routes = plan(&allowed, "pv0", None, &ep, &tables()).unwrap();
        assert_eq!(
            shown(&routes),
            [
                "198.51.100.1/32 via 172.16.0.1 dev eth0",
                "10.96.0.0/24 dev pv0",
                "fd00::/8 dev pv0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0",
                "::/1 dev pv0",
                "8000::/1 dev pv0"
            ]
        );
    }

    #[test]
    fn a_numbered_table_takes_the_allowed_ips_as_written() {
        let endpoints = eps("203.0.113.7:51820");
        let allowed = cidrs(&["0.0.0.0/0", "::/0", "10.96.0.1/24", "10.96.0.0/24"]);
        // No 0/1 + 128/1 split and no endpoint host route, though the main
        // table's routes would capture the endpoint.
        assert_eq!(
            shown(&plan(&allowed, "pv0", Some(1234), &endpoints, &tables()).unwrap()),
            [
                "0.0.0.0/0 dev pv0 table 1234",
                "::/0 dev pv0 table 1234",
                "10.96.0.0/24 dev pv0 table 1234"
            ]
        );
        // Not even an endpoint the main table already routes into the
        // tunnel is an error: the tunnel's routes are not in the main table.
        let looped = RouteTables {
            v4: HEADER.to_string() + "pv0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n",
            v6: String::new(),
        };
        assert_eq!(
            shown(&plan(&allowed[..1], "pv0", Some(7), &endpoints, &looped).unwrap()),
            ["0.0.0.0/0 dev pv0 table 7"]
        );
    }

    #[test]
    fn endpoint_already_through_the_tunnel_is_an_error() {
        let looped = RouteTables {
            v4: HEADER.to_string() + "pv0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n",
            v6: "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                 00000000000000000000000000000000 00000400 00000001 00000000 00000001 pv0\n"
                .to_string(),
        };
        let ep = eps("203.0.113.7:51820");
        assert!(matches!(
            plan(&cidrs(&["0.0.0.0/0"]), "pv0", None, &ep, &looped),
            Err(Error::Input(_))
        ));
        let ep6 = eps("[2a00::7]:51820");
        assert!(matches!(
            plan(&cidrs(&["::/0"]), "pv0", None, &ep6, &looped),
            Err(Error::Input(_))
        ));
    }

    #[test]
    fn state_path_is_per_namespace() {
        let p = state_path(Path::new(RUN_DIR), "pv0").unwrap();
        let ns = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert_eq!(ns, Netns::current().unwrap().inode.to_string());
        assert!(p.starts_with(RUN_DIR) && p.ends_with("pv0.routes"), "{p:?}");
    }

    fn this_netns() -> Option<u64> {
        Netns::current().unwrap().cookie
    }

    /// Writes `rec` as the record of interface pv9 in a fresh directory.
    fn planted(t: &TestDir, rec: &RouteRecord) -> PathBuf {
        let state = t.0.join("1/pv9.routes");
        rundir::write(&state, &rec.render()).unwrap();
        state
    }

    #[test]
    fn sweep_without_record_is_clean_and_live_owner_refuses() {
        let t = TestDir::new("sweep");
        let state = t.0.join("1/pv9.routes");
        assert_eq!(sweep_stale(&state).unwrap(), SweepOutcome::Clean);
        // Pid 1 always runs and is not us.
        planted(&t, &record(1, this_netns(), None, &["10.0.0.0/8 dev pv9"]));
        let err = sweep_stale(&state).unwrap_err().to_string();
        assert_eq!(err, "interface pv9 is in use by pipevpn pid 1");
        assert!(state.exists());
        rundir::write(&state, "pid 1\nnonsense\n").unwrap();
        assert!(matches!(sweep_stale(&state), Err(Error::Input(_))));
        assert!(state.exists());
    }

    #[test]
    fn a_record_from_an_earlier_namespace_is_discarded_untouched() {
        let t = TestDir::new("sweep-foreign");
        let cookie = this_netns().expect("SO_NETNS_COOKIE needs Linux 5.14 or later");
        // Its pid runs (pid 1), and its route does not pass the sweep's
        // rules: neither matters, nothing of it is used.
        for netns in [Some(cookie + 1), None] {
            let state = planted(&t, &record(1, netns, None, &["10.0.0.0/8 dev eth0"]));
            assert_eq!(
                sweep_stale(&state).unwrap(),
                SweepOutcome::Discarded { pid: 1 }
            );
            assert!(!state.exists());
        }
    }

    #[test]
    fn sweep_refuses_routes_pipevpn_never_adds() {
        let t = TestDir::new("sweep-limited");
        let ep = Some("203.0.113.7");
        for foreign in [
            "10.0.0.0/8 dev eth0",
            "10.0.0.0/8 via 10.1.1.1 dev pv9",
            "10.0.0.0/8",
            // A host route, but not to the endpoint.
            "198.51.100.9/32 via 172.16.0.1 dev eth0",
            // The endpoint, but not a host route.
            "203.0.113.0/24 via 172.16.0.1 dev eth0",
            "203.0.113.7/32 via 172.16.0.1 dev pv9",
            // A host route to the endpoint, but in a table of its own.
            "203.0.113.7/32 via 172.16.0.1 dev eth0 table 1234",
        ] {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            let gone = child.id();
            let rec = record(gone, this_netns(), ep, &["0.0.0.0/1 dev pv9", foreign]);
            let state = planted(&t, &rec);
            let err = sweep_stale(&state).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "it lists {foreign}, which pipevpn never adds for pv9"
                )) && err.contains("nothing in it was deleted"),
                "{foreign}: {err}"
            );
            assert!(state.exists());
        }
        let rec = record(1, this_netns(), Some("203.0.113.7"), &[]);
        for (allowed, yes) in [
            ("0.0.0.0/1 dev pv9", true),
            ("fd00::/8 dev pv9", true),
            ("0.0.0.0/0 dev pv9 table 1234", true),
            ("203.0.113.7/32 via 172.16.0.1 dev eth0", true),
            // Host routes to endpoints live in the main table only.
            ("203.0.113.7/32 via 172.16.0.1 dev eth0 table 1234", false),
            ("203.0.113.7/32 dev eth0 table 254", false),
            ("10.0.0.0/8 dev eth0 table 1234", false),
            ("10.0.0.0/8 via 10.1.1.1 dev pv9 table 1234", false),
        ] {
            assert_eq!(rec.could_have_added(&r(allowed), "pv9"), yes, "{allowed}");
        }
        let two = RouteRecord {
            endpoints: vec![
                "203.0.113.7".parse().unwrap(),
                "198.51.100.2".parse().unwrap(),
            ],
            ..record(1, this_netns(), None, &[])
        };
        for host in [
            "203.0.113.7/32 dev eth0",
            "198.51.100.2/32 via 172.16.0.1 dev eth0",
        ] {
            assert!(two.could_have_added(&r(host), "pv9"), "{host}");
        }
        assert!(!two.could_have_added(&r("198.51.100.3/32 dev eth0"), "pv9"));
        let rec6 = record(1, this_netns(), Some("2a00::7"), &[]);
        for allowed in ["2a00::7/128 via fe80::1 dev eth0", "2a00::7/128 dev eth0"] {
            assert!(rec6.could_have_added(&r(allowed), "pv9"), "{allowed}");
        }
    }

    #[test]
    fn sweep_refuses_an_untrusted_record_and_keeps_it() {
        let t = TestDir::new("sweep-untrusted");
        let state = planted(&t, &record(1, this_netns(), None, &[]));
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = sweep_stale(&state).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: it is writable by group or others",
                state.display()
            )),
            "{err}"
        );
        assert!(state.exists());
    }
}
