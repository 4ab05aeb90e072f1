//! The Strata service kit: what every Strata service is built from, so that a
//! service's `main.rs` stays a few lines and every service behaves alike.
//!
//! - [`settings`]: typed config (defaults → optional TOML file → environment);
//! - [`telemetry`]: tracing, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - [`server`]: a tonic server with `grpc.health.v1`, reflection and graceful drain;
//! - [`error`]: the error domains return, and its gRPC status;
//! - [`metrics`]: a Prometheus registry served as `GET /metrics` on its own port;
//! - [`identity`]: signed identity tokens (EdDSA) and the [`identity::Identity`] handlers see;
//! - [`net`]: a connection re-read from its first bytes, for servers that sniff the protocol;
//! - [`store`]: the sqlx pool over SQLite (embedded default) or Postgres, with migrations;
//! - [`shutdown`]: one cancellation token fed by SIGTERM/SIGINT.

pub mod error;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use error::ApiError;
pub use identity::{Identity, Role};
pub use store::Db;
pub use tokio_util::sync::CancellationToken;
