//! `pipevpn demo`: two throw-away network namespaces, a real tunnel between two
//! `pipevpn up` processes, and the figures worth looking at: handshake time,
//! round-trip time, throughput, and what every pipeline stage carried.
//!
//! ```text
//!  netns pvdemo<pid>a                                  netns pvdemo<pid>b
//!  pipevpn up ── tun 10.77.0.1 ═══ WireGuard/UDP ═══ tun 10.77.0.2 ── pipevpn up
//!                veth 10.78.0.1 ──────────────────── veth 10.78.0.2
//! ```
//!
//! The bulk transfer uses iperf3 when it is installed; otherwise this same
//! binary in two hidden modes (`--tcp-sink`, `--tcp-source`) started inside
//! the namespaces, so nothing but `ip` and `ping` is needed. Everything the demo creates is owned by a guard and undone on any
//! exit: error, Ctrl-C (SIGINT) or SIGTERM.

use pipevpn::control::client;
use pipevpn::protocol::keys::PrivateKey;
use pipevpn::rundir::{Netns, RUN_DIR};
use pipevpn::show::{self, Watch};
use pipevpn::{Error, Result};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds of bulk TCP transfer through the tunnel.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub seconds: u64,
    /// Internal: accept one TCP stream on this address, report what it carried.
    #[arg(long, hide = true, conflicts_with = "tcp_source")]
    pub tcp_sink: Option<SocketAddr>,
    /// Internal: send to this address for --seconds.
    #[arg(long, hide = true)]
    pub tcp_source: Option<SocketAddr>,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let seconds = Duration::from_secs(args.seconds);
    match (args.tcp_sink, args.tcp_source) {
        (Some(addr), _) => tcp_sink(addr),
        (None, Some(addr)) => tcp_source(addr, seconds),
        (None, None) => demo(seconds),
    }
}

const UNDERLAY: [&str; 2] = ["10.78.0.1", "10.78.0.2"];
const TUNNEL: [&str; 2] = ["10.77.0.1", "10.77.0.2"];
const PORT: u16 = 51820;
const SINK_PORT: u16 = 5001;

/// One side of the tunnel and the files its `pipevpn up` uses.
struct Peer {
    label: &'static str,
    netns: String,
    interface: String,
    config: PathBuf,
    log: PathBuf,
}

fn demo(seconds: Duration) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::sys(format!("installing a handler for signal {signal}"), e))?;
    }
    let id = std::process::id();
    let exe = std::env::current_exe().map_err(|e| Error::sys("finding the pipevpn binary", e))?;
    // Declared before the processes: locals drop in reverse order, so the
    // processes are stopped before their namespaces and files go away.
    let mut lab = Lab::create(std::env::temp_dir().join(format!("pipevpn-demo-{id}")))?;
    let peers = ["a", "b"].map(|side| Peer {
        label: if side == "a" { "A" } else { "B" },
        netns: format!("pvdemo{id}{side}"),
        interface: format!("pvd{id}{side}"),
        config: lab.dir.join(format!("{side}.conf")),
        log: lab.dir.join(format!("{side}.log")),
    });
    build_topology(&mut lab, &peers, id)?;
    write_configs(&peers)?;
    show(topology(&peers))?;

    let mut running = Vec::new();
    for peer in &peers {
        let mut up = in_netns(&peer.netns, &exe);
        up.arg("up")
            .arg(&peer.config)
            .args(["--interface", &peer.interface]);
        running.push(Proc::spawn(
            format!("peer {} (pipevpn up)", peer.label),
            up,
            Some(&peer.log),
        )?);
    }

    let started = Instant::now();
    wait_for_first_reply(&peers, &mut running, &stop)?;
    let first_reply = started.elapsed();
    let handshake = match handshake_duration(&peers[0].interface, &stop)? {
        Some(ms) => format!("the handshake itself took {ms} ms (A's handshaker)"),
        None => "the handshake itself: not reported by A's control socket".to_string(),
    };
    show(format!(
        "handshake\n  first reply through the tunnel after {} ms\n  {handshake}\n",
        first_reply.as_millis()
    ))?;

    let rtt = measure_rtt(&peers[0].netns, TUNNEL[1])?;
    show(format!(
        "\nround trip, 10 pings A -> B through the tunnel\n  avg {:.3} ms   max {:.3} ms   lost {}/10\n",
        rtt.avg_ms, rtt.max_ms, rtt.lost
    ))?;

    let (mbits, tool) = bulk_transfer(&exe, &peers, seconds, &mut running, &stop)?;
    show(format!(
        "\nbulk TCP A -> B for {} s ({tool}): {mbits:.1} Mbit/s\n",
        seconds.as_secs()
    ))?;

    let last = frames(&peers, &mut [Watch::default(), Watch::default()])?;
    for proc in &mut running {
        proc.stop();
    }
    show(format!(
        "\nfinal counters (`pipevpn show` of each peer before it stopped)\n{last}"
    ))?;
    show(format!(
        "\nstopped both peers; the namespaces and {} are removed on exit\n",
        lab.dir.display()
    ))
}

fn build_topology(lab: &mut Lab, peers: &[Peer; 2], id: u32) -> Result<()> {
    for peer in peers {
        lab.add_netns(&peer.netns)?;
        ip(&["-n", &peer.netns, "link", "set", "lo", "up"])?;
    }
    let veth = [format!("pvd{id}va"), format!("pvd{id}vb")];
    ip(&[
        "-n",
        &peers[0].netns,
        "link",
        "add",
        &veth[0],
        "type",
        "veth",
        "peer",
        "name",
        &veth[1],
        "netns",
        &peers[1].netns,
    ])?;
    for (i, peer) in peers.iter().enumerate() {
        let addr = format!("{}/24", UNDERLAY[i]);
        ip(&["-n", &peer.netns, "addr", "add", &addr, "dev", &veth[i]])?;
        ip(&["-n", &peer.netns, "link", "set", &veth[i], "up"])?;
    }
    Ok(())
}

/// Fresh keys for both sides; A knows B's endpoint and so starts the handshake.
fn write_configs(peers: &[Peer; 2]) -> Result<()> {
    let random = || {
        PrivateKey::random_with(getrandom::getrandom)
            .map_err(|e| Error::sys("getrandom", io::Error::other(e.to_string())))
    };
    let private = [random()?, random()?];
    for (i, peer) in peers.iter().enumerate() {
        let other = 1 - i;
        let mut text = String::new();
        let _ = write!(
            text,
            "[Interface]\nPrivateKey = {}\nAddress = {}/24\nListenPort = {PORT}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}/32\n",
            *private[i].to_base64(),
            TUNNEL[i],
            private[other].public_key(),
            TUNNEL[other],
        );
        if i == 0 {
            let _ = writeln!(text, "Endpoint = {}:{PORT}", UNDERLAY[1]);
        }
        // Private keys inside: owner-only from the start.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&peer.config)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::sys(format!("writing {}", peer.config.display()), e))?;
    }
    Ok(())
}

fn topology(peers: &[Peer; 2]) -> String {
    let [a, b] = peers;
    let border = format!("+{}+", "-".repeat(32));
    let mut out = String::from("pipevpn demo: two network namespaces, one tunnel\n\n");
    let _ = writeln!(out, "  netns {:<35}netns {}", a.netns, b.netns);
    let _ = writeln!(out, "  {border}        {border}");
    let _ = writeln!(
        out,
        "  | {:<30} |        | {:>30} |",
        "pipevpn up (A)", "pipevpn up (B)"
    );
    let _ = writeln!(
        out,
        "  | tun  {:<12} {:<11}  | ====== | {:>12} {:>12}  tun |   tunnel, WireGuard",
        a.interface, TUNNEL[0], TUNNEL[1], b.interface
    );
    let _ = writeln!(
        out,
        "  | veth {:<12} {:<11}  | ------ | {:>12} {:>12} veth |   UDP port {PORT}",
        "", UNDERLAY[0], UNDERLAY[1], ""
    );
    let _ = writeln!(out, "  {border}        {border}");
    out.push_str("  A has B's endpoint and starts the handshake; B learns A's from it.\n\n");
    out
}

/// Pings B's tunnel address from A until it answers: the first packet makes A
/// start the handshake.
fn wait_for_first_reply(peers: &[Peer; 2], running: &mut [Proc], stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        check_stop(stop)?;
        for proc in running.iter_mut() {
            proc.expect_running()?;
        }
        let mut ping = in_netns(&peers[0].netns, Path::new("ping"));
        ping.args(["-c1", "-W1", "-q", TUNNEL[1]]);
        if quiet_status(ping)?.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Input(format!(
                "no answer from {} through the tunnel within 20 s; see {} and {}",
                TUNNEL[1],
                peers[0].log.display(),
                peers[1].log.display()
            )));
        }
    }
}

/// The last handshake's duration, from A's control socket.
fn handshake_duration(interface: &str, stop: &AtomicBool) -> Result<Option<u64>> {
    check_stop(stop)?;
    let stages = client::device(interface)?.stages;
    Ok(stages
        .filter(|s| s.handshakes > 0)
        .map(|s| s.last_handshake_ms))
}

struct Rtt {
    avg_ms: f64,
    max_ms: f64,
    lost: u32,
}

fn measure_rtt(netns: &str, addr: &str) -> Result<Rtt> {
    let mut ping = in_netns(netns, Path::new("ping"));
    ping.args(["-c10", "-i0.2", "-W2", "-q", addr]);
    let out = ping
        .output()
        .map_err(|e| Error::sys(format!("running ping in {netns}"), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping_summary(&text).ok_or_else(|| {
        Error::Input(format!(
            "no round-trip summary from ping {addr}: {}",
            text.trim()
        ))
    })
}

/// Reads iputils ping's summary: "10 packets transmitted, 10 received, ..."
/// and "rtt min/avg/max/mdev = 0.1/0.2/0.3/0.05 ms".
fn parse_ping_summary(text: &str) -> Option<Rtt> {
    let counts = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = counts
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let (sent, received) = (numbers.next()?, numbers.next()?);
    let rtt = text.lines().find(|l| l.starts_with("rtt "))?;
    let values: Vec<f64> = rtt
        .split('=')
        .nth(1)?
        .trim()
        .trim_end_matches("ms")
        .trim()
        .split('/')
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some(Rtt {
        avg_ms: *values.get(1)?,
        max_ms: *values.get(2)?,
        lost: sent.saturating_sub(received),
    })
}

/// TCP from A to B for `seconds`, with the stage table redrawn every second:
/// iperf3 when it is installed, else this binary's hidden sink and source
/// modes. Returns Mbit/s as counted by the receiver, and which tool ran.
fn bulk_transfer(
    exe: &Path,
    peers: &[Peer; 2],
    seconds: Duration,
    running: &mut [Proc],
    stop: &AtomicBool,
) -> Result<(f64, &'static str)> {
    let mut probe = Command::new("iperf3");
    probe.arg("--version");
    let iperf3 = quiet_status(probe).is_ok_and(|s| s.success());
    let (port, secs) = (SINK_PORT.to_string(), seconds.as_secs().to_string());
    let (mut sink_cmd, mut source_cmd, tool) = if iperf3 {
        let mut sink = in_netns(&peers[1].netns, Path::new("iperf3"));
        sink.args(["-s", "-1", "--forceflush", "-B", TUNNEL[1], "-p", &port]);
        let mut source = in_netns(&peers[0].netns, Path::new("iperf3"));
        source.args(["-c", TUNNEL[1], "-p", &port, "-f", "m", "-t", &secs]);
        (sink, source, "iperf3")
    } else {
        let target = format!("{}:{SINK_PORT}", TUNNEL[1]);
        let mut sink = in_netns(&peers[1].netns, exe);
        sink.args(["demo", "--tcp-sink", &target]);
        let mut source = in_netns(&peers[0].netns, exe);
        source.args(["demo", "--tcp-source", &target, "--seconds", &secs]);
        (sink, source, "pipevpn's own TCP sender")
    };
    sink_cmd.stderr(Stdio::null());
    source_cmd.stderr(Stdio::null());
    let mut sink = Proc::spawn_piped("TCP sink in B".into(), sink_cmd)?;
    let mut sink_out = BufReader::new(sink.stdout()?);
    read_line_with(&mut sink_out, "listening", "TCP sink in B")?;
    let mut source = Proc::spawn_piped("TCP source in A".into(), source_cmd)?;
    let mut source_out = source.stdout()?;

    show(format!(
        "\nlive counters, every second, while A sends to B ({tool}): \
         `pipevpn show --watch` of each peer\n"
    ))?;
    let redraw = io::stdout().is_terminal();
    let started = Instant::now();
    let mut drawn_lines = 0;
    let mut watches = [Watch::default(), Watch::default()];
    loop {
        for _ in 0..10 {
            check_stop(stop)?;
            sleep(Duration::from_millis(100));
        }
        for proc in running.iter_mut() {
            proc.expect_running()?;
        }
        let table = format!(
            "  after {} s\n{}",
            started.elapsed().as_secs(),
            frames(peers, &mut watches)?
        );
        if redraw && drawn_lines > 0 {
            // Cursor up over the previous table, so it updates in place.
            show(format!("\x1b[{drawn_lines}A"))?;
        }
        show(&table)?;
        drawn_lines = table.lines().count();
        if let Some(status) = source.exited()? {
            if !status.success() {
                return Err(Error::Input(format!("TCP source in A failed ({status})")));
            }
            break;
        }
    }
    let mbits = if iperf3 {
        let mut text = String::new();
        source_out
            .read_to_string(&mut text)
            .map_err(|e| Error::sys("reading iperf3's report", e))?;
        parse_iperf3_receiver(&text)
            .ok_or_else(|| Error::Input(format!("no receiver line in iperf3's report:\n{text}")))?
    } else {
        let report = read_line_with(&mut sink_out, "", "TCP sink in B")?;
        let (bytes, secs) = parse_sink_report(&report)
            .ok_or_else(|| Error::Input(format!("TCP sink in B reported '{report}'")))?;
        bytes as f64 * 8.0 / secs / 1e6
    };
    Ok((mbits, tool))
}

/// Mbit/s from iperf3's `-f m` summary line that ends in "receiver".
fn parse_iperf3_receiver(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_end().ends_with("receiver"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let unit = words.iter().position(|w| *w == "Mbits/sec")?;
    words.get(unit.checked_sub(1)?)?.parse().ok()
}

/// "BYTES SECONDS", the sink's last line.
fn parse_sink_report(line: &str) -> Option<(u64, f64)> {
    let mut parts = line.split_whitespace();
    let bytes = parts.next()?.parse().ok()?;
    let secs: f64 = parts.next()?.parse().ok()?;
    (secs > 0.0).then_some((bytes, secs))
}

/// Reads lines until one contains `needle`; an error if the output ends first.
fn read_line_with(out: &mut impl BufRead, needle: &str, what: &str) -> Result<String> {
    loop {
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .map_err(|e| Error::sys(format!("reading from {what}"), e))?;
        let line = line.trim();
        if n == 0 {
            return Err(Error::Input(format!("{what} stopped early")));
        }
        if !line.is_empty() && line.contains(needle) {
            return Ok(line.to_string());
        }
    }
}

/// Hidden mode: accept one connection, drain it, print "BYTES SECONDS".
fn tcp_sink(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| Error::sys(format!("bind {addr}"), e))?;
    show("listening\n")?;
    let (mut stream, _) = listener
        .accept()
        .map_err(|e| Error::sys(format!("accept on {addr}"), e))?;
    // A stalled tunnel must not hang the demo.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| Error::sys("setting a read timeout", e))?;
    let start = Instant::now();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::sys(format!("reading the TCP stream on {addr}"), e)),
        }
    }
    show(format!("{total} {:.6}\n", start.elapsed().as_secs_f64()))
}

/// Hidden mode: connect (retrying briefly) and write for `seconds`.
fn tcp_source(addr: SocketAddr, seconds: Duration) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(Error::sys(format!("connect to {addr}"), e))
            }
            Err(_) => sleep(Duration::from_millis(100)),
        }
    };
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| Error::sys("setting a write timeout", e))?;
    let buf = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    while start.elapsed() < seconds {
        stream
            .write_all(&buf)
            .map_err(|e| Error::sys(format!("writing to {addr}"), e))?;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| Error::sys(format!("closing the stream to {addr}"), e))
}

// ---- the peers' figures ---------------------------------------------------------

/// `pipevpn show` of both peers, from their control sockets, each with its
/// rates since the watch's last frame.
fn frames(peers: &[Peer; 2], watches: &mut [Watch; 2]) -> Result<String> {
    let mut out = String::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    for (peer, watch) in peers.iter().zip(watches) {
        let dev = client::device(&peer.interface)?;
        let rates = watch.next(&dev, Instant::now());
        let _ = writeln!(out, "\n  peer {}:", peer.label);
        for line in show::text(&dev, now, rates.as_ref()).lines() {
            match line.is_empty() {
                true => out.push('\n'),
                false => {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    Ok(out)
}

// ---- what the demo creates, and its undoing -------------------------------------

/// Writes part of the report to stdout; a closed stdout ends the demo (and its cleanup runs).
fn show(text: impl AsRef<str>) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_ref().as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::sys("writing the demo report to stdout", e))
}

fn check_stop(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(Error::Input(
            "demo interrupted by a signal; its processes and namespaces were removed".into(),
        ));
    }
    Ok(())
}

fn in_netns(netns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

fn quiet_status(mut cmd: Command) -> Result<ExitStatus> {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::sys(format!("running {:?}", cmd.get_program()), e))
}

/// Runs `ip ARGS`; its stderr becomes the error.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::sys("running ip (iproute2)", e))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(Error::sys(
        format!("ip {}", args.join(" ")),
        io::Error::other(msg),
    ))
}

/// The namespaces and the temp directory; dropping it deletes both, and
/// each namespace's directory under [`RUN_DIR`]: B has no Endpoint, so its
/// `up` remembers A's there, on purpose beyond its run (see
/// `pipevpn::last_endpoint`), and nothing else would remove it.
struct Lab {
    dir: PathBuf,
    /// Each namespace, and its directory under [`RUN_DIR`] once known.
    namespaces: Vec<(String, Option<PathBuf>)>,
}

impl Lab {
    fn create(dir: PathBuf) -> Result<Lab> {
        fs::create_dir(&dir).map_err(|e| Error::sys(format!("creating {}", dir.display()), e))?;
        Ok(Lab {
            dir,
            namespaces: Vec::new(),
        })
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name]).map_err(|e| match e {
            Error::Sys { op, source } => Error::Sys {
                op: format!("{op} (the demo needs root)"),
                source,
            },
            other => other,
        })?;
        self.namespaces.push((name.to_string(), None));
        // `ip netns` keeps the namespace's file here; its inode is the
        // namespace's, which names the namespace's directory under RUN_DIR.
        let file = format!("/run/netns/{name}");
        let inode = fs::metadata(&file)
            .map_err(|e| Error::sys(format!("stat {file}"), e))?
            .ino();
        let netns = Netns {
            inode,
            cookie: None,
        };
        if let Some(last) = self.namespaces.last_mut() {
            last.1 = Some(netns.dir(Path::new(RUN_DIR)));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Best effort: an error here has nowhere better to go than the leftovers.
        for (ns, files) in &self.namespaces {
            // Before the namespace goes: until then no other can have its inode.
            if let Some(files) = files {
                let _ = fs::remove_dir_all(files);
            }
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A child process we started; dropping it stops it (SIGTERM, then SIGKILL
/// after two seconds) and reaps it.
struct Proc {
    what: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Proc {
    fn spawn(what: String, mut cmd: Command, log: Option<&Path>) -> Result<Proc> {
        let (out, err) = match log {
            Some(path) => {
                let file = fs::File::create(path)
                    .map_err(|e| Error::sys(format!("creating {}", path.display()), e))?;
                let copy = file
                    .try_clone()
                    .map_err(|e| Error::sys(format!("duplicating {}", path.display()), e))?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::inherit()),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::sys(format!("starting {what}"), e))?;
        Ok(Proc {
            what,
            child,
            log: log.map(Path::to_path_buf),
        })
    }

    fn spawn_piped(what: String, mut cmd: Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::sys(format!("starting {what}"), e))?;
        Ok(Proc {
            what,
            child,
            log: None,
        })
    }

    fn stdout(&mut self) -> Result<ChildStdout> {
        self.child
            .stdout
            .take()
            .ok_or_else(|| Error::Input(format!("{}: stdout already taken", self.what)))
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::sys(format!("waiting for {}", self.what), e))
    }

    /// An error, with the end of its log, if the process has already exited.
    fn expect_running(&mut self) -> Result<()> {
        let Some(status) = self.exited()? else {
            return Ok(());
        };
        let tail = self
            .log
            .as_ref()
            .and_then(|path| fs::read_to_string(path).ok())
            .map(|text| text.lines().rev().take(3).collect::<Vec<_>>().join(" / "))
            .unwrap_or_default();
        Err(Error::Input(format!(
            "{} exited ({status}): {tail}",
            self.what
        )))
    }

    fn stop(&mut self) {
        // try_wait keeps the status once reaped, so a reaped PID is never signalled.
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let text = "--- 10.77.0.2 ping statistics ---\n\
                    10 packets transmitted, 9 received, 10% packet loss, time 1803ms\n\
                    rtt min/avg/max/mdev = 0.101/0.250/0.900/0.050 ms\n";
        let rtt = parse_ping_summary(text).unwrap();
        assert_eq!((rtt.avg_ms, rtt.max_ms, rtt.lost), (0.25, 0.9, 1));
        assert!(parse_ping_summary("10 packets transmitted, 0 received").is_none());
    }

    #[test]
    fn parses_iperf3_receiver_line() {
        let text = "[  5]   0.00-5.00   sec   400 MBytes   671 Mbits/sec    0             sender\n\
                    [  5]   0.00-5.01   sec   398 MBytes   667.5 Mbits/sec                  receiver\n";
        assert_eq!(parse_iperf3_receiver(text), Some(667.5));
        assert_eq!(parse_iperf3_receiver("iperf3: error"), None);
    }

    #[test]
    fn parses_sink_report() {
        assert_eq!(parse_sink_report("1000 2.0"), Some((1000, 2.0)));
        assert_eq!(parse_sink_report("1000 0"), None);
        assert_eq!(parse_sink_report("x"), None);
    }
}
