//! The tun offloads' per-packet work, without a kernel: cutting a 64 KiB TCP
//! super-segment into 1380-byte packets as the tun_reader does, and planning
//! and joining those packets again as the tun_writer does.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pipevpn::tun::offload::{split, Coalescer, Split, VnetHdr};
use std::time::Duration;

const MSS: usize = 1380;

/// An IPv4 TCP super-segment of `payload` bytes as the kernel hands it out
/// (NOP, NOP, timestamp options; the checksum field left to the cutter).
fn super_segment(payload: usize) -> (VnetHdr, Vec<u8>) {
    let len = 20 + 32 + payload;
    let mut p = vec![0u8; len];
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 96, 0, 1, 10, 96, 0, 2,
    ]);
    p[2..4].copy_from_slice(&(len.min(65535) as u16).to_be_bytes());
    let tcp = &mut p[20..52];
    tcp[..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    tcp[4..8].copy_from_slice(&7u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&9u32.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = 0x18; // ACK, PSH
    tcp[14..16].copy_from_slice(&[0x01, 0xf5]);
    tcp[20..24].copy_from_slice(&[1, 1, 8, 10]);
    for (i, b) in p[52..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let hdr = VnetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 52,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, p)
}

/// The packets of a super-segment, cut.
fn cut(hdr: &VnetHdr, packet: &mut [u8], out: &mut [Vec<u8>]) -> usize {
    let Ok(Split::Tcp(segments)) = split(hdr, packet) else {
        panic!("not a super-segment");
    };
    for (i, o) in out.iter_mut().enumerate().take(segments.count()) {
        let n = segments.write(packet, i, o).expect("fits");
        o.truncate(n);
    }
    segments.count()
}

fn offload(c: &mut Criterion) {
    let (hdr, packet) = super_segment(47 * MSS);
    let mut g = c.benchmark_group("tun_offload");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(47));
    let mut out = vec![vec![0u8; 2048]; 47];
    g.bench_function("cut_47_segments", |b| {
        b.iter(|| {
            out.iter_mut().for_each(|o| o.resize(2048, 0));
            cut(&hdr, &mut packet.clone(), &mut out)
        })
    });
    let mut segs = vec![vec![0u8; 2048]; 47];
    assert_eq!(cut(&hdr, &mut packet.clone(), &mut segs), 47);
    let mut coalescer = Coalescer::default();
    g.bench_function("plan_and_finish_47_segments", |b| {
        b.iter(|| {
            let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
            coalescer.plan(&refs);
            let g = coalescer.groups()[0];
            assert_eq!(g.count(), 47);
            let mut head = segs[g.head()].clone();
            g.finish(&mut head)
        })
    });
    g.finish();
}

criterion_group!(benches, offload);
criterion_main!(benches);
