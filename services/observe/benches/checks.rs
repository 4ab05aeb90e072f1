//! Check throughput: 10,000 HTTP checks at 10 s intervals (1,000 runs a
//! second, 60,000 a minute) against a local fixed-response server, run by
//! the real `strata-observe` binary as its own process, measured over one
//! minute after a warm-up interval.
//!
//! Prints observe's CPU time over the minute (from /proc/<pid>/stat), its
//! peak resident memory (VmHWM), the runs started and the share that started
//! within 1 s of their schedule (from observe's own metrics), and the
//! requests the server saw. Targets: ≥ 99.9 % on schedule, < 50 % of one
//! core, < 128 MiB.
//!
//! Needs NATS at `STRATA_TEST_NATS_URL` (default nats://127.0.0.1:4222).
//! Run: `cargo bench -p strata-observe --bench checks` (builds everything
//! in release), or build only observe in release and drive it from a dev
//! build: `cargo build --release -p strata-observe --bin strata-observe &&
//! OBSERVE_BENCH_BINARY=target/release/strata-observe cargo bench -p strata-observe --bench checks --profile dev`
//! (`OBSERVE_BENCH_CHECKS`, `OBSERVE_BENCH_INTERVAL_SECS`, `OBSERVE_BENCH_SECS` change the load).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, service::service_fn};
use hyper_util::rt::TokioIo;
use strata_kit::{
    Role,
    identity::{BearerToken, Signer, generate_keypair},
};
use strata_proto::observe::v1::{self as pb, observe_service_client::ObserveServiceClient};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The server every check hits: 200 "ok", counting requests.
async fn fixed_server(requests: Arc<AtomicU64>) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let requests = requests.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    requests.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = 100.0; // USER_HZ is 100 on Linux.
    Ok(ticks / hz)
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).context("no such field")?;
    Ok(line.split_whitespace().nth(1).context("no value")?.parse()?)
}

/// A counter from observe's metrics endpoint.
async fn counter(metrics: std::net::SocketAddr, name: &str) -> Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(metrics).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let line = body.lines().find(|l| l.starts_with(&format!("{name} "))).with_context(|| format!("no {name}"))?;
    Ok(line.split_whitespace().nth(1).context("no value")?.parse()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no
    // `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let checks = env_or("OBSERVE_BENCH_CHECKS", 10_000);
    let interval = env_or("OBSERVE_BENCH_INTERVAL_SECS", 10);
    let window = env_or("OBSERVE_BENCH_SECS", 60);

    let requests = Arc::new(AtomicU64::new(0));
    let target = fixed_server(requests.clone()).await?;
    let (private, public) = generate_keypair()?;
    let token = Signer::from_private_pem(&private)?.mint("bench", "bench", Role::Member, Duration::from_secs(7200))?;
    let dir = tempfile::tempdir()?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let (grpc, metrics) = (free_addr()?, free_addr()?);
    let nats = std::env::var("STRATA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());

    let binary =
        std::env::var("OBSERVE_BENCH_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata-observe").to_owned());
    println!("observe binary: {binary}");
    let mut observe = tokio::process::Command::new(&binary)
        .env("STRATA_OBSERVE__SERVER__LISTEN", grpc.to_string())
        .env("STRATA_OBSERVE__METRICS__LISTEN", metrics.to_string())
        .env("STRATA_OBSERVE__DATA_DIR", dir.path())
        .env("STRATA_OBSERVE__NATS__URL", &nats)
        .env("STRATA_OBSERVE__NATS__STREAM", format!("BENCH_{id}"))
        .env("STRATA_OBSERVE__NATS__SUBJECT_PREFIX", format!("bench{id}"))
        .env("STRATA_OBSERVE__IDENTITY__PUBLIC_KEY_PEM", &public)
        .env("STRATA_OBSERVE__DEFAULT_CHECKS", "false")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting strata-observe")?;
    let pid = observe.id().context("no pid")?;

    let channel = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tonic::transport::Channel::from_shared(format!("http://{grpc}"))?.connect().await {
                Ok(channel) => break channel,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => bail!("observe did not come up: {e}"),
            }
        }
    };
    let client = ObserveServiceClient::with_interceptor(channel, BearerToken::new(&token)?);

    let started = Instant::now();
    let mut creating = futures::stream::iter(0..checks)
        .map(|i| {
            let mut client = client.clone();
            async move {
                client
                    .create_check(pb::CreateCheckRequest {
                        name: format!("c{i}"),
                        url: format!("http://{target}/check/{i}"),
                        kind: pb::CheckKind::Http.into(),
                        interval_secs: u32::try_from(interval).unwrap_or(10),
                        timeout_ms: 2000,
                        ..Default::default()
                    })
                    .await
            }
        })
        .buffer_unordered(16);
    use futures::StreamExt;
    while let Some(created) = creating.next().await {
        created?;
    }
    drop(creating);
    println!("created {checks} checks in {:.1} s", started.elapsed().as_secs_f64());

    // One interval for every check to be scheduled and running.
    tokio::time::sleep(Duration::from_secs(interval + 2)).await;

    let (cpu0, runs0, late0, served0) = (
        cpu_seconds(pid)?,
        counter(metrics, "strata_observe_scheduled_runs_total").await?,
        counter(metrics, "strata_observe_late_runs_total").await?,
        requests.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, runs1, late1, served1) = (
        cpu_seconds(pid)?,
        counter(metrics, "strata_observe_scheduled_runs_total").await?,
        counter(metrics, "strata_observe_late_runs_total").await?,
        requests.load(Ordering::Relaxed),
    );
    let unrecorded = counter(metrics, "strata_observe_results_unrecorded_total").await?;
    let peak_kib = status_kib(pid, "VmHWM:")?;
    let rss_kib = status_kib(pid, "VmRSS:")?;

    let runs = runs1 - runs0;
    let late = late1 - late0;
    let cpu = cpu1 - cpu0;
    let on_schedule = if runs > 0.0 { 100.0 * (runs - late) / runs } else { 0.0 };
    let core_share = 100.0 * cpu / elapsed;
    let peak_mib = peak_kib as f64 / 1024.0;
    println!("checks: {checks} HTTP checks every {interval} s, measured over {elapsed:.1} s");
    println!("runs started: {runs:.0} ({:.0}/s); requests served: {}", runs / elapsed, served1 - served0);
    println!("on schedule (started within 1 s): {on_schedule:.3} % ({late:.0} late)");
    println!("observe CPU: {cpu:.2} s over {elapsed:.1} s = {core_share:.1} % of one core");
    println!("observe memory: peak {peak_mib:.1} MiB (VmHWM), now {:.1} MiB", rss_kib as f64 / 1024.0);
    println!("results the database did not take: {unrecorded:.0}");
    let pass = on_schedule >= 99.9 && core_share < 50.0 && peak_mib < 128.0 && unrecorded == 0.0;
    println!("targets (>= 99.9 % on schedule, < 50 % of a core, < 128 MiB): {}", if pass { "met" } else { "MISSED" });

    observe.start_kill()?;
    let _ = observe.wait().await;
    if let Ok(client) = async_nats::connect(&nats).await {
        let _ = async_nats::jetstream::new(client).delete_stream(format!("BENCH_{id}")).await;
    }
    if !pass {
        bail!("targets missed");
    }
    Ok(())
}
