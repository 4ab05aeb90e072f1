//! Observe's domain types: checks and their targets, the confirmation state
//! machine, and the latency histogram behind uptime and percentiles.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

/// How a check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Tcp,
    Grpc,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
            Kind::Grpc => "grpc",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Kind::Http),
            "tcp" => Some(Kind::Tcp),
            "grpc" => Some(Kind::Grpc),
            _ => None,
        }
    }
}

/// What a check asks and expects, beyond its kind (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// HTTP method.
    pub method: String,
    /// HTTP path and query on instances.
    pub path: String,
    /// Accepted HTTP status range, inclusive.
    pub status_min: u16,
    pub status_max: u16,
    /// A substring the HTTP body must contain ("" = any body).
    pub body_contains: String,
    /// The service asked of grpc.health.v1.
    pub grpc_service: String,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            status_min: 200,
            status_max: 399,
            body_contains: String::new(),
            grpc_service: String::new(),
        }
    }
}

/// A check as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    pub id: String,
    pub team: String,
    pub name: String,
    pub app: String,
    pub url: String,
    pub kind: Kind,
    pub spec: Spec,
    pub interval_ms: i64,
    pub timeout_ms: i64,
    pub fail_after: u32,
    pub recover_after: u32,
    pub is_default: bool,
    pub created_at: i64,
}

/// A check ready to run: the record plus what the scheduler and the
/// recorder need without a database round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    pub record: CheckRecord,
    /// The app's id when known (empty for a URL check of no app).
    pub app_id: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl CheckDef {
    /// Durations from the record, with sane floors.
    pub fn new(record: CheckRecord, app_id: String) -> Self {
        let interval = Duration::from_millis(u64::try_from(record.interval_ms).unwrap_or(10_000).max(100));
        let timeout = Duration::from_millis(u64::try_from(record.timeout_ms).unwrap_or(2_000).max(1));
        Self { record, app_id, interval, timeout }
    }
}

/// One thing a check runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The instance id, or "" for the check's URL.
    pub key: String,
    pub host: String,
    pub port: u16,
    /// The app the instance belongs to (its id), for events.
    pub app_id: String,
}

/// An instance as learned from compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub team: String,
    pub app_id: String,
    pub app: String,
    pub host: String,
    pub port: u16,
}

/// A target's confirmed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unknown,
    Passing,
    Failing,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Passing => "passing",
            State::Failing => "failing",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> State {
        match s {
            "passing" => State::Passing,
            "failing" => State::Failing,
            _ => State::Unknown,
        }
    }
}

/// A confirmed change of a target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Now failing: traffic ejects it. From passing, or from unknown (a
    /// target that never passed is no endpoint to send traffic to).
    Failed,
    /// Failing before, now passing: traffic restores it.
    Recovered,
    /// Unknown before, now passing: nothing to announce.
    Passed,
}

/// The consecutive-results counter of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmations {
    pub state: State,
    ok_run: u32,
    fail_run: u32,
}

impl Confirmations {
    /// Counting from `state` with no results yet.
    pub fn new(state: State) -> Self {
        Self { state, ok_run: 0, fail_run: 0 }
    }

    /// Counts a result; returns the transition it confirms, if any.
    pub fn record(&mut self, ok: bool, fail_after: u32, recover_after: u32) -> Option<Transition> {
        if ok {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
        }
        let transition = match self.state {
            State::Passing if self.fail_run >= fail_after.max(1) => Transition::Failed,
            State::Unknown if self.fail_run >= fail_after.max(1) => Transition::Failed,
            State::Failing if self.ok_run >= recover_after.max(1) => Transition::Recovered,
            // From unknown, one pass is enough to serve: a fresh instance
            // that answers is healthy until it fails `fail_after` times.
            State::Unknown if self.ok_run >= 1 => Transition::Passed,
            _ => return None,
        };
        self.state = match transition {
            Transition::Failed => State::Failing,
            Transition::Recovered | Transition::Passed => State::Passing,
        };
        Some(transition)
    }
}

/// Upper bounds (ms) of the latency buckets of rollups; the last is +Inf.
pub const LATENCY_BUCKETS_MS: [f64; 12] =
    [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, f64::INFINITY];

/// Runs, passes and a latency histogram over some window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub runs: u64,
    pub ok: u64,
    pub buckets: [u64; 12],
}

impl Histogram {
    /// Counts one run.
    pub fn observe(&mut self, ok: bool, latency_ms: u32) {
        self.runs += 1;
        if ok {
            self.ok += 1;
        }
        let ms = f64::from(latency_ms);
        let index = LATENCY_BUCKETS_MS.iter().position(|bound| ms <= *bound).unwrap_or(LATENCY_BUCKETS_MS.len() - 1);
        self.buckets[index] += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        self.runs += other.runs;
        self.ok += other.ok;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }

    /// Share of runs that passed (1 when there were none).
    pub fn uptime(&self) -> f64 {
        if self.runs == 0 { 1.0 } else { self.ok as f64 / self.runs as f64 }
    }

    /// The `q` quantile (0..1) of latency in ms, interpolated inside its
    /// bucket as Prometheus' `histogram_quantile` does; 0 with no runs.
    pub fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, count) in self.buckets.iter().enumerate() {
            let before = seen;
            seen += count;
            if (seen as f64) >= rank && *count > 0 {
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS_MS[i - 1] };
                let upper = LATENCY_BUCKETS_MS[i];
                if upper.is_infinite() {
                    return lower;
                }
                let within = (rank - before as f64) / *count as f64;
                return lower + (upper - lower) * within;
            }
        }
        LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 2]
    }
}

/// The last result of a target, for listing checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastResult {
    pub at_ms: i64,
    pub ok: bool,
    pub latency_ms: u32,
    pub error: String,
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub check: Arc<CheckDef>,
    pub target: Arc<Target>,
    pub at_ms: i64,
    pub ok: bool,
    pub latency_ms: u32,
    pub error: String,
}

/// A channel, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: String,
    pub team: String,
    pub name: String,
    /// "webhook" or "nats".
    pub kind: String,
    /// The webhook URL or the NATS subject.
    pub target: String,
    pub secret: String,
    pub created_at: i64,
}

/// What an alert rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    CheckFailed,
    CrashLoop,
    DeploymentFailed,
}

impl Condition {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::CheckFailed => "check_failed",
            Condition::CrashLoop => "crash_loop",
            Condition::DeploymentFailed => "deployment_failed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "check_failed" => Some(Condition::CheckFailed),
            "crash_loop" => Some(Condition::CrashLoop),
            "deployment_failed" => Some(Condition::DeploymentFailed),
            _ => None,
        }
    }
}

/// An alert rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRecord {
    pub id: String,
    pub team: String,
    pub name: String,
    pub condition: Condition,
    pub app: String,
    pub check: String,
    pub channels: Vec<String>,
    pub crash_restarts: u32,
    pub created_at: i64,
}

/// An alert, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: String,
    pub team: String,
    pub rule_id: String,
    pub rule: String,
    pub condition: Condition,
    pub app: String,
    pub check: String,
    pub key: String,
    pub summary: String,
    pub open: bool,
    pub fired_at: i64,
    pub resolved_at: Option<i64>,
}

/// An event of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub seq: i64,
    pub id: String,
    pub ty: String,
    pub source: String,
    pub subject: String,
    pub team: String,
    pub app: String,
    pub time_ms: i64,
    pub data: String,
}

/// A filter over the event log; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub team: String,
    pub app: String,
    /// A substring of the CloudEvent type.
    pub ty: String,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub after_seq: i64,
    pub limit: i64,
}

impl EventFilter {
    /// Whether `event` passes the filter (for live events).
    pub fn matches(&self, event: &LoggedEvent) -> bool {
        event.team == self.team
            && (self.app.is_empty() || event.app == self.app)
            && (self.ty.is_empty() || event.ty.contains(&self.ty))
            && event.seq > self.after_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_takes_consecutive_failures_and_recovering_consecutive_passes() {
        let mut c = Confirmations::new(State::Unknown);
        assert_eq!(c.record(true, 3, 2), Some(Transition::Passed));
        assert_eq!(c.record(false, 3, 2), None);
        assert_eq!(c.record(false, 3, 2), None);
        assert_eq!(c.record(true, 3, 2), None, "a pass resets the failure run");
        assert_eq!(c.record(false, 3, 2), None);
        assert_eq!(c.record(false, 3, 2), None);
        assert_eq!(c.record(false, 3, 2), Some(Transition::Failed));
        assert_eq!(c.state, State::Failing);
        assert_eq!(c.record(false, 3, 2), None, "no second failure event");
        assert_eq!(c.record(true, 3, 2), None);
        assert_eq!(c.record(false, 3, 2), None);
        assert_eq!(c.record(true, 3, 2), None);
        assert_eq!(c.record(true, 3, 2), Some(Transition::Recovered));
        assert_eq!(c.state, State::Passing);
    }

    #[test]
    fn a_target_that_never_passes_fails() {
        let mut c = Confirmations::new(State::Unknown);
        assert_eq!(c.record(false, 2, 2), None);
        assert_eq!(c.record(false, 2, 2), Some(Transition::Failed));
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0.0);
        for _ in 0..90 {
            h.observe(true, 3);
        }
        for _ in 0..10 {
            h.observe(false, 400);
        }
        assert_eq!((h.runs, h.ok), (100, 90));
        assert!((h.uptime() - 0.9).abs() < 1e-9);
        let p50 = h.quantile(0.5);
        assert!(p50 > 0.0 && p50 <= 5.0, "{p50}");
        let p99 = h.quantile(0.99);
        assert!(p99 > 250.0 && p99 <= 500.0, "{p99}");
        let mut other = Histogram::default();
        other.observe(true, 20_000);
        h.merge(&other);
        assert_eq!(h.quantile(1.0), 10_000.0, "the +Inf bucket reports its lower bound");
    }
}
