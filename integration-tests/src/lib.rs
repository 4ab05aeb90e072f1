//! The test harness: boots real Strata services in-process on port 0 against
//! the machine's real NATS and a real database (a SQLite file or a fresh
//! Postgres database), each test with its own stream, subject prefix, teams
//! and data directory, and waits on readiness, never on sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use sqlx::Connection;
use strata_kit::{
    Role,
    identity::{BearerToken, Signer, generate_keypair},
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings},
};
use strata_proto::{
    compute::v1::{self as pb, compute_service_client::ComputeServiceClient},
    data::v1::data_service_client::DataServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// A compute client that sends a bearer token.
pub type ComputeClient = ComputeServiceClient<InterceptedService<Channel, BearerToken>>;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The NATS server tests use.
pub fn nats_url() -> String {
    std::env::var("STRATA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The Postgres server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("STRATA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One test's world: its own stream and prefix, keys, and scratch directory.
pub struct TestEnv {
    pub id: String,
    pub nats: NatsSettings,
    pub public_key_pem: String,
    /// The signing key, for services that call others with their own identity.
    pub private_key_pem: String,
    signer: Signer,
    pub dir: tempfile::TempDir,
    postgres_dbs: Vec<String>,
}

impl TestEnv {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let (private, public) = generate_keypair().unwrap();
        Self {
            nats: NatsSettings { url: nats_url(), stream: format!("T_{id}"), subject_prefix: format!("t{id}") },
            public_key_pem: public,
            signer: Signer::from_private_pem(&private).unwrap(),
            private_key_pem: private,
            dir: tempfile::tempdir().unwrap(),
            postgres_dbs: Vec::new(),
            id,
        }
    }

    /// A unique team name for this test.
    pub fn team(&self, name: &str) -> String {
        format!("{name}-{}", self.id)
    }

    /// An identity token for `team` with `role`.
    pub fn token(&self, team: &str, role: Role) -> String {
        self.signer.mint(&format!("test@{team}"), team, role, Duration::from_secs(3600)).unwrap()
    }

    /// A fresh database URL for `backend`.
    pub async fn database_url(&mut self, backend: Backend, name: &str) -> String {
        match backend {
            Backend::Sqlite => format!("sqlite://{}", self.dir.path().join(format!("{name}.db")).display()),
            Backend::Postgres => {
                let db = format!("strata_t_{}_{name}", self.id);
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                self.postgres_dbs.push(db.clone());
                let base = postgres_admin_url();
                let root = &base[..base.rfind('/').unwrap()];
                format!("{root}/{db}")
            }
        }
    }

    /// A compute config for this env, on port 0.
    pub async fn compute_config(&mut self, backend: Backend, data_dir: &str) -> strata_compute::Config {
        strata_compute::Config {
            server: ServerSettings { grace_period_secs: 5, ..ServerSettings::local(0) },
            database: DatabaseSettings { url: self.database_url(backend, data_dir).await, max_connections: 0 },
            nats: self.nats.clone(),
            identity: IdentitySettings { public_key_pem: self.public_key_pem.clone(), ..IdentitySettings::default() },
            data_dir: self.dir.path().join(data_dir),
            ready_timeout_secs: 20,
            stop_grace_secs: 5,
            ..strata_compute::Config::default()
        }
    }

    /// A traffic config for this env: gRPC, ingress (with `workers`) and
    /// metrics on port 0, routes in SQLite.
    pub async fn traffic_config(&mut self, workers: usize) -> strata_traffic::Config {
        strata_traffic::Config {
            server: ServerSettings { grace_period_secs: 2, ..ServerSettings::local(0) },
            database: DatabaseSettings { url: self.database_url(Backend::Sqlite, "traffic").await, max_connections: 0 },
            nats: self.nats.clone(),
            identity: IdentitySettings { public_key_pem: self.public_key_pem.clone(), ..IdentitySettings::default() },
            ingress: strata_traffic::IngressConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                workers,
                ..strata_traffic::IngressConfig::default()
            },
            metrics: strata_kit::metrics::MetricsSettings::local(0),
            data_dir: self.dir.path().join("traffic"),
        }
    }

    /// A data service config for this env, on port 0, placing databases on
    /// the machine's PostgreSQL under names only this test uses.
    pub async fn data_config(&mut self, backend: Backend) -> strata_data::Config {
        strata_data::Config {
            server: ServerSettings { grace_period_secs: 5, ..ServerSettings::local(0) },
            database: DatabaseSettings { url: self.database_url(backend, "data").await, max_connections: 0 },
            nats: self.nats.clone(),
            identity: IdentitySettings { public_key_pem: self.public_key_pem.clone(), ..IdentitySettings::default() },
            data_dir: self.dir.path().join("data"),
            credentials_key: strata_data::crypto::Sealer::generate_key(),
            ident_prefix: self.db_prefix(),
            servers: vec![strata_data::ServerConfig {
                name: "local".to_owned(),
                admin_url: postgres_admin_url(),
                capacity: 50,
            }],
            reconcile_interval_secs: 2,
        }
    }

    /// A gateway config for this env, on port 0, routing to `upstreams`
    /// (concern, address), with its first admin's token kept in
    /// `<dir>/gateway-admin-token`.
    pub async fn gateway_config(
        &mut self,
        backend: Backend,
        upstreams: &[(&str, SocketAddr)],
    ) -> strata_gateway::Config {
        strata_gateway::Config {
            server: ServerSettings { grace_period_secs: 5, ..ServerSettings::local(0) },
            database: DatabaseSettings { url: self.database_url(backend, "gateway").await, max_connections: 0 },
            nats: self.nats.clone(),
            identity: IdentitySettings {
                public_key_pem: self.public_key_pem.clone(),
                signing_key_pem: self.private_key_pem.clone(),
                ..IdentitySettings::default()
            },
            data_dir: self.dir.path().join("gateway"),
            upstreams: upstreams.iter().map(|(c, a)| ((*c).to_owned(), format!("http://{a}"))).collect(),
            identity_ttl_secs: 60,
            overview_deadline_ms: 1500,
            bootstrap: strata_gateway::BootstrapSettings {
                token_file: self.dir.path().join("gateway-admin-token"),
                admin: "admin".to_owned(),
                team: self.team("admins"),
            },
        }
    }

    /// The prefix of the roles and databases this test's data service makes.
    pub fn db_prefix(&self) -> String {
        format!("d{}_", self.id)
    }

    /// NATS client for reading the stream.
    pub async fn nats(&self) -> async_nats::Client {
        async_nats::connect(&self.nats.url).await.unwrap()
    }

    /// Every event on this test's stream, in order, as (Nats-Msg-Id, JSON).
    pub async fn events(&self) -> Vec<(String, serde_json::Value)> {
        let js = async_nats::jetstream::new(self.nats().await);
        let Ok(mut stream) = js.get_stream(&self.nats.stream).await else { return Vec::new() };
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                let id = msg.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
                out.push((id, serde_json::from_slice(&msg.payload).unwrap()));
            }
        }
        out
    }

    /// Waits until an event of CloudEvents `ty` matching `pred` is on the
    /// stream, and returns it.
    pub async fn wait_event(&self, ty: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_for(&format!("event {ty}"), Duration::from_secs(30), || async {
            self.events().await.into_iter().map(|(_, e)| e).find(|e| e["type"] == ty && pred(e))
        })
        .await
    }

    /// Deletes what the env made outside its directory.
    pub async fn cleanup(self) {
        pg_drop_all(&self.db_prefix()).await;
        if let Ok(client) = async_nats::connect(&self.nats.url).await {
            let _ = async_nats::jetstream::new(client).delete_stream(&self.nats.stream).await;
        }
        if !self.postgres_dbs.is_empty() {
            let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
            for db in &self.postgres_dbs {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `check` every 50 ms until it yields a value, failing after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {}s waiting for {what}", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A compute service running in this process.
pub struct ComputeUnderTest {
    pub addr: SocketAddr,
    pub config: strata_compute::Config,
    shutdown: CancellationToken,
    running: Option<strata_compute::Running>,
}

impl Drop for ComputeUnderTest {
    /// A test that failed before `stop` would leave its app processes behind
    /// (instances outlive compute by design): kill them.
    fn drop(&mut self) {
        if self.running.is_some() {
            self.shutdown.cancel();
            if let Ok(node) = std::fs::read_to_string(self.config.data_dir.join("node-id")) {
                for (pid, _) in strata_compute::runtime::process::processes_of_node(node.trim()) {
                    strata_compute::runtime::process::kill_group(pid);
                }
            }
        }
    }
}

impl ComputeUnderTest {
    /// Starts compute and waits until its health is SERVING.
    pub async fn start(config: strata_compute::Config) -> Self {
        let shutdown = CancellationToken::new();
        let running = strata_compute::start(config.clone(), shutdown.clone()).await.unwrap();
        let addr = running.addr;
        wait_serving(addr, strata_compute::SERVICE_NAME).await;
        Self { addr, config, shutdown, running: Some(running) }
    }

    /// A client acting with `token`.
    pub async fn client(&self, token: &str) -> ComputeClient {
        let channel = Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap();
        ComputeServiceClient::with_interceptor(channel, BearerToken::new(token).unwrap())
    }

    /// A client sending no credentials at all.
    pub async fn anonymous(&self) -> ComputeServiceClient<Channel> {
        ComputeServiceClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    /// Shuts compute down gracefully (its instances are stopped).
    pub async fn stop(mut self) -> strata_compute::Config {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
        self.config.clone()
    }
}

/// A data client that sends a bearer token.
pub type DataClient = DataServiceClient<InterceptedService<Channel, BearerToken>>;

/// A data service running in this process.
pub struct DataUnderTest {
    pub addr: SocketAddr,
    pub config: strata_data::Config,
    shutdown: CancellationToken,
    running: Option<strata_data::Running>,
}

impl DataUnderTest {
    /// Starts the data service and waits until it is SERVING.
    pub async fn start(config: strata_data::Config) -> Self {
        let shutdown = CancellationToken::new();
        let running = strata_data::start(config.clone(), shutdown.clone()).await.unwrap();
        let addr = running.addr;
        wait_serving(addr, strata_data::SERVICE_NAME).await;
        Self { addr, config, shutdown, running: Some(running) }
    }

    /// A client acting with `token`.
    pub async fn client(&self, token: &str) -> DataClient {
        let channel = Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap();
        DataServiceClient::with_interceptor(channel, BearerToken::new(token).unwrap())
    }

    pub async fn stop(mut self) -> strata_data::Config {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
        self.config.clone()
    }
}

impl Drop for DataUnderTest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Databases and roles on the test server whose names start with `prefix`.
pub async fn pg_objects(prefix: &str) -> (Vec<String>, Vec<String>) {
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    let dbs =
        sqlx::query_scalar::<_, String>("SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1)")
            .bind(prefix)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    let roles =
        sqlx::query_scalar::<_, String>("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, $1)")
            .bind(prefix)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    (dbs, roles)
}

/// Drops every database and role under `prefix` (test cleanup).
pub async fn pg_drop_all(prefix: &str) {
    let (dbs, roles) = pg_objects(prefix).await;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    for db in dbs {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")))
            .execute(&mut admin)
            .await;
    }
    for role in roles {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\""))).execute(&mut admin).await;
    }
}

/// Waits until `grpc.health.v1` reports SERVING for `service` at `addr`.
pub async fn wait_serving(addr: SocketAddr, service: &str) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    wait_for("health SERVING", Duration::from_secs(30), || async {
        let channel = Channel::from_shared(format!("http://{addr}")).ok()?.connect().await.ok()?;
        let mut client = HealthClient::new(channel);
        let reply = client.check(HealthCheckRequest { service: service.to_owned() }).await.ok()?;
        (reply.into_inner().status == ServingStatus::Serving as i32).then_some(())
    })
    .await
}

/// Packs `dir` into a tar.gz in memory.
pub fn pack_dir(dir: &Path) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Uploads `archive` for `app` in 64 KiB chunks.
pub async fn upload(client: &mut ComputeClient, app: &str, archive: Vec<u8>) -> Result<pb::Upload, tonic::Status> {
    use pb::upload_source_request::Part;
    let mut messages = vec![pb::UploadSourceRequest { part: Some(Part::App(app.to_owned())) }];
    messages.extend(archive.chunks(64 * 1024).map(|c| pb::UploadSourceRequest { part: Some(Part::Chunk(c.to_vec())) }));
    Ok(client.upload_source(futures::stream::iter(messages)).await?.into_inner())
}

/// Runs a deploy (or rollback) stream to its end: the log lines and the outcome.
pub async fn finish_deploy(
    stream: tonic::Streaming<pb::DeployProgress>,
) -> Result<(Vec<String>, pb::Deployment), tonic::Status> {
    use pb::deploy_progress::Event;
    let mut stream = stream;
    let mut log = Vec::new();
    while let Some(progress) = stream.next().await {
        match progress?.event {
            Some(Event::Log(line)) => log.push(line),
            Some(Event::Deployment(deployment)) => return Ok((log, deployment)),
            _ => {}
        }
    }
    Err(tonic::Status::internal(format!("deploy stream ended without an outcome; log: {log:?}")))
}

/// Deploys an upload and runs the deploy stream to its end.
pub async fn deploy_upload(
    client: &mut ComputeClient,
    app: &str,
    upload_id: String,
    instances: u32,
) -> Result<(Vec<String>, pb::Deployment), tonic::Status> {
    let stream = client
        .deploy(pb::DeployRequest {
            app: app.to_owned(),
            source: Some(pb::deploy_request::Source::UploadId(upload_id)),
            instances,
            ..Default::default()
        })
        .await?
        .into_inner();
    finish_deploy(stream).await
}

/// Deploys `argv` as a command release and waits for the outcome.
pub async fn deploy_command(
    client: &mut ComputeClient,
    app: &str,
    argv: &[&str],
    workdir: &Path,
    instances: u32,
) -> Result<pb::Deployment> {
    let stream = client
        .deploy(pb::DeployRequest {
            app: app.to_owned(),
            source: Some(pb::deploy_request::Source::Command(pb::CommandSource {
                argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                workdir: workdir.display().to_string(),
            })),
            instances,
            ..Default::default()
        })
        .await?
        .into_inner();
    let (log, deployment) = finish_deploy(stream).await?;
    if deployment.status != pb::DeploymentStatus::Succeeded as i32 {
        bail!("deployment failed: {} (log: {log:?})", deployment.reason);
    }
    Ok(deployment)
}

/// The running instances of an app.
pub async fn running_instances(client: &mut ComputeClient, app: &str) -> Vec<pb::Instance> {
    client
        .list_instances(pb::ListInstancesRequest { app: app.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .instances
        .into_iter()
        .filter(|i| i.state == pb::InstanceState::Running as i32)
        .collect()
}

/// Waits until the app runs exactly `n` instances, all of `version` when given, and no others exist.
pub async fn wait_instances(
    client: &mut ComputeClient,
    app: &str,
    n: usize,
    version: Option<u32>,
) -> Vec<pb::Instance> {
    wait_for(&format!("{n} running instances of {app}"), Duration::from_secs(40), || {
        let mut client = client.clone();
        async move {
            let all = client
                .list_instances(pb::ListInstancesRequest { app: app.to_owned() })
                .await
                .ok()?
                .into_inner()
                .instances;
            let running: Vec<pb::Instance> = all
                .iter()
                .filter(|i| {
                    i.state == pb::InstanceState::Running as i32 && version.is_none_or(|v| i.release_version == v)
                })
                .cloned()
                .collect();
            (running.len() == n && all.len() == n).then_some(running)
        }
    })
    .await
}

/// A plain HTTP/1.0 GET to 127.0.0.1:`port`: (status, body).
pub async fn http_get(port: u32, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", u16::try_from(port)?)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).context("no status line")?.parse()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A config map from pairs.
pub fn vars(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>().into_iter().collect()
}

/// A gateway client that sends a bearer token.
pub type GatewayClient =
    strata_proto::gateway::v1::gateway_service_client::GatewayServiceClient<InterceptedService<Channel, BearerToken>>;

/// Sends `authorization` and `x-strata-team` on every call: a caller
/// acting for one of its teams.
#[derive(Clone)]
pub struct ActingFor {
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    team: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for ActingFor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.bearer.clone());
        request.metadata_mut().insert("x-strata-team", self.team.clone());
        Ok(request)
    }
}

/// A gateway client sending `token` and naming `team` in `x-strata-team`.
pub fn acting_for(
    channel: Channel,
    token: &str,
    team: &str,
) -> strata_proto::gateway::v1::gateway_service_client::GatewayServiceClient<InterceptedService<Channel, ActingFor>> {
    let acting = ActingFor { bearer: format!("Bearer {token}").parse().unwrap(), team: team.parse().unwrap() };
    strata_proto::gateway::v1::gateway_service_client::GatewayServiceClient::with_interceptor(channel, acting)
}

/// A gateway running in this process, its first admin bootstrapped.
pub struct GatewayUnderTest {
    pub addr: SocketAddr,
    pub config: strata_gateway::Config,
    /// The bootstrap admin's API token (platform admin, admin scope).
    pub admin_token: String,
    shutdown: CancellationToken,
    running: Option<strata_gateway::Running>,
}

impl GatewayUnderTest {
    /// Starts the gateway and waits until it is SERVING.
    pub async fn start(config: strata_gateway::Config) -> Self {
        let shutdown = CancellationToken::new();
        let running = strata_gateway::start(config.clone(), shutdown.clone()).await.unwrap();
        let addr = running.addr;
        wait_serving(addr, strata_gateway::SERVICE_NAME).await;
        let admin_token = std::fs::read_to_string(&config.bootstrap.token_file).unwrap().trim().to_owned();
        Self { addr, config, admin_token, shutdown, running: Some(running) }
    }

    /// A channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    /// A compute client through the gateway, calling with `token`.
    pub async fn compute(&self, token: &str) -> ComputeClient {
        ComputeServiceClient::with_interceptor(self.channel().await, BearerToken::new(token).unwrap())
    }

    /// A client of the gateway's own API, calling with `token`.
    pub async fn gateway(&self, token: &str) -> GatewayClient {
        strata_proto::gateway::v1::gateway_service_client::GatewayServiceClient::with_interceptor(
            self.channel().await,
            BearerToken::new(token).unwrap(),
        )
    }

    /// Shuts the gateway down gracefully.
    pub async fn stop(mut self) -> strata_gateway::Config {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
        self.config.clone()
    }
}

impl Drop for GatewayUnderTest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response: status, lower-cased headers, body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a problem+json error with `status` and gRPC `code`.
    pub fn problem(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.body);
        let problem = self.json();
        assert_eq!((problem["status"].as_u64(), problem["code"].as_str()), (Some(u64::from(status)), Some(code)));
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        problem
    }
}

/// One HTTP/1.1 request (connection closed after it).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Reply {
    http_with(addr, method, path, token, body, &[]).await
}

/// [`http`] with extra headers.
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
    extra: &[(&str, &str)],
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in extra {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Reply { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}
