//! Strata traffic: routes from a host and path to an app, and the HTTP
//! ingress that serves them.
//!
//! The control plane (gRPC, [`grpc`] → [`app`]) keeps routes in traffic's
//! own database and learns endpoints from compute's instance events, never
//! from compute's database. The data plane ([`proxy`]) reads an immutable
//! [`table::Table`] swapped in whole after each change, so it keeps serving
//! the last-known routes and endpoints when NATS or the database go away.

pub mod app;
pub mod events;
pub mod grpc;
mod h1;
pub mod model;
pub mod proxy;
pub mod stats;
pub mod store;
pub mod table;
pub mod upstream;
pub mod wire;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use strata_events::{Bus, CloudEvent, ConsumerSpec, EventTx, HandleError, Handler, Outbox};
use strata_kit::{
    identity::Authenticator,
    metrics::MetricsSettings,
    server::GrpcServer,
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings, prepare_data_dir},
};
use strata_proto::traffic::v1::traffic_service_server::TrafficServiceServer;
use tokio_util::sync::CancellationToken;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "strata.traffic.v1.TrafficService";
/// Default gRPC port of traffic.
pub const DEFAULT_PORT: u16 = 8702;
/// Default port of the HTTP ingress.
pub const DEFAULT_INGRESS_PORT: u16 = 8780;
/// Default port of the Prometheus metrics endpoint.
pub const DEFAULT_METRICS_PORT: u16 = 9702;

/// The HTTP ingress's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngressConfig {
    /// Where the ingress listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Worker threads, each with its own event loop; 0 means one per CPU.
    pub workers: usize,
    /// Milliseconds to connect to an app instance before trying another.
    pub connect_timeout_ms: u64,
    /// Seconds a client gets to send a request head.
    pub header_read_timeout_secs: u64,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_INGRESS_PORT)),
            workers: 0,
            connect_timeout_ms: 1000,
            header_read_timeout_secs: 30,
        }
    }
}

/// The traffic service's configuration (`STRATA_TRAFFIC__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub identity: IdentitySettings,
    pub ingress: IngressConfig,
    /// Where `GET /metrics` is served (per-route requests, status classes,
    /// bytes and latency).
    pub metrics: MetricsSettings,
    /// Where the SQLite file lives by default.
    pub data_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::local(DEFAULT_PORT),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            identity: IdentitySettings::default(),
            ingress: IngressConfig::default(),
            metrics: MetricsSettings::local(DEFAULT_METRICS_PORT),
            data_dir: PathBuf::from(".strata/traffic"),
        }
    }
}

/// Why traffic could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("identity key: {0}")]
    IdentityKey(String),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("metrics endpoint on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error("ingress on {addr}: {source}")]
    Ingress { addr: SocketAddr, source: std::io::Error },
    #[error("loading routes: {0}")]
    Load(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] strata_kit::store::StoreError),
    #[error(transparent)]
    Events(#[from] strata_events::EventsError),
    #[error(transparent)]
    Serve(#[from] strata_kit::server::ServeError),
    #[error("traffic's main task failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// A started traffic service: its gRPC address, the ingress's and the
/// metrics endpoint's.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub ingress_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    inner: strata_kit::server::Running<StartError>,
}

impl Running {
    /// Waits until traffic has stopped.
    pub async fn wait(self) -> Result<(), StartError> {
        self.inner.wait().await
    }
}

/// Runs traffic until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(config, shutdown).await?.wait().await
}

/// Applies compute's and observe's events; the table follows each commit.
struct Events {
    traffic: app::Traffic,
}

impl Handler for Events {
    async fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        self.traffic.apply_event(tx, event).await
    }

    fn committed(&self, _event: &CloudEvent) {
        self.traffic.rebuild_soon();
    }
}

/// The per-route series, read from the live counters at each scrape.
#[derive(Debug)]
struct RouteMetrics(app::Traffic);

impl prometheus_client::collector::Collector for RouteMetrics {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        stats::encode_metrics(encoder, &self.0.all_stats())
    }
}

/// Starts traffic: its database, the table from it, the ingress (serving at
/// once), then the gRPC API and the event consumers.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let data_dir_error = |source| StartError::DataDir { path: config.data_dir.display().to_string(), source };
    let data_dir = prepare_data_dir(&config.data_dir).map_err(data_dir_error)?;
    let verifier = config.identity.verifier().map_err(StartError::IdentityKey)?;
    let db = strata_events::open_db(
        &config.database.url_or_sqlite(&data_dir, "traffic.db"),
        config.database.max_connections,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await?;
    let outbox = Outbox::new(db.clone(), &config.nats.subject_prefix);

    let workers = match config.ingress.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let connect_timeout = Duration::from_millis(config.ingress.connect_timeout_ms.max(1));
    let upstreams: Vec<_> = (0..workers).map(|_| upstream::Upstreams::new(connect_timeout)).collect();
    let traffic = app::Traffic::new(store::Store::new(outbox.clone()), workers, upstreams.clone());
    traffic.rebuild().await?;

    let ingress_stop = CancellationToken::new();
    let ingress = proxy::start(
        &proxy::IngressSettings {
            listen: config.ingress.listen,
            workers,
            connect_timeout,
            header_read_timeout: Duration::from_secs(config.ingress.header_read_timeout_secs.max(1)),
        },
        traffic.table(),
        &upstreams,
        ingress_stop.clone(),
        config.server.grace_period(),
    )
    .map_err(|source| StartError::Ingress { addr: config.ingress.listen, source })?;
    let ingress_addr = ingress.addr;
    tracing::info!(addr = %ingress_addr, workers, "ingress listening");

    // Whatever fails from here stops what has started.
    let background = CancellationToken::new();
    let abort = |error: StartError| {
        ingress_stop.cancel();
        background.cancel();
        error
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(RouteMetrics(traffic.clone())));
    let metrics = strata_kit::metrics::serve(&config.metrics, std::sync::Arc::new(registry), background.clone())
        .await
        .map_err(|source| abort(StartError::Metrics { addr: config.metrics.listen, source }))?;
    let metrics_addr = metrics.addr;
    let bus = Bus::connect(&config.nats, "strata-traffic").await.map_err(|e| abort(e.into()))?;
    let server = GrpcServer::bind(&config.server, SERVICE_NAME).await.map_err(|e| abort(e.into()))?;
    let addr = server.local_addr();
    let routes = tonic::service::Routes::new(TrafficServiceServer::with_interceptor(
        grpc::TrafficApi::new(traffic.clone()),
        Authenticator::new(verifier),
    ));
    let relay = tokio::spawn(outbox.clone().run_relay(bus.clone(), background.clone()));
    let rebuilder = tokio::spawn(traffic.clone().run_rebuilder(background.clone()));
    let compute_events = tokio::spawn(strata_events::consumer::run(
        bus.clone(),
        outbox.clone(),
        ConsumerSpec::new(events::COMPUTE_CONSUMER, "compute.>"),
        Events { traffic: traffic.clone() },
        background.clone(),
    ));
    let check_events = tokio::spawn(strata_events::consumer::run(
        bus.clone(),
        outbox.clone(),
        ConsumerSpec::new(events::CHECKS_CONSUMER, "observe.check.>"),
        Events { traffic: traffic.clone() },
        background.clone(),
    ));
    let ready = tokio::spawn(bus.clone().report_ready(server.health(), shutdown.clone()));
    tracing::info!(%addr, "traffic listening");

    let task = tokio::spawn(async move {
        let served = server.serve(routes, shutdown).await;
        ready.abort();
        // The API has drained; the ingress gets its own grace period.
        ingress_stop.cancel();
        ingress.join().await;
        background.cancel();
        let grace = Duration::from_secs(10);
        tokio::join!(
            strata_kit::shutdown::join_within(relay, grace, "traffic outbox relay"),
            strata_kit::shutdown::join_within(rebuilder, grace, "traffic table rebuilder"),
            strata_kit::shutdown::join_within(compute_events, grace, "traffic compute-events consumer"),
            strata_kit::shutdown::join_within(check_events, grace, "traffic check-events consumer"),
            strata_kit::shutdown::join_within(metrics.task, grace, "traffic metrics endpoint"),
        );
        outbox.flush(&bus, Duration::from_secs(2)).await;
        served?;
        Ok(())
    });
    Ok(Running { addr, ingress_addr, metrics_addr, inner: strata_kit::server::Running::new(addr, task) })
}
