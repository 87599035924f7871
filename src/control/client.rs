//! The client side of the control socket, for `pipevpn show`: finds an
//! interface's socket where `up` serves it, sends a get and reads the
//! answer with the one codec ([`crate::protocol::uapi::read_get`]).

use super::SOCKET_DIR;
use crate::protocol::uapi::{read_get, Snapshot, MAX_ANSWER_BYTES};
use crate::rundir::{Netns, RUN_DIR};
use crate::{Error, Result};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a get may take to be answered.
const ANSWER_TIME: Duration = Duration::from_secs(5);

/// Where to look, in order: this network namespace's own directory (where
/// `up` serves when another namespace's interface of the same name holds
/// the usual path), then `/var/run/wireguard`, where `wg` looks.
fn socket_dirs() -> Result<[PathBuf; 2]> {
    Ok([
        Netns::current()?.dir(Path::new(RUN_DIR)),
        PathBuf::from(SOCKET_DIR),
    ])
}

/// The socket of `iface`: the first of [`socket_dirs`] that has one.
fn socket_path(iface: &str) -> Result<PathBuf> {
    let dirs = socket_dirs()?;
    let paths = dirs.map(|d| d.join(format!("{iface}.sock")));
    paths
        .iter()
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .cloned()
        .ok_or_else(|| {
            Error::Input(format!(
                "no interface {iface}: no control socket {} or {}",
                paths[0].display(),
                paths[1].display()
            ))
        })
}

/// Every interface with a live socket in [`socket_dirs`], sorted, each once
/// (as `wg show` lists them).
pub fn interfaces() -> Result<Vec<String>> {
    interfaces_in(&socket_dirs()?)
}

/// [`interfaces`] in `dirs`. A socket that refuses connections was left by a
/// run that ended without removing it: no interface serves it, so it is not
/// listed, as wireguard-tools leaves it out of `wg show`. Any other failure
/// to connect (root missing, say) keeps the name, for [`get`] to report.
fn interfaces_in(dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::sys(format!("reading {}", dir.display()), e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
            let Some(iface) = name.strip_suffix(".sock").filter(|_| is_socket) else {
                continue;
            };
            let served = UnixStream::connect(entry.path())
                .map_or_else(|e| e.kind() != io::ErrorKind::ConnectionRefused, |_| true);
            if !iface.starts_with('.') && served {
                names.push(iface.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The device `iface` as its control socket answers a get. The errors say
/// which interface and socket, and whether root is what is missing.
pub fn get(iface: &str) -> Result<Snapshot> {
    let path = socket_path(iface)?;
    let reach = |e: io::Error| {
        let why = match e.kind() {
            io::ErrorKind::PermissionDenied => "only root may reach it".to_string(),
            io::ErrorKind::ConnectionRefused => {
                "no one serves it (left by a run that ended)".to_string()
            }
            _ => e.to_string(),
        };
        Error::Input(format!(
            "interface {iface}: control socket {}: {why}",
            path.display()
        ))
    };
    let mut stream = UnixStream::connect(&path).map_err(reach)?;
    stream.set_read_timeout(Some(ANSWER_TIME)).map_err(reach)?;
    stream.set_write_timeout(Some(ANSWER_TIME)).map_err(reach)?;
    stream.write_all(b"get=1\n\n").map_err(reach)?;
    // The answer holds the private key: kept in memory wiped on drop.
    let mut answer = Zeroizing::new(Vec::new());
    let mut buf = Zeroizing::new([0u8; 64 * 1024]);
    while !answer.ends_with(b"\n\n") {
        let n = stream.read(&mut buf[..]).map_err(reach)?;
        if n == 0 {
            return Err(reach(io::Error::other(
                "closed before the end of the answer",
            )));
        }
        if answer.len() + n > MAX_ANSWER_BYTES {
            return Err(reach(io::Error::other(format!(
                "answer longer than {MAX_ANSWER_BYTES} bytes"
            ))));
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = std::str::from_utf8(&answer)
        .map_err(|_| reach(io::Error::other("the answer is not text")))?;
    read_get(text).map_err(|e| {
        Error::Input(format!(
            "interface {iface}: control socket {}: answer line {}: {}",
            path.display(),
            e.line,
            e.msg
        ))
    })
}

/// [`get`], with the pipeline's counters read out of the answer.
pub fn device(iface: &str) -> Result<crate::show::Device> {
    crate::show::Device::new(iface, get(iface)?)
        .map_err(|e| Error::Input(format!("interface {iface}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::tests::TestDir;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_socket_no_one_serves_is_not_listed() {
        let dirs = [TestDir::new("client-live"), TestDir::new("client-left")];
        for d in &dirs {
            std::fs::create_dir_all(&d.0).unwrap();
        }
        let _live = UnixListener::bind(dirs[0].0.join("pv1.sock")).unwrap();
        let _also = UnixListener::bind(dirs[1].0.join("pv3.sock")).unwrap();
        // Bound, then closed: the file stays, and connecting to it is refused.
        drop(UnixListener::bind(dirs[1].0.join("pv2.sock")).unwrap());
        std::fs::write(dirs[1].0.join("pv4.sock"), b"not a socket").unwrap();
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.0.clone()).collect();
        assert_eq!(interfaces_in(&paths).unwrap(), ["pv1", "pv3"]);
    }
}
