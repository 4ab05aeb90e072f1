//! Outbox latency: the time from the commit of a transaction that carries an
//! event to the moment a durable pull consumer's handler has it, through the
//! whole path (relay woken on commit, publish with `Nats-Msg-Id`, JetStream
//! ack, pull delivery, the consumer's inbox transaction), against the real
//! NATS, on SQLite and on Postgres.
//!
//! Events are sent one at a time (each waits for the previous one's
//! delivery), so the figures are latencies, not queueing; a burst of as many
//! events, committed back to back, then gives the end-to-end throughput.
//!
//! ```text
//! cargo bench -p strata-events --bench outbox_latency
//! ```
//!
//! `NATS_URL` (default `nats://127.0.0.1:4222`) picks the NATS server;
//! `STRATA_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! the Postgres server a scratch database is created on. Postgres is skipped
//! when the default server is not reachable. Every run has its own stream,
//! subject prefix and databases, and deletes them at the end.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use strata_events::{Bus, CloudEvent, ConsumerSpec, EventTx, EventType, HandleError, Handler, Outbox};
use strata_kit::{Db, settings::NatsSettings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events measured one at a time, and events in the burst.
const EVENTS: usize = 1_000;
/// Events sent first and not measured (connections, consumer, caches).
const WARMUP: usize = 50;
/// The latency the outbox is meant to stay under at the 99th percentile.
const TARGET_P99: Duration = Duration::from_millis(10);
/// How long one event may take before the benchmark gives up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE: EventType = EventType::new("bench", "probe", "committed");
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The process-wide origin every instant is measured from.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos_since_base(at: Instant) -> u64 {
    u64::try_from(at.duration_since(*BASE).as_nanos()).unwrap_or(u64::MAX)
}

/// The data of a probe event.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    seq: u64,
    /// When the transaction was about to commit, in ns since [`BASE`].
    committing_ns: u64,
}

/// What the handler saw: the probe and when it arrived, in ns since [`BASE`].
#[derive(Debug)]
struct Receipt {
    probe: Probe,
    received_ns: u64,
}

/// A consumer handler that only notes when each probe arrived.
struct Stopwatch {
    receipts: mpsc::UnboundedSender<Receipt>,
}

impl Handler for Stopwatch {
    async fn handle(&self, _tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        let received_ns = nanos_since_base(Instant::now());
        let probe: Probe = event.data_as().map_err(|e| HandleError::Fatal(e.to_string()))?;
        // The receiver is gone only when the benchmark is over.
        let _ = self.receipts.send(Receipt { probe, received_ns });
        Ok(())
    }
}

/// Latency percentiles over a sample.
struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(mut sample: Vec<Duration>) -> Self {
        sample.sort();
        // Nearest rank: the smallest value at or above the given fraction.
        let rank = |p: f64| sample[((p * sample.len() as f64).ceil() as usize).clamp(1, sample.len()) - 1];
        Self { p50: rank(0.50), p99: rank(0.99), max: sample[sample.len() - 1] }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {} / p99 {} / max {}", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The figures of one backend.
struct Report {
    /// From the end of the commit to the handler.
    commit_to_handler: Percentiles,
    /// From just before the commit to the handler (the commit included).
    committing_to_handler: Percentiles,
    /// Events per second through the whole path, for a burst.
    burst_rate: f64,
    /// Commits per second during the burst.
    commit_rate: f64,
}

/// One backend's run: the stream, the producer's outbox and relay, the
/// consumer, and what to delete afterwards.
struct Bench {
    bus: Bus,
    outbox: Outbox,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    next_seq: u64,
}

impl Bench {
    /// Starts a run named `id` (unique: it names the stream, the subject
    /// prefix and the durable consumer).
    async fn start(id: &str, nats_url: &str, producer_url: &str, consumer_url: &str) -> Result<Self> {
        let settings = NatsSettings {
            url: nats_url.to_owned(),
            stream: format!("BENCH_{id}"),
            subject_prefix: format!("bench{id}"),
        };
        let producer = Db::connect(producer_url, 4).await?;
        producer.migrate(strata_events::migrations(&producer)).await?;
        let consumer_db = Db::connect(consumer_url, 4).await?;
        consumer_db.migrate(strata_events::migrations(&consumer_db)).await?;
        let bus = Bus::connect(&settings, "outbox-latency-bench").await?;
        bus.ensure_stream().await?;

        let outbox = Outbox::new(producer, &settings.subject_prefix);
        let stop = CancellationToken::new();
        let (receipts_tx, receipts) = mpsc::unbounded_channel();
        let relay = tokio::spawn(outbox.clone().run_relay(bus.clone(), stop.clone()));
        let consumer = tokio::spawn({
            let run = strata_events::consumer::run(
                bus.clone(),
                Outbox::new(consumer_db, &settings.subject_prefix),
                ConsumerSpec::new(format!("bench-{id}"), "bench.probe.*"),
                Stopwatch { receipts: receipts_tx },
                stop.clone(),
            );
            async move {
                if let Err(error) = run.await {
                    eprintln!("consumer failed: {error}");
                }
            }
        });
        Ok(Self { bus, outbox, receipts, stop, tasks: vec![relay, consumer], next_seq: 0 })
    }

    /// Commits one probe event; returns its sequence number and when the commit returned.
    async fn commit_probe(&mut self) -> Result<(u64, Instant)> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut tx = self.outbox.begin().await?;
        let committing_ns = nanos_since_base(Instant::now());
        tx.emit(PROBE, "probe", "bench", &Probe { seq, committing_ns }).await?;
        tx.commit().await?;
        Ok((seq, Instant::now()))
    }

    async fn receive(&mut self) -> Result<Receipt> {
        tokio::time::timeout(DELIVERY_TIMEOUT, self.receipts.recv())
            .await
            .context("no event reached the consumer in time")?
            .context("the consumer stopped")
    }

    /// Sends `n` events one at a time; returns (commit → handler,
    /// before commit → handler) for each.
    async fn one_at_a_time(&mut self, n: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
        let (mut after_commit, mut with_commit) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (seq, committed) = self.commit_probe().await?;
            let receipt = self.receive().await?;
            if receipt.probe.seq != seq {
                bail!("expected probe {seq}, the consumer got {}", receipt.probe.seq);
            }
            after_commit.push(Duration::from_nanos(receipt.received_ns.saturating_sub(nanos_since_base(committed))));
            with_commit.push(Duration::from_nanos(receipt.received_ns.saturating_sub(receipt.probe.committing_ns)));
        }
        Ok((after_commit, with_commit))
    }

    /// Commits `n` events back to back, then waits for all of them; returns
    /// (end-to-end events/s, commits/s).
    async fn burst(&mut self, n: usize) -> Result<(f64, f64)> {
        let start = Instant::now();
        for _ in 0..n {
            self.commit_probe().await?;
        }
        let committed = start.elapsed();
        for _ in 0..n {
            self.receive().await?;
        }
        let delivered = start.elapsed();
        Ok((n as f64 / delivered.as_secs_f64(), n as f64 / committed.as_secs_f64()))
    }

    async fn measure(&mut self) -> Result<Report> {
        self.one_at_a_time(WARMUP).await?;
        let (after_commit, with_commit) = self.one_at_a_time(EVENTS).await?;
        let (burst_rate, commit_rate) = self.burst(EVENTS).await?;
        Ok(Report {
            commit_to_handler: Percentiles::of(after_commit),
            committing_to_handler: Percentiles::of(with_commit),
            burst_rate,
            commit_rate,
        })
    }

    async fn finish(self) -> Result<()> {
        self.stop.cancel();
        for task in self.tasks {
            task.await?;
        }
        let stream = &self.bus.settings().stream;
        self.bus.jetstream().delete_stream(stream).await.with_context(|| format!("deleting stream {stream}"))?;
        Ok(())
    }
}

/// Runs the benchmark on one backend, and cleans up whatever happens.
async fn bench(id: &str, nats_url: &str, producer_url: &str, consumer_url: &str) -> Result<Report> {
    let mut bench = Bench::start(id, nats_url, producer_url, consumer_url).await?;
    let report = bench.measure().await;
    bench.finish().await?;
    report
}

fn print(backend: &str, report: &Report) {
    let verdict = if report.commit_to_handler.p99 < TARGET_P99 { "met" } else { "MISSED" };
    println!("{backend}");
    println!("  commit → handler:             {}", report.commit_to_handler);
    println!("  before commit → handler:      {}  (the commit included)", report.committing_to_handler);
    println!("  p99 {} (target < {} ms): {verdict}", ms(report.commit_to_handler.p99), TARGET_P99.as_millis());
    println!(
        "  burst of {EVENTS} (one event per transaction, back to back): {:.0} events/s end to end, {:.0} commits/s",
        report.burst_rate, report.commit_rate
    );
}

/// A fresh name for one run's stream, prefix, consumer and database.
fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A scratch database on the Postgres server at `admin_url`, dropped with [`drop_postgres`].
async fn create_postgres(admin_url: &str, name: &str) -> Result<String> {
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
    let root = admin_url.rfind('/').map_or(admin_url, |slash| &admin_url[..slash]);
    Ok(format!("{root}/{name}"))
}

async fn drop_postgres(admin_url: &str, name: &str) -> Result<()> {
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    LazyLock::force(&BASE);
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    println!("outbox latency: commit → durable pull consumer, {EVENTS} events one at a time, NATS at {nats_url}");

    let dir = tempfile::tempdir()?;
    let sqlite = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    // Producer and consumer are different services, each with its own file.
    let report = bench(&run_id(), &nats_url, &sqlite("producer.db"), &sqlite("consumer.db")).await?;
    print("sqlite (WAL, synchronous=NORMAL)", &report);

    let explicit = std::env::var("STRATA_BENCH_POSTGRES_URL").ok();
    let admin_url = explicit.clone().unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&admin_url)).await,
        Ok(Ok(_))
    );
    match (reachable, explicit) {
        (true, _) => {
            let id = run_id();
            let name = format!("strata_bench_{id}");
            let url = create_postgres(&admin_url, &name).await?;
            let report = bench(&id, &nats_url, &url, &url).await;
            drop_postgres(&admin_url, &name).await?;
            print("postgres", &report?);
        }
        (false, Some(url)) => bail!("Postgres at STRATA_BENCH_POSTGRES_URL={url} is not reachable"),
        (false, None) => println!("postgres: skipped ({DEFAULT_POSTGRES} is not reachable)"),
    }
    Ok(())
}
