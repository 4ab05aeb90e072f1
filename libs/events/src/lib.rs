//! Strata's events: CloudEvents 1.0 on the `STRATA` JetStream stream.
//!
//! - [`envelope`]: the CloudEvents envelope and event types;
//! - [`bus`]: the NATS connection and the stream (created if missing);
//! - [`outbox`]: state change and event in one transaction, and the relay that
//!   publishes them (woken on commit, polling only as a fallback);
//! - [`consumer`]: durable pull consumers whose handlers run in a transaction
//!   with an inbox row, so each event takes effect exactly once.

pub mod bus;
pub mod consumer;
pub mod envelope;
pub mod outbox;

pub use bus::Bus;
pub use consumer::{ConsumerSpec, HandleError, Handler};
pub use envelope::{CloudEvent, EventType};
pub use outbox::{EventTx, Outbox};

/// Errors of the events machinery.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("JetStream consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event payload: {0}")]
    Payload(#[from] serde_json::Error),
}

impl From<EventsError> for strata_kit::ApiError {
    fn from(error: EventsError) -> Self {
        match error {
            EventsError::Database(e) => e.into(),
            other => strata_kit::ApiError::Internal(other.to_string()),
        }
    }
}

/// Opens a service's database at `url` and applies the events library's
/// migrations and then the service's own (`sqlite` or `postgres`, by backend).
pub async fn open_db(
    url: &str,
    max_connections: u32,
    sqlite: sqlx::migrate::Migrator,
    postgres: sqlx::migrate::Migrator,
) -> Result<strata_kit::Db, strata_kit::store::StoreError> {
    let db = strata_kit::Db::connect(url, max_connections).await?;
    db.migrate(migrations(&db)).await?;
    db.migrate(db.pick(sqlite, postgres)).await?;
    Ok(db)
}

/// The migrations of the outbox and inbox tables, for SQLite and Postgres;
/// run them beside the service's own with [`strata_kit::Db::migrate`].
pub fn migrations(db: &strata_kit::Db) -> sqlx::migrate::Migrator {
    db.pick(sqlx::migrate!("./migrations/sqlite"), sqlx::migrate!("./migrations/postgres"))
}
