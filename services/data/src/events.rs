//! The events data publishes and the ones it consumes. Payloads are in
//! `proto/strata/data/v1/events.proto`; none carries a secret.

use strata_events::EventType;

pub const DATABASE_PROVISIONED: EventType = EventType::new("data", "database", "provisioned");
pub const DATABASE_DELETED: EventType = EventType::new("data", "database", "deleted");
pub const BINDING_CREATED: EventType = EventType::new("data", "binding", "created");
pub const BINDING_DELETED: EventType = EventType::new("data", "binding", "deleted");
pub const CREDENTIALS_ROTATED: EventType = EventType::new("data", "credentials", "rotated");

/// Compute's app deletions: their bindings go too.
pub const COMPUTE_APP_DELETED: EventType = EventType::new("compute", "app", "deleted");
/// The durable consumer of compute's app events.
pub const APP_EVENTS_CONSUMER: &str = "data-app-events";
