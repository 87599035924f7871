//! Giving up privilege: what a running tunnel keeps is CAP_NET_ADMIN alone
//! (live changes over the control socket and the teardown need it), with
//! no_new_privs set, so neither the process nor a program it runs (hooks,
//! resolvconf) can gain more.
//!
//! Capabilities and no_new_privs belong to a thread (capset(2),
//! PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS), and a new thread copies its
//! creator's: [`keep_only_net_admin`] must run before the process starts
//! its first thread, or the threads already running keep everything.

use crate::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use std::io;

/// The one capability kept.
const KEPT: Capability = Capability::CAP_NET_ADMIN;

/// Confines the calling thread, and so every thread it starts later, to
/// CAP_NET_ADMIN (effective and permitted; inheritable, ambient empty; the
/// bounding set reduced to it) with no_new_privs set. The bounding set
/// matters for root: exec as uid 0 grants the whole bounding set, even
/// under no_new_privs, so it is what confines the hooks.
pub fn keep_only_net_admin() -> Result<()> {
    if !caps::has_cap(None, CapSet::Permitted, KEPT).map_err(caps_error("capget"))? {
        return Err(Error::Input(
            "CAP_NET_ADMIN is needed (to make the interface and its routes), and this process \
             does not have it: run it as root, with CAP_NET_ADMIN in its capability bounding set"
                .into(),
        ));
    }
    // First, while CAP_SETPCAP (which PR_CAPBSET_DROP needs) is still ours.
    reduce_bounding_set()?;
    clear_ambient()?;
    let only: CapsHashSet = [KEPT].into_iter().collect();
    set(CapSet::Inheritable, &CapsHashSet::new())?;
    // Effective before permitted: effective must stay within permitted.
    set(CapSet::Effective, &only)?;
    set(CapSet::Permitted, &only)?;
    set_no_new_privs()
}

/// Drops every capability but [`KEPT`] from the bounding set.
fn reduce_bounding_set() -> Result<()> {
    let bounding = caps::read(None, CapSet::Bounding).map_err(caps_error("PR_CAPBSET_READ"))?;
    for cap in bounding.into_iter().filter(|&c| c != KEPT) {
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_error(format!(
            "dropping {cap} from the capability bounding set (needs CAP_SETPCAP, \
             or a bounding set of CAP_NET_ADMIN alone at start)"
        )))?;
    }
    Ok(())
}

fn clear_ambient() -> Result<()> {
    caps::clear(None, CapSet::Ambient).map_err(caps_error("PR_CAP_AMBIENT_CLEAR_ALL"))
}

/// Sets the calling thread's `set` to `value` exactly (capset).
fn set(set: CapSet, value: &CapsHashSet) -> Result<()> {
    caps::set(None, set, value).map_err(caps_error(format!("capset: {set:?} to {value:?}")))
}

fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| Error::sys("prctl(PR_SET_NO_NEW_PRIVS)", e.into()))
}

/// Maps the caps crate's error (a message) to ours, naming `op`.
fn caps_error(op: impl Into<String>) -> impl FnOnce(caps::errors::CapsError) -> Error {
    move |e| Error::sys(op, io::Error::other(e.to_string()))
}
