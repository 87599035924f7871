//! The config parser on arbitrary text (bytes made UTF-8 lossily): an error
//! or a config, never a panic.

use pipevpn::config::Config;
use std::path::Path;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        let _ = Config::parse(Path::new("fuzz.conf"), &text);
    });
}
