//! The per-packet AllowedIPs lookup: `PrefixTable` as built now (compressed
//! from 64 prefixes on) against its radix tries alone, which answered every
//! lookup before, with 1, 100 and 10 000
//! peers in two layouts, every address looked up inside some prefix:
//!
//! - `hub`: N clients with a /32 each in one /16, and one peer with 0.0.0.0/0;
//! - `random`: N IPv4 prefixes of /16 to /32 anywhere.
//!
//! Then a batch of 64 packets with the per-batch memo (one stream, and 64
//! addresses spread over the peers), the cost of a peer change with 10 000
//! prefixes, and the memory of the table (printed once).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipevpn::cidr::{Cidr, PrefixTable};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Counts the bytes allocated, for the memory figures.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

fn cidr(addr: u32, prefix: u8) -> Cidr {
    Cidr::new(Ipv4Addr::from(addr).into(), prefix).unwrap()
}

fn hub(n: usize) -> Vec<Cidr> {
    let clients = (0..n as u32).map(|i| cidr(0x0ac8_0002 + i, 32));
    clients.chain([cidr(0, 0)]).collect()
}

fn random(rng: &mut Rng, n: usize) -> Vec<Cidr> {
    (0..n)
        .map(|_| {
            let prefix = 16 + (rng.next() % 17) as u8;
            cidr(rng.next() & !host_mask(prefix), prefix)
        })
        .collect()
}

/// `count` addresses, each inside one of the prefixes longer than /0.
fn hits(rng: &mut Rng, list: &[Cidr], count: usize) -> Vec<IpAddr> {
    let inside: Vec<_> = list.iter().filter(|c| c.prefix > 0).collect();
    (0..count)
        .map(|_| {
            let c = inside[rng.next() as usize % inside.len()];
            let IpAddr::V4(net) = c.addr else {
                unreachable!("IPv4 prefixes only")
            };
            IpAddr::V4((u32::from(net) | (rng.next() & host_mask(c.prefix))).into())
        })
        .collect()
}

/// The table as it answered before: from its radix tries, never compressed.
fn radix_tries(list: &[Cidr]) -> PrefixTable<usize> {
    let mut table = PrefixTable::new();
    for (i, &c) in list.iter().enumerate() {
        table.insert(c, i);
    }
    assert!(!table.is_compressed());
    table
}

fn layouts() -> Vec<(&'static str, usize, Vec<Cidr>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = Vec::new();
    for n in [1, 100, 10_000] {
        all.push(("hub", n, hub(n)));
        all.push(("random", n, random(&mut rng, n)));
    }
    all
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowed_ips_1024_lookups");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (layout, n, list) in layouts() {
        let addrs = hits(&mut rng, &list, 1024);
        let old = radix_tries(&list);
        let table: PrefixTable<usize> = list.iter().copied().zip(0..).collect();
        for &ip in &addrs {
            assert_eq!(old.lookup(ip), table.lookup(ip), "{ip}");
        }
        g.throughput(Throughput::Elements(addrs.len() as u64));
        let id = |name| BenchmarkId::new(format!("{layout}/{name}"), n);
        for (name, table) in [("radix_tries", &old), ("prefix_table", &table)] {
            g.bench_with_input(id(name), &addrs, |b, addrs| {
                b.iter(|| {
                    let found = addrs.iter().filter_map(|&ip| table.lookup(black_box(ip)));
                    found.count()
                })
            });
        }
    }
    g.finish();
}

/// The per-batch memo: 64 packets of one stream (one address), and 64
/// packets to 64 addresses spread over the peers.
fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowed_ips_batch_of_64");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (layout, n, list) in layouts().into_iter().filter(|l| l.0 == "hub") {
        let table: PrefixTable<usize> = list.iter().copied().zip(0..).collect();
        let spread = hits(&mut rng, &list, 64);
        let stream = vec![spread[0]; 64];
        g.throughput(Throughput::Elements(64));
        for (traffic, addrs) in [("stream", &stream), ("spread", &spread)] {
            let id = |name| BenchmarkId::new(format!("{layout}/{traffic}/{name}"), n);
            g.bench_with_input(id("lookup"), addrs, |b, addrs| {
                b.iter(|| {
                    let found = addrs.iter().filter_map(|&ip| table.lookup(black_box(ip)));
                    found.count()
                })
            });
            g.bench_with_input(id("memo"), addrs, |b, addrs| {
                b.iter(|| {
                    let mut memo = table.memo();
                    let found = addrs.iter().filter_map(|&ip| memo.lookup(black_box(ip)));
                    found.count()
                })
            });
        }
    }
    g.finish();
}

/// A peer change with 10 000 prefixes: removing a prefix (a rebuild of the
/// trie, see `PrefixTable::remove`) and inserting it back, then
/// `compress`; and `compress` alone.
fn changes(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowed_ips_change_10000");
    for (layout, _, list) in layouts().into_iter().filter(|l| l.1 == 10_000) {
        let mut table: PrefixTable<usize> = list.iter().copied().zip(0..).collect();
        let before = ALLOCATED.load(Relaxed);
        let mut radix: PrefixTable<usize> = list.iter().copied().zip(0..).collect();
        let with_copy = ALLOCATED.load(Relaxed) - before;
        radix.insert(list[0], 0);
        let without = ALLOCATED.load(Relaxed) - before;
        eprintln!(
            "{layout}: memory with {} prefixes: {} KiB, of which {} KiB the compressed copy",
            list.len(),
            with_copy / 1024,
            (with_copy - without) / 1024
        );
        g.bench_function(format!("{layout}/compress"), |b| {
            b.iter(|| table.compress())
        });
        let one = list[list.len() / 2];
        g.bench_function(format!("{layout}/remove_insert_compress"), |b| {
            b.iter(|| {
                table.remove(one);
                table.insert(one, 0);
                table.compress();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, batches, changes);
criterion_main!(benches);
