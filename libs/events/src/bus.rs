//! The NATS connection and the `STRATA` stream.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use strata_kit::settings::NatsSettings;

use crate::{EventType, EventsError};

/// How long JetStream remembers message ids to drop re-publications.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long events stay on the stream.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A NATS connection and the stream events live on.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    settings: NatsSettings,
}

impl Bus {
    /// Connects to NATS. The client keeps reconnecting in the background, so
    /// a NATS outage delays publication but never loses an event (the outbox
    /// holds it).
    pub async fn connect(settings: &NatsSettings, name: &str) -> Result<Self, EventsError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(&settings.url)
            .await
            .map_err(|source| EventsError::Connect { url: settings.url.clone(), source })?;
        let jetstream = jetstream::new(client.clone());
        Ok(Self { client, jetstream, settings: settings.clone() })
    }

    /// Creates the stream if it is missing (subjects `<prefix>.>`, with a
    /// duplicate window), and returns it.
    pub async fn ensure_stream(&self) -> Result<stream::Stream, EventsError> {
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: self.settings.stream.clone(),
                subjects: vec![format!("{}.>", self.settings.subject_prefix)],
                duplicate_window: DUPLICATE_WINDOW,
                max_age: MAX_AGE,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| EventsError::Stream { stream: self.settings.stream.clone(), message: e.to_string() })
    }

    /// The subject events of type `ty` are published on.
    pub fn subject(&self, ty: EventType) -> String {
        ty.subject(&self.settings.subject_prefix)
    }

    /// A subject filter under the prefix, e.g. `compute.instance.*`.
    pub fn filter(&self, pattern: &str) -> String {
        format!("{}.{pattern}", self.settings.subject_prefix)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }
}

impl Bus {
    /// Reports SERVING on `health` once NATS answers and the stream exists,
    /// retrying with backoff until then (or until `shutdown`). Every service
    /// runs this: health means the database, NATS and the stream are ready.
    pub async fn report_ready(self, health: strata_kit::server::Health, shutdown: tokio_util::sync::CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.ensure_stream().await {
                Ok(_) => {
                    health.set_serving().await;
                    tracing::info!("ready: database, NATS and the stream are up");
                    return;
                }
                Err(error) => tracing::warn!(%error, "waiting for NATS and the stream"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
