//! The udp_receiver's cutting of one received buffer into a batch's slots
//! (`datagram_at`), for any length, GRO segment size and truncation the
//! kernel could report: the datagrams must tile the buffer in order, none
//! longer than the segment size, and the walk must end.
//!
//! Input: length (u32, little-endian, at most the 64 KiB buffer), segment
//! size (u16), truncated (bit 0 of a byte), slot size (u16).

use pipevpn::pipeline::device::Unfit;
use pipevpn::udp::datagram_at;
use pipevpn::sys::udp::RecvMeta;

const GRO_BUFFER: usize = 1 << 16;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some(&[l0, l1, l2, l3, s0, s1, t, z0, z1]) = data.first_chunk::<9>() else {
            return;
        };
        let meta = RecvMeta {
            len: u32::from_le_bytes([l0, l1, l2, l3]) as usize % (GRO_BUFFER + 1),
            segment: usize::from(u16::from_le_bytes([s0, s1])),
            truncated: t & 1 != 0,
            ..RecvMeta::default()
        };
        let slot_size = usize::from(u16::from_le_bytes([z0, z1]));
        let mut unfit = Unfit::default();
        let (mut offset, mut taken, mut steps) = (0, 0, 0);
        loop {
            let (start, len, next) = datagram_at(&meta, offset);
            steps += 1;
            assert!(steps <= meta.len + 1, "the walk does not end: {meta:?}");
            assert_eq!(start, offset, "{meta:?}");
            assert!(start + len <= meta.len, "{meta:?}");
            if meta.segment > 0 {
                assert!(len <= meta.segment, "{meta:?}");
            }
            let kept = unfit.check(len, meta.truncated || len > slot_size);
            assert!(kept == 0 || kept == len);
            taken += len;
            match next {
                Some(o) => {
                    assert!(o == start + len && len > 0 && o < meta.len, "{meta:?}");
                    offset = o;
                }
                None => break,
            }
        }
        if !meta.truncated {
            assert_eq!(taken, meta.len, "{meta:?}");
        }
        assert!(unfit.empty <= 1, "{meta:?}");
    });
}
