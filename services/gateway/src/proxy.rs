//! The gRPC pass-through: each call goes, unary or streaming, to the service
//! owning its package (`/strata.<concern>.v1.<Service>/<Method>`), with the
//! identity token the authentication layer put in place of the API token.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{body::Body, response::IntoResponse};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

/// Connections kept to each upstream.
const CONNECTIONS: usize = 4;

/// The channels to each concern's service, by concern name.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    channels: BTreeMap<String, Channel>,
}

/// An upstream URL that is not one.
#[derive(Debug, thiserror::Error)]
#[error("upstream {concern}: invalid URL {url:?}")]
pub struct InvalidUpstream {
    pub concern: String,
    pub url: String,
}

impl Upstreams {
    /// Lazy channels to `urls` (concern → URL): an upstream that is down now
    /// is tried again on each call.
    pub fn new(urls: &BTreeMap<String, String>) -> Result<Self, InvalidUpstream> {
        let mut channels = BTreeMap::new();
        for (concern, url) in urls {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|_| InvalidUpstream { concern: concern.clone(), url: url.clone() })?
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(30));
            // Several connections per upstream: one HTTP/2 connection is
            // driven by one task, which caps a busy gateway at one core.
            let (channel, sender) = Channel::balance_channel::<usize>(CONNECTIONS);
            for key in 0..CONNECTIONS {
                let _ = sender.try_send(tonic::transport::channel::Change::Insert(key, endpoint.clone()));
            }
            channels.insert(concern.clone(), channel);
        }
        Ok(Self { channels })
    }

    /// The channel to `concern`'s service.
    pub fn get(&self, concern: &str) -> Option<Channel> {
        self.channels.get(concern).cloned()
    }

    /// The concerns configured, with their channels.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Channel)> {
        self.channels.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The concern a gRPC path belongs to: `/strata.compute.v1.X/Y` → `compute`.
pub fn concern_of(path: &str) -> Option<&str> {
    let service = path.strip_prefix('/')?.split('/').next()?;
    let mut parts = service.split('.');
    (parts.next()? == "strata").then_some(())?;
    parts.next()
}

/// A tower service forwarding each request to its concern's channel.
pub fn service(
    upstreams: Upstreams,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: axum::extract::Request| {
        let upstream = concern_of(request.uri().path()).and_then(|c| upstreams.get(c));
        async move {
            let Some(channel) = upstream else {
                let path = request.uri().path();
                return Ok::<_, Infallible>(if crate::auth::is_grpc(request.headers()) {
                    tonic::Status::unimplemented(format!("no Strata service serves {path}")).into_http::<Body>()
                } else {
                    crate::problem::Problem::new(
                        axum::http::StatusCode::NOT_FOUND,
                        tonic::Code::NotFound,
                        format!("no such resource: {} {path} (see /openapi.json)", request.method()),
                    )
                    .into_response()
                });
            };
            let request = request.map(tonic::body::Body::new);
            Ok(match channel.oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(error) => {
                    tracing::warn!(%error, "upstream unavailable");
                    tonic::Status::unavailable(format!("the service behind this call is unavailable: {error}"))
                        .into_http::<Body>()
                }
            })
        }
    })
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
