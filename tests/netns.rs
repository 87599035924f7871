//! The network-namespace scenarios in `integration/`, one test per script, each
//! against the `pipevpn` and `pipevpnd` binaries cargo just built. They need
//! root, iproute2, ping, iperf3, tcpdump, python3, wg, wg-quick, nft and
//! wireguard-go: a missing prerequisite fails the test with the script's own
//! message, it is never skipped.
//! Measurements the scripts print as `INFO` lines are shown beside the `PASS`
//! lines (`--nocapture`).

use std::process::Command;
use std::sync::Mutex;

/// The scenarios time handshakes and measure throughput on a small machine, and
/// cargo runs tests in parallel: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_scenario(name: &str) {
    run_scenario_with(name, &[]);
}

/// `name` with more variables for the script, e.g. `PIPEVPN_UP_ARGS`.
fn run_scenario_with(name: &str, vars: &[(&str, &str)]) {
    // A failed scenario poisons the lock; the next one must still run.
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let script = format!("{}/integration/{name}.sh", env!("CARGO_MANIFEST_DIR"));
    // stderr (the command trace) into stdout, so the output reads in order.
    let output = Command::new("bash")
        .args(["-c", "exec bash \"$0\" 2>&1", &script])
        .env("PIPEVPN", env!("CARGO_BIN_EXE_pipevpn"))
        .env("PIPEVPND", env!("CARGO_BIN_EXE_pipevpnd"))
        .env_remove("IMPL_A")
        .env_remove("IMPL_B")
        .env_remove("PV_UNDER_TIMEOUT")
        .env_remove("PIPEVPN_UP_ARGS")
        .envs(vars.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot start bash for {script}: {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{text}",
        output.status
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("INFO "))
    {
        println!("{line}");
    }
}

#[test]
fn tunnel() {
    run_scenario("tunnel");
}

/// The same with two seal and two open workers on both sides, on the real
/// kernel.
#[test]
fn tunnel_with_crypto_workers() {
    run_scenario_with("tunnel", &[("PIPEVPN_UP_ARGS", "--crypto-workers 2")]);
}

#[test]
fn full_tunnel() {
    run_scenario("full_tunnel");
}

#[test]
fn signals() {
    run_scenario("signals");
}

#[test]
fn interop() {
    run_scenario("interop");
}

#[test]
fn ipv6() {
    run_scenario("ipv6");
}

#[test]
fn hostile() {
    run_scenario("hostile");
}

#[test]
fn resilience() {
    run_scenario("resilience");
}

#[test]
fn interop_more() {
    run_scenario("interop_more");
}

#[test]
fn dos() {
    run_scenario("dos");
}

#[test]
fn wgquick() {
    run_scenario("wgquick");
}

#[test]
fn hub() {
    run_scenario("hub");
}

#[test]
fn uapi() {
    run_scenario("uapi");
}

#[test]
fn wgquick_daemon() {
    run_scenario("wgquick_daemon");
}

#[test]
fn reload() {
    run_scenario("reload");
}

#[test]
fn confine() {
    run_scenario("confine");
}

#[test]
fn systemd() {
    run_scenario("systemd");
}
