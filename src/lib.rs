//! pipevpn: a point-to-point VPN for Linux, built as a threaded packet
//! pipeline and speaking the WireGuard wire protocol.
//!
//! ```text
//!  app ─► tun ─► [tun_reader] ─► [encryptor] ─► [udp_sender] ─► UDP ─► peer
//!  app ◄─ tun ◄─ [tun_writer] ◄─ [decryptor] ◄─ [udp_receiver] ◄─ UDP ◄─ peer
//!                         [handshaker: Noise IK handshakes, timers, keys]
//! ```
//!
//! Modules, each depending only on those listed after it (no cycles):
//!
//! - [`daemon`] is `pipevpnd`'s tunnel, started keyless and configured over
//!   the control socket, as wg-quick drives wireguard-go; it runs through
//!   [`up`]'s functions.
//! - [`up`] wires a [`config::Config`] to real devices and runs the tunnel
//!   until a signal.
//! - [`control`] serves the control socket `wg` speaks (the text is
//!   [`protocol::uapi`]'s) beside the pipeline; [`control::handler`]
//!   applies its requests to the running [`pipeline::interface`].
//! - [`notify`] tells systemd when the tunnel is ready, reloads and stops,
//!   and pings its watchdog while the [`pipeline`] and [`control`] live.
//! - [`reload`] turns a config file into the control socket's set that
//!   makes a running interface match it (`wg syncconf`), for SIGHUP.
//! - [`show`] renders what `pipevpn show` prints from a get answer (pure);
//!   [`control::client`] asks a running interface's socket for it.
//! - [`config`] reads wg-quick style files; [`routes`] plans, records and
//!   undoes the routes a tunnel adds; [`last_endpoint`] remembers where the
//!   peer was; [`rundir`] keeps the records root trusts across runs.
//! - [`tun`] and [`udp`] are the kernel devices: the tun with its TCP
//!   offloads ([`tun::offload`] cuts and joins super-segments, pure) and the
//!   UDP socket with GSO/GRO. They implement the traits of
//!   [`pipeline::device`].
//! - [`pipeline`] runs each box above on its own named thread, joined by
//!   bounded channels that carry batches of pooled packet buffers. It reaches
//!   the kernel only through [`pipeline::device`]'s traits (in-memory fakes in
//!   tests); [`pipeline::stats`] is the one list of stages and drop reasons and
//!   the one codec of their counters in the control socket's answer.
//! - [`protocol`] is pure WireGuard: bytes in, typed results out; also the
//!   text codec of the control socket `wg` speaks ([`protocol::uapi`]).
//! - [`sys`] holds every `unsafe` block and system call, one small function
//!   each, and depends on nothing above it.
//! - [`cidr`] and [`error`] are leaves used throughout; [`logging`] is the
//!   log both binaries install; [`docs`] makes their man pages and shell
//!   completions from their command-line definitions.
//!
//! The `pipevpn` command (its command line, and `pipevpn demo`, which runs
//! two peers in throw-away network namespaces) is the binary in
//! `src/bin/pipevpn/`, not part of the library; `pipevpnd` (its command
//! line, and starting itself in the background) is `src/bin/pipevpnd.rs`.

pub mod cidr;
pub mod config;
pub mod control;
pub mod daemon;
pub mod docs;
pub mod error;
pub mod last_endpoint;
pub mod logging;
pub mod notify;
pub mod pipeline;
pub mod protocol;
pub mod reload;
pub mod routes;
pub mod rundir;
pub mod show;
pub mod sys;
pub mod tun;
pub mod udp;
pub mod up;

pub use error::{Error, Result};
