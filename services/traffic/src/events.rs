//! The events traffic publishes and the ones it consumes. Payloads are in
//! `proto/strata/traffic/v1/events.proto` and compute's events.proto.

use strata_events::EventType;

pub const ROUTE_CREATED: EventType = EventType::new("traffic", "route", "created");
pub const ROUTE_UPDATED: EventType = EventType::new("traffic", "route", "updated");
pub const ROUTE_DELETED: EventType = EventType::new("traffic", "route", "deleted");

/// Compute's facts traffic keeps its own copy of.
pub const APP_CREATED: EventType = EventType::new("compute", "app", "created");
pub const APP_DELETED: EventType = EventType::new("compute", "app", "deleted");
pub const INSTANCE_STARTED: EventType = EventType::new("compute", "instance", "started");
pub const INSTANCE_STOPPING: EventType = EventType::new("compute", "instance", "stopping");
pub const INSTANCE_STOPPED: EventType = EventType::new("compute", "instance", "stopped");
pub const INSTANCE_CRASHED: EventType = EventType::new("compute", "instance", "crashed");
/// observe's check results: a failing instance is taken out of rotation.
pub const CHECK_FAILED: EventType = EventType::new("observe", "check", "failed");
pub const CHECK_RECOVERED: EventType = EventType::new("observe", "check", "recovered");

/// The durable consumer of compute's app and instance events.
pub const COMPUTE_CONSUMER: &str = "traffic-compute-events";
/// The durable consumer of observe's check events.
pub const CHECKS_CONSUMER: &str = "traffic-check-events";
