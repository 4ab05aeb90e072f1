//! What observe's tests share: observe running in process on port 0, a
//! fixed-response HTTP server, and a webhook receiver that keeps what it got.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use strata_integration_tests::{Backend, TestEnv, wait_serving};
use strata_kit::{
    identity::BearerToken,
    metrics::MetricsSettings,
    settings::{DatabaseSettings, IdentitySettings, ServerSettings},
};
use strata_proto::observe::v1::{self as pb, observe_service_client::ObserveServiceClient};
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// An observe client that sends a bearer token.
pub type ObserveClient = ObserveServiceClient<InterceptedService<Channel, BearerToken>>;

/// An observe config for this env, on port 0 (gRPC and metrics).
pub async fn observe_config(env: &mut TestEnv, backend: Backend) -> strata_observe::Config {
    strata_observe::Config {
        server: ServerSettings { grace_period_secs: 5, ..ServerSettings::local(0) },
        database: DatabaseSettings { url: env.database_url(backend, "observe").await, max_connections: 0 },
        nats: env.nats.clone(),
        identity: IdentitySettings { public_key_pem: env.public_key_pem.clone(), ..IdentitySettings::default() },
        metrics: MetricsSettings::local(0),
        data_dir: env.dir.path().join("observe"),
        default_check_interval_secs: 1,
        rollup_interval_secs: 1,
        ..strata_observe::Config::default()
    }
}

/// Observe running in this process.
pub struct ObserveUnderTest {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    shutdown: CancellationToken,
    running: Option<strata_observe::Running>,
}

impl ObserveUnderTest {
    /// Starts observe and waits until it is SERVING.
    pub async fn start(config: strata_observe::Config) -> Self {
        // `RUST_LOG=warn` shows the service's logs beside a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let shutdown = CancellationToken::new();
        let running = strata_observe::start(config, shutdown.clone()).await.unwrap();
        let (addr, metrics_addr) = (running.addr(), running.metrics_addr);
        wait_serving(addr, strata_observe::SERVICE_NAME).await;
        Self { addr, metrics_addr, shutdown, running: Some(running) }
    }

    /// A client acting with `token`.
    pub async fn client(&self, token: &str) -> ObserveClient {
        let channel = Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap();
        ObserveServiceClient::with_interceptor(channel, BearerToken::new(token).unwrap())
    }

    /// Shuts observe down and waits until it has drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
    }
}

impl Drop for ObserveUnderTest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves HTTP on a free port with `handler` until dropped.
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HttpServer {
    pub async fn start<F>(handler: F) -> Self
    where
        F: Fn(http::request::Parts, Bytes) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let handler = Arc::new(handler);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            Ok::<_, Infallible>(handler(parts, body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, stop }
    }

    /// Answers every request 200 "ok".
    pub async fn fixed() -> Self {
        Self::start(|_, _| Response::new(Full::new(Bytes::from_static(b"ok")))).await
    }
}

/// A webhook receiver: keeps every POST (headers and body) it gets.
pub struct WebhookReceiver {
    pub server: HttpServer,
    pub received: Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let keep = received.clone();
        let server = HttpServer::start(move |parts, body| {
            keep.lock().unwrap().push((parts.headers, body));
            Response::new(Full::new(Bytes::new()))
        })
        .await;
        Self { server, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/strata", self.server.addr)
    }

    /// The JSON bodies received, after checking each one's signature with `secret`.
    pub fn verified(&self, secret: &str) -> Vec<serde_json::Value> {
        use hmac::{Hmac, Mac};
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, body)| {
                let signature = headers.get("x-strata-signature").expect("signed").to_str().unwrap().to_owned();
                let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
                let bytes: Vec<u8> =
                    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(body);
                mac.verify_slice(&bytes).expect("the signature is the HMAC-SHA256 of the body");
                assert!(headers.get("x-strata-delivery").is_some());
                serde_json::from_slice(body).unwrap()
            })
            .collect()
    }
}

/// The check named `name`, as the team sees it.
pub async fn get_check(client: &mut ObserveClient, name: &str) -> Option<pb::Check> {
    client.get_check(pb::GetCheckRequest { name: name.to_owned() }).await.ok().map(|r| r.into_inner())
}

/// Waits until the check's overall state is `state`.
pub async fn wait_check_state(client: &mut ObserveClient, name: &str, state: pb::TargetState) -> pb::Check {
    strata_integration_tests::wait_for(
        &format!("check {name} {}", state.as_str_name()),
        std::time::Duration::from_secs(40),
        || {
            let mut client = client.clone();
            async move { get_check(&mut client, name).await.filter(|c| c.state == state as i32) }
        },
    )
    .await
}
