//! What the tun_reader does with a packet read from the tun (a
//! virtio_net_hdr, then the packet), on arbitrary bytes: `split` and the
//! cutting of a super-segment may refuse it but not panic, and the packets
//! cut must be whole IP packets that carry the payload in order. Then what
//! the tun_writer would do with those packets: joined and cut again, each
//! must come back byte for byte.

use pipevpn::tun::offload::{split, Coalescer, Split, VnetHdr, VNET_HDR_LEN};

/// The largest packet a read from the tun gives (the device's buffer).
const MAX_PACKET: usize = 65535;

fn main() {
    let mut out = vec![0u8; MAX_PACKET + 1];
    afl::fuzz!(|data: &[u8]| {
        let Some((hdr, packet)) = data.split_first_chunk::<VNET_HDR_LEN>() else {
            return;
        };
        if packet.len() > MAX_PACKET {
            return;
        }
        let hdr = VnetHdr::parse(hdr);
        let mut packet = packet.to_vec();
        let before = packet.clone();
        let segments = match split(&hdr, &mut packet) {
            Ok(Split::Tcp(segments)) => segments,
            Ok(Split::One) => {
                assert_eq!(packet.len(), before.len());
                return;
            }
            Err(_) => return,
        };
        // Accepted as TCP: csum_start is where its TCP header is.
        let tcp = usize::from(hdr.csum_start);
        let headers = tcp + usize::from(packet[tcp + 12] >> 4) * 4;
        let count = segments.count();
        assert!(count >= 1 && count <= packet.len() - headers);
        let mut cut = Vec::with_capacity(count);
        let mut payload = Vec::with_capacity(packet.len());
        for i in 0..count {
            let n = segments
                .write(&packet, i, &mut out)
                .expect("a segment fits a buffer as long as the packet");
            let seg = &out[..n];
            assert!(n > headers && n <= packet.len());
            assert_eq!(seg[0], packet[0]);
            if packet[0] >> 4 == 4 {
                assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), n);
            } else {
                assert_eq!(usize::from(u16::from_be_bytes([seg[4], seg[5]])) + 40, n);
            }
            payload.extend_from_slice(&seg[headers..]);
            cut.push(seg.to_vec());
        }
        assert_eq!(payload, packet[headers..]);
        assert_eq!(segments.write(&packet, count, &mut out), None);
        // A slot too small is refused, not overrun.
        let short = cut[0].len() - 1;
        assert_eq!(segments.write(&packet, 0, &mut out[..short]), None);

        let refs: Vec<&[u8]> = cut.iter().map(Vec::as_slice).collect();
        let mut coalescer = Coalescer::default();
        coalescer.plan(&refs);
        let mut written = 0;
        for g in coalescer.groups() {
            let members: Vec<usize> = std::iter::once(g.head())
                .chain(coalescer.members(g))
                .collect();
            assert_eq!(members.len(), g.count());
            written += g.count();
            let mut joined = cut[g.head()].clone();
            let hdr = g.finish(&mut joined);
            if g.count() == 1 {
                assert_eq!(hdr, VnetHdr::default());
                assert_eq!(joined, cut[g.head()]);
                continue;
            }
            for &m in &members[1..] {
                joined.extend_from_slice(&cut[m][g.headers()..]);
            }
            let Ok(Split::Tcp(again)) = split(&hdr, &mut joined) else {
                panic!("a joined group is refused: {hdr:?}");
            };
            assert_eq!(again.count(), members.len());
            for (k, &m) in members.iter().enumerate() {
                let n = again.write(&joined, k, &mut out).expect("fits");
                assert_eq!(out[..n], cut[m], "segment {m} came back changed");
            }
        }
        assert_eq!(written, cut.len());
    });
}
