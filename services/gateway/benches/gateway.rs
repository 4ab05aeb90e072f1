//! What the gateway costs: authenticated unary gRPC calls (compute's GetApp)
//! made by 64 concurrent callers through the gateway with an API token
//! (token lookup, identity signing, one more hop), against the same calls
//! made straight to compute with an identity token. Prints requests/s, p50
//! and p99 of each, and the ratio. Everything runs in this one process on
//! this machine's cores, so the gateway's work competes with the callers'
//! and compute's: the ratio is what a co-located gateway costs.
//!
//!     cargo bench -p strata-gateway --bench gateway
//!     (BENCH_SECS=5 CALLERS=64 CHANNELS=8 to change)
//!
//! Needs NATS (`STRATA_TEST_NATS_URL`, default 127.0.0.1:4222).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use strata_integration_tests::{Backend, ComputeClient, ComputeUnderTest, GatewayUnderTest, TestEnv};
use strata_kit::{Role, identity::BearerToken};
use strata_proto::compute::v1::{self as pb, compute_service_client::ComputeServiceClient};
use tonic::transport::Channel;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Requests/s, p50 and p99 of `callers` concurrent callers over `channels`
/// connections to `addr`, each calling GetApp as fast as it can for `secs`.
async fn run(
    addr: std::net::SocketAddr,
    token: &str,
    callers: u64,
    channels: u64,
    secs: u64,
) -> (f64, Duration, Duration) {
    let mut clients: Vec<ComputeClient> = Vec::new();
    for _ in 0..channels {
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        clients.push(ComputeServiceClient::with_interceptor(channel, BearerToken::new(token).unwrap()));
    }
    // Warm up every connection.
    for client in &mut clients {
        client.get_app(pb::GetAppRequest { app: "bench".into() }).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let mut client = clients[usize::try_from(i % channels).unwrap()].clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    client.get_app(pb::GetAppRequest { app: "bench".into() }).await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let rate = all.len() as f64 / secs as f64;
    (rate, all[all.len() / 2], all[all.len() * 99 / 100])
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (secs, callers, channels) = (env_or("BENCH_SECS", 5), env_or("CALLERS", 64), env_or("CHANNELS", 8));
        let mut env = TestEnv::new();
        let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
        let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr)]).await;
        let gateway = GatewayUnderTest::start(config).await;
        let team = env.team("admins");
        gateway
            .compute(&gateway.admin_token)
            .await
            .create_app(pb::CreateAppRequest { name: "bench".into() })
            .await
            .unwrap();

        let identity = env.token(&team, Role::Admin);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("GetApp, {callers} concurrent callers over {channels} connections, {secs} s each:");
        let (direct, d50, d99) = run(compute.addr, &identity, callers, channels, secs).await;
        println!(
            "  direct to compute (identity token): {direct:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            ms(d50),
            ms(d99)
        );
        let (via, g50, g99) = run(gateway.addr, &gateway.admin_token, callers, channels, secs).await;
        println!(
            "  through the gateway (API token):    {via:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            ms(g50),
            ms(g99)
        );
        println!("  gateway/direct throughput: {:.0}%  (target ≥ 70%, p99 < 5 ms)", via / direct * 100.0);

        gateway.stop().await;
        compute.stop().await;
        env.cleanup().await;
    });
}
