//! WireGuard, pure: bytes in, typed result out. No threads, no sockets, no
//! clock reads, no randomness drawn here: callers pass time and random bytes
//! in, so every function is deterministic and unit-tested beside itself.

pub mod dos;
pub mod handshake;
pub mod keys;
pub mod messages;
pub mod session;
pub mod timers;
pub mod uapi;
