//! Observe's Prometheus metrics: its own (runs, schedule lag, deliveries,
//! events logged) and the per-app rollups (check status, uptime, latency)
//! that let one scrape see the whole platform's health.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::model::{self, State};

/// A check's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub team: String,
    pub app: String,
    pub check: String,
}

/// A check's labels and a run's result ("ok" or "fail").
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub team: String,
    pub app: String,
    pub check: String,
    pub result: String,
}

/// An app's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub team: String,
    pub app: String,
}

/// An app's labels and a target state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStateLabels {
    pub team: String,
    pub app: String,
    pub state: String,
}

/// An app's labels and a window ("1h" or "24h").
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppWindowLabels {
    pub team: String,
    pub app: String,
    pub window: String,
}

/// An app's labels, a window and a quantile ("0.5", "0.95", "0.99").
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppQuantileLabels {
    pub team: String,
    pub app: String,
    pub window: String,
    pub quantile: String,
}

/// A delivery's channel kind and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub kind: String,
    pub outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric observe exports.
pub struct Metrics {
    registry: Arc<Registry>,
    pub runs: Family<RunLabels, Counter>,
    pub latency: Family<AppLabels, Histogram>,
    pub runs_started: Counter,
    pub runs_late: Counter,
    pub schedule_lag: Histogram,
    pub scheduled_targets: Gauge,
    pub check_up: Family<CheckLabels, Gauge>,
    pub app_targets: Family<AppStateLabels, Gauge>,
    pub app_uptime: Family<AppWindowLabels, FloatGauge>,
    pub app_latency: Family<AppQuantileLabels, FloatGauge>,
    pub events_logged: Counter,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub results_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(model::LATENCY_BUCKETS_MS[..11].iter().map(|ms| ms / 1000.0))
}

impl Metrics {
    /// Every metric, registered in a fresh registry under `strata_observe_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strata_observe");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register("check_runs", "Check runs by result", runs.clone());
        let latency = Family::<AppLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("check_latency_seconds", "Check run latency per app", latency.clone());
        let runs_started = Counter::default();
        registry.register("scheduled_runs", "Check runs started", runs_started.clone());
        let runs_late = Counter::default();
        registry.register("late_runs", "Check runs started more than 1 s after their schedule", runs_late.clone());
        let schedule_lag = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register("schedule_lag_seconds", "How late check runs start", schedule_lag.clone());
        let scheduled_targets = Gauge::default();
        registry.register("scheduled_targets", "(check, target) pairs scheduled", scheduled_targets.clone());
        let check_up = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "check_up",
            "1 when every target of the check passes, 0 when one fails, -1 before the first result",
            check_up.clone(),
        );
        let app_targets = Family::<AppStateLabels, Gauge>::default();
        registry.register("app_targets", "Check targets per app by state", app_targets.clone());
        let app_uptime = Family::<AppWindowLabels, FloatGauge>::default();
        registry.register("app_uptime_ratio", "Share of an app's check runs that passed", app_uptime.clone());
        let app_latency = Family::<AppQuantileLabels, FloatGauge>::default();
        registry.register("app_latency_seconds", "Quantiles of an app's check latency", app_latency.clone());
        let events_logged = Counter::default();
        registry.register("events_logged", "Events stored in the event log", events_logged.clone());
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("alert_deliveries", "Alert delivery attempts by outcome", deliveries.clone());
        let results_dropped = Counter::default();
        registry.register("results_unrecorded", "Check results the database did not take", results_dropped.clone());
        Self {
            registry: Arc::new(registry),
            runs,
            latency,
            runs_started,
            runs_late,
            schedule_lag,
            scheduled_targets,
            check_up,
            app_targets,
            app_uptime,
            app_latency,
            events_logged,
            deliveries,
            results_dropped,
        }
    }

    /// The registry, to serve.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Counts a run that started `lag` after its schedule.
    pub fn run_started(&self, lag: Duration, late: bool) {
        self.runs_started.inc();
        if late {
            self.runs_late.inc();
        }
        self.schedule_lag.observe(lag.as_secs_f64());
    }

    /// Counts a finished run and its latency.
    pub fn run_finished(&self, team: &str, app: &str, check: &str, ok: bool, latency_ms: u32) {
        let result = if ok { "ok" } else { "fail" };
        self.runs
            .get_or_create(&RunLabels {
                team: team.to_owned(),
                app: app.to_owned(),
                check: check.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&AppLabels { team: team.to_owned(), app: app.to_owned() })
            .observe(f64::from(latency_ms) / 1000.0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The label sets the last rollup wrote, so the next one removes series of
/// checks and apps that are gone.
#[derive(Debug, Default)]
pub struct RollupSeries {
    checks: HashSet<CheckLabels>,
    targets: HashSet<AppStateLabels>,
    uptime: HashSet<AppWindowLabels>,
    latency: HashSet<AppQuantileLabels>,
}

/// A check's state now, for the rollup: (team, app, check, target states).
pub type CheckStates = Vec<(String, String, String, Vec<State>)>;

/// Each app's runs over a window: (team, app, histogram).
pub type AppWindow = Vec<(String, String, model::Histogram)>;

impl Metrics {
    /// Sets the per-check and per-app gauges from the checks' states and
    /// the apps' windows of runs.
    pub fn rollup(&self, series: &mut RollupSeries, checks: &CheckStates, windows: &[(&str, AppWindow)]) {
        let mut seen_checks = HashSet::new();
        let mut per_app: HashMap<AppStateLabels, i64> = HashMap::new();
        for (team, app, check, states) in checks {
            let labels = CheckLabels { team: team.clone(), app: app.clone(), check: check.clone() };
            let up = if states.contains(&State::Failing) {
                0
            } else if states.is_empty() || states.contains(&State::Unknown) {
                -1
            } else {
                1
            };
            self.check_up.get_or_create(&labels).set(up);
            seen_checks.insert(labels);
            for state in ["passing", "failing", "unknown"] {
                per_app
                    .entry(AppStateLabels { team: team.clone(), app: app.clone(), state: state.to_owned() })
                    .or_default();
            }
            for state in states {
                *per_app
                    .entry(AppStateLabels { team: team.clone(), app: app.clone(), state: state.as_str().to_owned() })
                    .or_default() += 1;
            }
        }
        for (labels, n) in &per_app {
            self.app_targets.get_or_create(labels).set(*n);
        }
        let mut seen_uptime = HashSet::new();
        let mut seen_latency = HashSet::new();
        for (window, apps) in windows {
            for (team, app, h) in apps {
                let labels = AppWindowLabels { team: team.clone(), app: app.clone(), window: (*window).to_owned() };
                self.app_uptime.get_or_create(&labels).set(h.uptime());
                seen_uptime.insert(labels);
                for q in [0.5, 0.95, 0.99] {
                    let labels = AppQuantileLabels {
                        team: team.clone(),
                        app: app.clone(),
                        window: (*window).to_owned(),
                        quantile: q.to_string(),
                    };
                    self.app_latency.get_or_create(&labels).set(h.quantile(q) / 1000.0);
                    seen_latency.insert(labels);
                }
            }
        }
        for gone in series.checks.difference(&seen_checks) {
            self.check_up.remove(gone);
            for result in ["ok", "fail"] {
                self.runs.remove(&RunLabels {
                    team: gone.team.clone(),
                    app: gone.app.clone(),
                    check: gone.check.clone(),
                    result: result.to_owned(),
                });
            }
        }
        let seen_targets: HashSet<AppStateLabels> = per_app.into_keys().collect();
        for gone in series.targets.difference(&seen_targets) {
            self.app_targets.remove(gone);
        }
        for gone in series.uptime.difference(&seen_uptime) {
            self.app_uptime.remove(gone);
        }
        for gone in series.latency.difference(&seen_latency) {
            self.app_latency.remove(gone);
        }
        *series =
            RollupSeries { checks: seen_checks, targets: seen_targets, uptime: seen_uptime, latency: seen_latency };
    }
}
