//! Runs the traffic service as the proxy benchmark's Strata ingress: a real
//! traffic service (SQLite, NATS, metrics on) with one route by Host to one
//! endpoint. The route goes through the gRPC API; the endpoint arrives as
//! compute's `instance.started` event on a stream of the run's own, standing
//! in for compute (the edge this benchmark does not measure).
//!
//! `bench_ingress <listen> <workers> <metrics-listen> <host> <backend-addr>`;
//! prints `ready` once the route answers, runs until SIGTERM/SIGINT.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use strata_events::{Bus, CloudEvent, EventType};
use strata_kit::{
    Role,
    identity::{BearerToken, Signer, generate_keypair},
    metrics::MetricsSettings,
    settings::{IdentitySettings, NatsSettings, ServerSettings},
};
use strata_proto::{compute::v1 as compute_pb, traffic::v1 as pb};

/// The ingress allocates per request; mimalloc's thread-local free lists
/// cost less per allocation than glibc's malloc (measured with
/// deploy/bench/proxy.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, workers, metrics, host, backend] = args.as_slice() else {
        anyhow::bail!("usage: bench_ingress <listen> <workers> <metrics-listen> <host> <backend-addr>");
    };
    let backend: SocketAddr = backend.parse()?;
    let dir = tempfile::tempdir()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let nats = NatsSettings {
        stream: format!("BENCH_{run}"),
        subject_prefix: format!("bench{run}"),
        ..NatsSettings::default()
    };
    let (private, public) = generate_keypair()?;
    let shutdown = strata_kit::shutdown::on_signal()?;
    let running = strata_traffic::start(
        strata_traffic::Config {
            server: ServerSettings::local(0),
            nats: nats.clone(),
            identity: IdentitySettings { public_key_pem: public, ..IdentitySettings::default() },
            ingress: strata_traffic::IngressConfig {
                listen: listen.parse()?,
                workers: workers.parse()?,
                ..strata_traffic::IngressConfig::default()
            },
            metrics: MetricsSettings { listen: metrics.parse()? },
            data_dir: dir.path().to_path_buf(),
            ..strata_traffic::Config::default()
        },
        shutdown.clone(),
    )
    .await?;

    let token = Signer::from_private_pem(&private)?.mint("bench", "bench", Role::Owner, Duration::from_secs(3600))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr))?.connect().await?;
    let mut client =
        pb::traffic_service_client::TrafficServiceClient::with_interceptor(channel, BearerToken::new(&token)?);
    client
        .create_route(pb::CreateRouteRequest {
            name: "bench".into(),
            spec: Some(pb::RouteSpec {
                host: host.clone(),
                path_prefix: "/".into(),
                backends: vec![pb::Backend { app: "fixed".into(), release: 0, weight: 1 }],
                ..Default::default()
            }),
        })
        .await
        .context("creating the route")?;

    let bus = Bus::connect(&nats, "bench").await?;
    let ty = EventType::new("compute", "instance", "started");
    let event = CloudEvent::new(
        ty,
        "fixed",
        "bench",
        &compute_pb::InstanceStarted {
            instance_id: "fixed-1".into(),
            app_id: "fixed".into(),
            app: "fixed".into(),
            release_version: 1,
            host: backend.ip().to_string(),
            port: u32::from(backend.port()),
        },
    )?;
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(serde_json::to_vec(&event)?.into())
        .message_id(event.id.clone());
    bus.jetstream().send_publish(bus.subject(ty), publish).await?.await?;

    // Ready once the ingress routes to the backend.
    let mut served = false;
    for _ in 0..200 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(running.ingress_addr).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer).await;
            if answer.starts_with("HTTP/1.1 200") {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::ensure!(served, "the ingress never routed {host} to {backend}");
    println!("ready");

    let result = running.wait().await;
    let _ = bus.jetstream().delete_stream(&nats.stream).await;
    result?;
    Ok(())
}
