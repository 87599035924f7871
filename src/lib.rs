//! pipevpn: a point-to-point VPN for Linux, built as a threaded packet
//! pipeline and speaking the WireGuard wire protocol.
//!
//! ```text
//!  app ─► tun ─► [tun_reader] ─► [encryptor] ─► [udp_sender] ─► UDP ─► peer
//!  app ◄─ tun ◄─ [tun_writer] ◄─ [decryptor] ◄─ [udp_receiver] ◄─ UDP ◄─ peer
//!                         [handshaker: Noise IK handshakes, timers, keys]
//! ```
//!
//! - [`protocol`] is pure WireGuard: bytes in, typed results out.
//! - [`pipeline`] runs each box above on its own named thread, joined by
//!   bounded channels that carry batches of pooled packet buffers.
//! - [`sys`] holds every `unsafe` block and ioctl; [`routes`] plans, records
//!   and undoes the routes a tunnel adds; [`rundir`] keeps the records root
//!   trusts across runs, [`last_endpoint`] among them.
//! - [`up`] wires a [`config::Config`] to real devices. The `pipevpn`
//!   command itself (command line, `pipevpn demo`) lives in `src/bin/pipevpn/`.

pub mod cidr;
pub mod config;
pub mod error;
pub mod last_endpoint;
pub mod pipeline;
pub mod protocol;
pub mod routes;
pub mod rundir;
pub mod sys;
pub mod tun;
pub mod udp;
pub mod up;

pub use error::{Error, Result};
