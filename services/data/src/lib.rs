//! Strata data: PostgreSQL databases on demand, per team, bound to apps.
//!
//! The platform team registers servers; teams create, bind, rotate, back up
//! and delete their own databases through the API, and nothing is ever left
//! half-done on a server (see [`app`]). Bindings are announced as events that
//! compute turns into `DATABASE_URL` for the app; no event carries a secret.

pub mod app;
pub mod crypto;
pub mod events;
pub mod grpc;
pub mod model;
pub mod pg;
pub mod store;

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use strata_events::{Bus, CloudEvent, ConsumerSpec, EventTx, HandleError, Handler, Outbox};
use strata_kit::{
    identity::Authenticator,
    server::GrpcServer,
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings, prepare_data_dir},
};
use strata_proto::{compute::v1 as compute_pb, data::v1::data_service_server::DataServiceServer};
use tokio_util::sync::CancellationToken;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "strata.data.v1.DataService";
/// Default gRPC port of data.
pub const DEFAULT_PORT: u16 = 8704;

/// A PostgreSQL server to register at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    pub name: String,
    /// postgres://admin@host:port/postgres
    pub admin_url: String,
    /// How many databases it may hold.
    pub capacity: u32,
}

/// The data service's configuration (`STRATA_DATA__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub identity: IdentitySettings,
    /// Where backups (and by default the SQLite file and the key) live.
    pub data_dir: PathBuf,
    /// Base64 of the 32-byte key that seals credentials at rest; empty means a
    /// key file in the data directory, made on first start.
    pub credentials_key: String,
    /// First characters of every role and database this service creates.
    pub ident_prefix: String,
    /// Servers registered at start (when reachable).
    pub servers: Vec<ServerConfig>,
    /// Seconds between reconciliation passes.
    pub reconcile_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::local(DEFAULT_PORT),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            identity: IdentitySettings::default(),
            data_dir: PathBuf::from(".strata/data"),
            credentials_key: String::new(),
            ident_prefix: "strata_db_".to_owned(),
            servers: Vec::new(),
            reconcile_interval_secs: 30,
        }
    }
}

/// Why the data service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("identity key: {0}")]
    IdentityKey(String),
    #[error("credentials key: {0}")]
    CredentialsKey(String),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] strata_kit::store::StoreError),
    #[error(transparent)]
    Events(#[from] strata_events::EventsError),
    #[error(transparent)]
    Serve(#[from] strata_kit::server::ServeError),
    #[error("the data service's main task failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// A started data service.
pub type Running = strata_kit::server::Running<StartError>;

/// Runs the data service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(config, shutdown).await?.wait().await
}

fn credentials_key(config: &Config, data_dir: &std::path::Path) -> Result<crypto::Sealer, StartError> {
    let key = if config.credentials_key.is_empty() {
        let path = data_dir.join("credentials.key");
        match std::fs::read_to_string(&path) {
            Ok(key) => key,
            Err(_) => {
                let key = crypto::Sealer::generate_key();
                write_private(&path, &key).map_err(|e| StartError::CredentialsKey(e.to_string()))?;
                tracing::warn!(path = %path.display(), "made a new credentials key; back it up with the database");
                key
            }
        }
    } else {
        config.credentials_key.clone()
    };
    crypto::Sealer::from_base64(&key).map_err(|e| StartError::CredentialsKey(e.to_string()))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

/// Compute's app deletions take the app's bindings with them.
struct AppEvents {
    data: app::Data,
}

impl Handler for AppEvents {
    async fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        if !events::COMPUTE_APP_DELETED.matches(event) {
            return Ok(());
        }
        let deleted: compute_pb::AppDeleted =
            event.data_as().map_err(|e| HandleError::Fatal(format!("malformed app.deleted: {e}")))?;
        self.data.app_deleted(tx, &event.team, &deleted.app).await.map_err(|e| HandleError::Retry(e.to_string()))
    }
}

/// Starts the data service: its database, the configured servers, the gRPC
/// server, the outbox relay, the app-events consumer and the reconciler.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let data_dir_error = |source| StartError::DataDir { path: config.data_dir.display().to_string(), source };
    let data_dir = prepare_data_dir(&config.data_dir).map_err(data_dir_error)?;
    let verifier = config.identity.verifier().map_err(StartError::IdentityKey)?;
    let sealer = credentials_key(&config, &data_dir)?;

    let db = strata_events::open_db(
        &config.database.url_or_sqlite(&data_dir, "data.db"),
        config.database.max_connections,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await?;
    let outbox = Outbox::new(db.clone(), &config.nats.subject_prefix);
    let data = app::Data::new(
        store::Store::new(outbox.clone()),
        sealer,
        app::Settings { data_dir: data_dir.clone(), ident_prefix: config.ident_prefix.clone() },
    );
    for server in &config.servers {
        match data.server_register_trusted(&server.name, &server.admin_url, server.capacity).await {
            Ok(record) => tracing::info!(server = %record.name, address = %record.address, "database server ready"),
            Err(error) => tracing::warn!(server = %server.name, %error, "database server not registered"),
        }
    }
    let bus = Bus::connect(&config.nats, "strata-data").await?;

    let server = GrpcServer::bind(&config.server, SERVICE_NAME).await?;
    let addr = server.local_addr();
    let routes = tonic::service::Routes::new(DataServiceServer::with_interceptor(
        grpc::DataApi::new(data.clone()),
        Authenticator::new(verifier),
    ));
    let background = CancellationToken::new();
    let relay = tokio::spawn(outbox.clone().run_relay(bus.clone(), background.clone()));
    let consumer = tokio::spawn(strata_events::consumer::run(
        bus.clone(),
        outbox.clone(),
        ConsumerSpec::new(events::APP_EVENTS_CONSUMER, "compute.app.deleted"),
        AppEvents { data: data.clone() },
        background.clone(),
    ));
    let reconciler = tokio::spawn(
        data.run_reconciler(Duration::from_secs(config.reconcile_interval_secs.max(1)), background.clone()),
    );
    let ready = tokio::spawn(bus.clone().report_ready(server.health(), shutdown.clone()));
    tracing::info!(%addr, "data listening");

    let task = tokio::spawn(async move {
        let served = server.serve(routes, shutdown).await;
        ready.abort();
        background.cancel();
        let grace = Duration::from_secs(10);
        tokio::join!(
            strata_kit::shutdown::join_within(relay, grace, "data outbox relay"),
            strata_kit::shutdown::join_within(consumer, grace, "data app-events consumer"),
            strata_kit::shutdown::join_within(reconciler, grace, "data reconciler"),
        );
        outbox.flush(&bus, Duration::from_secs(2)).await;
        served?;
        Ok(())
    });
    Ok(Running::new(addr, task))
}
