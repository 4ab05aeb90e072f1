//! The gateway: the one endpoint clients need, and the owner of identity.
//!
//! It keeps teams, their members and API tokens ([`app`], [`store`]); checks
//! the `strata_...` API token of every call ([`auth`]) and forwards a
//! short-lived signed identity in its place to the service that owns the call
//! ([`proxy`]), which verifies that identity itself; and serves its own API
//! ([`grpc`]), REST ([`rest`]), the console ([`console`]), health and
//! reflection, all on one port ([`edge`]).

pub mod app;
pub mod auth;
pub mod console;
pub mod edge;
pub mod events;
pub mod grpc;
pub mod model;
pub mod openapi;
pub mod overview;
pub mod problem;
pub mod proxy;
pub mod rest;
pub mod sse;
pub mod store;
pub mod token;
pub mod usage;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use strata_events::{Bus, Outbox};
use strata_kit::{
    identity::Signer,
    server::GrpcServer,
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings, prepare_data_dir},
};
use strata_proto::gateway::v1::gateway_service_server::GatewayServiceServer;
use tokio_util::sync::CancellationToken;

pub use proxy::concern_of;

/// The name the gateway's health reports under.
pub const SERVICE_NAME: &str = "strata.gateway.v1.GatewayService";
/// Default port of the gateway.
pub const DEFAULT_PORT: u16 = 8700;

/// The first admin, made at start when configured (what `strata up` does).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BootstrapSettings {
    /// Where the first admin's API token is kept (mode 0600); empty: no
    /// bootstrap. A token already there is kept while it works.
    pub token_file: PathBuf,
    /// The first platform admin's subject. It is made an admin only while
    /// the platform has none; after that admins are managed through the API
    /// (`strata admins`), and one removed there is not made an admin again.
    pub admin: String,
    /// The team it owns.
    pub team: String,
}

/// Gateway configuration (`STRATA_GATEWAY__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The one port for gRPC, REST and the console.
    pub server: ServerSettings,
    /// Teams, members and tokens.
    pub database: DatabaseSettings,
    /// Where `gateway.*` events go.
    pub nats: NatsSettings,
    /// `signing_key_pem` is required: the gateway signs the identities it
    /// forwards.
    pub identity: IdentitySettings,
    /// Where the SQLite file lives by default.
    pub data_dir: PathBuf,
    /// Where each concern's gRPC API is: concern name (`compute`, ...) → URL.
    pub upstreams: BTreeMap<String, String>,
    /// Lifetime in seconds of the identity tokens forwarded to services.
    pub identity_ttl_secs: u64,
    /// The first admin, team and token.
    pub bootstrap: BootstrapSettings,
    /// How long an app overview or the catalog waits for the concerns, in ms.
    pub overview_deadline_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::local(DEFAULT_PORT),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            identity: IdentitySettings::default(),
            data_dir: PathBuf::from(".strata/gateway"),
            upstreams: BTreeMap::from([("compute".to_owned(), "http://127.0.0.1:8701".to_owned())]),
            identity_ttl_secs: 60,
            bootstrap: BootstrapSettings::default(),
            overview_deadline_ms: 2000,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Upstream(#[from] proxy::InvalidUpstream),
    #[error("REST API: {0}")]
    Rest(#[from] rest::RestError),
    #[error("signing key: {0} (set identity.signing_key_pem; `strata admin keygen` makes one)")]
    SigningKey(String),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error(transparent)]
    Store(#[from] strata_kit::store::StoreError),
    #[error(transparent)]
    Events(#[from] strata_events::EventsError),
    #[error(transparent)]
    Serve(#[from] strata_kit::server::ServeError),
    #[error("the gateway's main task failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// A started gateway.
pub type Running = strata_kit::server::Running<StartError>;

/// Runs the gateway until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(config, shutdown).await?.wait().await
}

/// Opens the database, bootstraps the first admin when configured, binds and
/// starts serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let upstreams = proxy::Upstreams::new(&config.upstreams)?;
    if config.identity.signing_key_pem.trim().is_empty() {
        return Err(StartError::SigningKey("none configured".to_owned()));
    }
    let signer = Signer::from_private_pem(&config.identity.signing_key_pem)
        .map_err(|e| StartError::SigningKey(e.to_string()))?;
    let (gateway, outbox) = open(&config).await?;
    if !config.bootstrap.token_file.as_os_str().is_empty() {
        bootstrap(&gateway, &config.bootstrap).await?;
    }
    let bus = Bus::connect(&config.nats, "strata-gateway").await?;

    let auth = auth::Auth::new(gateway.clone(), signer, Duration::from_secs(config.identity_ttl_secs.max(10)));
    let aggregator =
        overview::Aggregator::new(upstreams.clone(), Duration::from_millis(config.overview_deadline_ms.max(1)));
    let local = GatewayServiceServer::new(grpc::GatewayApi::new(gateway.clone(), aggregator.clone()));
    let rest = rest::Rest::new(&upstreams, local.clone())?;
    let openapi = openapi::document_text()?;
    let console = console::router(console::Console {
        gateway: gateway.clone(),
        auth: auth.clone(),
        aggregator,
        upstreams: upstreams.clone(),
    });
    // Everything but the OpenAPI document and the console (which checks its
    // own cookie), and health and reflection (added by the server), needs an
    // API token in the authorization header: the gateway's own API and REST
    // through the middleware, calls passed through to the services (the
    // fallback, added after the layer) in the proxy itself.
    let router = axum::Router::new()
        .route_service(&format!("/{SERVICE_NAME}/{{*method}}"), local)
        .merge(rest.router())
        .layer(axum::middleware::from_fn_with_state(auth.clone(), auth::authenticate))
        .fallback_service(proxy::service(upstreams.clone(), auth.clone()))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi) }
            }),
        )
        .merge(console);

    let server = GrpcServer::bind(&config.server, SERVICE_NAME).await?;
    let addr = server.local_addr();
    let parts = server.into_parts(tonic::service::Routes::from(router))?;
    let edge = edge::Edge::new(upstreams, auth, parts.routes.prepare().into_axum_router());
    let background = CancellationToken::new();
    let relay = tokio::spawn(outbox.clone().run_relay(bus.clone(), background.clone()));
    let token_uses = tokio::spawn(gateway.clone().run_token_use_flusher(usage::FLUSH_INTERVAL, background.clone()));
    let ready = tokio::spawn(bus.clone().report_ready(parts.health.clone(), shutdown.clone()));
    tracing::info!(%addr, upstreams = ?config.upstreams, "gateway listening");
    let task = tokio::spawn(async move {
        edge::serve(parts.listener, edge, parts.health, parts.grace, shutdown).await;
        ready.abort();
        background.cancel();
        strata_kit::shutdown::join_within(relay, Duration::from_secs(10), "gateway outbox relay").await;
        strata_kit::shutdown::join_within(token_uses, Duration::from_secs(10), "gateway token use writer").await;
        outbox.flush(&bus, Duration::from_secs(2)).await;
        Ok(())
    });
    Ok(Running::new(addr, task))
}

/// Opens the gateway's database (making the data directory, applying the
/// migrations): the domain over it, and the outbox its events go through.
pub async fn open(config: &Config) -> Result<(app::Gateway, Outbox), StartError> {
    let data_dir = prepare_data_dir(&config.data_dir)
        .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let db = strata_events::open_db(
        &config.database.url_or_sqlite(&data_dir, "gateway.db"),
        config.database.max_connections,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await?;
    let outbox = Outbox::new(db, &config.nats.subject_prefix);
    Ok((app::Gateway::new(store::Store::new(outbox.clone())), outbox))
}

/// Makes the first admin, its team and its token, and keeps the token in the
/// configured file.
async fn bootstrap(gateway: &app::Gateway, settings: &BootstrapSettings) -> Result<(), StartError> {
    let failed = |e: &dyn std::fmt::Display| StartError::Bootstrap(e.to_string());
    let admin = if settings.admin.is_empty() { "admin" } else { settings.admin.as_str() };
    let team = if settings.team.is_empty() { "default" } else { settings.team.as_str() };
    let existing = std::fs::read_to_string(&settings.token_file).ok().map(|t| t.trim().to_owned());
    let (secret, new) = gateway.bootstrap(admin, team, existing.as_deref()).await.map_err(|e| failed(&e))?;
    if new {
        write_private(&settings.token_file, secret.as_bytes()).map_err(|e| failed(&e))?;
        tracing::info!(admin, team, file = %settings.token_file.display(), "made the admin's API token");
    }
    Ok(())
}

/// Writes a file only its owner can read (replacing what was there).
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents)
}
