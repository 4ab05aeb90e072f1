//! Running one check against one target: an HTTP request, a TCP connect or a
//! `grpc.health.v1` call, each within the check's timeout. HTTP goes through
//! one shared keep-alive client, so thousands of checks reuse connections
//! instead of opening one per run.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::model::{CheckDef, Kind, Target};

/// How much of an HTTP body is read to look for `body_contains`.
const BODY_LIMIT: usize = 64 * 1024;

/// The shared HTTP client.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A keep-alive HTTP/1 client for many hosts.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub latency_ms: u32,
    /// Why it failed; empty when it passed.
    pub error: String,
}

/// Runs checks.
#[derive(Clone)]
pub struct Prober {
    http: HttpClient,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    /// A prober with one shared keep-alive HTTP client.
    pub fn new() -> Self {
        Self { http: http_client(Duration::from_secs(5)) }
    }

    /// Runs `check` against `target` once.
    pub async fn run(&self, check: &CheckDef, target: &Target) -> Outcome {
        let started = Instant::now();
        let outcome = tokio::time::timeout(check.timeout, async {
            match check.record.kind {
                Kind::Http => self.http(check, target).await,
                Kind::Tcp => tcp(target).await,
                Kind::Grpc => grpc(check, target).await,
            }
        })
        .await;
        let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        match outcome {
            Ok(Ok(())) => Outcome { ok: true, latency_ms, error: String::new() },
            Ok(Err(error)) => Outcome { ok: false, latency_ms, error },
            Err(_) => {
                Outcome { ok: false, latency_ms, error: format!("timed out after {} ms", check.timeout.as_millis()) }
            }
        }
    }

    async fn http(&self, check: &CheckDef, target: &Target) -> Result<(), String> {
        let spec = &check.record.spec;
        let uri = if target.key.is_empty() && !check.record.url.is_empty() {
            check.record.url.clone()
        } else {
            format!("http://{}:{}{}", target.host, target.port, spec.path)
        };
        let method =
            http::Method::from_bytes(spec.method.as_bytes()).map_err(|_| format!("bad method {}", spec.method))?;
        let request = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::USER_AGENT, "strata-observe")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request to {uri}: {e}"))?;
        let response = self.http.request(request).await.map_err(|e| describe_client_error(&e))?;
        let status = response.status().as_u16();
        // Reading the body to its end lets the connection be reused.
        let body = Limited::new(response.into_body(), BODY_LIMIT).collect().await;
        if status < spec.status_min || status > spec.status_max {
            return Err(format!("status {status} not in {}-{}", spec.status_min, spec.status_max));
        }
        if !spec.body_contains.is_empty() {
            let body = body.map_err(|e| format!("reading the body: {e}"))?.to_bytes();
            let haystack = String::from_utf8_lossy(&body);
            if !haystack.contains(&spec.body_contains) {
                return Err(format!("body does not contain {:?}", spec.body_contains));
            }
        }
        Ok(())
    }
}

fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

async fn tcp(target: &Target) -> Result<(), String> {
    tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map(drop)
        .map_err(|e| format!("connect to {}:{}: {e}", target.host, target.port))
}

async fn grpc(check: &CheckDef, target: &Target) -> Result<(), String> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}:{}", target.host, target.port))
        .map_err(|e| e.to_string())?
        .connect_timeout(check.timeout)
        .timeout(check.timeout);
    let channel = endpoint.connect().await.map_err(|e| format!("connect to {}:{}: {e}", target.host, target.port))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: check.record.spec.grpc_service.clone() })
        .await
        .map_err(|status| format!("health check: {}: {}", status.code(), status.message()))?;
    let status = reply.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        let name = ServingStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
        Err(format!("health is {name}"))
    }
}
