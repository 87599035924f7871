//! The per-packet AllowedIPs check: `PrefixTable` (what `Peer::allows`
//! uses) against the scan of the list it replaced, for 1, 100 and 10 000
//! IPv4 prefixes of /16 to /32. Each iteration looks up 1024 addresses, half
//! inside a listed prefix and half anywhere (mostly misses, a whole scan).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipevpn::cidr::{Cidr, PrefixTable};
use std::net::{IpAddr, Ipv4Addr};

/// xorshift64: the same prefixes and addresses on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as u32
    }
}

fn host_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)
}

fn prefixes(rng: &mut Rng, n: usize) -> Vec<Cidr> {
    (0..n)
        .map(|_| {
            let prefix = 16 + (rng.next() % 17) as u8;
            let addr = Ipv4Addr::from(rng.next() & !host_mask(prefix));
            Cidr::new(addr.into(), prefix).unwrap()
        })
        .collect()
}

fn addresses(rng: &mut Rng, list: &[Cidr]) -> Vec<IpAddr> {
    (0..1024)
        .map(|i| {
            let random = rng.next();
            let c = list[rng.next() as usize % list.len()];
            let IpAddr::V4(net) = c.addr else {
                unreachable!("IPv4 prefixes only")
            };
            let inside = u32::from(net) | (random & host_mask(c.prefix));
            IpAddr::V4(if i % 2 == 0 { inside } else { random }.into())
        })
        .collect()
}

fn allowed_ips(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowed_ips_1024_lookups");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for n in [1, 100, 10_000] {
        let list = prefixes(&mut rng, n);
        let addrs = addresses(&mut rng, &list);
        let table: PrefixTable<()> = list.iter().map(|&c| (c, ())).collect();
        let scan = |ip: IpAddr| list.iter().any(|c| c.contains(ip));
        let hits = addrs.iter().filter(|&&ip| scan(ip)).count();
        assert_eq!(
            hits,
            addrs
                .iter()
                .filter(|&&ip| table.lookup(ip).is_some())
                .count(),
            "the table and the scan disagree"
        );
        g.throughput(Throughput::Elements(addrs.len() as u64));
        g.bench_with_input(BenchmarkId::new("scan", n), &addrs, |b, addrs| {
            b.iter(|| addrs.iter().filter(|&&ip| scan(black_box(ip))).count())
        });
        g.bench_with_input(BenchmarkId::new("prefix_table", n), &addrs, |b, addrs| {
            b.iter(|| {
                addrs
                    .iter()
                    .filter(|&&ip| table.lookup(black_box(ip)).is_some())
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, allowed_ips);
criterion_main!(benches);
