//! The gRPC server every service runs: its own API plus `grpc.health.v1` and
//! server reflection (v1 and v1alpha, so grpcurl and Python grpcio both work).
//!
//! Lifecycle: bind (port 0 allowed) → serve with health NOT_SERVING → the
//! service calls [`Health::set_serving`] once its database, NATS and stream are
//! ready → on shutdown, NOT_SERVING, stop accepting, let in-flight calls finish
//! within the grace period, then close what is left.

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::settings::ServerSettings;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The service's health as `grpc.health.v1` reports it, for the whole server
/// (`""`) and for the service's own name.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("service", &self.service).finish()
    }
}

impl Health {
    /// Reports SERVING: call once every dependency is ready.
    pub async fn set_serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// Reports NOT_SERVING (starting up or draining).
    pub async fn set_not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(self.service, status).await;
    }
}

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    health: Health,
    health_service: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    grace: Duration,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer").field("addr", &self.listener.local_addr().ok()).finish()
    }
}

impl GrpcServer {
    /// Binds the listener and sets health NOT_SERVING for `service` (the
    /// fully-qualified gRPC service name, e.g. `strata.compute.v1.ComputeService`).
    pub async fn bind(settings: &ServerSettings, service: &'static str) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServeError::Bind { addr: settings.listen, source })?;
        let reporter = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let health = Health { reporter, service };
        // tonic-health registers "" as SERVING at once; we are not ready yet.
        health.set_not_serving().await;
        Ok(Self { listener, health, health_service, grace: settings.grace_period() })
    }

    /// Where the server listens (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// A handle to flip the health status.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// `routes` plus health and reflection, and the listener, for a service
    /// that runs its own accept loop (the gateway, which serves HTTP/2
    /// itself): it keeps to the same lifecycle (NOT_SERVING once `shutdown`
    /// fires, drain within [`Parts::grace`]).
    pub fn into_parts(self, routes: Routes) -> Result<Parts, ServeError> {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let routes = routes.add_service(self.health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
        Ok(Parts { listener: self.listener, routes, health: self.health, grace: self.grace })
    }

    /// Serves `routes` plus health and reflection until `shutdown` fires, then
    /// drains for at most the grace period.
    pub async fn serve(self, routes: Routes, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Parts { listener, routes, health, grace } = self.into_parts(routes)?;
        let stop_accepting = shutdown.clone();
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = tonic::transport::Server::builder()
            .add_routes(routes)
            // tonic's own `tcp_nodelay` does not apply to a listener passed
            // in: without this every accepted connection runs with Nagle's
            // algorithm, and a small answer written while an earlier one is
            // unacknowledged waits for the ACK.
            .serve_with_incoming_shutdown(incoming, async move {
                stop_accepting.cancelled().await;
                health.set_not_serving().await;
            });
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over, closing the calls still open");
            }
        }
        Ok(())
    }
}

/// What [`GrpcServer::into_parts`] hands over.
#[derive(Debug)]
pub struct Parts {
    pub listener: TcpListener,
    /// The service's routes with health and reflection added.
    pub routes: Routes,
    pub health: Health,
    /// How long in-flight calls may take to finish once shutdown fires.
    pub grace: Duration,
}

/// A started service: where it listens, and the task that runs it until its
/// shutdown token fires and it has drained.
#[derive(Debug)]
pub struct Running<E> {
    /// The gRPC endpoint's address (the real port when bound to port 0).
    pub addr: SocketAddr,
    task: JoinHandle<Result<(), E>>,
}

impl<E: From<tokio::task::JoinError>> Running<E> {
    pub fn new(addr: SocketAddr, task: JoinHandle<Result<(), E>>) -> Self {
        Self { addr, task }
    }

    /// Waits until the service has shut down.
    pub async fn wait(self) -> Result<(), E> {
        self.task.await?
    }
}
