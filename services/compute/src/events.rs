//! The events compute publishes (payloads in `proto/strata/compute/v1/events.proto`).
//! Every event's CloudEvents `subject` is the app id.

use strata_events::EventType;

pub const APP_CREATED: EventType = EventType::new("compute", "app", "created");
pub const APP_DELETED: EventType = EventType::new("compute", "app", "deleted");
pub const DEPLOYMENT_STARTED: EventType = EventType::new("compute", "deployment", "started");
pub const DEPLOYMENT_SUCCEEDED: EventType = EventType::new("compute", "deployment", "succeeded");
pub const DEPLOYMENT_FAILED: EventType = EventType::new("compute", "deployment", "failed");
pub const INSTANCE_STARTED: EventType = EventType::new("compute", "instance", "started");
pub const INSTANCE_STOPPING: EventType = EventType::new("compute", "instance", "stopping");
pub const INSTANCE_STOPPED: EventType = EventType::new("compute", "instance", "stopped");
pub const INSTANCE_CRASHED: EventType = EventType::new("compute", "instance", "crashed");

/// Data's events compute consumes (bindings become `DATABASE_URL`).
pub const DATA_BINDING_CREATED: EventType = EventType::new("data", "binding", "created");
pub const DATA_BINDING_DELETED: EventType = EventType::new("data", "binding", "deleted");
pub const DATA_CREDENTIALS_ROTATED: EventType = EventType::new("data", "credentials", "rotated");
/// The durable consumer of data's events, and its filter.
pub const DATA_EVENTS_CONSUMER: &str = "compute-data-events";
pub const DATA_EVENTS_FILTER: &str = "data.>";
