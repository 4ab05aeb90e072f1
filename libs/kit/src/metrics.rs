//! Prometheus metrics: every service serves its `prometheus_client` registry
//! as `GET /metrics` (OpenMetrics text) on a port of its own, apart from the
//! gRPC port, so a scraper needs no credentials and never competes with API
//! calls.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use prometheus_client::{metrics::counter::Counter, registry::Registry};
//! use strata_kit::metrics::{MetricsSettings, serve};
//!
//! let mut registry = Registry::with_prefix("strata_example");
//! let requests: Counter = Counter::default();
//! registry.register("requests", "Requests handled", requests.clone());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let endpoint = serve(&MetricsSettings::local(0), Arc::new(registry), shutdown).await?;
//! println!("scrape http://{}/metrics", endpoint.addr);
//! # Ok(()) }
//! ```
//!
//! Metrics live in the registered handles (`Counter`, `Gauge`, `Family`, ...),
//! which are shared with the registry, so the registry itself is built once
//! and then served read-only behind an [`Arc`]; label sets of a `Family` can
//! still come and go at run time.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format `prometheus_client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a service serves its metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    /// Address of the `/metrics` endpoint (port 0 picks a free port).
    pub listen: SocketAddr,
}

impl MetricsSettings {
    /// Metrics on `127.0.0.1:port`.
    pub fn local(port: u16) -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self::local(0)
    }
}

/// A running metrics endpoint.
#[derive(Debug)]
pub struct MetricsEndpoint {
    /// Where it listens (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// Ends once the shutdown token fired and the accept loop stopped.
    pub task: JoinHandle<()>,
}

/// Binds `settings.listen` and serves `registry` as `GET /metrics` until
/// `shutdown`. Other paths answer 404, other methods 405.
pub async fn serve(
    settings: &MetricsSettings,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<MetricsEndpoint> {
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(%error, "metrics endpoint cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = registry.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(respond(&registry, &request)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "metrics connection ended");
                        }
                    }
                    () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
                }
            });
        }
        connections.close();
        // Scrapes are short; a scraper that hangs does not hold up shutdown.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), connections.wait()).await;
    });
    Ok(MetricsEndpoint { addr, task })
}

fn respond(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "metrics are at /metrics\n".to_owned());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_owned());
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Err(error) => {
            tracing::error!(%error, "metrics could not be encoded");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "metrics could not be encoded\n".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::{counter::Counter, family::Family};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn serves_the_registry_on_a_free_port_and_stops() -> Result<(), Box<dyn std::error::Error>> {
        let mut registry = Registry::with_prefix("strata_test");
        let hits: Family<Vec<(String, String)>, Counter> = Family::default();
        registry.register("hits", "Hits per app", hits.clone());
        hits.get_or_create(&vec![("app".to_owned(), "web".to_owned())]).inc_by(3);
        let shutdown = CancellationToken::new();
        let endpoint = serve(&MetricsSettings::local(0), Arc::new(registry), shutdown.clone()).await?;
        assert_ne!(endpoint.addr.port(), 0);

        // Label sets added after the registry is served show up too.
        hits.get_or_create(&vec![("app".to_owned(), "api".to_owned())]).inc();
        let reply = get(endpoint.addr, "/metrics").await?;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("application/openmetrics-text"), "{reply}");
        assert!(reply.contains("strata_test_hits_total{app=\"web\"} 3"), "{reply}");
        assert!(reply.contains("strata_test_hits_total{app=\"api\"} 1"), "{reply}");
        assert!(get(endpoint.addr, "/other").await?.starts_with("HTTP/1.1 404"));

        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), endpoint.task).await??;
        assert!(tokio::net::TcpStream::connect(endpoint.addr).await.is_err(), "stopped listening");
        Ok(())
    }
}
