//! The IPv4 routes a tunnel adds: which ones ([`plan`], pure), and a record
//! on disk of those actually added ([`InstalledRoutes`]) so they are undone
//! at exit, or swept by the next run ([`sweep_stale`]) after a crash.
//!
//! The record lives in `RUN_DIR/<netns inode>/<iface>.routes`:
//!
//! ```text
//! pid 4242
//! 203.0.113.7/32 via 192.168.1.1 dev eth0
//! 0.0.0.0/1 dev pv0
//! 128.0.0.0/1 dev pv0
//! ```
//!
//! A route is written to the record before it is added, so a crash between
//! the two leaves at worst a line for a route that does not exist, which the
//! sweep skips.

use crate::cidr::Cidr;
use crate::sys::route::{add_route_v4, del_route_v4};
use crate::{Error, Result};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where route records live.
pub const RUN_DIR: &str = "/run/pipevpn";

/// The routing table of the calling thread's network namespace.
/// (`/proc/net/route` shows the main thread's, which differs in a thread
/// that switched namespaces.)
const ROUTE_TABLE: &str = "/proc/thread-self/net/route";

/// An IPv4 route in the main table. `dest` has no host bits set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteV4 {
    pub dest: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dev: Option<String>,
}

impl RouteV4 {
    fn via_dev(dest: Ipv4Addr, prefix: u8, dev: &str) -> RouteV4 {
        RouteV4 {
            dest,
            prefix,
            gateway: None,
            dev: Some(dev.to_string()),
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        Cidr {
            addr: self.dest.into(),
            prefix: self.prefix,
        }
        .contains(ip.into())
    }
}

/// `0.0.0.0/1 dev pv0`, `203.0.113.7/32 via 10.0.0.1 dev eth0`: the form
/// `ip route` uses, and the form of the record's lines.
impl fmt::Display for RouteV4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dest, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        Ok(())
    }
}

impl FromStr for RouteV4 {
    type Err = String;

    /// Parses the [`Display`](fmt::Display) form back.
    fn from_str(s: &str) -> std::result::Result<RouteV4, String> {
        let mut words = s.split_whitespace();
        let net: Cidr = words
            .next()
            .ok_or("empty route")?
            .parse()
            .map_err(|e| format!("route '{s}': {e}"))?;
        let IpAddr::V4(dest) = net.addr else {
            return Err(format!("route '{s}' is not IPv4"));
        };
        let mut route = RouteV4 {
            dest,
            prefix: net.prefix,
            gateway: None,
            dev: None,
        };
        while let Some(word) = words.next() {
            let value = words
                .next()
                .ok_or_else(|| format!("route '{s}': '{word}' needs a value"))?;
            match word {
                "via" if route.gateway.is_none() && route.dev.is_none() => {
                    route.gateway = Some(
                        value
                            .parse()
                            .map_err(|_| format!("route '{s}': bad gateway '{value}'"))?,
                    );
                }
                "dev" if route.dev.is_none() => route.dev = Some(value.to_string()),
                _ => return Err(format!("route '{s}': unexpected '{word}'")),
            }
        }
        Ok(route)
    }
}

/// A usable line of /proc/net/route.
#[derive(Debug)]
struct KernelRoute {
    dest: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dev: String,
    metric: u32,
}

// Route flags from <linux/route.h>.
const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;

/// The routes in /proc/net/route text that can carry traffic: up, not
/// reject routes. Malformed lines are skipped.
fn kernel_routes(proc_net_route: &str) -> impl Iterator<Item = KernelRoute> + '_ {
    proc_net_route.lines().skip(1).filter_map(|line| {
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
            dest,
            prefix: prefix as u8,
            gateway: (flags & RTF_GATEWAY != 0).then_some(gateway),
            dev: f[0].to_string(),
            metric,
        })
    })
}

/// The gateway and device of the default route with the lowest metric, from
/// the text of /proc/net/route.
pub fn default_gateway(proc_net_route: &str) -> Option<(Ipv4Addr, String)> {
    kernel_routes(proc_net_route)
        .filter(|r| r.prefix == 0)
        .filter_map(|r| Some((r.metric, r.gateway?, r.dev)))
        .min_by_key(|(metric, ..)| *metric)
        .map(|(_, gw, dev)| (gw, dev))
}

/// The route the kernel uses for `ip` now: longest prefix, then lowest metric.
fn current_route_to(ip: Ipv4Addr, proc_net_route: &str) -> Option<KernelRoute> {
    let contains = |r: &KernelRoute| RouteV4::via_dev(r.dest, r.prefix, "").contains(ip);
    kernel_routes(proc_net_route)
        .filter(contains)
        .min_by_key(|r| (std::cmp::Reverse(r.prefix), r.metric))
}

/// Reads the routing table text of the calling thread's network namespace,
/// for [`plan`].
pub fn read_route_table() -> Result<String> {
    fs::read_to_string(ROUTE_TABLE).map_err(|e| Error::sys(format!("reading {ROUTE_TABLE}"), e))
}

/// The routes for a tunnel on `iface`, in the order to add them.
///
/// Each IPv4 AllowedIPs prefix becomes a route through `iface`; `0.0.0.0/0`
/// becomes `0.0.0.0/1` and `128.0.0.0/1`, which win over the default route
/// without replacing it. If the endpoint lies inside a tunnelled prefix that
/// is at least as specific as the route the kernel uses for it now
/// (normally the default route), a host route to the endpoint through that
/// current route comes first, so the encrypted packets do not loop into the
/// tunnel. A peer with no endpoint (the waiting side) needs none. IPv6
/// prefixes are skipped for now.
pub fn plan(
    allowed_ips: &[Cidr],
    iface: &str,
    endpoint: Option<SocketAddr>,
    proc_net_route: &str,
) -> Result<Vec<RouteV4>> {
    let mut tunnel = Vec::new();
    let mut skipped_v6 = Vec::new();
    for cidr in allowed_ips.iter().map(Cidr::network) {
        match cidr.addr {
            IpAddr::V4(dest) if cidr.prefix == 0 => {
                tunnel.push(RouteV4::via_dev(dest, 1, iface));
                tunnel.push(RouteV4::via_dev(Ipv4Addr::new(128, 0, 0, 0), 1, iface));
            }
            IpAddr::V4(dest) => tunnel.push(RouteV4::via_dev(dest, cidr.prefix, iface)),
            IpAddr::V6(_) => skipped_v6.push(cidr.to_string()),
        }
    }
    if !skipped_v6.is_empty() {
        log::warn!(
            "IPv6 routes are not supported yet; not routing {} through {iface}",
            skipped_v6.join(", ")
        );
    }
    let endpoint_v4 = endpoint.and_then(|ep| match ep.ip().to_canonical() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    });
    let mut routes = Vec::new();
    if let Some(ep) = endpoint_v4 {
        routes.extend(endpoint_route(ep, &tunnel, iface, proc_net_route)?);
    }
    for r in tunnel {
        if !routes.contains(&r) {
            routes.push(r);
        }
    }
    Ok(routes)
}

/// The host route that keeps traffic to the endpoint `ep` out of the tunnel,
/// if the tunnel routes would otherwise capture it.
fn endpoint_route(
    ep: Ipv4Addr,
    tunnel: &[RouteV4],
    iface: &str,
    proc_net_route: &str,
) -> Result<Option<RouteV4>> {
    let Some(captured_by) = tunnel
        .iter()
        .filter(|r| r.contains(ep))
        .map(|r| r.prefix)
        .max()
    else {
        return Ok(None);
    };
    let Some(current) = current_route_to(ep, proc_net_route) else {
        log::warn!("no route to endpoint {ep}; its packets would go into {iface}");
        return Ok(None);
    };
    if current.dev == iface {
        return Err(Error::Input(format!(
            "the route to endpoint {ep} already goes through {iface}"
        )));
    }
    Ok((current.prefix <= captured_by).then_some(RouteV4 {
        dest: ep,
        prefix: 32,
        gateway: current.gateway,
        dev: Some(current.dev),
    }))
}

/// `run_dir/<netns>/<iface>.routes`, where `<netns>` is the inode of the
/// calling thread's network namespace, so tunnels with the same interface
/// name in different namespaces keep separate records.
pub fn state_path(run_dir: &Path, iface: &str) -> Result<PathBuf> {
    let ns = "/proc/thread-self/ns/net";
    let inode = fs::metadata(ns)
        .map_err(|e| Error::sys(format!("stat {ns}"), e))?
        .ino();
    Ok(run_dir
        .join(inode.to_string())
        .join(format!("{iface}.routes")))
}

fn render_state(pid: u32, routes: &[RouteV4]) -> String {
    let mut text = format!("pid {pid}\n");
    for r in routes {
        text.push_str(&format!("{r}\n"));
    }
    text
}

fn parse_state(text: &str) -> std::result::Result<(u32, Vec<RouteV4>), String> {
    let mut lines = text.lines();
    let pid = lines
        .next()
        .and_then(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or("line 1: expected 'pid <number>'")?;
    let routes = lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| l.parse().map_err(|e| format!("line {}: {e}", i + 2)))
        .collect::<std::result::Result<_, _>>()?;
    Ok((pid, routes))
}

/// Replaces the record at `path` in one step (write a temporary file, then
/// rename), so a crash never leaves half a record.
fn write_state(path: &Path, routes: &[RouteV4]) -> Result<()> {
    let tmp = path.with_extension("routes.tmp");
    fs::write(&tmp, render_state(std::process::id(), routes))
        .map_err(|e| Error::sys(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::sys(format!("renaming to {}", path.display()), e))
}

/// Routes this process added, recorded at `state`; dropping it deletes them
/// (in reverse order) and the record.
#[derive(Debug)]
pub struct InstalledRoutes {
    state: PathBuf,
    routes: Vec<RouteV4>,
}

impl InstalledRoutes {
    /// Adds `routes` in order, recording each before adding it. A route that
    /// already exists is someone else's and is neither recorded nor later
    /// deleted. On failure everything added so far is deleted again, the
    /// record removed, and the error returned.
    pub fn install(state: PathBuf, routes: &[RouteV4]) -> Result<InstalledRoutes> {
        if let Some(dir) = state.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::sys(format!("creating {}", dir.display()), e))?;
        }
        // From here on, an early return drops `installed`, which undoes it.
        let mut installed = InstalledRoutes {
            state,
            routes: Vec::new(),
        };
        write_state(&installed.state, &[])?;
        for r in routes {
            installed.routes.push(r.clone());
            write_state(&installed.state, &installed.routes)?;
            match add_route_v4(r) {
                Ok(true) => {}
                Ok(false) => {
                    log::info!("route {r} already exists; leaving it alone");
                    installed.routes.pop();
                    write_state(&installed.state, &installed.routes)?;
                }
                Err(e) => {
                    // Not added, so not ours to delete.
                    installed.routes.pop();
                    return Err(e);
                }
            }
        }
        Ok(installed)
    }

    /// The routes this process added, in the order added.
    pub fn routes(&self) -> &[RouteV4] {
        &self.routes
    }

    /// Deletes the routes and the record now (the same as dropping it).
    pub fn remove(self) {}
}

impl Drop for InstalledRoutes {
    /// Routes that cannot be deleted stay in the record, so the next run's
    /// sweep tries again; the record goes only when all are gone.
    fn drop(&mut self) {
        let mut left = Vec::new();
        for r in self.routes.iter().rev() {
            if let Err(e) = del_route_v4(r) {
                log::warn!("could not remove route: {e}");
                left.insert(0, r.clone());
            }
        }
        let done = if left.is_empty() {
            fs::remove_file(&self.state)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| Error::sys(format!("removing {}", self.state.display()), e))
        } else {
            write_state(&self.state, &left)
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
    Swept { pid: u32, routes: Vec<RouteV4> },
}

/// Cleans up after a pipevpn that died without undoing its routes: deletes
/// every route the record at `state` lists (already-gone ones are fine),
/// then the record. Refuses if the process that wrote it still runs.
pub fn sweep_stale(state: &Path) -> Result<SweepOutcome> {
    let text = match fs::read_to_string(state) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SweepOutcome::Clean),
        other => other.map_err(|e| Error::sys(format!("reading {}", state.display()), e))?,
    };
    let (pid, routes) = parse_state(&text).map_err(|msg| {
        Error::Input(format!(
            "{}: {msg}; delete the routes it lists by hand, then the file",
            state.display()
        ))
    })?;
    if pid != std::process::id() && crate::sys::process_exists(pid) {
        let iface = state.file_stem().unwrap_or_default().to_string_lossy();
        return Err(Error::Input(format!(
            "interface {iface} is in use by pipevpn pid {pid}"
        )));
    }
    for r in routes.iter().rev() {
        del_route_v4(r)?;
    }
    if !routes.is_empty() {
        let list: Vec<String> = routes.iter().map(RouteV4::to_string).collect();
        log::info!(
            "removed routes left by pipevpn pid {pid}: {}",
            list.join(", ")
        );
    }
    fs::remove_file(state).map_err(|e| Error::sys(format!("removing {}", state.display()), e))?;
    Ok(SweepOutcome::Swept { pid, routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    /// A table with two default routes (metrics 600 and 100), the LAN
    /// 192.168.1.0/24 on wlan0 and a reject route.
    fn table() -> String {
        HEADER.to_string()
            + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
            + "eth0\t00000000\t010010AC\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
            + "wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
            + "eth0\t000010AC\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0\n"
            + "lo\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0\n"
    }

    fn r(s: &str) -> RouteV4 {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn shown(routes: &[RouteV4]) -> Vec<String> {
        routes.iter().map(RouteV4::to_string).collect()
    }

    #[test]
    fn default_gateway_takes_lowest_metric() {
        assert_eq!(
            default_gateway(&table()),
            Some((Ipv4Addr::new(172, 16, 0, 1), "eth0".to_string()))
        );
        let no_default =
            HEADER.to_string() + "eth0\t000010AC\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0\n";
        assert_eq!(default_gateway(&no_default), None);
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway("garbage\nmore garbage here\n"), None);
    }

    #[test]
    fn current_route_prefers_longest_prefix() {
        let lan = current_route_to(Ipv4Addr::new(192, 168, 1, 9), &table()).unwrap();
        assert_eq!(
            (lan.dev.as_str(), lan.prefix, lan.gateway),
            ("wlan0", 24, None)
        );
        // 10.0.0.0/8 is a reject route, so the default route applies.
        let far = current_route_to(Ipv4Addr::new(10, 1, 2, 3), &table()).unwrap();
        assert_eq!(far.gateway, Some(Ipv4Addr::new(172, 16, 0, 1)));
    }

    #[test]
    fn route_text_round_trips() {
        for s in [
            "0.0.0.0/1 dev pv0",
            "203.0.113.7/32 via 10.0.0.1 dev eth0",
            "10.0.0.0/8 via 10.1.1.1",
            "192.168.0.0/16",
        ] {
            assert_eq!(r(s).to_string(), s);
        }
        for bad in [
            "",
            "10.0.0.0/8 dev",
            "10.0.0.0/8 via x",
            "10.0.0.0/8 dev a dev b",
            "10.0.0.0/8 dev a via 1.1.1.1",
            "fd00::/8 dev pv0",
            "10.0.0.0/8 metric 5",
        ] {
            assert!(bad.parse::<RouteV4>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn state_text_round_trips() {
        let routes = vec![
            r("203.0.113.7/32 via 172.16.0.1 dev eth0"),
            r("0.0.0.0/1 dev pv0"),
            r("128.0.0.0/1 dev pv0"),
        ];
        let text = render_state(4242, &routes);
        assert!(text.starts_with("pid 4242\n"));
        assert_eq!(parse_state(&text), Ok((4242, routes)));
        assert_eq!(parse_state("pid 7\n"), Ok((7, vec![])));
        assert!(parse_state("").is_err());
        assert!(parse_state("pid x\n").is_err());
        let bad_line = parse_state("pid 7\n0.0.0.0/1 dev pv0\nnonsense\n").unwrap_err();
        assert!(bad_line.starts_with("line 3:"), "{bad_line}");
    }

    #[test]
    fn full_tunnel_puts_endpoint_route_first() {
        let ep = "203.0.113.7:51820".parse().ok();
        let routes = plan(&cidrs(&["0.0.0.0/0"]), "pv0", ep, &table()).unwrap();
        assert_eq!(
            shown(&routes),
            [
                "203.0.113.7/32 via 172.16.0.1 dev eth0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0"
            ]
        );
    }

    #[test]
    fn full_tunnel_without_endpoint_or_gateway_has_no_host_route() {
        let halves = ["0.0.0.0/1 dev pv0", "128.0.0.0/1 dev pv0"];
        let all = cidrs(&["0.0.0.0/0"]);
        assert_eq!(shown(&plan(&all, "pv0", None, &table()).unwrap()), halves);
        let ep = "203.0.113.7:51820".parse().ok();
        assert_eq!(shown(&plan(&all, "pv0", ep, HEADER).unwrap()), halves);
        // An IPv6 endpoint is not captured by IPv4 routes.
        let ep6 = "[2001:db8::1]:51820".parse().ok();
        assert_eq!(shown(&plan(&all, "pv0", ep6, &table()).unwrap()), halves);
    }

    #[test]
    fn endpoint_on_a_more_specific_route_needs_no_host_route() {
        // 192.168.1.0/24 on wlan0 beats the /1 halves for the endpoint.
        let ep = "192.168.1.20:51820".parse().ok();
        let routes = plan(&cidrs(&["0.0.0.0/0"]), "pv0", ep, &table()).unwrap();
        assert_eq!(shown(&routes), ["0.0.0.0/1 dev pv0", "128.0.0.0/1 dev pv0"]);
        // A tunnelled /24 that ties with it does need one.
        let routes = plan(&cidrs(&["192.168.1.0/24"]), "pv0", ep, &table()).unwrap();
        assert_eq!(
            shown(&routes),
            ["192.168.1.20/32 dev wlan0", "192.168.1.0/24 dev pv0"]
        );
    }

    #[test]
    fn prefixes_are_masked_deduped_and_v6_skipped() {
        let ep = "198.51.100.1:51820".parse().ok();
        let allowed = cidrs(&[
            "10.96.0.1/24",
            "10.96.0.0/24",
            "fd00::/8",
            "0.0.0.0/0",
            "0.0.0.0/1",
        ]);
        let routes = plan(&allowed, "pv0", ep, &table()).unwrap();
        assert_eq!(
            shown(&routes),
            [
                "198.51.100.1/32 via 172.16.0.1 dev eth0",
                "10.96.0.0/24 dev pv0",
                "0.0.0.0/1 dev pv0",
                "128.0.0.0/1 dev pv0"
            ]
        );
        let only_v6 = plan(&cidrs(&["::/0"]), "pv0", ep, &table()).unwrap();
        assert!(only_v6.is_empty());
    }

    #[test]
    fn endpoint_already_through_the_tunnel_is_an_error() {
        let looped =
            HEADER.to_string() + "pv0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        let ep = "203.0.113.7:51820".parse().ok();
        assert!(matches!(
            plan(&cidrs(&["0.0.0.0/0"]), "pv0", ep, &looped),
            Err(Error::Input(_))
        ));
    }

    #[test]
    fn state_path_is_per_namespace() {
        let p = state_path(Path::new(RUN_DIR), "pv0").unwrap();
        let ns = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert!(ns.parse::<u64>().is_ok(), "{p:?}");
        assert!(p.starts_with(RUN_DIR) && p.ends_with("pv0.routes"), "{p:?}");
    }

    #[test]
    fn sweep_without_record_is_clean_and_live_owner_refuses() {
        let dir = std::env::temp_dir().join(format!("pipevpn-sweep-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let state = dir.join("pv9.routes");
        assert_eq!(sweep_stale(&state).unwrap(), SweepOutcome::Clean);
        // Pid 1 always runs and is not us.
        fs::write(&state, "pid 1\n10.0.0.0/8 dev pv9\n").unwrap();
        let err = sweep_stale(&state).unwrap_err().to_string();
        assert_eq!(err, "interface pv9 is in use by pipevpn pid 1");
        assert!(state.exists());
        fs::write(&state, "pid 1\nnonsense\n").unwrap();
        assert!(matches!(sweep_stale(&state), Err(Error::Input(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
