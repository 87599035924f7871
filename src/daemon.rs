//! `pipevpnd IFACE`'s tunnel: what wireguard-go runs for wg-quick. A tun
//! named IFACE (MTU [`MTU`], no address, not up), a pipeline with no key
//! and no peers on a UDP port the kernel picks, and the control socket,
//! through which `wg setconf` then gives it all of those; addresses, routes,
//! MTU and hooks are wg-quick's. It runs until a stop signal, the control
//! socket's deletion (what `wg-quick down` does) or the interface's.
//!
//! Under systemd (`NOTIFY_SOCKET`), it sends READY=1 once the control
//! socket serves, STOPPING=1 and the watchdog's pings as `up` does
//! ([`crate::notify`]).
//!
//! Starting in the background is the binary's (`src/bin/pipevpnd.rs`);
//! everything that `pipevpn up` also does is [`crate::up`]'s.

use crate::notify::{self, Watchdog};
use crate::pipeline::TunnelConfig;
use crate::sys::{iface, tun::Tun, udp::bind_udp_any};
use crate::up;
use crate::Result;

/// The interface's MTU at the start, and the largest packet the pipeline
/// carries: wg-quick sets the interface's MTU afterwards, and one above
/// this gets its longer packets dropped (counted as `too_big`).
pub const MTU: u16 = 1420;

/// Runs the tunnel of interface `name`; `ready` is called once the control
/// socket accepts connections (an error from it stops the tunnel again).
pub fn run(name: &str, ready: impl FnOnce() -> Result<()>) -> Result<()> {
    iface::validate_name(name)?;
    let timing = up::test_timing()?;
    up::with_stop_signals(|signals| {
        // Bound first: a name in use changes nothing. Taken in another
        // namespace, the usual path would lead wg-quick's `wg setconf` to
        // that namespace's interface: refused, as wireguard-go does.
        let control = up::bind_control(name, up::WhenTaken::Refuse)?;
        let tun = Tun::open(name)?;
        iface::set_mtu(name, u32::from(MTU))?;
        let udp = bind_udp_any(0)?;
        let (handle, server, _) = up::start_tunnel(
            control,
            tun,
            udp,
            TunnelConfig {
                private_key: None,
                mtu: usize::from(MTU),
                timing,
                peers: Vec::new(),
                crypto_workers: crate::pipeline::default_crypto_workers(),
            },
            0,
        )?;
        log::info!(
            "{name} up, pid {}, no key and no peers yet: configure it with `wg setconf {name}` \
             (control socket {})",
            std::process::id(),
            server.path().display()
        );
        let readied = ready();
        if readied.is_ok() {
            let watchdog = Watchdog::start(&handle, server.accepting());
            notify::ready();
            let mut mtu = MtuWatch::default();
            up::wait_for_stop(name, &handle, &server, signals, false, |wake| {
                if wake == up::Wake::Second {
                    mtu.check(name);
                }
            });
            notify::stopping();
            drop(watchdog);
        }
        server.stop();
        let stopped = handle.shutdown();
        readied.and(stopped)
    })
}

/// Warns when wg-quick (or anyone) gives the interface an MTU above [`MTU`],
/// once per such value: the pipeline's buffers were sized at the start.
#[derive(Default)]
struct MtuWatch {
    /// The MTU above [`MTU`] last warned about.
    warned: Option<u32>,
}

impl MtuWatch {
    fn check(&mut self, name: &str) {
        match iface::mtu(name) {
            Ok(now) if self.should_warn(now) => log::warn!(
                "{name} has MTU {now}, but pipevpnd carries packets of at most {MTU} bytes: \
                 longer ones are dropped (too_big); set MTU = {MTU} or less in the config"
            ),
            _ => {}
        }
    }

    /// Whether the interface's MTU being `now` is news to warn about.
    fn should_warn(&mut self, now: u32) -> bool {
        let above = Some(now).filter(|&m| m > u32::from(MTU));
        let news = above.is_some() && above != self.warned;
        self.warned = above;
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mtu_above_the_pipelines_is_warned_about_once_per_value() {
        let mut watch = MtuWatch::default();
        let seen: Vec<bool> = [1420, 1280, 1500, 1500, 9000, 1420, 1500]
            .into_iter()
            .map(|mtu| watch.should_warn(mtu))
            .collect();
        assert_eq!(seen, [false, false, true, false, true, false, true]);
    }
}
