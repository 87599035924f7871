//! The UAPI request reader on arbitrary bytes, as a client of the control
//! socket may send them: outcomes, never a panic, and the same outcomes
//! whether the bytes come in one piece or cut in two where the first byte
//! says (a socket may deliver a request in any pieces).

use pipevpn::protocol::uapi::RequestReader;

/// Every outcome of feeding `pieces` in turn, up to one that ends the
/// connection.
fn outcomes(pieces: &[&[u8]]) -> Vec<String> {
    let mut reader = RequestReader::new();
    let mut out = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            let (used, done) = reader.feed(rest);
            assert!(
                used > 0 && used <= rest.len(),
                "fed {} bytes, used {used}",
                rest.len()
            );
            rest = &rest[used..];
            if let Some(done) = done {
                let ends = matches!(&done, Err(e) if e.ends_connection);
                out.push(format!("{done:?}"));
                if ends {
                    return out;
                }
            }
        }
    }
    out
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&cut, input)) = data.split_first() else {
            return;
        };
        let cut = usize::from(cut).min(input.len());
        let (first, second) = input.split_at(cut);
        assert_eq!(outcomes(&[input]), outcomes(&[first, second]));
    });
}
