//! The peer's last authenticated endpoint, kept for the next start of a
//! tunnel whose config has no Endpoint (the listening side).
//!
//! When such a side restarts, its peer still holds a session with the old
//! run and only notices after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) of
//! unanswered data (whitepaper §6.5). Either side may initiate a handshake
//! (whitepaper §5.4), so the restarted side, knowing where the peer last
//! was, initiates at once instead, retrying and giving up as any initiator
//! does (whitepaper §6.4).
//!
//! The file is `RUN_DIR/<netns inode>/<iface>.endpoint` under the rules of
//! [`rundir`]. It outlives the run that wrote it (a clean stop included), so
//! its key is what the next start of the same interface in the same
//! namespace finds again: the namespace's inode. The cookie inside is the
//! check, and the same for as long as that namespace lives; a file from an
//! earlier namespace that had the inode is removed unused, and so is one
//! written for another peer's key.
//!
//! ```text
//! netns 8195
//! peer xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
//! endpoint 10.98.0.1:51820
//! ```

use crate::protocol::keys::PublicKey;
use crate::rundir::{self, Netns};
use crate::{Error, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEndpoint {
    /// The cookie of the namespace it was written in.
    pub netns: Option<u64>,
    /// The peer's public key.
    pub peer: PublicKey,
    pub endpoint: SocketAddr,
}

impl LastEndpoint {
    pub fn render(&self) -> String {
        format!(
            "netns {}\npeer {}\nendpoint {}\n",
            rundir::render_cookie(self.netns),
            self.peer,
            self.endpoint
        )
    }

    /// Parses [`LastEndpoint::render`]'s form back; the error names the line.
    pub fn parse(text: &str) -> std::result::Result<LastEndpoint, String> {
        let mut lines = text.lines();
        let mut field = |n: usize, key: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|v| v.strip_prefix(' '))
                .ok_or(format!("line {n}: expected '{key} ...'"))
        };
        let netns = rundir::parse_cookie(field(1, "netns")?).map_err(|e| format!("line 1: {e}"))?;
        let peer = PublicKey::decode(field(2, "peer")?).map_err(|e| format!("line 2: {e}"))?;
        let endpoint = field(3, "endpoint")?;
        let endpoint = endpoint
            .parse()
            .map_err(|_| format!("line 3: bad endpoint '{endpoint}'"))?;
        match lines.next() {
            None => Ok(LastEndpoint {
                netns,
                peer,
                endpoint,
            }),
            Some(_) => Err("line 4: unexpected".into()),
        }
    }
}

/// `run_dir/<netns inode>/<iface>.endpoint`.
pub fn path(run_dir: &Path, iface: &str) -> Result<PathBuf> {
    Ok(Netns::current()?
        .dir(run_dir)
        .join(format!("{iface}.endpoint")))
}

/// Where the peer with public key `peer` last was, if the file at `path`
/// says so for this namespace. A file from another namespace or for another
/// peer is removed; one that is not to be trusted or does not parse is an
/// error naming it.
pub fn load(path: &Path, peer: &PublicKey) -> Result<Option<SocketAddr>> {
    let Some(text) = rundir::read(path)? else {
        return Ok(None);
    };
    let last = LastEndpoint::parse(&text).map_err(|msg| {
        Error::Input(format!(
            "{}: {msg}; remove the file (it only speeds up reconnecting)",
            path.display()
        ))
    })?;
    let stale = if !Netns::current()?.wrote(last.netns) {
        "from an earlier network namespace that had this one's inode number"
    } else if last.peer != *peer {
        "for another peer"
    } else {
        return Ok(Some(last.endpoint));
    };
    log::info!("{}: {stale}; removing it", path.display());
    rundir::remove(path)?;
    Ok(None)
}

/// Records that the peer with public key `peer` is at `endpoint`.
pub fn save(path: &Path, peer: &PublicKey, endpoint: SocketAddr) -> Result<()> {
    let last = LastEndpoint {
        netns: Netns::current()?.cookie,
        peer: *peer,
        endpoint,
    };
    rundir::write(path, &last.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::tests::TestDir;

    const PEER: PublicKey = PublicKey::from_bytes([7; 32]);

    #[test]
    fn text_round_trips_and_bad_lines_are_named() {
        let last = LastEndpoint {
            netns: Some(8195),
            peer: PEER,
            endpoint: "[2001:db8::1]:51820".parse().unwrap(),
        };
        assert_eq!(LastEndpoint::parse(&last.render()), Ok(last));
        let good =
            "netns 1\npeer BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\nendpoint 10.0.0.1:1\n";
        assert!(LastEndpoint::parse(good).is_ok());
        for (bad, why) in [
            ("", "line 1: expected 'netns ...'"),
            ("netns x\n", "line 1: bad netns cookie"),
            ("netns 1\npeer abc\n", "line 2:"),
            (
                &good.replace("10.0.0.1:1", "10.0.0.1"),
                "line 3: bad endpoint",
            ),
            (&format!("{good}more\n"), "line 4: unexpected"),
        ] {
            let err = LastEndpoint::parse(bad).unwrap_err();
            assert!(err.starts_with(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn saved_endpoint_is_found_again_only_for_this_namespace_and_peer() {
        let t = TestDir::new("last-endpoint");
        let p = path(&t.0, "pv0").unwrap();
        let ep: SocketAddr = "10.98.0.1:51820".parse().unwrap();
        assert_eq!(load(&p, &PEER).unwrap(), None);
        save(&p, &PEER, ep).unwrap();
        assert_eq!(load(&p, &PEER).unwrap(), Some(ep));
        assert_eq!(
            load(&p, &PEER).unwrap(),
            Some(ep),
            "kept for the next start"
        );

        assert_eq!(load(&p, &PublicKey::from_bytes([8; 32])).unwrap(), None);
        assert!(!p.exists(), "another peer's is removed");

        let cookie = Netns::current().unwrap().cookie;
        let foreign = LastEndpoint {
            netns: cookie.map(|c| c + 1),
            peer: PEER,
            endpoint: ep,
        };
        rundir::write(&p, &foreign.render()).unwrap();
        assert_eq!(load(&p, &PEER).unwrap(), None);
        assert!(!p.exists(), "an earlier namespace's is removed");

        rundir::write(&p, "nonsense\n").unwrap();
        let err = load(&p, &PEER).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: line 1", p.display())),
            "{err}"
        );
        // The rules of rundir apply: here a file others may write.
        save(&p, &PEER, ep).unwrap();
        std::fs::write(&p, foreign.render()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o646)).unwrap();
        let err = load(&p, &PEER).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        assert!(p.exists());
    }
}
