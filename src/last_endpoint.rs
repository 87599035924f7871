//! The peers' last authenticated endpoints, kept for the next start of a
//! tunnel for the peers its config gives no Endpoint (the listening side).
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
//! earlier namespace that had the inode is removed unused. A peer the config
//! no longer has is left out of the next write.
//!
//! ```text
//! netns 8195
//! peer xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
//! endpoint 10.98.0.1:51820
//! peer 8sU1ZOjSwpAXl3n5EX7e9Ty+hY5V5yi0arL3k+KFd0Q=
//! endpoint [2001:db8::5]:41414
//! ```

use crate::protocol::keys::PublicKey;
use crate::rundir::{self, Netns};
use crate::{Error, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEndpoints {
    /// The cookie of the namespace it was written in.
    pub netns: Option<u64>,
    /// Each peer's public key and where it last was.
    pub peers: Vec<(PublicKey, SocketAddr)>,
}

impl LastEndpoints {
    pub fn render(&self) -> String {
        let mut text = format!("netns {}\n", rundir::render_cookie(self.netns));
        for (peer, endpoint) in &self.peers {
            text.push_str(&format!("peer {peer}\nendpoint {endpoint}\n"));
        }
        text
    }

    /// Parses [`LastEndpoints::render`]'s form back; the error names the line.
    pub fn parse(text: &str) -> std::result::Result<LastEndpoints, String> {
        fn field<'t>(
            line: Option<&'t str>,
            n: usize,
            key: &str,
        ) -> std::result::Result<&'t str, String> {
            line.and_then(|l| l.strip_prefix(key))
                .and_then(|v| v.strip_prefix(' '))
                .ok_or(format!("line {n}: expected '{key} ...'"))
        }
        let mut lines = text.lines();
        let netns = rundir::parse_cookie(field(lines.next(), 1, "netns")?)
            .map_err(|e| format!("line 1: {e}"))?;
        let mut peers = Vec::new();
        let mut n = 1;
        while let Some(line) = lines.next() {
            n += 2;
            let peer = field(Some(line), n - 1, "peer")?;
            let peer = PublicKey::decode(peer).map_err(|e| format!("line {}: {e}", n - 1))?;
            let endpoint = field(lines.next(), n, "endpoint")?;
            let endpoint = endpoint
                .parse()
                .map_err(|_| format!("line {n}: bad endpoint '{endpoint}'"))?;
            peers.push((peer, endpoint));
        }
        Ok(LastEndpoints { netns, peers })
    }
}

/// `run_dir/<netns inode>/<iface>.endpoint`.
pub fn path(run_dir: &Path, iface: &str) -> Result<PathBuf> {
    Ok(Netns::current()?
        .dir(run_dir)
        .join(format!("{iface}.endpoint")))
}

/// Where each peer last was, if the file at `path` says so for this
/// namespace. A file from another namespace is removed; one that is not to
/// be trusted or does not parse is an error naming it.
pub fn load(path: &Path) -> Result<HashMap<PublicKey, SocketAddr>> {
    let Some(text) = rundir::read(path)? else {
        return Ok(HashMap::new());
    };
    let last = LastEndpoints::parse(&text).map_err(|msg| {
        Error::Input(format!(
            "{}: {msg}; remove the file (it only speeds up reconnecting)",
            path.display()
        ))
    })?;
    if Netns::current()?.wrote(last.netns) {
        return Ok(last.peers.into_iter().collect());
    }
    log::info!(
        "{}: from an earlier network namespace that had this one's inode number; removing it",
        path.display()
    );
    rundir::remove(path)?;
    Ok(HashMap::new())
}

/// Records where the peers are; with none, removes the file.
pub fn save(path: &Path, peers: &[(PublicKey, SocketAddr)]) -> Result<()> {
    if peers.is_empty() {
        return rundir::remove(path);
    }
    let last = LastEndpoints {
        netns: Netns::current()?.cookie,
        peers: peers.to_vec(),
    };
    rundir::write(path, &last.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::tests::TestDir;

    const PEER: PublicKey = PublicKey::from_bytes([7; 32]);
    const OTHER: PublicKey = PublicKey::from_bytes([8; 32]);

    #[test]
    fn text_round_trips_and_bad_lines_are_named() {
        let last = LastEndpoints {
            netns: Some(8195),
            peers: vec![
                (PEER, "[2001:db8::1]:51820".parse().unwrap()),
                (OTHER, "10.0.0.1:1".parse().unwrap()),
            ],
        };
        assert_eq!(LastEndpoints::parse(&last.render()), Ok(last));
        let none = LastEndpoints {
            netns: None,
            peers: vec![],
        };
        assert_eq!(LastEndpoints::parse(&none.render()), Ok(none));
        // The one-peer files of earlier versions read the same.
        let good =
            "netns 1\npeer BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\nendpoint 10.0.0.1:1\n";
        assert_eq!(LastEndpoints::parse(good).unwrap().peers.len(), 1);
        for (bad, why) in [
            ("", "line 1: expected 'netns ...'"),
            ("netns x\n", "line 1: bad netns cookie"),
            ("netns 1\npeer abc\n", "line 2:"),
            (
                &good.replace("10.0.0.1:1", "10.0.0.1"),
                "line 3: bad endpoint",
            ),
            (&format!("{good}more\n"), "line 4: expected 'peer ...'"),
            (
                &format!("{good}peer BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"),
                "line 5: expected 'endpoint ...'",
            ),
        ] {
            let err = LastEndpoints::parse(bad).unwrap_err();
            assert!(err.starts_with(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn saved_endpoints_are_found_again_only_for_this_namespace() {
        let t = TestDir::new("last-endpoint");
        let p = path(&t.0, "pv0").unwrap();
        let ep: SocketAddr = "10.98.0.1:51820".parse().unwrap();
        let ep2: SocketAddr = "10.98.0.2:4000".parse().unwrap();
        assert!(load(&p).unwrap().is_empty());
        save(&p, &[(PEER, ep), (OTHER, ep2)]).unwrap();
        let found = load(&p).unwrap();
        assert_eq!(
            (found.get(&PEER), found.get(&OTHER)),
            (Some(&ep), Some(&ep2))
        );
        assert_eq!(load(&p).unwrap(), found, "kept for the next start");
        save(&p, &[]).unwrap();
        assert!(!p.exists(), "no peer, no file");
        save(&p, &[(PEER, ep), (OTHER, ep2)]).unwrap();

        let cookie = Netns::current().unwrap().cookie;
        let foreign = LastEndpoints {
            netns: cookie.map(|c| c + 1),
            peers: vec![(PEER, ep)],
        };
        rundir::write(&p, &foreign.render()).unwrap();
        assert!(load(&p).unwrap().is_empty());
        assert!(!p.exists(), "an earlier namespace's is removed");

        rundir::write(&p, "nonsense\n").unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: line 1", p.display())),
            "{err}"
        );
        // The rules of rundir apply: here a file others may write.
        save(&p, &[(PEER, ep)]).unwrap();
        std::fs::write(&p, foreign.render()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o646)).unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        assert!(p.exists());
    }
}
