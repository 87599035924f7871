//! What `pipevpn show` prints, from a device as its control socket answers
//! a get ([`crate::protocol::uapi::Snapshot`]): the lines `wg show` prints,
//! then the pipeline's stages (from the answer's `pipevpn_` lines, see
//! [`crate::pipeline::stats::Snapshot::from_extras`]); or the same as one
//! JSON object; or the Prometheus text format of one or several devices
//! ([`prometheus`]). Pure: the caller reads the socket and the clock. With
//! the snapshot of a second before, each stage also gets its rates
//! (`--watch`). Never the private or preshared key.

use crate::pipeline::stats::{self, DropReason, Stage};
use crate::protocol::uapi::{PeerSnapshot, Snapshot};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One interface as read at one moment.
pub struct Device {
    pub name: String,
    pub answer: Snapshot,
    /// The pipeline's counters; None from an implementation without them
    /// (wireguard-go).
    pub stages: Option<stats::Snapshot>,
}

impl Device {
    /// Reads the stages out of the answer's extra lines.
    pub fn new(name: &str, answer: Snapshot) -> Result<Device, String> {
        let stages = match answer.extra.is_empty() {
            true => None,
            false => Some(stats::Snapshot::from_extras(&answer.extra)?),
        };
        Ok(Device {
            name: name.to_string(),
            answer,
            stages,
        })
    }
}

/// Per-second rates: the same device's counters `secs` seconds before.
pub struct Before {
    pub stages: stats::Snapshot,
    pub secs: f64,
}

/// One interface's frames over time (`--watch`, the demo): each frame's
/// rates are from the one before.
#[derive(Default)]
pub struct Watch {
    last: Option<(Instant, stats::Snapshot)>,
}

impl Watch {
    /// The rates for `dev`, read at `at`, since the last call (None the
    /// first time, or without stages); remembers this reading.
    pub fn next(&mut self, dev: &Device, at: Instant) -> Option<Before> {
        let last = std::mem::replace(&mut self.last, dev.stages.clone().map(|s| (at, s)));
        let (was, stages) = last?;
        dev.stages.as_ref()?;
        Some(Before {
            stages,
            secs: at.duration_since(was).as_secs_f64(),
        })
    }
}

/// `wg show`'s text for `dev`, then the stage table. `now` is the time
/// since the Unix epoch, for "latest handshake: ... ago".
pub fn text(dev: &Device, now: Duration, before: Option<&Before>) -> String {
    let a = &dev.answer;
    let mut out = String::new();
    let _ = writeln!(out, "interface: {}", dev.name);
    if let Some(key) = &a.private_key {
        let _ = writeln!(out, "  public key: {}", key.public_key());
        let _ = writeln!(out, "  private key: (hidden)");
    }
    if a.listen_port != 0 {
        let _ = writeln!(out, "  listening port: {}", a.listen_port);
    }
    if a.fwmark != 0 {
        let _ = writeln!(out, "  fwmark: 0x{:x}", a.fwmark);
    }
    for p in &a.peers {
        let _ = writeln!(out, "\npeer: {}", p.public_key);
        if p.preshared_key.as_bytes() != &[0; 32] {
            let _ = writeln!(out, "  preshared key: (hidden)");
        }
        if let Some(e) = p.endpoint {
            let _ = writeln!(out, "  endpoint: {e}");
        }
        let ips: Vec<String> = p.allowed_ips.iter().map(|c| c.to_string()).collect();
        let ips = if ips.is_empty() {
            "(none)".to_string()
        } else {
            ips.join(", ")
        };
        let _ = writeln!(out, "  allowed ips: {ips}");
        if let Some(h) = p.last_handshake {
            let _ = writeln!(out, "  latest handshake: {}", ago(now.saturating_sub(h)));
        }
        if p.rx_bytes > 0 || p.tx_bytes > 0 {
            let (rx, tx) = (human_bytes(p.rx_bytes), human_bytes(p.tx_bytes));
            let _ = writeln!(out, "  transfer: {rx} received, {tx} sent");
        }
        if p.persistent_keepalive_interval > 0 {
            let every = plural(u64::from(p.persistent_keepalive_interval), "second");
            let _ = writeln!(out, "  persistent keepalive: every {every}");
        }
    }
    if let Some(s) = &dev.stages {
        out.push_str(&stage_table(s, before));
    }
    out
}

fn stage_table(s: &stats::Snapshot, before: Option<&Before>) -> String {
    let mut out = String::from("\npipeline:\n");
    let _ = write!(
        out,
        "  {:<13}{:>11}{:>12}{:>8}{:>6}{:>9}{:>11}",
        "stage", "packets", "bytes", "drops", "queue", "blocked", "waited"
    );
    if before.is_some() {
        let _ = write!(out, "{:>10}{:>9}", "pkt/s", "Mbit/s");
    }
    out.push('\n');
    for stage in Stage::ALL {
        let c = s.stage(stage);
        let _ = write!(
            out,
            "  {:<13}{:>11}{:>12}{:>8}{:>6}{:>9}{:>11}",
            stage.name(),
            c.packets,
            human_bytes(c.bytes),
            c.total_drops(),
            c.queue,
            c.blocked,
            format!("{} ms", c.blocked_ns / 1_000_000)
        );
        if let Some(b) = before {
            let (pps, mbps) = rates(b.stages.stage(stage), c, b.secs);
            let _ = write!(out, "{pps:>10.0}{mbps:>9.1}");
        }
        out.push('\n');
    }
    for stage in Stage::ALL {
        for &r in DropReason::ALL {
            let n = s.stage(stage).dropped(r);
            if n > 0 {
                let _ = writeln!(out, "  {} dropped {n}: {}", stage.name(), r.name());
            }
        }
    }
    let _ = writeln!(
        out,
        "  handshakes: {} completed, the last took {} ms",
        s.handshakes, s.last_handshake_ms
    );
    out
}

/// Packets and Mbit/s from `was` to `now` over `secs`; 0 for a counter
/// that went down (another process under the same name).
fn rates(was: &stats::StageCounts, now: &stats::StageCounts, secs: f64) -> (f64, f64) {
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    let packets = now.packets.saturating_sub(was.packets) as f64 / secs;
    let bits = now.bytes.saturating_sub(was.bytes) as f64 * 8.0 / secs;
    (packets, bits / 1e6)
}

/// The JSON object of `dev` (field names in the README).
pub fn json(dev: &Device, before: Option<&Before>) -> Value {
    let a = &dev.answer;
    let peers: Vec<Value> = a
        .peers
        .iter()
        .map(|p| {
            json!({
                "public_key": p.public_key.to_string(),
                "preshared_key": p.preshared_key.as_bytes() != &[0; 32],
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "allowed_ips": p.allowed_ips.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "latest_handshake": p.last_handshake.map(|d| d.as_secs()),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "persistent_keepalive": p.persistent_keepalive_interval,
            })
        })
        .collect();
    let stages = dev.stages.as_ref().map(|s| {
        let mut stages = Map::new();
        for stage in Stage::ALL {
            let c = s.stage(stage);
            let by_reason: Map<String, Value> = DropReason::ALL
                .iter()
                .filter(|&&r| c.dropped(r) > 0)
                .map(|&r| (r.name().to_string(), c.dropped(r).into()))
                .collect();
            let mut o = json!({
                "packets": c.packets,
                "bytes": c.bytes,
                "drops": c.total_drops(),
                "drops_by_reason": by_reason,
                "queue": c.queue,
                "blocked": c.blocked,
                "blocked_ns": c.blocked_ns,
            });
            if let Some(b) = before {
                let (pps, mbps) = rates(b.stages.stage(stage), c, b.secs);
                o["packets_per_second"] = json!(pps);
                o["mbit_per_second"] = json!(mbps);
            }
            stages.insert(stage.name().to_string(), o);
        }
        json!({
            "stages": stages,
            "handshakes": { "completed": s.handshakes, "last_ms": s.last_handshake_ms },
        })
    });
    let mut o = json!({
        "interface": dev.name,
        "public_key": a.private_key.as_ref().map(|k| k.public_key().to_string()),
        "listening_port": a.listen_port,
        "fwmark": a.fwmark,
        "peers": peers,
    });
    if let Some(Value::Object(pipeline)) = stages {
        o.as_object_mut().expect("an object").extend(pipeline);
    }
    o
}

/// The metric families of [`prometheus`], in the order it writes them:
/// name, type, help (names and units in the README).
const FAMILIES: [(&str, &str, &str); 11] = [
    (
        "pipevpn_peer_received_bytes_total",
        "counter",
        "Bytes received from the peer (as wg show's transfer).",
    ),
    (
        "pipevpn_peer_sent_bytes_total",
        "counter",
        "Bytes sent to the peer (as wg show's transfer).",
    ),
    (
        "pipevpn_peer_latest_handshake_timestamp_seconds",
        "gauge",
        "Unix time of the peer's latest completed handshake, 0 before the first.",
    ),
    (
        "pipevpn_stage_packets_total",
        "counter",
        "Packets the pipeline stage passed on.",
    ),
    (
        "pipevpn_stage_bytes_total",
        "counter",
        "Bytes the pipeline stage passed on.",
    ),
    (
        "pipevpn_stage_dropped_packets_total",
        "counter",
        "Packets the pipeline stage dropped, by reason.",
    ),
    (
        "pipevpn_stage_queued_batches",
        "gauge",
        "Batches waiting in the channel feeding the stage.",
    ),
    (
        "pipevpn_stage_blocked_sends_total",
        "counter",
        "Sends that found the channel to the next stage full.",
    ),
    (
        "pipevpn_stage_blocked_seconds_total",
        "counter",
        "Time the stage waited for room in the channel to the next stage.",
    ),
    (
        "pipevpn_handshakes_completed_total",
        "counter",
        "Handshakes the interface completed.",
    ),
    (
        "pipevpn_last_handshake_duration_seconds",
        "gauge",
        "How long the interface's last completed handshake took.",
    ),
];

/// One sample: its labels (name, value) and its value as written.
type Sample = (Vec<(&'static str, String)>, String);

/// `devices` in the Prometheus text exposition format 0.0.4, as
/// node-exporter's textfile collector reads it: each family's `# HELP` and
/// `# TYPE` once, then the samples of every device, without timestamps.
/// Labels `interface`, then `public_key` (a peer) or `stage` (and `reason`
/// for drops). Every stage has a sample for every drop reason, 0 included,
/// so a reason's first drop shows as an increase. A family without samples
/// (the stages of wireguard-go, which sends none) is left out.
pub fn prometheus(devices: &[Device]) -> String {
    let peers: Vec<(&Device, &PeerSnapshot)> = devices
        .iter()
        .flat_map(|d| d.answer.peers.iter().map(move |p| (d, p)))
        .collect();
    let peer = |value: fn(&PeerSnapshot) -> String| -> Vec<Sample> {
        peers
            .iter()
            .map(|(d, p)| {
                let labels = vec![
                    ("interface", d.name.clone()),
                    ("public_key", p.public_key.to_string()),
                ];
                (labels, value(p))
            })
            .collect()
    };
    let with_stages: Vec<(&Device, &stats::Snapshot)> = devices
        .iter()
        .filter_map(|d| d.stages.as_ref().map(|s| (d, s)))
        .collect();
    let stage = |value: fn(&stats::StageCounts) -> String| -> Vec<Sample> {
        with_stages
            .iter()
            .flat_map(|(d, s)| {
                Stage::ALL.iter().map(move |&st| {
                    let labels = vec![
                        ("interface", d.name.clone()),
                        ("stage", st.name().to_string()),
                    ];
                    (labels, value(s.stage(st)))
                })
            })
            .collect()
    };
    let device = |value: fn(&stats::Snapshot) -> String| -> Vec<Sample> {
        with_stages
            .iter()
            .map(|(d, s)| (vec![("interface", d.name.clone())], value(s)))
            .collect()
    };
    let drops: Vec<Sample> = with_stages
        .iter()
        .flat_map(|(d, s)| {
            Stage::ALL.iter().flat_map(move |&st| {
                DropReason::ALL.iter().map(move |&r| {
                    let labels = vec![
                        ("interface", d.name.clone()),
                        ("stage", st.name().to_string()),
                        ("reason", r.name().to_string()),
                    ];
                    (labels, s.stage(st).dropped(r).to_string())
                })
            })
        })
        .collect();
    let samples: [Vec<Sample>; FAMILIES.len()] = [
        peer(|p| p.rx_bytes.to_string()),
        peer(|p| p.tx_bytes.to_string()),
        peer(|p| p.last_handshake.map_or(0, |t| t.as_secs()).to_string()),
        stage(|c| c.packets.to_string()),
        stage(|c| c.bytes.to_string()),
        drops,
        stage(|c| c.queue.to_string()),
        stage(|c| c.blocked.to_string()),
        stage(|c| decimal(c.blocked_ns, 1_000_000_000)),
        device(|s| s.handshakes.to_string()),
        device(|s| decimal(s.last_handshake_ms, 1000)),
    ];
    let mut out = String::new();
    for ((name, kind, help), samples) in FAMILIES.iter().zip(samples) {
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v, true)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
    out
}

/// `n / per` written exactly in decimal (nanoseconds as seconds: no
/// rounding through a float).
fn decimal(n: u64, per: u64) -> String {
    let width = per.ilog10() as usize;
    format!("{}.{:0width$}", n / per, n % per)
}

/// A help text or (`label`) a label value as the text format requires:
/// backslash and newline escaped, and in a label value the double quote.
fn escape(text: &str, label: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// As `wg show` writes a time: "1 minute, 3 seconds ago", "Now".
pub fn ago(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "Now".to_string();
    }
    let mut parts = Vec::new();
    for (unit, size) in [
        ("year", 365 * 24 * 3600),
        ("day", 24 * 3600),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ] {
        if left >= size {
            parts.push(plural(left / size, unit));
            left %= size;
        }
    }
    format!("{} ago", parts.join(", "))
}

fn plural(n: u64, unit: &str) -> String {
    match n {
        1 => format!("1 {unit}"),
        _ => format!("{n} {unit}s"),
    }
}

/// As `wg show` writes a byte count: "512 B", "1.21 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stats::Stats;
    use crate::protocol::keys::{PresharedKey, PrivateKey, PublicKey};
    use crate::protocol::uapi::{read_get, write_get, PeerSnapshot};

    const NOW: u64 = 1_764_600_000;

    fn device(with_stats: bool) -> Device {
        let stats = Stats::default();
        stats.stage(Stage::Encryptor).pass(1000, 1_268_000);
        stats.stage(Stage::Decryptor).drop(DropReason::Replay);
        stats.handshake_completed(12);
        let private = PrivateKey::from_bytes([1; 32]);
        let answer = Snapshot {
            private_key: Some(private),
            listen_port: 51820,
            fwmark: 0x1234,
            extra: match with_stats {
                true => stats.snapshot().extras(),
                false => Vec::new(),
            },
            peers: vec![PeerSnapshot {
                public_key: PrivateKey::from_bytes([2; 32]).public_key(),
                preshared_key: PresharedKey::from_bytes([3; 32]),
                endpoint: Some("10.0.0.2:51820".parse().unwrap()),
                last_handshake: Some(Duration::from_secs(NOW - 63)),
                tx_bytes: 3_565_158,
                rx_bytes: 1_268_777,
                persistent_keepalive_interval: 25,
                allowed_ips: vec!["10.9.0.2/32".parse().unwrap(), "fd00::/64".parse().unwrap()],
                extra: vec![],
            }],
        };
        // Through the codec, as the command gets it.
        Device::new("pv0", read_get(&write_get(&answer)).unwrap()).unwrap()
    }

    fn secrets() -> Vec<String> {
        let mut out = Vec::new();
        for k in [[1u8; 32], [3; 32]] {
            out.push(hex::encode(k));
            out.push(PresharedKey::from_bytes(k).to_base64().to_string());
        }
        out
    }

    #[test]
    fn text_is_what_wg_show_prints_then_the_stages() {
        let dev = device(true);
        let t = text(&dev, Duration::from_secs(NOW), None);
        let public: PublicKey = PrivateKey::from_bytes([1; 32]).public_key();
        let want_head = format!(
            "interface: pv0\n  public key: {public}\n  private key: (hidden)\n  \
             listening port: 51820\n  fwmark: 0x1234\n\npeer: {}\n  preshared key: (hidden)\n  \
             endpoint: 10.0.0.2:51820\n  allowed ips: 10.9.0.2/32, fd00::/64\n  \
             latest handshake: 1 minute, 3 seconds ago\n  \
             transfer: 1.21 MiB received, 3.40 MiB sent\n  \
             persistent keepalive: every 25 seconds\n\npipeline:\n",
            PrivateKey::from_bytes([2; 32]).public_key()
        );
        assert!(t.starts_with(&want_head), "{t}");
        assert!(
            t.contains(
                "\n  encryptor           1000    1.21 MiB       0     0        0       0 ms\n"
            ),
            "{t}"
        );
        assert!(t.contains("\n  decryptor dropped 1: replay\n"), "{t}");
        assert!(
            t.ends_with("  handshakes: 1 completed, the last took 12 ms\n"),
            "{t}"
        );
        assert_eq!(t.matches(" ms\n").count(), Stage::ALL.len() + 1);
        for secret in secrets() {
            assert!(!t.contains(&secret), "{t}");
        }
        // wireguard-go's answer: no pipeline part.
        let plain = text(&device(false), Duration::from_secs(NOW), None);
        assert!(
            !plain.contains("pipeline:") && plain.contains("peer: "),
            "{plain}"
        );
    }

    #[test]
    fn rates_are_per_second_from_the_snapshot_before() {
        let now = device(true);
        let mut was = now.stages.clone().unwrap();
        was.stages[Stage::Encryptor as usize].packets = 0;
        was.stages[Stage::Encryptor as usize].bytes = 1_268_000 - 250_000;
        let before = Before {
            stages: was,
            secs: 2.0,
        };
        let t = text(&now, Duration::from_secs(NOW), Some(&before));
        assert!(t.contains("pkt/s   Mbit/s\n"), "{t}");
        // 1000 packets and 250 000 bytes in 2 s: 500/s, 1.0 Mbit/s.
        assert!(t.contains(" 0 ms       500      1.0\n"), "{t}");
        let j = json(&now, Some(&before));
        assert_eq!(j["stages"]["encryptor"]["packets_per_second"], 500.0);
        assert_eq!(j["stages"]["encryptor"]["mbit_per_second"], 1.0);
    }

    #[test]
    fn a_watch_gives_rates_from_the_second_reading_on() {
        let dev = device(true);
        let mut watch = Watch::default();
        let start = Instant::now();
        assert!(watch.next(&dev, start).is_none());
        let b = watch.next(&dev, start + Duration::from_secs(2)).unwrap();
        assert_eq!(b.secs, 2.0);
        assert_eq!(Some(&b.stages), dev.stages.as_ref());
        // A device without stages has no rates, and starts afresh after.
        assert!(watch.next(&device(false), start).is_none());
        assert!(watch.next(&dev, start).is_none());
    }

    #[test]
    fn json_has_the_documented_fields_and_no_secret() {
        let j = json(&device(true), None);
        assert_eq!(j["interface"], "pv0");
        assert_eq!(j["listening_port"], 51820);
        assert_eq!(j["fwmark"], 0x1234);
        let p = &j["peers"][0];
        assert_eq!(p["endpoint"], "10.0.0.2:51820");
        assert_eq!(p["allowed_ips"], json!(["10.9.0.2/32", "fd00::/64"]));
        assert_eq!(p["latest_handshake"], NOW - 63);
        assert_eq!(
            (p["rx_bytes"].clone(), p["tx_bytes"].clone()),
            (json!(1_268_777), json!(3_565_158))
        );
        assert_eq!(p["persistent_keepalive"], 25);
        assert_eq!(p["preshared_key"], true);
        let enc = &j["stages"]["encryptor"];
        assert_eq!(
            (enc["packets"].clone(), enc["bytes"].clone()),
            (json!(1000), json!(1_268_000))
        );
        assert_eq!(
            j["stages"]["decryptor"]["drops_by_reason"],
            json!({"replay": 1})
        );
        assert_eq!(j["stages"]["decryptor"]["drops"], 1);
        assert_eq!(j["handshakes"], json!({"completed": 1, "last_ms": 12}));
        assert_eq!(j["stages"].as_object().unwrap().len(), Stage::ALL.len());
        let text = j.to_string();
        for secret in secrets() {
            assert!(!text.contains(&secret), "{text}");
        }
        assert!(json(&device(false), None).get("stages").is_none());
    }

    /// The families of an exposition, checked as the text format 0.0.4 and
    /// Prometheus' naming rules require: each opens with its `# HELP` and
    /// `# TYPE`, appears once, and holds only its own samples; names are
    /// `pipevpn_` ones, counters end in `_total` and gauges do not. Returns
    /// (name, type, sample lines).
    fn families(text: &str) -> Vec<(String, String, Vec<String>)> {
        assert!(text.ends_with('\n'), "{text}");
        let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                let ty = lines.next().unwrap_or_default();
                let kind = ty
                    .strip_prefix(&format!("# TYPE {name} "))
                    .unwrap_or_else(|| panic!("{name}: HELP not followed by its TYPE: {ty}"));
                assert!(
                    !out.iter().any(|(n, _, _)| *n == name),
                    "{name} twice: {text}"
                );
                let valid = name.starts_with("pipevpn_")
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                assert!(valid, "{name}");
                match kind {
                    "counter" => assert!(name.ends_with("_total"), "{name}"),
                    "gauge" => assert!(!name.ends_with("_total"), "{name}"),
                    _ => panic!("{name}: type {kind}"),
                }
                out.push((name, kind.to_string(), Vec::new()));
                continue;
            }
            let (name, _, samples) = out.last_mut().unwrap_or_else(|| panic!("{line}"));
            let open = format!("{name}{{");
            assert!(line.starts_with(&open), "{line} in family {name}");
            assert!(line.contains("} "), "{line}");
            samples.push(line.to_string());
        }
        out
    }

    fn names(families: &[(String, String, Vec<String>)]) -> Vec<&str> {
        families.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    #[test]
    fn prometheus_has_every_family_and_no_secret() {
        let mut dev = device(true);
        let enc = &mut dev.stages.as_mut().unwrap().stages[Stage::Encryptor as usize];
        (enc.blocked, enc.blocked_ns, enc.queue) = (4, 1_500_000_001, 2);
        let text = prometheus(&[dev]);
        let fams = families(&text);
        let want: Vec<&str> = FAMILIES.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names(&fams), want);
        for ((_, kind, samples), (name, want_kind, _)) in fams.iter().zip(FAMILIES) {
            assert_eq!(kind, want_kind);
            let n = match name {
                _ if name.starts_with("pipevpn_peer_") => 1,
                "pipevpn_stage_dropped_packets_total" => Stage::ALL.len() * DropReason::ALL.len(),
                _ if name.starts_with("pipevpn_stage_") => Stage::ALL.len(),
                _ => 1,
            };
            assert_eq!(samples.len(), n, "{name}");
        }
        let peer = PrivateKey::from_bytes([2; 32]).public_key();
        let p = format!("{{interface=\"pv0\",public_key=\"{peer}\"}}");
        for line in [
            format!("pipevpn_peer_received_bytes_total{p} 1268777"),
            format!("pipevpn_peer_sent_bytes_total{p} 3565158"),
            format!("pipevpn_peer_latest_handshake_timestamp_seconds{p} {}", NOW - 63),
            "pipevpn_stage_packets_total{interface=\"pv0\",stage=\"encryptor\"} 1000".into(),
            "pipevpn_stage_bytes_total{interface=\"pv0\",stage=\"encryptor\"} 1268000".into(),
            "pipevpn_stage_bytes_total{interface=\"pv0\",stage=\"tun_reader\"} 0".into(),
            "pipevpn_stage_dropped_packets_total{interface=\"pv0\",stage=\"decryptor\",reason=\"replay\"} 1".into(),
            "pipevpn_stage_dropped_packets_total{interface=\"pv0\",stage=\"decryptor\",reason=\"too_short\"} 0".into(),
            "pipevpn_stage_queued_batches{interface=\"pv0\",stage=\"encryptor\"} 2".into(),
            "pipevpn_stage_blocked_sends_total{interface=\"pv0\",stage=\"encryptor\"} 4".into(),
            "pipevpn_stage_blocked_seconds_total{interface=\"pv0\",stage=\"encryptor\"} 1.500000001".into(),
            "pipevpn_stage_blocked_seconds_total{interface=\"pv0\",stage=\"decryptor\"} 0.000000000".into(),
            "pipevpn_handshakes_completed_total{interface=\"pv0\"} 1".into(),
            "pipevpn_last_handshake_duration_seconds{interface=\"pv0\"} 0.012".into(),
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "no {line} in {text}");
        }
        assert!(text.contains(
            "# HELP pipevpn_stage_blocked_seconds_total Time the stage waited for room in the channel to the next stage.\n\
             # TYPE pipevpn_stage_blocked_seconds_total counter\n"
        ));
        for secret in secrets() {
            assert!(!text.contains(&secret), "{text}");
        }
    }

    /// wireguard-go's answer, and a peer without a handshake yet: the peer
    /// families alone, the handshake time 0.
    #[test]
    fn prometheus_of_a_device_without_pipevpn_lines() {
        let mut dev = device(false);
        dev.answer.peers[0].last_handshake = None;
        let text = prometheus(&[dev]);
        let fams = families(&text);
        assert_eq!(
            names(&fams),
            [
                "pipevpn_peer_received_bytes_total",
                "pipevpn_peer_sent_bytes_total",
                "pipevpn_peer_latest_handshake_timestamp_seconds"
            ]
        );
        assert!(fams[2].2[0].ends_with("\"} 0"), "{text}");
        assert_eq!(prometheus(&[]), "");
    }

    /// Several interfaces: each family once, holding every interface's
    /// samples (the format forbids a family split in two).
    #[test]
    fn prometheus_of_several_interfaces() {
        let mut second = device(true);
        second.name = "pv1".into();
        let mut go = device(false);
        go.name = "wg0".into();
        let fams = families(&prometheus(&[device(true), second, go]));
        assert_eq!(fams.len(), FAMILIES.len());
        for (name, _, samples) in &fams {
            let of = |iface: &str| {
                let label = format!("{{interface=\"{iface}\"");
                samples.iter().filter(|s| s.contains(&label)).count()
            };
            assert_eq!(of("pv0"), of("pv1"), "{name}: {samples:?}");
            assert!(of("pv0") > 0, "{name}: {samples:?}");
            let go = usize::from(name.starts_with("pipevpn_peer_"));
            assert_eq!(of("wg0"), go, "{name}: {samples:?}");
            assert_eq!(samples.len(), 2 * of("pv0") + go, "{name}: {samples:?}");
        }
    }

    #[test]
    fn prometheus_escapes_label_values_and_help() {
        let mut dev = device(false);
        dev.name = "a\"b\\c\nd".into();
        let text = prometheus(&[dev]);
        assert!(
            text.contains("\npipevpn_peer_sent_bytes_total{interface=\"a\\\"b\\\\c\\nd\","),
            "{text}"
        );
        assert_eq!(families(&text).len(), 3);
        assert_eq!(escape("a\\b\nc \"q\"", false), "a\\\\b\\nc \"q\"");
        assert_eq!(escape("a\\b\nc \"q\"", true), "a\\\\b\\nc \\\"q\\\"");
        assert_eq!(decimal(12, 1000), "0.012");
        assert_eq!(decimal(u64::MAX, 1_000_000_000), "18446744073.709551615");
    }

    #[test]
    fn times_and_sizes_as_wg_writes_them() {
        assert_eq!(ago(Duration::from_secs(0)), "Now");
        assert_eq!(ago(Duration::from_secs(1)), "1 second ago");
        assert_eq!(ago(Duration::from_secs(3600 + 2)), "1 hour, 2 seconds ago");
        assert_eq!(
            ago(Duration::from_secs(366 * 86400 + 2 * 86400 + 60)),
            "1 year, 3 days, 1 minute ago"
        );
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.00 KiB");
        assert_eq!(human_bytes(3_565_158), "3.40 MiB");
        assert_eq!(human_bytes(5 << 40), "5.00 TiB");
    }
}
