//! The gateway: the one endpoint clients need. It routes each gRPC call by
//! its path (`/strata.<concern>.v1.<Service>/<Method>`) to the service that
//! owns that concern, unary and streaming alike, and serves health and
//! reflection for the whole platform. Authentication stays with the services:
//! the caller's `authorization` header travels with the call.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::body::Body;
use serde::{Deserialize, Serialize};
use strata_kit::{server::GrpcServer, settings::ServerSettings};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

/// The name the gateway's health reports under.
pub const SERVICE_NAME: &str = "strata.gateway.v1.Gateway";
/// Default port of the gateway.
pub const DEFAULT_PORT: u16 = 8700;

/// Gateway configuration (`STRATA_GATEWAY__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerSettings,
    /// Where each concern's gRPC API is: concern name (`compute`, ...) → URL.
    pub upstreams: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::local(DEFAULT_PORT),
            upstreams: BTreeMap::from([("compute".to_owned(), "http://127.0.0.1:8701".to_owned())]),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("upstream {concern}: invalid URL {url:?}")]
    Upstream { concern: String, url: String },
    #[error(transparent)]
    Serve(#[from] strata_kit::server::ServeError),
    #[error("the gateway's main task failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// The concern a gRPC path belongs to: `/strata.compute.v1.X/Y` → `compute`.
pub fn concern_of(path: &str) -> Option<&str> {
    let service = path.strip_prefix('/')?.split('/').next()?;
    let mut parts = service.split('.');
    (parts.next()? == "strata").then_some(())?;
    parts.next()
}

/// A gRPC error response, as a service would have sent it.
fn grpc_error(status: tonic::Status) -> axum::response::Response {
    status.into_http::<Body>()
}

/// A started gateway.
pub type Running = strata_kit::server::Running<StartError>;

/// Runs the gateway until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(config, shutdown).await?.wait().await
}

/// Binds and starts routing.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let mut upstreams = BTreeMap::new();
    for (concern, url) in &config.upstreams {
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| StartError::Upstream { concern: concern.clone(), url: url.clone() })?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(30));
        // Lazy: an upstream that is down now is tried again on each call.
        upstreams.insert(concern.clone(), endpoint.connect_lazy());
    }
    let proxy = tower::service_fn(move |request: axum::extract::Request| {
        let upstream: Option<Channel> = concern_of(request.uri().path()).and_then(|c| upstreams.get(c)).cloned();
        async move {
            let Some(channel) = upstream else {
                return Ok::<_, Infallible>(grpc_error(tonic::Status::unimplemented(format!(
                    "no Strata service serves {}",
                    request.uri().path()
                ))));
            };
            let request = request.map(tonic::body::Body::new);
            Ok(match channel.oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(error) => {
                    tracing::warn!(%error, "upstream unavailable");
                    grpc_error(tonic::Status::unavailable(format!(
                        "the service behind this call is unavailable: {error}"
                    )))
                }
            })
        }
    });
    let router = axum::Router::new().fallback_service(proxy);

    let server = GrpcServer::bind(&config.server, SERVICE_NAME).await?;
    let addr = server.local_addr();
    server.health().set_serving().await;
    tracing::info!(%addr, upstreams = ?config.upstreams, "gateway listening");
    let task = tokio::spawn(async move { Ok(server.serve(tonic::service::Routes::from(router), shutdown).await?) });
    Ok(Running::new(addr, task))
}

#[cfg(test)]
mod tests {
    use super::concern_of;

    #[test]
    fn calls_are_routed_by_their_package() {
        assert_eq!(concern_of("/strata.compute.v1.ComputeService/Deploy"), Some("compute"));
        assert_eq!(concern_of("/strata.traffic.v1.TrafficService/ListRoutes"), Some("traffic"));
        assert_eq!(concern_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(concern_of("/other.compute.v1.X/Y"), None);
        assert_eq!(concern_of(""), None);
    }
}
