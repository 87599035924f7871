//! The route-record parser on arbitrary text (bytes made UTF-8 lossily): an
//! error or a record, never a panic; and a record it accepts reads back the
//! same from its own rendering, so what the sweep acts on is what was read.

use pipevpn::routes::RouteRecord;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        if let Ok(record) = RouteRecord::parse(&text) {
            let again = RouteRecord::parse(&record.render());
            assert_eq!(again.as_ref(), Ok(&record), "{text:?}");
        }
    });
}
