//! The shipped unit, `packaging/systemd/pipevpn@.service`, as systemd reads it:
//! `systemd-analyze verify` finds nothing to say, and `systemd-analyze
//! security --offline=true` gives an exposure of at most 2.5. Both read an
//! instance of the template (`pipevpn@wg0.service`), as systemd would run
//! it; verify's copy starts this build's binary, since it checks that the
//! command exists.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../packaging/systemd/pipevpn@.service");
const MAX_EXPOSURE: f64 = 2.5;

/// A directory of its own for this test's copies, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pipevpn-{name}.{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` as the unit `pipevpn@wg0.service` in it.
    fn instance(&self, text: &str) -> PathBuf {
        let path = self.0.join("pipevpn@wg0.service");
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn analyze(args: &[&str], unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (Debian: apt-get install systemd)")
}

#[test]
fn systemd_analyze_verify_finds_nothing_to_say() {
    let dir = TempDir::new("unit-verify");
    let binary = env!("CARGO_BIN_EXE_pipevpn");
    assert!(UNIT.contains("ExecStart=/usr/bin/pipevpn up /etc/pipevpn/%i.conf\n"));
    let unit = dir.instance(&UNIT.replace(
        "ExecStart=/usr/bin/pipevpn ",
        &format!("ExecStart={binary} "),
    ));
    let out = analyze(&["verify", "--man=no"], &unit);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// The figure of `systemd-analyze security`'s last line, "→ Overall
/// exposure level for NAME: 2.3 OK 🙂".
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    line.rsplit_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_exposure_is_at_most_2_5() {
    let dir = TempDir::new("unit-security");
    let out = analyze(
        &["security", "--offline=true", "--no-pager"],
        &dir.instance(UNIT),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figure = exposure(&report).unwrap_or_else(|| panic!("no exposure in:\n{report}"));
    eprintln!("pipevpn@wg0.service: exposure {figure}");
    assert!(
        figure <= MAX_EXPOSURE,
        "exposure {figure} > {MAX_EXPOSURE}:\n{report}"
    );
}

#[test]
fn the_exposure_is_read_from_the_report() {
    let line = "→ Overall exposure level for pipevpn@wg0.service: 2.3 OK 🙂";
    assert_eq!(exposure(&format!("x\n{line}\n")), Some(2.3));
    assert_eq!(exposure("nothing here"), None);
}
