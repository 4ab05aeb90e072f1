//! Strata observe: health checks on apps, alerts, the platform event log
//! and metrics rollups.
//!
//! Teams create checks (HTTP, TCP, gRPC health) on their apps' instances,
//! which observe learns from compute's events, or on a URL; every deployed
//! app gets a default HTTP check on `/` until it has one of its own. The
//! [`scheduler`] spreads runs over their interval with bounded concurrency,
//! the [`recorder`] confirms state changes (`check.failed` / `.recovered`,
//! which traffic ejects and restores endpoints on) and writes results in
//! batches, and [`alerts`] notifies the team's channels. A durable consumer
//! of the whole stream keeps the [`eventlog`]. Prometheus metrics, with
//! per-app rollups, are served on their own port.

pub mod alerts;
pub mod app;
pub mod eventlog;
pub mod events;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod recorder;
pub mod scheduler;
pub mod store;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use strata_events::{Bus, CloudEvent, ConsumerSpec, EventTx, HandleError, Handler, Outbox};
use strata_kit::{
    identity::Authenticator,
    metrics::MetricsSettings,
    server::GrpcServer,
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings, prepare_data_dir},
    store::now_ms,
};
use strata_proto::observe::v1::observe_service_server::ObserveServiceServer;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "strata.observe.v1.ObserveService";
/// Default gRPC port of observe.
pub const DEFAULT_PORT: u16 = 8703;
/// Default port of observe's Prometheus metrics.
pub const DEFAULT_METRICS_PORT: u16 = 9703;

/// The observe service's configuration (`STRATA_OBSERVE__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub identity: IdentitySettings,
    /// Where `GET /metrics` is served.
    pub metrics: MetricsSettings,
    /// Where the SQLite file lives (when no database URL is set).
    pub data_dir: PathBuf,
    /// Check runs in flight at most.
    pub max_concurrent_checks: usize,
    /// Give every deployed app without a check a default HTTP check on `/`.
    pub default_checks: bool,
    /// Seconds between runs of default checks.
    pub default_check_interval_secs: u64,
    /// Raw check results are kept this many seconds (uptime and latency
    /// rollups per minute are kept 25 hours).
    pub results_retention_secs: u64,
    /// Days the event log keeps an event (0: forever).
    pub event_log_retention_days: u64,
    /// Seconds between refreshes of the per-app metrics rollups.
    pub rollup_interval_secs: u64,
    /// Attempts at delivering one alert notification before giving up.
    pub delivery_max_attempts: u32,
    /// Milliseconds a webhook gets to answer.
    pub webhook_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::local(DEFAULT_PORT),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            identity: IdentitySettings::default(),
            metrics: MetricsSettings::local(DEFAULT_METRICS_PORT),
            data_dir: PathBuf::from(".strata/observe"),
            max_concurrent_checks: 512,
            default_checks: true,
            default_check_interval_secs: 10,
            results_retention_secs: 3600,
            event_log_retention_days: 90,
            rollup_interval_secs: 15,
            delivery_max_attempts: 8,
            webhook_timeout_ms: 5000,
        }
    }
}

/// Why the observe service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("identity key: {0}")]
    IdentityKey(String),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("metrics endpoint {addr}: {source}")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] strata_kit::store::StoreError),
    #[error(transparent)]
    Events(#[from] strata_events::EventsError),
    #[error("loading the checks: {0}")]
    Load(#[from] app::Failure),
    #[error(transparent)]
    Serve(#[from] strata_kit::server::ServeError),
    #[error("the observe service's main task failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// A started observe service: its gRPC address, its metrics address, and
/// the task that runs it.
#[derive(Debug)]
pub struct Running {
    /// The metrics endpoint (`http://{metrics_addr}/metrics`).
    pub metrics_addr: SocketAddr,
    /// The gRPC endpoint and the service task.
    pub inner: strata_kit::server::Running<StartError>,
}

impl Running {
    /// The gRPC endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Waits until the service has shut down.
    pub async fn wait(self) -> Result<(), StartError> {
        self.inner.wait().await
    }
}

/// Runs the observe service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(config, shutdown).await?.wait().await
}

/// Compute's events: instances become targets, deployments get default
/// checks, failures fire alerts.
struct ComputeEvents {
    observe: app::Observe,
    plans: std::sync::Mutex<HashMap<String, Vec<app::Plan>>>,
}

impl ComputeEvents {
    fn plans(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<app::Plan>>> {
        match self.plans.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Handler for ComputeEvents {
    async fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        let plans = self.observe.on_compute_event(tx, event).await?;
        self.plans().insert(event.id.clone(), plans);
        Ok(())
    }

    fn committed(&self, event: &CloudEvent) {
        let plans = self.plans().remove(&event.id).unwrap_or_default();
        self.observe.apply_plans(plans);
        self.observe.deliveries_queued();
    }
}

/// How long what observe records is kept.
struct Retention {
    results: Duration,
    /// None: forever.
    event_log: Option<Duration>,
}

/// Refreshes the per-app metrics and prunes old records, until `shutdown`.
async fn run_rollups(
    observe: app::Observe,
    metrics: Arc<metrics::Metrics>,
    every: Duration,
    retention: Retention,
    shutdown: CancellationToken,
) {
    let mut series = metrics::RollupSeries::default();
    let mut last_prune = tokio::time::Instant::now();
    loop {
        let checks: metrics::CheckStates = observe.live.with(|live| {
            live.values()
                .map(|c| {
                    let r = &c.def.record;
                    (
                        r.team.clone(),
                        r.app.clone(),
                        r.name.clone(),
                        c.targets.values().map(|t| t.confirmations.state).collect(),
                    )
                })
                .collect()
        });
        let minute = now_ms().div_euclid(60_000);
        match (observe.store.app_stats(minute - 59).await, observe.store.app_stats(minute - 24 * 60 + 1).await) {
            (Ok(hour), Ok(day)) => metrics.rollup(&mut series, &checks, &[("1h", hour), ("24h", day)]),
            (Err(error), _) | (_, Err(error)) => tracing::warn!(%error, "metrics rollup skipped"),
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = tokio::time::Instant::now();
            let before = |keep: Duration| now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            if let Err(error) = observe.store.prune(before(retention.results), minute - 25 * 60).await {
                tracing::warn!(%error, "pruning old results failed");
            }
            if let Some(keep) = retention.event_log
                && let Err(error) = observe.store.event_log_prune(before(keep)).await
            {
                tracing::warn!(%error, "pruning the event log failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Starts the observe service: its database, the gRPC server, the metrics
/// endpoint, the outbox relay, the compute and event-log consumers, the
/// scheduler, recorder, planner, deliverer and rollups.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let data_dir_error = |source| StartError::DataDir { path: config.data_dir.display().to_string(), source };
    let data_dir = prepare_data_dir(&config.data_dir).map_err(data_dir_error)?;
    let verifier = config.identity.verifier().map_err(StartError::IdentityKey)?;
    let db = strata_events::open_db(
        &config.database.url_or_sqlite(&data_dir, "observe.db"),
        config.database.max_connections,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await?;
    let outbox = Outbox::new(db.clone(), &config.nats.subject_prefix);
    let store = store::Store::new(outbox.clone());
    let metrics = Arc::new(metrics::Metrics::new());
    let (scheduler, schedule_rx) = scheduler::SchedulerHandle::channel();
    let (plans_tx, plans_rx) = mpsc::unbounded_channel();
    let wake_deliveries = Arc::new(Notify::new());
    let default_interval_ms = i64::try_from(config.default_check_interval_secs.clamp(1, 3600) * 1000).unwrap_or(10_000);
    let observe = app::Observe::new(
        store.clone(),
        scheduler,
        plans_tx,
        wake_deliveries.clone(),
        app::Settings {
            default_checks: config.default_checks,
            default_interval_ms,
            default_timeout_ms: default_interval_ms.min(2000),
        },
    );
    observe.load_all().await?;
    let bus = Bus::connect(&config.nats, "strata-observe").await?;

    let server = GrpcServer::bind(&config.server, SERVICE_NAME).await?;
    let addr = server.local_addr();
    let background = CancellationToken::new();
    let endpoint = strata_kit::metrics::serve(&config.metrics, metrics.registry(), background.clone())
        .await
        .map_err(|source| StartError::Metrics { addr: config.metrics.listen, source })?;
    let routes = tonic::service::Routes::new(ObserveServiceServer::with_interceptor(
        grpc::ObserveApi::new(observe.clone(), shutdown.clone()),
        Authenticator::new(verifier),
    ));

    let (runs_tx, runs_rx) = mpsc::channel(8192);
    let scheduler_stop = CancellationToken::new();
    let scheduler = tokio::spawn(scheduler::run(
        schedule_rx,
        probe::Prober::new(),
        config.max_concurrent_checks,
        runs_tx,
        metrics.clone(),
        scheduler_stop.clone(),
    ));
    let recorder = tokio::spawn(recorder::run(observe.clone(), metrics.clone(), runs_rx, background.clone()));
    let planner = tokio::spawn(observe.clone().run_planner(plans_rx));
    let relay = tokio::spawn(outbox.clone().run_relay(bus.clone(), background.clone()));
    let compute = tokio::spawn(strata_events::consumer::run(
        bus.clone(),
        outbox.clone(),
        ConsumerSpec::new(events::COMPUTE_CONSUMER, events::COMPUTE_FILTER),
        ComputeEvents { observe: observe.clone(), plans: std::sync::Mutex::new(HashMap::new()) },
        background.clone(),
    ));
    let event_log = tokio::spawn(strata_events::consumer::run(
        bus.clone(),
        outbox.clone(),
        ConsumerSpec::new(events::EVENT_LOG_CONSUMER, events::EVENT_LOG_FILTER),
        eventlog::EventLog::new(observe.clone(), metrics.clone()),
        background.clone(),
    ));
    let deliverer = tokio::spawn(
        alerts::Deliverer {
            store: store.clone(),
            bus: bus.clone(),
            wake: wake_deliveries,
            metrics: metrics.clone(),
            max_attempts: config.delivery_max_attempts.max(1),
            timeout: Duration::from_millis(config.webhook_timeout_ms.max(100)),
        }
        .run(background.clone()),
    );
    let rollups = tokio::spawn(run_rollups(
        observe.clone(),
        metrics.clone(),
        Duration::from_secs(config.rollup_interval_secs.max(1)),
        Retention {
            results: Duration::from_secs(config.results_retention_secs.max(60)),
            event_log: (config.event_log_retention_days > 0)
                .then(|| Duration::from_secs(config.event_log_retention_days.saturating_mul(24 * 3600))),
        },
        background.clone(),
    ));
    let ready = tokio::spawn(bus.clone().report_ready(server.health(), shutdown.clone()));
    tracing::info!(%addr, metrics = %endpoint.addr, "observe listening");
    let metrics_addr = endpoint.addr;

    let task = tokio::spawn(async move {
        let served = server.serve(routes, shutdown).await;
        ready.abort();
        let grace = Duration::from_secs(10);
        // Stop starting runs first; the recorder writes what the last ones found.
        scheduler_stop.cancel();
        strata_kit::shutdown::join_within(scheduler, grace, "observe scheduler").await;
        background.cancel();
        planner.abort();
        tokio::join!(
            strata_kit::shutdown::join_within(recorder, grace, "observe recorder"),
            strata_kit::shutdown::join_within(relay, grace, "observe outbox relay"),
            strata_kit::shutdown::join_within(compute, grace, "observe compute consumer"),
            strata_kit::shutdown::join_within(event_log, grace, "observe event-log consumer"),
            strata_kit::shutdown::join_within(deliverer, grace, "observe deliverer"),
            strata_kit::shutdown::join_within(rollups, grace, "observe rollups"),
            strata_kit::shutdown::join_within(endpoint.task, grace, "observe metrics endpoint"),
        );
        outbox.flush(&bus, Duration::from_secs(2)).await;
        served?;
        Ok(())
    });
    Ok(Running { metrics_addr, inner: strata_kit::server::Running::new(addr, task) })
}
