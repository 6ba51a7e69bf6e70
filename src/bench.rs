//! `churnwatch bench`: the whole per-event path, in process, on a simulated stream.
//!
//! What is timed is what a partition does with a message once Kafka has handed it over:
//! decode the JSON, validate, look up or create the customer, update their windows, advance
//! stream time and fire due timers, score, decide alerts, update the gauges
//! ([`PartitionState::on_event`]). Kafka and the producer are not in it (see
//! `scripts/bench-e2e.sh` for the end-to-end figures).
//!
//! The stream is the simulator's mix ([`crate::sim`]) with every customer present from the
//! start. It runs in three phases, generated day by day (generation is never timed):
//! 1. warm-up (`--warmup-days`, default 14: every customer has the baseline history a rate
//!    test needs, so the scoring takes its full path), fed to a single-thread partition and to
//!    one partition per thread;
//! 2. timed slices (`--slices` of `--slice-days`): each slice is processed by the
//!    single-thread partition, then by the per-thread partitions in parallel (events split by
//!    customer, as Kafka's partitioner would); the figures are the medians over the slices;
//! 3. memory: the growth of the resident set while the single-thread partition processed
//!    events, divided by the customers it tracks, and the process's peak resident set. Before
//!    and after each batch, free heap memory is handed back to the system (`malloc_trim`, with
//!    glibc), so that the growth is what the state holds, not less where it reused memory
//!    that the stream's generation had freed (which made the figure depend on the generator);
//!    and how the tracked customers' rings are kept at the end ([`RingMix`]), the part of the
//!    state that depends on the customers' mix;
//! 4. restore: the single-thread partition's customers encoded as their changelog records,
//!    then decoded and installed into a fresh partition, timed (the broker's part of a real
//!    restore, fetching the records, is in `scripts/bench-e2e.sh`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHasher;
use serde::Serialize;

use crate::alert::Alert;
use crate::config::Config;
use crate::event::{decode, DecodeLimits};
use crate::metrics::Metrics;
use crate::partition::PartitionState;
use crate::sim::{SimConfig, SimEvent, Simulator};
use crate::state::record::{self, encode_customer, Record};
use crate::time::DAY_MS;
use crate::window::RingStorage;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Distinct customers in the stream.
    pub customers: usize,
    pub warmup_days: f64,
    /// Timed slices (the reported figures are their medians).
    pub slices: usize,
    pub slice_days: f64,
    /// Threads of the all-cores run (one partition each).
    pub threads: usize,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            customers: 1_000_000,
            warmup_days: 14.0,
            slices: 5,
            slice_days: 1.0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 1,
        }
    }
}

/// Throughput of one way of running, over the timed slices.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub threads: usize,
    /// Median over the slices.
    pub events_per_sec: f64,
    /// Wall-clock nanoseconds per event (median slice); per event per thread for several
    /// threads.
    pub ns_per_event: f64,
    /// Every slice's events per second, in order.
    pub slices: Vec<f64>,
}

/// Everything `churnwatch bench` measures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub customers_simulated: usize,
    /// Customers the single-thread partition tracks at the end.
    pub customers_tracked: usize,
    pub warmup_events: u64,
    pub timed_events: u64,
    pub mean_event_bytes: f64,
    pub single_thread: Throughput,
    pub all_cores: Throughput,
    /// `all_cores.events_per_sec / single_thread.events_per_sec`.
    pub speedup: f64,
    /// `speedup / threads` (1.0: linear scaling).
    pub scaling_efficiency: f64,
    /// Resident-set growth while the single-thread partition processed events, over the
    /// customers it tracks.
    pub state_bytes_per_customer: f64,
    pub state_rss_growth_bytes: u64,
    /// What the single-thread partition's customers' rings are at the end.
    pub rings: RingMix,
    /// What the single-thread partition's customers keep apart at the end.
    pub parts: PartsMix,
    pub peak_rss_bytes: u64,
    /// Mean size of a customer's changelog record (its value).
    pub changelog_record_bytes: f64,
    /// Decoding every tracked customer's changelog record and installing it in a fresh
    /// partition.
    pub restore_secs: f64,
    pub restore_customers_per_sec: f64,
    /// Alerts decided by the single-thread partition over the whole stream.
    pub alerts: u64,
    pub generate_secs: f64,
    pub total_secs: f64,
}

/// How the tracked customers' rings are kept ([`RingStorage`]), and what their allocations
/// take: the part of the state per customer that depends on the customers' mix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RingMix {
    /// Purchase marks only (inline, no allocation, for the default windows).
    pub marks: usize,
    /// Visits and marks, half a byte a bucket.
    pub nibbles: usize,
    /// Visits and marks, one byte a bucket.
    pub visits: usize,
    /// Counters in 2 bytes a bucket.
    pub slim: usize,
    /// Counters in 3 bytes a bucket.
    pub counters: usize,
    /// The bytes the rings' allocations take (their slots in [`crate::ring_pool`]), over the
    /// customers tracked.
    pub heap_bytes_per_customer: f64,
}

/// What the tracked customers keep apart from their state
/// ([`crate::customer::CustomerState::parts_storage`]): the engagement levels of customers who
/// get scores, the alert part of those who have been at risk, in one pooled slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PartsMix {
    /// Customers with engagement levels.
    pub engagement: usize,
    /// Customers with an alert part.
    pub alert: usize,
    /// The bytes the slots take, over the customers tracked.
    pub heap_bytes_per_customer: f64,
}

/// How the partition's customers keep their rings and the parts kept apart, in one pass.
fn mixes(p: &PartitionState) -> (RingMix, PartsMix) {
    let (mut rings, mut parts) = (RingMix::default(), PartsMix::default());
    let (mut ring_bytes, mut parts_bytes) = (0, 0);
    for (_, c) in p.customers() {
        let (storage, b) = c.windows.storage();
        ring_bytes += b;
        *match storage {
            RingStorage::Marks => &mut rings.marks,
            RingStorage::Nibbles => &mut rings.nibbles,
            RingStorage::Visits => &mut rings.visits,
            RingStorage::Slim => &mut rings.slim,
            RingStorage::Counters => &mut rings.counters,
        } += 1;
        let (alert, engagement, b) = c.parts_storage();
        parts.alert += usize::from(alert);
        parts.engagement += usize::from(engagement);
        parts_bytes += b;
    }
    let n = p.len().max(1) as f64;
    rings.heap_bytes_per_customer = ring_bytes as f64 / n;
    parts.heap_bytes_per_customer = parts_bytes as f64 / n;
    (rings, parts)
}

/// One day's (or slice's) messages, packed: payload bytes back to back.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Per thread of the all-cores run: indexes of its events.
    by_thread: Vec<Vec<u32>>,
}

impl Batch {
    fn fill(&mut self, events: &[SimEvent], threads: usize) {
        self.bytes.clear();
        self.ends.clear();
        self.by_thread.resize_with(threads, Vec::new);
        for t in &mut self.by_thread {
            t.clear();
        }
        for (i, e) in events.iter().enumerate() {
            self.bytes.extend_from_slice(&e.payload);
            self.ends.push(self.bytes.len());
            let mut h = FxHasher::default();
            e.customer_id.hash(&mut h);
            self.by_thread[(h.finish() % threads as u64) as usize].push(i as u32);
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// Events decoded at a time, then processed with their customers prefetched
/// ([`PartitionState::prefetching`]), as the pipeline processes a chunk of messages.
const CHUNK: usize = 256;

/// Feed events `which` (all when `None`) of `batch` to `p`; returns the alerts decided.
fn feed(
    p: &mut PartitionState,
    batch: &Batch,
    which: Option<&[u32]>,
    limits: &DecodeLimits,
    alerts: &mut Vec<Alert>,
) -> u64 {
    let mut n = 0;
    let mut events = Vec::with_capacity(CHUNK);
    let len = which.map_or(batch.len(), <[u32]>::len);
    let mut indices = (0..len).map(|i| which.map_or(i, |w| w[i] as usize));
    for _ in (0..len).step_by(CHUNK) {
        events.clear();
        events.extend(
            indices
                .by_ref()
                .take(CHUNK)
                .filter_map(|i| decode(batch.payload(i), limits).ok()),
        );
        p.prefetching(
            &events,
            |ev| Some(&ev.customer_id),
            |p, ev| {
                p.on_event(ev, None, alerts);
                n += alerts.len() as u64;
                alerts.clear();
            },
        );
    }
    n
}

/// Feed each thread's share of `batch` to its partition, in parallel.
fn feed_parallel(parts: &mut [PartitionState], batch: &Batch, limits: &DecodeLimits) {
    std::thread::scope(|s| {
        for (t, p) in parts.iter_mut().enumerate() {
            let idx = &batch.by_thread[t];
            s.spawn(move || feed(p, batch, Some(idx), limits, &mut Vec::new()));
        }
    });
}

/// Run the benchmark.
pub fn run(cfg: Arc<Config>, opts: &BenchOptions) -> BenchReport {
    let total_start = Instant::now();
    let threads = opts.threads.max(1);
    let slices = opts.slices.max(1);
    let start_ms = 1_700_000_000_000 / DAY_MS * DAY_MS;
    let days = opts.warmup_days + slices as f64 * opts.slice_days;
    let mut sim = Simulator::new(SimConfig {
        customers: opts.customers,
        seed: opts.seed,
        start_ms,
        days,
        existing_share: 1.0,
        ..SimConfig::default()
    });
    let limits = DecodeLimits {
        max_event_bytes: cfg.input.max_event_bytes,
        max_ts_ms: None,
    };
    // Separate registries: the two runs do not share gauge cache lines.
    let (m1, mn) = (Metrics::new(), Metrics::new());
    let mut single = PartitionState::new(cfg.clone(), &m1);
    let mut parts: Vec<PartitionState> = (0..threads)
        .map(|_| PartitionState::new(cfg.clone(), &mn))
        .collect();

    let mut events = Vec::new();
    let mut batch = Batch::default();
    let mut generate_secs = 0.0;
    let mut next = |until_ms: i64, batch: &mut Batch| {
        let t = Instant::now();
        events.clear();
        sim.advance(until_ms, &mut events);
        batch.fill(&events, threads);
        generate_secs += t.elapsed().as_secs_f64();
    };
    let mut alerts = Vec::new();
    let (mut alert_count, mut warmup_events, mut bytes_total) = (0, 0u64, 0u64);
    let mut rss_growth: i64 = 0;
    let mut measured = |p: &mut PartitionState, batch: &Batch, alerts: &mut Vec<Alert>| {
        let before = settled_rss_bytes();
        let clock = Instant::now();
        let n = feed(p, batch, None, &limits, alerts);
        let secs = clock.elapsed().as_secs_f64();
        rss_growth += settled_rss_bytes() as i64 - before as i64;
        (n, secs)
    };

    // 1. Warm-up, a day at a time, then 2. the timed slices: the same work, timed or not.
    let warmup_end = start_ms + (opts.warmup_days * DAY_MS as f64) as i64;
    let mut steps = Vec::new();
    let mut t = start_ms;
    while t < warmup_end {
        t = (t + DAY_MS).min(warmup_end);
        steps.push((t, false));
    }
    for _ in 0..slices {
        t += (opts.slice_days * DAY_MS as f64) as i64;
        steps.push((t, true));
    }
    let (mut one, mut all) = (Vec::new(), Vec::new());
    let mut timed_events = 0;
    for (until, timed) in steps {
        next(until, &mut batch);
        let n = batch.len() as u64;
        let (decided, single_secs) = measured(&mut single, &batch, &mut alerts);
        alert_count += decided;
        let clock = Instant::now();
        feed_parallel(&mut parts, &batch, &limits);
        let all_secs = clock.elapsed().as_secs_f64();
        if timed {
            one.push(n as f64 / single_secs);
            all.push(n as f64 / all_secs);
            timed_events += n;
        } else {
            warmup_events += n;
        }
        bytes_total += batch.bytes.len() as u64;
    }

    let peak_rss = peak_rss_bytes();
    let (changelog_record_bytes, restore_secs) = restore(&cfg, &single);

    let single_thread = throughput(1, one);
    let all_cores = throughput(threads, all);
    let speedup = all_cores.events_per_sec / single_thread.events_per_sec;
    let tracked = single.len();
    let (rings, parts) = mixes(&single);
    let growth = rss_growth.max(0) as u64;
    BenchReport {
        customers_simulated: opts.customers,
        customers_tracked: tracked,
        warmup_events,
        timed_events,
        mean_event_bytes: bytes_total as f64 / (warmup_events + timed_events).max(1) as f64,
        single_thread,
        all_cores,
        speedup,
        scaling_efficiency: speedup / threads as f64,
        state_bytes_per_customer: growth as f64 / tracked.max(1) as f64,
        state_rss_growth_bytes: growth,
        rings,
        parts,
        peak_rss_bytes: peak_rss,
        changelog_record_bytes,
        restore_secs,
        restore_customers_per_sec: tracked as f64 / restore_secs.max(1e-9),
        alerts: alert_count,
        generate_secs,
        total_secs: total_start.elapsed().as_secs_f64(),
    }
}

/// Encode `p`'s customers as changelog records, then time decoding them into a fresh
/// partition. Returns the mean record size and the seconds taken.
fn restore(cfg: &Arc<Config>, p: &PartitionState) -> (f64, f64) {
    let mut buf = Vec::new();
    let records: Vec<(Vec<u8>, Vec<u8>)> = p
        .customers()
        .map(|(id, c)| {
            encode_customer(&mut buf, 0, c);
            (id.as_bytes().to_vec(), buf.clone())
        })
        .collect();
    let bytes: usize = records.iter().map(|(_, v)| v.len()).sum();
    let m = Metrics::new();
    let clock = Instant::now();
    let mut fresh = PartitionState::new(cfg.clone(), &m);
    fresh.restore(
        records
            .iter()
            .filter_map(|(k, v)| match record::decode(Some(k), Some(v)) {
                Ok(Record::Customer(id, c)) => Some((id, *c)),
                _ => None,
            }),
        None,
    );
    let secs = clock.elapsed().as_secs_f64();
    assert_eq!(fresh.len(), records.len(), "every record restores");
    (bytes as f64 / records.len().max(1) as f64, secs)
}

fn throughput(threads: usize, slices: Vec<f64>) -> Throughput {
    let eps = median(&slices);
    Throughput {
        threads,
        events_per_sec: eps,
        ns_per_event: 1e9 * threads as f64 / eps,
        slices,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// A field of `/proc/self/status` in bytes (Linux; 0 elsewhere).
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The resident set once free heap memory has been handed back to the system (glibc keeps
/// freed memory resident for reuse).
fn settled_rss_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_bytes()
}

/// Current resident set.
pub fn rss_bytes() -> u64 {
    proc_status_bytes("VmRSS:")
}

/// Peak resident set of the process.
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM:")
}

impl BenchReport {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let row = |name: &str, t: &Throughput| {
            format!(
                "{name:<22} {:>12.0} events/s  {:>8.1} ns/event{}  slices: {}\n",
                t.events_per_sec,
                t.ns_per_event,
                if t.threads > 1 { " per thread" } else { "" },
                t.slices
                    .iter()
                    .map(|s| format!("{s:.0}"))
                    .collect::<Vec<_>>()
                    .join(" · ")
            )
        };
        let mut out = String::new();
        out += &format!(
            "churnwatch bench: {} customers simulated, {} tracked; {} warm-up + {} timed events of {:.0} bytes on average\n\n",
            self.customers_simulated,
            self.customers_tracked,
            self.warmup_events,
            self.timed_events,
            self.mean_event_bytes
        );
        out += &row("single thread", &self.single_thread);
        out += &row(
            &format!("all cores ({} threads)", self.all_cores.threads),
            &self.all_cores,
        );
        out += &format!(
            "{:<22} {:>12.2}x  (efficiency {:.0} %)\n\n",
            "speed-up",
            self.speedup,
            100.0 * self.scaling_efficiency
        );
        out += &format!(
            "state: {:.0} bytes per customer ({:.1} MiB resident growth over {} customers)\n",
            self.state_bytes_per_customer,
            mib(self.state_rss_growth_bytes),
            self.customers_tracked
        );
        let r = &self.rings;
        out += &format!(
            "rings: {} purchase marks, {} visits in nibbles, {} in bytes, {} slim, {} 3-byte counters; their allocations take {:.1} bytes per customer\n",
            r.marks, r.nibbles, r.visits, r.slim, r.counters, r.heap_bytes_per_customer
        );
        let a = &self.parts;
        out += &format!(
            "kept apart: {} customers' engagement levels, {} alert parts; their slots take {:.1} bytes per customer\n",
            a.engagement, a.alert, a.heap_bytes_per_customer
        );
        out += &format!("peak resident set: {:.1} MiB\n", mib(self.peak_rss_bytes));
        out += &format!(
            "restore: {} customers' changelog records ({:.0} bytes each) decoded and installed in {:.2} s ({:.0} customers/s)\n",
            self.customers_tracked,
            self.changelog_record_bytes,
            self.restore_secs,
            self.restore_customers_per_sec
        );
        out += &format!(
            "alerts decided: {}; generating the stream took {:.1} s of {:.1} s\n",
            self.alerts, self.generate_secs, self.total_secs
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_bench_measures_every_figure() {
        let opts = BenchOptions {
            customers: 300,
            warmup_days: 3.0,
            slices: 3,
            slice_days: 0.5,
            threads: 2,
            seed: 3,
        };
        let r = run(Arc::new(Config::default()), &opts);
        assert!(r.warmup_events > 0 && r.timed_events > 0, "{r:?}");
        assert!(
            r.customers_tracked > 100 && r.customers_tracked <= 300,
            "{r:?}"
        );
        assert_eq!(r.single_thread.slices.len(), 3);
        assert!(r.single_thread.events_per_sec > 0.0);
        assert!(r.all_cores.events_per_sec > 0.0);
        assert!((100.0..400.0).contains(&r.mean_event_bytes), "{r:?}");
        assert!(r.peak_rss_bytes > 0);
        assert!(
            r.restore_secs > 0.0 && r.changelog_record_bytes > 50.0,
            "{r:?}"
        );
        let m = r.rings;
        assert_eq!(
            m.marks + m.nibbles + m.visits + m.slim + m.counters,
            r.customers_tracked,
            "{m:?}"
        );
        assert!(m.marks > 0 && m.nibbles + m.visits + m.slim > 0, "{m:?}");
        assert!((10.0..128.0).contains(&m.heap_bytes_per_customer), "{m:?}");
        // Customers with scores keep their levels apart, in 28-byte slots (60 with an alert
        // part); purchase-only customers keep nothing apart.
        let a = r.parts;
        assert!(
            a.engagement > 0 && a.engagement < r.customers_tracked - m.marks,
            "{a:?}"
        );
        let (lo, hi) = (
            28 * a.engagement,
            60 * a.engagement.max(a.alert) + 32 * a.alert,
        );
        let bytes = a.heap_bytes_per_customer * r.customers_tracked as f64;
        assert!((lo as f64..=hi as f64).contains(&bytes.round()), "{a:?}");
        let text = r.to_text();
        assert!(
            text.contains("events/s") && text.contains("bytes per customer"),
            "{text}"
        );
        assert!(
            text.contains("slim") && text.contains("kept apart"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["single_thread"]["ns_per_event"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
