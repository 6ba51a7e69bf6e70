//! Criterion benches of the per-event path's pieces: `cargo bench` (the whole path, with a
//! million customers, is `churnwatch bench`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use churnwatch::config::Config;
use churnwatch::event::{decode, decode_without_fast_path, DecodeLimits};
use churnwatch::metrics::Metrics;
use churnwatch::partition::PartitionState;
use churnwatch::scoring::{Scorer, SignalScorer};
use churnwatch::sim::{SimConfig, SimEvent, Simulator};
use churnwatch::state::record::encode_customer;
use churnwatch::time::DAY_MS;
use churnwatch::timers::Timers;

const START: i64 = 1_700_000_000_000 / DAY_MS * DAY_MS;

/// `days` of the simulator's stream for `customers` customers.
fn stream(customers: usize, days: i64) -> Vec<SimEvent> {
    let mut sim = Simulator::new(SimConfig {
        customers,
        seed: 5,
        start_ms: START,
        days: days as f64,
        existing_share: 1.0,
        ..SimConfig::default()
    });
    let mut out = Vec::new();
    sim.advance(START + days * DAY_MS, &mut out);
    out
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_event_bytes: 16_384,
        max_ts_ms: None,
    }
}

fn bench_decode(c: &mut Criterion) {
    let events = stream(200, 3);
    let payloads: Vec<&[u8]> = events
        .iter()
        .map(|e| e.payload.as_slice())
        .take(1000)
        .collect();
    let bytes: usize = payloads.iter().map(|p| p.len()).sum();
    let limits = limits();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(payloads.len() as u64));
    g.bench_function("1000 simulated events", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(decode(black_box(p), &limits).ok());
            }
        })
    });
    // What the fast path saves: the same payloads through serde_json alone.
    g.bench_function("1000 simulated events, serde_json only", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(decode_without_fast_path(black_box(p), &limits).ok());
            }
        })
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.finish();
}

/// A partition after `days` of the stream, and the next day's payloads.
fn warmed(customers: usize, days: i64) -> (PartitionState, Vec<Vec<u8>>, Metrics) {
    let events = stream(customers, days + 1);
    let cfg = Arc::new(Config::default());
    let m = Metrics::new();
    let mut p = PartitionState::new(cfg, &m);
    let limits = limits();
    let cut = START + days * DAY_MS;
    let mut alerts = Vec::new();
    let mut next = Vec::new();
    for e in events {
        if e.arrival_ms < cut {
            if let Ok(ev) = decode(&e.payload, &limits) {
                p.on_event(&ev, None, &mut alerts);
            }
        } else {
            next.push(e.payload);
        }
    }
    (p, next, m)
}

fn bench_on_event(c: &mut Criterion) {
    let (state, next, _m) = warmed(2000, 21);
    let limits = limits();
    let decoded: Vec<_> = next
        .iter()
        .filter_map(|p| decode(p, &limits).ok())
        .collect();
    let mut g = c.benchmark_group("partition");
    g.throughput(Throughput::Elements(decoded.len() as u64));
    g.sample_size(20);
    // State is cloned per iteration (untimed) so that each one sees the same day anew.
    let cfg = Arc::new(Config::default());
    let snapshot: Vec<(String, churnwatch::state::StoredCustomer)> = state
        .customers()
        .map(|(id, c)| {
            (
                id.to_string(),
                churnwatch::state::StoredCustomer {
                    applied_offset: -1,
                    state: c.clone(),
                },
            )
        })
        .collect();
    let progress = state.progress(-1);
    let m = Metrics::new();
    g.bench_function("on_event, one day of 2000 warmed customers", |b| {
        b.iter_batched(
            || {
                let mut p = PartitionState::new(cfg.clone(), &m);
                p.restore(snapshot.clone(), Some(progress));
                p
            },
            |mut p| {
                let mut alerts = Vec::new();
                for ev in &decoded {
                    p.on_event(ev, None, &mut alerts);
                }
                alerts.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_assess(c: &mut Criterion) {
    let (state, _, _m) = warmed(300, 35);
    let cfg = Config::default();
    let customers: Vec<_> = state.customers().map(|(_, c)| c.clone()).collect();
    let as_of = START + 35 * DAY_MS;
    let mut g = c.benchmark_group("scoring");
    g.throughput(Throughput::Elements(customers.len() as u64));
    g.bench_function("assess 300 customers with 35 days of history", |b| {
        b.iter(|| {
            for c in &customers {
                black_box(SignalScorer.assess(black_box(c), as_of, &cfg));
            }
        })
    });
    g.finish();
}

fn bench_changelog(c: &mut Criterion) {
    let (state, _, _m) = warmed(300, 35);
    let customers: Vec<_> = state.customers().map(|(_, c)| c.clone()).collect();
    let mut g = c.benchmark_group("changelog");
    g.throughput(Throughput::Elements(customers.len() as u64));
    g.bench_function("encode 300 customers with 35 days of history", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            let mut bytes = 0;
            for c in &customers {
                encode_customer(&mut buf, 7, black_box(c));
                bytes += buf.len();
            }
            bytes
        })
    });
    g.bench_function("clone 300 customers with 35 days of history", |b| {
        b.iter_batched(
            Vec::new,
            |mut out: Vec<(i64, churnwatch::customer::CustomerState)>| {
                for c in &customers {
                    out.push((7, black_box(c).clone()));
                }
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("schedule and pop 100k", |b| {
        b.iter(|| {
            let mut t = Timers::new();
            for i in 0..100_000u32 {
                t.schedule(START + (i as i64 * 7919) % DAY_MS, i);
            }
            let mut n = 0;
            while t.pop_due(START + DAY_MS).is_some() {
                n += 1;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_on_event,
    bench_assess,
    bench_changelog,
    bench_timers
);
criterion_main!(benches);
