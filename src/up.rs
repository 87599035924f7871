//! `pipevpn up`: config -> tun, addresses, routes, UDP socket -> pipeline,
//! then wait for SIGINT/SIGTERM or a failed stage, and undo everything.
//! (to be written)

use crate::config::Config;
use std::path::PathBuf;

pub struct UpOptions {
    /// Interface name (already validated).
    pub interface: String,
    /// Where to write the per-stage counters every second and at exit.
    pub stats_file: Option<PathBuf>,
}

pub fn run(_config: Config, _opts: UpOptions) -> crate::Result<()> {
    Err(crate::Error::Input("up: not written yet".into()))
}
