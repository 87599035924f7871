//! The control socket `wg` speaks: the WireGuard cross-platform userspace
//! API, whose text is [`crate::protocol::uapi`]'s. This module owns where the
//! socket lives, who may reach it, and serving it beside the pipeline
//! without ever holding up a stage.
//!
//! - `/var/run/wireguard/<iface>.sock`, where `wg` looks and wireguard-go
//!   serves: the directory made 0755, the socket 0700, since a get answers
//!   with the private key. The socket is bound in a private 0700 directory
//!   and linked into place, so no one reaches it before its mode is set, and
//!   a live socket of the same name (another network namespace's interface)
//!   is never replaced: [`bind`] reports who holds it.
//! - One thread, `control`, accepts; each client gets a thread of its own,
//!   at most [`Limits::clients`] at once. A request must be complete within
//!   [`Limits::request_time`] of its first byte, a reply be taken within as
//!   long, and the reader bounds a request's size: a client that sends
//!   100 MB or never finishes holds one thread for seconds and blocks no
//!   other client, and no stage ever waits for the control socket.
//! - [`client`] is the other end, for `pipevpn show`: it finds the socket
//!   where [`bind`]'s caller serves it and reads a get's answer.

pub mod client;
pub mod handler;

use crate::protocol::uapi::{write_get, Errno, Request, RequestReader, Set, Snapshot, OK_REPLY};
use crate::sys::poll::{wait_readable, Ready, StopFd};
use crate::{Error, Result};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where `wg` looks for the socket of an interface.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// What serving the socket does with a request.
pub trait Handler: Send + Sync {
    /// The device as it is now, for a `get`.
    fn get(&self) -> Snapshot;
    /// Applies a complete, valid `set`; on failure, the errno to answer
    /// (the handler logs what went wrong).
    fn set(&self, set: Set) -> std::result::Result<(), Errno>;
}

/// The bounds on clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Clients served at once; one more is closed at once.
    pub clients: usize,
    /// For a request from its first byte to its last, for a reply to be
    /// read, and for an idle connection between requests.
    pub request_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // `wg` sends its request at once and reads the reply at once.
        Limits {
            clients: 8,
            request_time: Duration::from_secs(10),
        }
    }
}

/// A bound control socket; dropping it removes the socket file if it is
/// still ours.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of our socket file: tells it from one made later.
    id: (u64, u64),
}

/// The socket path is held by a live server: another interface of the same
/// name (in another network namespace, since names are unique in one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub path: PathBuf,
    /// The holder's process, if the kernel tells.
    pub pid: Option<i32>,
}

/// Binds `<dir>/<iface>.sock`, making `dir` (0755) if needed. A file there
/// that no server answers on is a crashed run's and is replaced; a live one
/// is left alone and reported as [`Taken`].
pub fn bind(dir: &Path, iface: &str) -> Result<std::result::Result<ControlSocket, Taken>> {
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return Err(Error::Input(format!(
            "'{iface}' cannot name a control socket"
        )));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::sys(format!("creating {}", dir.display()), e))?;
    let path = dir.join(format!("{iface}.sock"));
    if let Some(taken) = clear_stale(&path)? {
        return Ok(Err(taken));
    }
    // Bound where only root can look, given its mode, then linked into
    // place: link, unlike rename, fails instead of replacing a socket that
    // appeared meanwhile.
    let private = dir.join(format!(".{iface}.sock.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    let made = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| Error::sys(format!("creating {}", private.display()), e));
    let result = made.and_then(|()| {
        let inner = private.join("sock");
        let listener = UnixListener::bind(&inner)
            .map_err(|e| Error::sys(format!("binding {}", inner.display()), e))?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::sys(format!("setting the mode of {}", inner.display()), e))?;
        match std::fs::hard_link(&inner, &path) {
            Ok(()) => Ok(Some(listener)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::sys(format!("linking {}", path.display()), e)),
        }
    });
    let _ = std::fs::remove_dir_all(&private);
    let Some(listener) = result? else {
        // Someone bound it between our look and our link.
        return Ok(Err(clear_stale(&path)?.unwrap_or(Taken {
            path: path.clone(),
            pid: None,
        })));
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::sys(format!("reading {}", path.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::sys("making the control socket non-blocking", e))?;
    Ok(Ok(ControlSocket {
        listener,
        path,
        id: (meta.dev(), meta.ino()),
    }))
}

/// Removes a socket file at `path` that no server answers on; reports a live
/// one.
fn clear_stale(path: &Path) -> Result<Option<Taken>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::sys(format!("reading {}", path.display()), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Input(format!(
            "{} exists and is not a socket: remove it to serve the control socket there",
            path.display()
        )));
    }
    match UnixStream::connect(path) {
        Ok(s) => Ok(Some(Taken {
            path: path.to_owned(),
            pid: peer_pid(&s),
        })),
        Err(_) => match std::fs::remove_file(path) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::sys(
                format!("removing the stale {}", path.display()),
                e,
            )),
        },
    }
}

fn peer_pid(s: &UnixStream) -> Option<i32> {
    nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid())
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether our socket file is still in place: deleting it is how an
    /// operator (or `wg-quick down` for wireguard-go) asks the daemon to go.
    pub fn still_there(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if self.still_there() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The running server: [`Server::stop`] (or dropping it) ends the accept
/// thread and waits for the clients' threads, which look at the stop flag
/// every [`POLL`].
pub struct Server {
    stop: Arc<StopFd>,
    accept: Option<JoinHandle<()>>,
    clients: Arc<AtomicUsize>,
    socket: Arc<ControlSocket>,
    accepting: Arc<Accepting>,
}

/// Whether the accept thread still runs: cleared when it returns or
/// unwinds, for a watchdog.
#[derive(Default)]
pub struct Accepting(AtomicBool);

impl Accepting {
    pub fn get(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// Clears [`Accepting`] when the accept thread ends, however it ends.
struct ClearOnExit(Arc<Accepting>);

impl Drop for ClearOnExit {
    fn drop(&mut self) {
        self.0 .0.store(false, Relaxed);
    }
}

/// How often a client's thread looks at the stop flag while it waits.
const POLL: Duration = Duration::from_millis(100);

/// Serves `socket` with `handler` on a thread named `control`.
pub fn serve(socket: ControlSocket, handler: Arc<dyn Handler>, limits: Limits) -> Result<Server> {
    let stop = Arc::new(StopFd::new()?);
    let clients = Arc::new(AtomicUsize::new(0));
    let socket = Arc::new(socket);
    let accepting = Arc::new(Accepting(AtomicBool::new(true)));
    let accept = {
        let (stop, clients, socket) = (stop.clone(), clients.clone(), socket.clone());
        let running = ClearOnExit(accepting.clone());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let _running = running;
                accept_loop(&socket, &handler, limits, &stop, &clients)
            })
            .map_err(|e| Error::sys("spawning thread control", e))?
    };
    Ok(Server {
        stop,
        accept: Some(accept),
        clients,
        socket,
        accepting,
    })
}

impl Server {
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// See [`ControlSocket::still_there`].
    pub fn still_there(&self) -> bool {
        self.socket.still_there()
    }

    /// Whether the accept thread runs, as it goes on.
    pub fn accepting(&self) -> Arc<Accepting> {
        self.accepting.clone()
    }

    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.signal();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Each client's thread ends within a POLL, or a write timeout.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.clients.load(Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

fn accept_loop(
    socket: &ControlSocket,
    handler: &Arc<dyn Handler>,
    limits: Limits,
    stop: &Arc<StopFd>,
    clients: &Arc<AtomicUsize>,
) {
    loop {
        match wait_readable(socket.listener.as_raw_fd(), stop, None) {
            Ok(Some(Ready::Readable)) => {}
            Ok(_) => return,
            Err(e) => return log::error!("control socket {}: {e}", socket.path.display()),
        }
        let stream = match socket.listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // Out of descriptors, say: the next client may fare better.
                log::warn!("control socket: accept: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if clients.fetch_add(1, Relaxed) >= limits.clients {
            clients.fetch_sub(1, Relaxed);
            log::warn!(
                "control socket: {} clients already, closing another",
                limits.clients
            );
            continue;
        }
        let (handler, stop, count) = (handler.clone(), stop.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name("control_client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &*handler, limits, &stop) {
                    log::debug!("control socket client: {e}");
                }
                count.fetch_sub(1, Relaxed);
            });
        if let Err(e) = spawned {
            clients.fetch_sub(1, Relaxed);
            log::warn!("control socket: spawning a client thread: {e}");
        }
    }
}

/// Answers one client's requests until it closes, errs, stalls past the
/// time limit, or the server stops.
fn serve_client(
    mut stream: UnixStream,
    handler: &dyn Handler,
    limits: Limits,
    stop: &StopFd,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(limits.request_time))?;
    let mut reader = RequestReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Since the first byte of the request under way, or since the last
    // reply while idle.
    let mut since = Instant::now();
    loop {
        let left = limits.request_time.saturating_sub(since.elapsed());
        if stop.is_set() {
            return Ok(());
        }
        if left.is_zero() {
            if !reader.is_idle() {
                log::warn!(
                    "control socket: a request unfinished after {:?}",
                    limits.request_time
                );
                stream.write_all(Errno::Io.reply().as_bytes())?;
            }
            return Ok(());
        }
        stream.set_read_timeout(Some(left.min(POLL)))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if reader.is_idle() {
            since = Instant::now();
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, done) = reader.feed(input);
            input = &input[used..];
            let Some(done) = done else {
                break;
            };
            match done {
                Ok(Request::Get) => stream.write_all(write_get(&handler.get()).as_bytes())?,
                Ok(Request::Set(set)) => {
                    let reply = match handler.set(set) {
                        Ok(()) => OK_REPLY.to_owned(),
                        Err(errno) => errno.reply(),
                    };
                    stream.write_all(reply.as_bytes())?;
                }
                Err(e) => {
                    log::warn!("control socket: {e}");
                    stream.write_all(e.errno.reply().as_bytes())?;
                    if e.ends_connection {
                        return Ok(());
                    }
                }
            }
            since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::PrivateKey;
    use crate::rundir::tests::TestDir;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        sets: Mutex<Vec<Set>>,
    }

    impl Handler for Recorder {
        fn get(&self) -> Snapshot {
            Snapshot {
                private_key: Some(PrivateKey::from_bytes([0x42; 32])),
                listen_port: 51820,
                ..Snapshot::default()
            }
        }
        fn set(&self, set: Set) -> std::result::Result<(), Errno> {
            let refuse = set.listen_port == Some(1);
            self.sets.lock().unwrap().push(set);
            if refuse {
                Err(Errno::PortInUse)
            } else {
                Ok(())
            }
        }
    }

    fn server(dir: &TestDir, limits: Limits) -> (Server, Arc<Recorder>) {
        let socket = bind(&dir.0, "pvc0").unwrap().expect("not taken");
        let rec = Arc::new(Recorder::default());
        (serve(socket, rec.clone(), limits).unwrap(), rec)
    }

    #[test]
    fn accepting_is_true_while_the_accept_thread_runs_and_false_after() {
        let dir = TestDir::new("control-accepting");
        let (server, _) = server(&dir, Limits::default());
        let accepting = server.accepting();
        assert!(accepting.get());
        assert!(ask(server.path(), b"get=1\n\n").ends_with("errno=0\n\n"));
        assert!(accepting.get(), "still accepting after a client");
        server.stop();
        assert!(!accepting.get(), "cleared when the thread ended");
    }

    /// Sends `request` and reads until the reply's empty line.
    fn ask(path: &Path, request: &[u8]) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        read_reply(&mut s)
    }

    fn read_reply(s: &mut UnixStream) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.ends_with(b"\n\n") {
            let n = s.read(&mut b).expect("a reply within 5 s");
            assert!(
                n > 0,
                "closed before the reply: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[test]
    fn get_and_set_are_answered_as_wg_expects() {
        let dir = TestDir::new("control-getset");
        let (server, rec) = server(&dir, Limits::default());
        let get = ask(server.path(), b"get=1\n\n");
        assert_eq!(get, *write_get(&rec.get()));
        assert!(
            get.starts_with("private_key=") && get.contains("\nlisten_port=51820\n"),
            "{get}"
        );
        assert_eq!(
            ask(server.path(), b"set=1\nlisten_port=4000\n\n"),
            "errno=0\n\n"
        );
        assert_eq!(
            ask(server.path(), b"set=1\nlisten_port=1\n\n"),
            "errno=-98\n\n"
        );
        // A bad request changes nothing: the handler never sees it.
        assert_eq!(
            ask(server.path(), b"set=1\nlisten_port=x\n\n"),
            "errno=-22\n\n"
        );
        // Two requests on one connection, the second sent in pieces.
        let mut s = UnixStream::connect(server.path()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"set=1\nfwmark=7\n\n").unwrap();
        assert_eq!(read_reply(&mut s), "errno=0\n\n");
        for piece in [&b"se"[..], b"t=1\nlisten_", b"port=9\n", b"\n"] {
            s.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(read_reply(&mut s), "errno=0\n\n");
        let sets = rec.sets.lock().unwrap();
        let ports: Vec<_> = sets.iter().map(|s| (s.listen_port, s.fwmark)).collect();
        assert_eq!(
            ports,
            [
                (Some(4000), None),
                (Some(1), None),
                (None, Some(7)),
                (Some(9), None)
            ]
        );
        drop(sets);
        server.stop();
    }

    #[test]
    fn the_socket_is_root_only_and_goes_with_the_server() {
        let dir = TestDir::new("control-modes");
        let (server, _) = server(&dir, Limits::default());
        let path = server.path().to_owned();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0), 0o755);
        assert_eq!(mode(&path), 0o700);
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            1,
            "nothing but the socket is left in the directory"
        );
        assert!(server.still_there());
        server.stop();
        assert!(!path.exists(), "the socket file is removed");

        // Deleting the file is noticed.
        let (server, _) = self::server(&dir, Limits::default());
        std::fs::remove_file(server.path()).unwrap();
        assert!(!server.still_there());
    }

    #[test]
    fn a_live_socket_is_reported_taken_and_a_stale_one_replaced() {
        let dir = TestDir::new("control-taken");
        let (server, _) = server(&dir, Limits::default());
        let taken = bind(&dir.0, "pvc0")
            .unwrap()
            .expect_err("the first one is live");
        assert_eq!(taken.path, server.path());
        assert_eq!(taken.pid, Some(std::process::id() as i32));
        assert!(server.still_there(), "the live socket is left alone");
        server.stop();

        // A crashed run's file: a socket no one listens on.
        let stale = dir.0.join("pvc0.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let socket = bind(&dir.0, "pvc0").unwrap().expect("replaced");
        assert!(socket.still_there());
        drop(socket);

        std::fs::write(&stale, b"not a socket").unwrap();
        let err = bind(&dir.0, "pvc0").unwrap_err().to_string();
        assert!(err.contains("is not a socket"), "{err}");
        assert!(bind(&dir.0, "../x").is_err());
    }

    /// A client that never finishes, one that sends 20 MB and one too
    /// many: each is cut off, and a well-behaved client is answered
    /// meanwhile.
    #[test]
    fn stalled_huge_and_surplus_clients_block_no_one() {
        let dir = TestDir::new("control-bounds");
        let limits = Limits {
            clients: 3,
            request_time: Duration::from_secs(1),
        };
        let (server, rec) = server(&dir, limits);
        let path = server.path().to_owned();

        let mut stalled = UnixStream::connect(&path).unwrap();
        stalled.write_all(b"set=1\nlisten_port=5\n").unwrap();
        let huge = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"set=1\n").unwrap();
                let line = b"allowed_ip=10.0.0.0/8\n".repeat(4096);
                let mut sent = 0;
                // The server stops reading once the request is too long.
                while sent < 20 << 20 && s.write_all(&line).is_ok() {
                    sent += line.len();
                }
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                reply
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        assert!(ask(&path, b"get=1\n\n").ends_with("errno=0\n\n"));
        assert!(started.elapsed() < Duration::from_millis(500));

        let reply = huge.join().unwrap();
        assert!(reply.starts_with("errno=-"), "{reply:?}");
        // The stalled one is answered EIO and closed once its time is up.
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = String::new();
        stalled.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "errno=-5\n\n");
        assert!(started.elapsed() < Duration::from_secs(3));

        // Three idle clients fill the server; a fourth is closed at once.
        let idle: Vec<_> = (0..3)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut fourth = UnixStream::connect(&path).unwrap();
        fourth
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Closed at once: the write may already fail.
        let _ = fourth.write_all(b"get=1\n\n");
        let mut out = Vec::new();
        assert!(
            matches!(fourth.read_to_end(&mut out), Ok(0) | Err(_)),
            "answered: {:?}",
            String::from_utf8_lossy(&out)
        );
        drop(idle);
        assert!(rec.sets.lock().unwrap().is_empty(), "nothing was applied");
        server.stop();
    }
}
