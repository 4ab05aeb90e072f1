//! Strata compute: runs a team's applications.
//!
//! Apps, their config, immutable releases and deployments live in compute's
//! own database; the [`runtime`] runs each app's instances as supervised
//! processes and reconciles them with the desired state; every change is
//! announced on the `STRATA` stream through the transactional outbox.

pub mod app;
pub mod archive;
pub mod bindings;
pub mod buildpack;
pub mod events;
pub mod grpc;
pub mod logs;
pub mod model;
pub mod runtime;
pub mod static_site;
pub mod store;

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use strata_events::{Bus, Outbox};
use strata_kit::{
    identity::{Authenticator, Signer},
    server::GrpcServer,
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings, prepare_data_dir},
};
use strata_proto::compute::v1::compute_service_server::ComputeServiceServer;
use tokio_util::sync::CancellationToken;

/// The fully-qualified gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "strata.compute.v1.ComputeService";
/// Default gRPC port of compute.
pub const DEFAULT_PORT: u16 = 8701;

/// Compute's configuration (`STRATA_COMPUTE__...` in the environment).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub identity: IdentitySettings,
    /// Where uploads, releases, logs and (by default) the SQLite file live.
    pub data_dir: PathBuf,
    /// The address instances listen on and are announced at.
    pub host: String,
    /// Largest accepted upload, compressed, in MiB.
    pub max_upload_mib: u64,
    /// Largest unpacked source tree, in MiB.
    pub max_unpacked_mib: u64,
    /// Seconds a build may run.
    pub build_timeout_secs: u64,
    /// Seconds an instance may take to accept connections on its port.
    pub ready_timeout_secs: u64,
    /// Seconds an instance gets between SIGTERM and SIGKILL.
    pub stop_grace_secs: u64,
    /// Milliseconds a running instance keeps serving after it is announced
    /// as stopping, before SIGTERM: the time routers get to stop sending it
    /// requests (a deregistration delay).
    pub drain_delay_ms: u64,
    /// The data service's gRPC URL; empty when there is none (no bindings).
    /// Calls to it carry compute's own identity (`identity.signing_key_pem`).
    pub data_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::local(DEFAULT_PORT),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            identity: IdentitySettings::default(),
            data_dir: PathBuf::from(".strata/compute"),
            host: "127.0.0.1".to_owned(),
            max_upload_mib: 200,
            max_unpacked_mib: 1024,
            build_timeout_secs: 900,
            ready_timeout_secs: 60,
            stop_grace_secs: 10,
            drain_delay_ms: 1000,
            data_url: String::new(),
        }
    }
}

/// Why compute could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("identity key: {0}")]
    IdentityKey(String),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] strata_kit::store::StoreError),
    #[error(transparent)]
    Events(#[from] strata_events::EventsError),
    #[error(transparent)]
    Serve(#[from] strata_kit::server::ServeError),
    #[error("runtime: {0}")]
    Runtime(#[from] runtime::RuntimeError),
    #[error("closing interrupted deployments: {0}")]
    Recover(String),
    #[error("compute's main task failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// A started compute service.
pub type Running = strata_kit::server::Running<StartError>;

/// Runs compute until `shutdown` fires, then drains.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(config, shutdown).await?.wait().await
}

/// The node id of this data directory, created on first use.
fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Starts compute: database, runtime (re-adopting instances), gRPC server,
/// outbox relay; health turns SERVING once NATS and the stream are ready.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let data_dir_error = |source| StartError::DataDir { path: config.data_dir.display().to_string(), source };
    let data_dir = prepare_data_dir(&config.data_dir).map_err(data_dir_error)?;
    let verifier = config.identity.verifier().map_err(StartError::IdentityKey)?;

    let db = strata_events::open_db(
        &config.database.url_or_sqlite(&data_dir, "compute.db"),
        config.database.max_connections,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await?;

    let outbox = Outbox::new(db.clone(), &config.nats.subject_prefix);
    let store = store::Store::new(outbox.clone());
    let bus = Bus::connect(&config.nats, "strata-compute").await?;
    let runtime_stop = CancellationToken::new();
    let runtime = runtime::Runtime::start(
        store.clone(),
        runtime::RuntimeSettings {
            data_dir: data_dir.clone(),
            host: config.host.clone(),
            ready_timeout: Duration::from_secs(config.ready_timeout_secs),
            stop_grace: Duration::from_secs(config.stop_grace_secs),
            drain_delay: Duration::from_millis(config.drain_delay_ms),
            node_id: node_id(&data_dir).map_err(data_dir_error)?,
        },
        runtime_stop.clone(),
    )
    .await?;
    let compute = app::Compute::new(
        store,
        runtime.clone(),
        app::Settings {
            data_dir: data_dir.clone(),
            max_upload_bytes: config.max_upload_mib * 1024 * 1024,
            max_unpacked_bytes: config.max_unpacked_mib * 1024 * 1024,
            build_timeout: Duration::from_secs(config.build_timeout_secs),
            rollout_timeout: Duration::from_secs(config.ready_timeout_secs + 15),
        },
    );

    compute.recover_interrupted().await.map_err(|e| StartError::Recover(e.to_string()))?;

    let server = GrpcServer::bind(&config.server, SERVICE_NAME).await?;
    let addr = server.local_addr();
    let health = server.health();
    let api = grpc::ComputeApi::new(compute.clone(), shutdown.clone());
    let routes = tonic::service::Routes::new(ComputeServiceServer::with_interceptor(api, Authenticator::new(verifier)));

    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(outbox.clone().run_relay(bus.clone(), relay_stop.clone()));
    let background = CancellationToken::new();
    let mut background_tasks = vec![tokio::spawn(compute.clone().run_pending_releases(background.clone()))];
    if !config.data_url.is_empty() {
        let signer = Signer::from_private_pem(&config.identity.signing_key_pem)
            .map_err(|e| StartError::IdentityKey(format!("identity.signing_key_pem is needed to call data: {e}")))?;
        let channel = tonic::transport::Endpoint::from_shared(config.data_url.clone())
            .map_err(|_| StartError::IdentityKey(format!("invalid data_url {:?}", config.data_url)))?
            .connect_lazy();
        let handler = bindings::DataEvents::new(compute.clone(), channel, signer);
        let spec = strata_events::ConsumerSpec::new(events::DATA_EVENTS_CONSUMER, events::DATA_EVENTS_FILTER);
        let consumer = strata_events::consumer::run(bus.clone(), outbox.clone(), spec, handler, background.clone());
        background_tasks.push(tokio::spawn(async move {
            if let Err(error) = consumer.await {
                tracing::error!(%error, "the data events consumer stopped");
            }
        }));
    }
    let ready = tokio::spawn(bus.clone().report_ready(health, shutdown.clone()));
    tracing::info!(%addr, data_dir = %data_dir.display(), "compute listening");

    let task = tokio::spawn(async move {
        let served = server.serve(routes, shutdown.clone()).await;
        ready.abort();
        background.cancel();
        for task in background_tasks {
            strata_kit::shutdown::join_within(task, Duration::from_secs(10), "compute background task").await;
        }
        // Stop the apps, then let the relay publish their last events.
        runtime_stop.cancel();
        runtime.drain().await;
        relay_stop.cancel();
        let _ = relay.await;
        outbox.flush(&bus, Duration::from_secs(2)).await;
        served?;
        Ok(())
    });
    Ok(Running::new(addr, task))
}
