//! The events observe publishes and the ones it consumes. Payloads are in
//! `proto/strata/observe/v1/events.proto`.

use strata_events::EventType;

/// A target failed its check (traffic ejects the endpoint).
pub const CHECK_FAILED: EventType = EventType::new("observe", "check", "failed");
/// A failed target passes again (traffic restores the endpoint).
pub const CHECK_RECOVERED: EventType = EventType::new("observe", "check", "recovered");
/// An alert rule matched.
pub const ALERT_FIRED: EventType = EventType::new("observe", "alert", "fired");
/// What fired an alert is over.
pub const ALERT_RESOLVED: EventType = EventType::new("observe", "alert", "resolved");

/// Compute's events observe acts on.
pub const INSTANCE_STARTED: EventType = EventType::new("compute", "instance", "started");
/// An instance is about to be stopped on purpose: its target goes now, so
/// its shutdown is not taken for a failure.
pub const INSTANCE_STOPPING: EventType = EventType::new("compute", "instance", "stopping");
/// An instance stopped on purpose: its target goes.
pub const INSTANCE_STOPPED: EventType = EventType::new("compute", "instance", "stopped");
/// An instance crashed (crash-loop alerts).
pub const INSTANCE_CRASHED: EventType = EventType::new("compute", "instance", "crashed");
/// A deployment served: default check, and compute alerts resolve.
pub const DEPLOYMENT_SUCCEEDED: EventType = EventType::new("compute", "deployment", "succeeded");
/// A deployment failed (deployment-failed alerts).
pub const DEPLOYMENT_FAILED: EventType = EventType::new("compute", "deployment", "failed");
/// An app is gone, and its checks with it.
pub const APP_DELETED: EventType = EventType::new("compute", "app", "deleted");

/// The durable consumer of compute's events (targets, default checks, alerts).
pub const COMPUTE_CONSUMER: &str = "observe-compute";
/// The subjects it reads, under the bus prefix.
pub const COMPUTE_FILTER: &str = "compute.>";
/// The durable consumer that stores every event in the event log.
pub const EVENT_LOG_CONSUMER: &str = "observe-event-log";
/// The whole stream, under the bus prefix.
pub const EVENT_LOG_FILTER: &str = ">";
