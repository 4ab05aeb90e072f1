//! Per-route numbers: requests, status classes, bytes and a latency
//! histogram. The request path only adds to atomics in its worker's own
//! shard (no lock, no shared cache line between workers); readers sum the
//! shards.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Upper bounds of the latency buckets, in microseconds: 50 µs × 1.25ⁿ up to
/// about 50 s, then everything beyond.
const BUCKETS: usize = 64;

fn bucket_bounds() -> &'static [u64; BUCKETS] {
    static BOUNDS: std::sync::OnceLock<[u64; BUCKETS]> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut bounds = [u64::MAX; BUCKETS];
        let mut bound = 50.0_f64;
        for slot in bounds.iter_mut().take(BUCKETS - 1) {
            *slot = bound.round() as u64;
            bound *= 1.25;
        }
        bounds
    })
}

fn bucket_of(micros: u64) -> usize {
    bucket_bounds().partition_point(|&bound| bound < micros).min(BUCKETS - 1)
}

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Makes the current thread write to shard `worker` (set once per ingress
/// worker thread).
pub fn set_worker(worker: usize) {
    WORKER.with(|w| w.set(worker));
}

/// One worker's counters, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    /// 1xx..5xx.
    status: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency_sum_micros: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            status: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One route's numbers since the ingress started.
pub struct RouteStats {
    shards: Box<[Shard]>,
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats").field("requests", &self.snapshot().requests).finish()
    }
}

/// Summed counters of a route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub requests: u64,
    pub status: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_sum_micros: u64,
    pub latency: Vec<u64>,
}

impl Snapshot {
    /// The latency at quantile `q` (0..=1) in milliseconds: the upper bound
    /// of the bucket holding that rank; 0 with no requests.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = bucket_bounds()[i];
                let bound = if bound == u64::MAX { bucket_bounds()[BUCKETS - 2] } else { bound };
                return bound as f64 / 1000.0;
            }
        }
        0.0
    }
}

impl RouteStats {
    /// Counters for `workers` ingress workers.
    pub fn new(workers: usize) -> Self {
        Self { shards: (0..workers.max(1)).map(|_| Shard::default()).collect() }
    }

    fn shard(&self) -> &Shard {
        let worker = WORKER.with(Cell::get);
        &self.shards[worker % self.shards.len()]
    }

    /// A response head was sent with `status` after `latency`.
    pub fn record(&self, status: u16, latency: Duration) {
        let shard = self.shard();
        shard.requests.fetch_add(1, Relaxed);
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        shard.status[class].fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        shard.latency_sum_micros.fetch_add(micros, Relaxed);
        shard.latency[bucket_of(micros)].fetch_add(1, Relaxed);
    }

    pub fn add_bytes_in(&self, n: u64) {
        self.shard().bytes_in.fetch_add(n, Relaxed);
    }

    pub fn add_bytes_out(&self, n: u64) {
        self.shard().bytes_out.fetch_add(n, Relaxed);
    }

    /// The counters summed over workers.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot { latency: vec![0; BUCKETS], ..Snapshot::default() };
        for shard in self.shards.iter() {
            snap.requests += shard.requests.load(Relaxed);
            for (sum, count) in snap.status.iter_mut().zip(&shard.status) {
                *sum += count.load(Relaxed);
            }
            snap.bytes_in += shard.bytes_in.load(Relaxed);
            snap.bytes_out += shard.bytes_out.load(Relaxed);
            snap.latency_sum_micros += shard.latency_sum_micros.load(Relaxed);
            for (sum, count) in snap.latency.iter_mut().zip(&shard.latency) {
                *sum += count.load(Relaxed);
            }
        }
        snap
    }
}

/// Labels of one route's series.
#[derive(Debug, Clone)]
pub struct RouteLabels {
    pub team: String,
    pub route: String,
    pub app: String,
    pub host: String,
}

impl RouteLabels {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("team", self.team.clone()),
            ("route", self.route.clone()),
            ("app", self.app.clone()),
            ("host", self.host.clone()),
        ]
    }
}

type NoExemplar<'a> = Option<&'a prometheus_client::metrics::exemplar::Exemplar<Vec<(&'static str, String)>, f64>>;

/// Encodes the routes' series (requests by status class, bytes, latency
/// histogram) for a Prometheus scrape.
pub fn encode_metrics(
    mut encoder: prometheus_client::encoding::DescriptorEncoder,
    routes: &[(RouteLabels, Snapshot)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    {
        let mut metric = encoder.encode_descriptor(
            "strata_traffic_requests",
            "Requests answered by the ingress, by route and status class.",
            None,
            MetricType::Counter,
        )?;
        for (labels, snap) in routes {
            for (i, count) in snap.status.iter().enumerate() {
                let mut pairs = labels.pairs();
                pairs.push(("code", format!("{}xx", i + 1)));
                metric.encode_family(&pairs)?.encode_counter(count, NoExemplar::None)?;
            }
        }
    }
    for (name, help, pick) in [
        ("strata_traffic_request_bytes", "Request body bytes received, by route.", 0),
        ("strata_traffic_response_bytes", "Response body bytes sent, by route.", 1),
    ] {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, snap) in routes {
            let value = if pick == 0 { snap.bytes_in } else { snap.bytes_out };
            metric.encode_family(&labels.pairs())?.encode_counter(&value, NoExemplar::None)?;
        }
    }
    let mut metric = encoder.encode_descriptor(
        "strata_traffic_request_duration_seconds",
        "Time from the request to the response head, by route.",
        None,
        MetricType::Histogram,
    )?;
    for (labels, snap) in routes {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS / 2 + 1);
        for (i, count) in snap.latency.iter().enumerate() {
            cumulative += count;
            let bound = bucket_bounds()[i];
            // Every other bucket (×1.5625 apart) keeps the series count sane.
            if bound != u64::MAX && i % 2 == 1 {
                buckets.push((bound as f64 / 1e6, cumulative));
            }
        }
        buckets.push((f64::INFINITY, cumulative));
        // The encoder wants per-bucket counts, not cumulative ones.
        let mut previous = 0;
        let per_bucket: Vec<(f64, u64)> = buckets
            .into_iter()
            .map(|(bound, cumulative)| {
                let count = cumulative - previous;
                previous = cumulative;
                (bound, count)
            })
            .collect();
        metric.encode_family(&labels.pairs())?.encode_histogram(
            snap.latency_sum_micros as f64 / 1e6,
            cumulative,
            &per_bucket,
            None::<
                &std::collections::HashMap<
                    usize,
                    prometheus_client::metrics::exemplar::Exemplar<Vec<(&'static str, String)>, f64>,
                >,
            >,
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let stats = RouteStats::new(2);
        for ms in 1..=100 {
            stats.record(200, Duration::from_millis(ms));
        }
        stats.record(503, Duration::from_millis(1));
        let snap = stats.snapshot();
        assert_eq!(snap.requests, 101);
        assert_eq!(snap.status, [0, 100, 0, 0, 1]);
        let p50 = snap.quantile_ms(0.5);
        assert!((40.0..=65.0).contains(&p50), "p50 {p50}");
        let p99 = snap.quantile_ms(0.99);
        assert!((99.0..=125.0).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn buckets_are_ordered() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(50), 0);
        assert_eq!(bucket_of(51), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert!(bucket_bounds()[BUCKETS - 2] > 50_000_000);
    }

    #[derive(Debug)]
    struct Routes(Vec<(RouteLabels, Snapshot)>);

    impl prometheus_client::collector::Collector for Routes {
        fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_metrics(encoder, &self.0)
        }
    }

    #[test]
    fn prometheus_text_has_the_route_series() {
        let stats = RouteStats::new(1);
        stats.record(200, Duration::from_millis(3));
        stats.add_bytes_out(10);
        let labels = RouteLabels { team: "t".into(), route: "r".into(), app: "a".into(), host: "h".into() };
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Routes(vec![(labels, stats.snapshot())])));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(r#"strata_traffic_requests_total{team="t",route="r",app="a",host="h",code="2xx"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"strata_traffic_response_bytes_total{team="t",route="r",app="a",host="h"} 10"#),
            "{out}"
        );
        assert!(
            out.contains(r#"strata_traffic_request_duration_seconds_count{team="t",route="r",app="a",host="h"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"strata_traffic_request_duration_seconds_bucket{le="+Inf",team="t",route="r",app="a",host="h"} 1"#
            ) || out.contains(r#"le="+Inf""#),
            "{out}"
        );
    }
}
