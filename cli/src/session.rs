//! Where the CLI finds the platform and its credential: flags and
//! environment first, then what `strata login` stored in the user's config
//! directory, then (for a local platform) `.strata/admin-token` left by
//! `strata up` in the current directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_kit::identity::BearerToken;
use strata_proto::{
    compute::v1::compute_service_client::ComputeServiceClient, data::v1::data_service_client::DataServiceClient,
    gateway::v1::gateway_service_client::GatewayServiceClient,
};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{Global, output::NotSignedIn};

/// The default gateway of a local platform.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8700";

/// What `strata login` stores.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    endpoint: Option<String>,
    token: Option<String>,
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("STRATA_CONFIG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::config_dir().context("no config directory: set STRATA_CONFIG_DIR")?.join("strata"),
    };
    Ok(dir.join("credentials.json"))
}

fn stored() -> Stored {
    credentials_path()
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The endpoint to talk to.
pub fn endpoint(global: &Global) -> String {
    global.endpoint.clone().or_else(|| stored().endpoint).unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
}

fn token(global: &Global) -> Result<String, NotSignedIn> {
    if let Some(token) = global.token.clone().filter(|t| !t.is_empty()) {
        return Ok(token);
    }
    if let Some(token) = stored().token {
        return Ok(token);
    }
    std::fs::read_to_string(Path::new(".strata").join("admin-token"))
        .map(|t| t.trim().to_owned())
        .map_err(|_| NotSignedIn)
}

/// What every call carries: the API token, and for a platform admin acting
/// for a team (`--team`), that team.
#[derive(Clone, Debug)]
pub struct Credentials {
    bearer: BearerToken,
    team: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let mut request = self.bearer.call(request)?;
        if let Some(team) = &self.team {
            request.metadata_mut().insert("x-strata-team", team.clone());
        }
        Ok(request)
    }
}

/// A compute client for the signed-in caller.
pub type Compute = ComputeServiceClient<InterceptedService<Channel, Credentials>>;
/// A data client for the signed-in caller.
pub type Data = DataServiceClient<InterceptedService<Channel, Credentials>>;

/// A client of the gateway's own API (teams, tokens) for the signed-in caller.
pub type Gateway = GatewayServiceClient<InterceptedService<Channel, Credentials>>;

/// A channel to the gateway and the caller's credential.
async fn connect(global: &Global) -> anyhow::Result<(Channel, Credentials)> {
    let token = token(global)?;
    let endpoint = endpoint(global);
    let channel = Channel::from_shared(endpoint.clone())
        .with_context(|| format!("invalid endpoint {endpoint:?}"))?
        .connect()
        .await?;
    let team = match global.team.as_deref().filter(|t| !t.is_empty()) {
        Some(team) => Some(team.parse().with_context(|| format!("invalid team name {team:?}"))?),
        None => None,
    };
    Ok((channel, Credentials { bearer: BearerToken::new(&token)?, team }))
}

/// Connects to compute (through the gateway) as the signed-in caller.
pub async fn compute(global: &Global) -> anyhow::Result<Compute> {
    let (channel, bearer) = connect(global).await?;
    Ok(ComputeServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(16 * 1024 * 1024))
}

/// Connects to data (through the gateway) as the signed-in caller.
pub async fn data(global: &Global) -> anyhow::Result<Data> {
    let (channel, bearer) = connect(global).await?;
    Ok(DataServiceClient::with_interceptor(channel, bearer))
}

/// Connects to the gateway's own API as the signed-in caller.
pub async fn gateway(global: &Global) -> anyhow::Result<Gateway> {
    let (channel, bearer) = connect(global).await?;
    Ok(GatewayServiceClient::with_interceptor(channel, bearer))
}

/// An observe client (checks, alerts, the event log) for the signed-in caller.
pub type Observe =
    strata_proto::observe::v1::observe_service_client::ObserveServiceClient<InterceptedService<Channel, Credentials>>;

/// Connects to observe (through the gateway) as the signed-in caller.
pub async fn observe(global: &Global) -> anyhow::Result<Observe> {
    let (channel, bearer) = connect(global).await?;
    Ok(strata_proto::observe::v1::observe_service_client::ObserveServiceClient::with_interceptor(channel, bearer))
}

/// A traffic client (routes) through the gateway.
pub type Traffic =
    strata_proto::traffic::v1::traffic_service_client::TrafficServiceClient<InterceptedService<Channel, Credentials>>;

/// Connects to traffic (through the gateway) as the signed-in caller.
pub async fn traffic(global: &Global) -> anyhow::Result<Traffic> {
    let (channel, bearer) = connect(global).await?;
    Ok(strata_proto::traffic::v1::traffic_service_client::TrafficServiceClient::with_interceptor(channel, bearer))
}

/// `strata login`: checks the credential against the platform, then stores it.
pub async fn login(global: &Global, token: &str) -> anyhow::Result<()> {
    let endpoint = endpoint(global);
    let check = Global { token: Some(token.to_owned()), endpoint: Some(endpoint.clone()), team: None, json: false };
    let me = gateway(&check).await?.who_am_i(strata_proto::gateway::v1::WhoAmIRequest {}).await?.into_inner();
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let stored = Stored { endpoint: Some(endpoint.clone()), token: Some(token.to_owned()) };
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)?;
    println!(
        "Signed in to {endpoint} as {} (team {}, role {}); the credential is stored in {}",
        me.subject,
        me.team,
        me.role,
        path.display()
    );
    Ok(())
}

/// `strata logout`.
pub fn logout() -> anyhow::Result<()> {
    let path = credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => println!("Signed out ({} removed)", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("Not signed in"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents)
}

/// `strata admin keygen`.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let (private, public) = strata_kit::identity::generate_keypair()?;
    write_private(&out.join("signing.pem"), private.as_bytes())?;
    std::fs::write(out.join("public.pem"), public)?;
    println!("Wrote {0}/signing.pem (keep it secret) and {0}/public.pem (give it to the services)", out.display());
    Ok(())
}
