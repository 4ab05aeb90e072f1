//! What the gateway costs (issue 7): authenticated unary gRPC calls made by
//! 64 concurrent callers through the gateway with an API token (token
//! lookup, identity token swap, one more HTTP/2 hop), against the same calls
//! made straight to the service with an identity token. Prints requests/s,
//! p50 and p99 of each, the ratio, and whether the target (≥ 70% of the
//! direct throughput, p99 < 5 ms) is met.
//!
//! Two calls are measured:
//! - compute's `GetApp`: a SQLite read through sqlx on the service side, so
//!   the service, not the gateway, sets the pace (direct, it already sits
//!   far above 5 ms at p99 with 64 callers on two cores);
//! - traffic's `GetRoute`: served from traffic's in-memory route table, as
//!   cheap as an authenticated read of a Strata service gets (health and
//!   reflection are cheaper but not authenticated, so they would not
//!   exercise the gateway's authentication). The service still verifies the identity
//!   token's Ed25519 signature on every call, as it must. This one shows the
//!   gateway's own cost.
//!
//! Where things run: the services, the gateway and the callers share one
//! multi-threaded Tokio runtime with a worker per core (`CALLER_THREADS=0`,
//! the default). `CALLER_THREADS=n` puts the callers on a runtime of their
//! own with n threads instead, the way clients are separate processes in
//! real use; but on a two-core machine that makes three busy threads for two
//! cores, and the kernel's time slices then show up as tens of milliseconds
//! at p99 (through the gateway 43–48 ms there, against 19–25 ms shared), a
//! cost of the bench, not of the gateway. Either way everything competes
//! for this machine's cores and the callers' CPU is in both figures: the
//! ratio is what a co-located gateway costs.
//!
//! The machine may be shared and virtual: direct and through-the-gateway
//! runs take turns (`ROUNDS`, default 3) and their samples are pooled; each
//! line also shows the CPU time per call and the cores the process got, and
//! a run that did not get all the cores says so.
//!
//!     cargo bench -p strata-gateway --bench gateway
//!     (BENCH_SECS=3 WARMUP_SECS=1 ROUNDS=3 CALLERS=64 CHANNELS=8
//!      CALLER_THREADS=0 CALLS=getapp,getroute PATHS=direct,gateway to change)
//!
//! Needs NATS (`STRATA_TEST_NATS_URL`, default 127.0.0.1:4222).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use strata_integration_tests::{Backend, ComputeUnderTest, GatewayUnderTest, TestEnv, wait_serving};
use strata_kit::{Role, identity::BearerToken};
use strata_proto::{
    compute::v1::{self as compute_pb, compute_service_client::ComputeServiceClient},
    traffic::v1::{self as traffic_pb, traffic_service_client::TrafficServiceClient},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
/// Issue 7's target.
const TARGET_RATIO: f64 = 0.70;
const TARGET_P99: Duration = Duration::from_millis(5);

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat` (clock ticks, 100 per second on Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command name: state is field 0, utime 11, stime 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The calls measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// compute `GetApp` (SQLite read).
    GetApp,
    /// traffic `GetRoute` (in-memory read).
    GetRoute,
}

impl Call {
    fn title(self) -> &'static str {
        match self {
            Call::GetApp => "compute GetApp (SQLite read)",
            Call::GetRoute => "traffic GetRoute (in memory)",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time this whole process spent per call (callers, gateway and
    /// service together): steadier than requests/s on a shared machine.
    cpu_per_call: Duration,
    /// Cores this process kept busy: below the machine's count, something
    /// else was running and the figures are not to be trusted.
    cores: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{:>7.0} req/s  p50 {:>5.2} ms  p99 {:>5.2} ms  CPU {:>4.0} µs/call ({:.2} cores)",
            self.rate,
            ms(self.p50),
            ms(self.p99),
            self.cpu_per_call.as_secs_f64() * 1e6,
            self.cores
        )
    }
}

/// How a run is made.
#[derive(Debug, Clone, Copy)]
struct Load {
    callers: u64,
    channels: u64,
    warmup: Duration,
    measured: Duration,
}

/// Each caller calls as fast as it can until `end`, keeping the latencies of
/// the calls started after `from`.
macro_rules! call_loop {
    ($client:ident . $method:ident($request:expr), $from:expr, $end:expr) => {{
        let mut latencies = Vec::with_capacity(100_000);
        loop {
            let started = Instant::now();
            if started >= $end {
                break latencies;
            }
            $client.$method($request).await.unwrap();
            if started >= $from {
                latencies.push(started.elapsed());
            }
        }
    }};
}

/// What one run measured.
#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    cpu: Duration,
    time: Duration,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.cpu += other.cpu;
        self.time += other.time;
    }

    fn figures(mut self) -> Figures {
        self.latencies.sort();
        let n = self.latencies.len().max(1);
        Figures {
            rate: self.latencies.len() as f64 / self.time.as_secs_f64(),
            p50: self.latencies.get(n / 2).copied().unwrap_or_default(),
            p99: self.latencies.get(n * 99 / 100).copied().unwrap_or_default(),
            cpu_per_call: self.cpu / u32::try_from(n).unwrap(),
            cores: self.cpu.as_secs_f64() / self.time.as_secs_f64(),
        }
    }
}

/// `load.callers` concurrent callers making `call` over `load.channels`
/// connections to `addr` with `token`, each as fast as it can.
async fn run(call: Call, addr: SocketAddr, token: &str, load: Load) -> Samples {
    let mut channels = Vec::new();
    for _ in 0..load.channels {
        channels.push(Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap());
    }
    let bearer = BearerToken::new(token).unwrap();
    let from = Instant::now() + load.warmup;
    let end = from + load.measured;
    let tasks: Vec<_> = (0..load.callers)
        .map(|i| {
            let channel = channels[usize::try_from(i % load.channels).unwrap()].clone();
            let bearer = bearer.clone();
            tokio::spawn(async move {
                match call {
                    Call::GetApp => {
                        let mut client = ComputeServiceClient::with_interceptor(channel, bearer);
                        call_loop!(client.get_app(compute_pb::GetAppRequest { app: "bench".into() }), from, end)
                    }
                    Call::GetRoute => {
                        let mut client = TrafficServiceClient::with_interceptor(channel, bearer);
                        call_loop!(client.get_route(traffic_pb::GetRouteRequest { name: "bench".into() }), from, end)
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu_from = cpu_time();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Samples { latencies, cpu: cpu_time().saturating_sub(cpu_from), time: load.measured }
}

/// compute, traffic and the gateway in front of both, with something to read
/// in each.
struct Stack {
    env: TestEnv,
    compute: ComputeUnderTest,
    traffic: strata_traffic::Running,
    traffic_stop: CancellationToken,
    gateway: GatewayUnderTest,
    /// An identity token of the gateway admin's team, for direct calls.
    identity: String,
}

impl Stack {
    async fn start() -> Self {
        let mut env = TestEnv::new();
        let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
        let traffic_stop = CancellationToken::new();
        let traffic = strata_traffic::start(env.traffic_config(1).await, traffic_stop.clone()).await.unwrap();
        wait_serving(traffic.addr, strata_traffic::SERVICE_NAME).await;
        let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr), ("traffic", traffic.addr)]).await;
        let gateway = GatewayUnderTest::start(config).await;

        let channel = gateway.channel().await;
        let bearer = BearerToken::new(&gateway.admin_token).unwrap();
        ComputeServiceClient::with_interceptor(channel.clone(), bearer.clone())
            .create_app(compute_pb::CreateAppRequest { name: "bench".into() })
            .await
            .unwrap();
        TrafficServiceClient::with_interceptor(channel, bearer)
            .create_route(traffic_pb::CreateRouteRequest {
                name: "bench".into(),
                spec: Some(traffic_pb::RouteSpec {
                    host: format!("bench-{}.example.test", env.id),
                    path_prefix: "/".into(),
                    backends: vec![traffic_pb::Backend { app: "bench".into(), release: 0, weight: 100 }],
                    ..traffic_pb::RouteSpec::default()
                }),
            })
            .await
            .unwrap();
        let identity = env.token(&env.team("admins"), Role::Admin);
        Self { env, compute, traffic, traffic_stop, gateway, identity }
    }

    fn direct_addr(&self, call: Call) -> SocketAddr {
        match call {
            Call::GetApp => self.compute.addr,
            Call::GetRoute => self.traffic.addr,
        }
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.traffic_stop.cancel();
        self.traffic.wait().await.unwrap();
        self.compute.stop().await;
        self.env.cleanup().await;
    }
}

fn verdict(direct: Figures, via: Figures) -> String {
    let ratio = via.rate / direct.rate;
    let throughput_ok = ratio >= TARGET_RATIO;
    let p99_ok = via.p99 < TARGET_P99;
    let mut why = Vec::new();
    if !throughput_ok {
        why.push(format!("throughput {:.0}% < {:.0}%", ratio * 100.0, TARGET_RATIO * 100.0));
    }
    if !p99_ok {
        why.push(format!("p99 {:.2} ms ≥ {} ms", via.p99.as_secs_f64() * 1e3, TARGET_P99.as_millis()));
        if direct.p99 >= TARGET_P99 {
            why.push("the service alone is already above the p99 target at this load".to_owned());
        }
    }
    if why.is_empty() { "MEETS the target".to_owned() } else { format!("MISSES the target: {}", why.join("; ")) }
}

fn main() {
    // Services run with a tracing subscriber (telemetry); without one,
    // every span that h2 and hyper open falls back to the `log` crate.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default()).unwrap();
    let load = Load {
        callers: env_or("CALLERS", 64),
        channels: env_or("CHANNELS", 8).max(1),
        warmup: Duration::from_secs(env_or("WARMUP_SECS", 1)),
        measured: Duration::from_secs(env_or("BENCH_SECS", 3).max(1)),
    };
    let rounds = env_or("ROUNDS", 3).max(1);
    let caller_threads = usize::try_from(env_or("CALLER_THREADS", 0)).unwrap();
    let calls: Vec<Call> = std::env::var("CALLS")
        .unwrap_or_else(|_| "getapp,getroute".to_owned())
        .split(',')
        .filter_map(|c| match c.trim() {
            "getapp" => Some(Call::GetApp),
            "getroute" => Some(Call::GetRoute),
            _ => None,
        })
        .collect();

    let servers = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let callers = (caller_threads > 0).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(caller_threads)
            .thread_name("bench-caller")
            .enable_all()
            .build()
            .unwrap()
    });
    let callers = callers.as_ref().unwrap_or(&servers);

    let stack = servers.block_on(Stack::start());
    let placement = if caller_threads == 0 {
        "callers on the servers' runtime".to_owned()
    } else {
        format!("callers on their own runtime ({caller_threads} thread)")
    };
    println!(
        "Authenticated unary gRPC, {} concurrent callers over {} connections, {rounds} × {} s measured \
         (after {} s warm-up each), {placement}:",
        load.callers,
        load.channels,
        load.measured.as_secs(),
        load.warmup.as_secs()
    );
    // PATHS=gateway (or direct) measures one side only, for profiling.
    let paths = std::env::var("PATHS").unwrap_or_else(|_| "direct,gateway".to_owned());
    for call in calls {
        // Direct and through the gateway take turns, so that a slower
        // stretch of this (shared, virtual) machine hits both alike.
        let (mut direct, mut via) = (Samples::default(), Samples::default());
        for _ in 0..rounds {
            if paths.contains("direct") {
                direct.add(callers.block_on(run(call, stack.direct_addr(call), &stack.identity, load)));
            }
            if paths.contains("gateway") {
                via.add(callers.block_on(run(call, stack.gateway.addr, &stack.gateway.admin_token, load)));
            }
        }
        println!("{}", call.title());
        let direct = (!direct.latencies.is_empty()).then(|| direct.figures());
        let via = (!via.latencies.is_empty()).then(|| via.figures());
        if let Some(direct) = direct {
            println!("  direct (identity token):       {direct}");
        }
        if let Some(via) = via {
            println!("  through the gateway (API key): {via}");
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        if [direct, via].iter().flatten().any(|f| f.cores < 0.85 * cores) {
            println!("  (this process did not get all {cores} cores: something else ran meanwhile; measure again)");
        }
        if let (Some(direct), Some(via)) = (direct, via) {
            println!(
                "  gateway/direct throughput {:.0}%, gateway's CPU {:.0} µs/call: {}",
                via.rate / direct.rate * 100.0,
                via.cpu_per_call.saturating_sub(direct.cpu_per_call).as_secs_f64() * 1e6,
                verdict(direct, via)
            );
        }
    }
    println!(
        "Target (issue 7): through the gateway ≥ {:.0}% of direct throughput with p99 < {} ms.",
        TARGET_RATIO * 100.0,
        TARGET_P99.as_millis()
    );
    println!(
        "With {} callers each waiting for its answer, mean latency = {} / throughput (Little's law): \
         p99 < {} ms needs well over {:.0} req/s end to end.",
        load.callers,
        load.callers,
        TARGET_P99.as_millis(),
        load.callers as f64 / TARGET_P99.as_secs_f64()
    );
    servers.block_on(stack.stop());
}
