//! The built binary from the outside: key commands against `wg`, and
//! `up` refusing bad config files before touching any device. Every `up`
//! runs as root in a network namespace of its own and is killed after a
//! bound, so one that wrongly gets going changes nothing of the host and
//! fails instead of blocking.

mod common;

use common::in_netns;
use pipevpn::config::MAX_CONFIG_BYTES;
use pipevpn::rundir::{Netns, RUN_DIR};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pipevpn");

/// Runs a program with `stdin` fed in and returns its output.
fn run(program: &str, args: &[&str], stdin: &[u8]) -> std::io::Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(stdin)?;
    child.wait_with_output()
}

fn pipevpn(args: &[&str], stdin: &[u8]) -> Output {
    run(BIN, args, stdin).expect("cannot run pipevpn")
}

/// `wg` output; fails the test (never skips it) when wg is absent.
fn wg(args: &[&str], stdin: &[u8]) -> Output {
    match run("wg", args, stdin) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("wg (wireguard-tools) is required for this test: install wireguard-tools")
        }
        Err(e) => panic!("cannot run wg: {e}"),
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 character") as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn genkey() -> String {
    let out = pipevpn(&["genkey"], b"");
    assert!(out.status.success(), "genkey failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn genkey_prints_a_clamped_base64_key() {
    let first = genkey();
    for text in [first.clone(), genkey()] {
        let line = text.strip_suffix('\n').expect("ends with a newline");
        assert_eq!(line.len(), 44, "{line}");
        assert!(line.ends_with('='), "{line}");
        let key = decode_base64(line);
        assert_eq!(key.len(), 32, "{line}");
        assert_eq!(key[0] & 7, 0, "low bits not cleared: {line}");
        assert_eq!(key[31] & 0xc0, 0x40, "high bits not set: {line}");
    }
    assert_ne!(first, genkey(), "two keys in a row are equal");
}

#[test]
fn pubkey_matches_wg_pubkey() {
    let mut privates: Vec<String> = (0..4).map(|_| genkey()).collect();
    // wg genkey's keys too, and fixed keys that are not clamped: both tools
    // must clamp the same way when deriving the public key.
    privates.push(String::from_utf8(wg(&["genkey"], b"").stdout).unwrap());
    privates.push("//////////////////////////////////////////8=\n".into());
    privates.push("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=".into());
    for private in &privates {
        let ours = pipevpn(&["pubkey"], private.as_bytes());
        let theirs = wg(&["pubkey"], private.as_bytes());
        assert!(
            theirs.status.success(),
            "wg pubkey failed on {private}: {theirs:?}"
        );
        assert!(
            ours.status.success(),
            "pubkey failed on {private}: {ours:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "for private key {private}"
        );
    }
}

#[test]
fn pubkey_refuses_junk() {
    for junk in [&b"not a key\n"[..], b"AAAA\n", b"", b"\xff\xfe"] {
        let out = pipevpn(&["pubkey"], junk);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{junk:?}: {stderr}");
        assert!(stderr.starts_with("pipevpn: stdin: "), "{junk:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{junk:?}");
    }
}

#[test]
fn usage_errors_keep_clap_exit_code() {
    let out = pipevpn(&["no-such-command"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pipevpn-cli-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        // As a config holding a key should be, so `up` does not warn.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An interface name no other `up` of the test uses (at most 15
/// characters): configs of one test share a directory.
fn unique_interface() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pvc{}x{n}", std::process::id())
}

fn config(private: &str, public: &str, peer_extra: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {private}\nAddress = 10.77.0.1/24\n\n\
         [Peer]\nPublicKey = {public}\nAllowedIPs = 10.77.0.2/32\n{peer_extra}"
    )
}

/// Waits for `child` until `limit`, then kills it and fails the test; its
/// output.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd`, a `pipevpn up` expected to fail before it changes anything
/// (or a shell that execs one), in a fresh network namespace (see
/// [`in_netns`]), killed after 60 s; fails the test if it left an interface
/// or a file for that namespace behind. Its output.
fn run_up(mut cmd: Command) -> Output {
    in_netns(move || {
        let what = format!("{cmd:?}");
        // An earlier namespace with the same inode may have left files.
        let files = Netns::current().unwrap().dir(Path::new(RUN_DIR));
        let before = listing(&files);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let out = wait_bounded(child, Duration::from_secs(60), &what);
        let links = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("cannot run ip (iproute2)");
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(
            links.lines().all(|l| l.contains(": lo: ")),
            "{what} left an interface behind: {links}"
        );
        let after = listing(&files);
        assert_eq!(after, before, "{what} left files in {}", files.display());
        out
    })
}

/// The names in directory `dir`, sorted; none if it does not exist.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// `pipevpn up ARGS`, through [`run_up`].
fn up(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("up").args(args);
    run_up(cmd)
}

/// `up` with a bad file must exit 2, say `file:line: problem`, and leave
/// nothing behind.
fn up_fails(dir: &TempDir, text: &str, line: usize, problem: &str) {
    let name = unique_interface();
    let path = dir.write(&format!("{name}.conf"), text);
    let out = up(&[path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!("pipevpn: {}:{line}: ", path.display());
    assert!(
        stderr.starts_with(&expected),
        "'{stderr}' should start with '{expected}'"
    );
    assert!(
        stderr.contains(problem),
        "'{stderr}' should mention '{problem}'"
    );
}

#[test]
fn up_refuses_bad_configs_with_file_and_line() {
    let dir = TempDir::new();
    let private = genkey();
    let private = private.trim();
    let public = String::from_utf8(pipevpn(&["pubkey"], private.as_bytes()).stdout).unwrap();
    let public = public.trim();
    let other = String::from_utf8(pipevpn(&["pubkey"], genkey().as_bytes()).stdout).unwrap();
    let other = other.trim();
    let cases = [
        (config(private, "AAAA", ""), 6, "PublicKey 'AAAA'"),
        (
            config(private, public, "Endpoint = 192.0.2.1\n"),
            8,
            "missing port",
        ),
        (
            config(private, public, "DNS = 10.77.0.1\n"),
            8,
            "'DNS' belongs in the [Interface] section",
        ),
        (
            config(private, public, "[Peer]\n"),
            8,
            "[Peer] is missing the required key 'AllowedIPs'",
        ),
        (
            config(private, public, "").replace("[Peer]", "Colour = blue\n[Peer]"),
            5,
            "unknown key 'Colour' in [Interface]",
        ),
        (
            config(private, public, "").replace("[Peer]", "FwMark = 0xg\n[Peer]"),
            5,
            "FwMark '0xg'",
        ),
        (
            config(private, public, "").replace("[Peer]", "Table = main\n[Peer]"),
            5,
            "Table 'main'",
        ),
        (
            config(private, public, "").replace("[Peer]", "SaveConfig = 1\n[Peer]"),
            5,
            "SaveConfig '1' is neither true nor false",
        ),
        (
            config(private, public, "").replace("[Peer]", "DNS = 10.77.0.300\n[Peer]"),
            5,
            "DNS '10.77.0.300'",
        ),
        (
            config(
                private,
                public,
                &format!("\n[Peer]\nPublicKey = {other}\nAllowedIPs = 10.77.0.2/32\n"),
            ),
            11,
            "AllowedIPs 10.77.0.2/32 is also given to the [Peer] at line 5 (line 7)",
        ),
        (
            config(
                private,
                public,
                &format!("\n[Peer]\nPublicKey = {public}\nAllowedIPs = 10.77.0.3/32\n"),
            ),
            10,
            "is also the key of the [Peer] at line 5",
        ),
        (
            config(private, public, "Endpoint = 192.0.2.1:x\n"),
            8,
            "bad port 'x'",
        ),
        (
            config(private, public, "").replace("Address = 10.77.0.1/24\n", ""),
            1,
            "missing the required key 'Address'",
        ),
        (
            config(private, public, "").replace("[Peer]", "MTU = 100\n[Peer]"),
            5,
            "MTU 100",
        ),
        (config(private, public, "garbage\n"), 8, "garbage"),
    ];
    for (text, line, problem) in &cases {
        up_fails(&dir, text, *line, problem);
    }
}

#[test]
fn up_names_an_unreadable_path() {
    let dir = TempDir::new();
    let missing = dir.0.join("absent.conf");
    let out = up(&[missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: cannot read", missing.display())),
        "{stderr}"
    );
}

#[test]
fn up_refuses_a_bad_interface_name() {
    let dir = TempDir::new();
    let private = genkey();
    let public = String::from_utf8(pipevpn(&["pubkey"], private.as_bytes()).stdout).unwrap();
    let path = dir.write("ok.conf", &config(private.trim(), public.trim(), ""));
    let bad = "name-longer-than-15";
    let out = up(&["-i", bad, path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("bad interface name '{bad}'")),
        "{stderr}"
    );
}

/// `up` on `path` with a bad interface name, so that even a config that
/// loads goes no further than that check; under a 1 GiB address-space limit,
/// so a build that reads an endless file whole fails fast instead of filling
/// the machine's memory; through [`run_up`].
fn up_bounded(path: &std::path::Path) -> (Option<i32>, String) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -v 1048576 && exec \"$@\"", "sh", BIN, "up"])
        .args(["-i", "name-longer-than-15"])
        .arg(path);
    let out = run_up(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_too_large(path: &std::path::Path, code: Option<i32>, stderr: &str) {
    assert_eq!(code, Some(2), "{}: {stderr}", path.display());
    let expected = format!(
        "pipevpn: {}: larger than {MAX_CONFIG_BYTES} bytes ({} MiB)",
        path.display(),
        MAX_CONFIG_BYTES >> 20
    );
    assert!(
        stderr.contains(&expected),
        "'{stderr}' should contain '{expected}'"
    );
}

#[test]
fn up_refuses_a_config_over_the_bound() {
    let dir = TempDir::new();
    let private = genkey();
    let public = String::from_utf8(pipevpn(&["pubkey"], private.as_bytes()).stdout).unwrap();
    let good = config(private.trim(), public.trim(), "");
    // Padded with comments to exactly the bound, the file is still read and
    // parsed: the run gets as far as the bad interface name.
    let bound = MAX_CONFIG_BYTES as usize;
    let at_bound = format!("{good}#{}\n", "x".repeat(bound - good.len() - 2));
    assert_eq!(at_bound.len(), bound);
    let path = dir.write("at_bound.conf", &at_bound);
    let (code, stderr) = up_bounded(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad interface name"), "{stderr}");
    // One byte more is refused, naming the file.
    let path = dir.write("over.conf", &format!("{at_bound}#"));
    let (code, stderr) = up_bounded(&path);
    assert_too_large(&path, code, &stderr);
    // Endless inputs are refused the same way, not read whole.
    let zero = std::path::Path::new("/dev/zero");
    let (code, stderr) = up_bounded(zero);
    assert_too_large(zero, code, &stderr);
}

#[test]
fn up_refuses_an_endless_fifo() {
    let dir = TempDir::new();
    let fifo = dir.0.join("endless.conf");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("cannot run mkfifo");
    assert!(made.success(), "mkfifo {} failed", fifo.display());
    // Writes comment lines until pipevpn closes its end (EPIPE).
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .unwrap();
        let line = [b"#".as_slice(), &[b'x'; 4094], b"\n"].concat();
        let mut written = 0u64;
        while w.write_all(&line).is_ok() {
            written += line.len() as u64;
        }
        written
    });
    let (code, stderr) = up_bounded(&fifo);
    assert_too_large(&fifo, code, &stderr);
    let written = writer.join().unwrap();
    assert!(
        written > MAX_CONFIG_BYTES,
        "only {written} bytes went into the FIFO"
    );
}

/// Runs `up` on a good config with `mode`, stopped right after loading it by
/// a bad interface name; returns stderr.
fn up_with_mode(dir: &TempDir, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let private = genkey();
    let public = String::from_utf8(pipevpn(&["pubkey"], private.as_bytes()).stdout).unwrap();
    let path = dir.write(
        &format!("mode{mode:o}.conf"),
        &config(private.trim(), public.trim(), ""),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let out = up(&["-i", "name-longer-than-15", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad interface name"), "{stderr}");
    stderr
}

#[test]
fn up_warns_when_group_or_others_may_read_the_private_key() {
    let dir = TempDir::new();
    for mode in [0o644, 0o640, 0o604, 0o620] {
        let stderr = up_with_mode(&dir, mode);
        let expected = format!("is accessible by group or others (mode {mode:04o}): chmod 600 it");
        assert!(
            stderr.contains("holds a PrivateKey") && stderr.contains(&expected),
            "mode {mode:o}: '{stderr}' should warn with '{expected}'"
        );
    }
    for mode in [0o600, 0o400] {
        let stderr = up_with_mode(&dir, mode);
        assert!(
            !stderr.contains("accessible"),
            "mode {mode:o}: no warning expected, got '{stderr}'"
        );
    }
}

/// `pipevpn demo` with a 1 s transfer, started in a namespace of its own
/// (it makes its two namespaces itself), reports its figures and leaves
/// nothing behind: no namespace, no directory, and no file of its peers
/// (interfaces `pvd<pid>a`, `pvd<pid>b`) under the run directory.
#[test]
fn demo_reports_and_leaves_nothing_behind() {
    let (pid, out) = in_netns(|| {
        let child = Command::new(BIN)
            .args(["demo", "--seconds", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run pipevpn demo");
        let pid = child.id();
        (
            pid,
            wait_bounded(child, Duration::from_secs(120), "pipevpn demo"),
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pipevpn demo failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The live and final figures are `pipevpn show`'s, from the control
    // sockets: the peers' interfaces and every stage.
    for figure in [
        "first reply through the tunnel",
        "the handshake itself took",
        "round trip",
        "bulk TCP A -> B",
        "peer A:\n    interface: pvd",
        "peer B:\n    interface: pvd",
        "pipeline:",
        "  tun_reader ",
        "  handshaker ",
        "pkt/s",
    ] {
        assert!(stdout.contains(figure), "no '{figure}' in: {stdout}");
    }
    let mut left: Vec<PathBuf> = ["a", "b"]
        .map(|side| PathBuf::from(format!("/run/netns/pvdemo{pid}{side}")))
        .into_iter()
        .chain([std::env::temp_dir().join(format!("pipevpn-demo-{pid}"))])
        .filter(|p| p.exists())
        .collect();
    for dir in std::fs::read_dir(RUN_DIR).into_iter().flatten() {
        let dir = dir.unwrap().path();
        left.extend(
            listing(&dir)
                .into_iter()
                .filter(|f| {
                    ["a", "b"]
                        .iter()
                        .any(|s| f.starts_with(&format!("pvd{pid}{s}.")))
                })
                .map(|f| dir.join(f)),
        );
    }
    assert!(left.is_empty(), "pipevpn demo left behind: {left:?}");
}

/// `up` on a config others may read, stopped by a bad interface name (a
/// warning, then the error), with `JOURNAL_STREAM` set by the shell that
/// execs it to the device and inode of `journal` (stat(1) `%d:%i`, as
/// systemd writes them); returns stderr.
fn up_with_journal_stream(dir: &TempDir, journal: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let private = genkey();
    let public = String::from_utf8(pipevpn(&["pubkey"], private.as_bytes()).stdout).unwrap();
    let path = dir.write(
        &format!("{}.conf", unique_interface()),
        &config(private.trim(), public.trim(), ""),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "JOURNAL_STREAM=$(stat -L -c %d:%i \"$1\") || exit 99; export JOURNAL_STREAM; \
         exec \"$0\" up -i name-longer-than-15 \"$2\"",
        BIN,
        journal,
        path.to_str().unwrap(),
    ]);
    let out = run_up(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn logs_carry_syslog_priorities_when_stderr_is_the_journal() {
    let dir = TempDir::new();
    // Our stderr itself (the pipe the test reads): journald's stream.
    let stderr = up_with_journal_stream(&dir, "/proc/self/fd/2");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("<4>")
            && lines[0].contains("holds a PrivateKey")
            && lines[1].starts_with("<3>bad interface name"),
        "expected a <4> warning and a <3> error, got '{stderr}'"
    );
    // Inherited by a process whose stderr is elsewhere: as before.
    let stderr = up_with_journal_stream(&dir, "/dev/null");
    assert!(
        stderr.starts_with("pipevpn[WARN] ") && stderr.contains("\npipevpn: bad interface name"),
        "expected the plain style, got '{stderr}'"
    );
    assert!(!stderr.contains('<'), "{stderr}");
}

/// `pipevpn show` of an interface with no control socket, as root: exit 2
/// and both places it looked named; run as nobody, the root rule first.
#[test]
fn show_names_a_missing_interface_and_the_need_for_root() {
    let name = format!("pvnone{}", std::process::id());
    let out = pipevpn(&["show", &name], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("no interface {name}: no control socket "))
            && stderr.contains(&format!("/var/run/wireguard/{name}.sock")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let out = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "show",
        ],
        b"",
    )
    .expect("setpriv (util-linux) is required for this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("only root may reach"), "{stderr}");
}
