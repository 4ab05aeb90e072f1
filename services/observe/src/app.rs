//! Observe's domain: checks and what they run against, channels and alert
//! rules, the event log, and what compute's events change. Every operation
//! is scoped to the caller's team.
//!
//! The live view of every check (its targets and their confirmation state)
//! is kept in memory in [`Live`]; the database holds the checks, the
//! confirmed states and the history. The planner keeps [`Live`] and the
//! scheduler in step with the database after every change.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use strata_events::{CloudEvent, EventTx, EventsError, HandleError};
use strata_kit::{ApiError, Identity, error::validate_name, store::now_ms};
use strata_proto::compute::v1 as compute_pb;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::{
    alerts::{self, AlertError, Trigger},
    events,
    model::{
        AlertRecord, ChannelRecord, CheckDef, CheckRecord, Condition, Confirmations, EventFilter, Histogram,
        InstanceRecord, Kind, LastResult, LoggedEvent, RuleRecord, Spec, State, Target,
    },
    scheduler::SchedulerHandle,
    store::Store,
};

/// Why an internal step failed (never shown to callers as is).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventsError),
    #[error(transparent)]
    Alert(#[from] AlertError),
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Db(e) | Failure::Alert(AlertError::Db(e)) => e.into(),
            Failure::Events(e) | Failure::Alert(AlertError::Events(e)) => e.into(),
        }
    }
}

impl From<Failure> for HandleError {
    fn from(failure: Failure) -> Self {
        HandleError::Retry(failure.to_string())
    }
}

/// One target's live state.
#[derive(Debug, Clone)]
pub struct TargetLive {
    pub target: Arc<Target>,
    pub confirmations: Confirmations,
    pub since: i64,
    pub last: Option<LastResult>,
}

/// One check's live state.
#[derive(Debug, Clone)]
pub struct CheckLive {
    pub def: Arc<CheckDef>,
    pub targets: BTreeMap<String, TargetLive>,
}

impl CheckLive {
    /// Whether a target is failing.
    pub fn any_failing(&self) -> bool {
        self.targets.values().any(|t| t.confirmations.state == State::Failing)
    }
}

/// Every check's live state, by check id.
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<Mutex<HashMap<String, CheckLive>>>);

impl Live {
    /// Runs `f` with the map locked (never across an await).
    pub fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, CheckLive>) -> T) -> T {
        let mut guard = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

/// Settings of the domain.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Make a default HTTP check on `/` for every deployed app with none.
    pub default_checks: bool,
    pub default_interval_ms: i64,
    pub default_timeout_ms: i64,
}

/// A check with what is known about it now.
#[derive(Debug, Clone)]
pub struct CheckView {
    pub record: CheckRecord,
    pub targets: Vec<TargetLive>,
    pub last_hour: Histogram,
    pub last_day: Histogram,
}

/// What the planner is asked to bring in step.
#[derive(Debug)]
pub enum Plan {
    /// Every check of (team, app).
    App { team: String, app: String },
    /// One check (a URL check of no app: its group can hold thousands).
    Check(String),
    /// Checks that are gone.
    Removed(Vec<String>),
}

/// The observe service's domain.
#[derive(Debug, Clone)]
pub struct Observe {
    pub store: Store,
    pub live: Live,
    scheduler: SchedulerHandle,
    planner: mpsc::UnboundedSender<Plan>,
    deliveries: Arc<Notify>,
    feed: broadcast::Sender<Arc<LoggedEvent>>,
    settings: Settings,
}

const MAX_INTERVAL_SECS: u32 = 3600;

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// Host and port of a URL (default port by scheme).
pub fn url_host_port(url: &str) -> Result<(String, u16), ApiError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ApiError::InvalidArgument(format!("invalid url {url:?}: {e}; use http://host:port/path")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| ApiError::InvalidArgument(format!("the url {url:?} names no host")))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| ApiError::InvalidArgument(format!("the url {url:?} names no port")))?;
    Ok((host, port))
}

impl Observe {
    /// The domain over `store`, steering the scheduler through the planner.
    pub fn new(
        store: Store,
        scheduler: SchedulerHandle,
        planner: mpsc::UnboundedSender<Plan>,
        deliveries: Arc<Notify>,
        settings: Settings,
    ) -> Self {
        let (feed, _) = broadcast::channel(1024);
        Self { store, live: Live::default(), scheduler, planner, deliveries, feed, settings }
    }

    /// Wakes the deliverer (after a commit that queued deliveries).
    pub fn deliveries_queued(&self) {
        self.deliveries.notify_one();
    }

    fn plan(&self, plan: Plan) {
        let _ = self.planner.send(plan);
    }

    // ---- checks ----

    /// Creates a check for the caller's team (members and owners).
    pub async fn check_create(&self, identity: &Identity, request: CheckRequest) -> Result<CheckView, ApiError> {
        identity.require_write()?;
        validate_name("check", &request.name)?;
        if request.app.is_empty() == request.url.is_empty() {
            return Err(ApiError::InvalidArgument(
                "give the check either an app (its instances are checked) or a url, not both".to_owned(),
            ));
        }
        if !request.app.is_empty() {
            validate_name("app", &request.app)?;
        }
        if !request.url.is_empty() {
            url_host_port(&request.url)?;
            if request.kind == Kind::Http && !request.url.starts_with("http://") {
                return Err(ApiError::InvalidArgument(
                    "HTTP checks take http:// URLs (check HTTPS apps through the traffic ingress)".to_owned(),
                ));
            }
        }
        let interval_secs = if request.interval_secs == 0 { 10 } else { request.interval_secs };
        if interval_secs > MAX_INTERVAL_SECS {
            return Err(ApiError::InvalidArgument(format!("interval_secs must be 1 to {MAX_INTERVAL_SECS}")));
        }
        let timeout_ms = if request.timeout_ms == 0 { 2000.min(interval_secs * 1000) } else { request.timeout_ms };
        if timeout_ms > interval_secs * 1000 {
            return Err(ApiError::InvalidArgument(format!(
                "timeout_ms ({timeout_ms}) must not exceed the interval ({} ms)",
                interval_secs * 1000
            )));
        }
        let spec = &request.spec;
        if spec.status_min > spec.status_max || spec.status_max > 599 {
            return Err(ApiError::InvalidArgument(format!(
                "invalid status range {}-{}",
                spec.status_min, spec.status_max
            )));
        }
        if !spec.path.starts_with('/') {
            return Err(ApiError::InvalidArgument(format!("the path {:?} must start with /", spec.path)));
        }
        http::Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| ApiError::InvalidArgument(format!("invalid HTTP method {:?}", spec.method)))?;
        let record = CheckRecord {
            id: uuid::Uuid::now_v7().to_string(),
            team: identity.team.clone(),
            name: request.name.clone(),
            app: request.app.clone(),
            url: request.url.clone(),
            kind: request.kind,
            spec: request.spec.clone(),
            interval_ms: i64::from(interval_secs) * 1000,
            timeout_ms: i64::from(timeout_ms),
            fail_after: if request.fail_after == 0 { 3 } else { request.fail_after },
            recover_after: if request.recover_after == 0 { 2 } else { request.recover_after },
            is_default: false,
            created_at: now_ms(),
        };
        if self.store.check_by_name(&identity.team, &record.name).await?.is_some() {
            return Err(ApiError::AlreadyExists(format!(
                "check {} exists; delete it first or pick another name",
                record.name
            )));
        }
        let mut tx = self.store.begin().await?;
        let mut removed = Vec::new();
        if !record.app.is_empty() {
            // The app has a check of its own now: its default one goes.
            for existing in Store::checks_in(tx.conn(), &record.team, &record.app).await? {
                if existing.is_default {
                    Store::check_delete(tx.conn(), &existing.id).await?;
                    removed.push(existing.id);
                }
            }
        }
        Store::check_insert(tx.conn(), &record).await.map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                ApiError::AlreadyExists(format!("check {} exists", record.name))
            }
            other => other.into(),
        })?;
        tx.commit().await?;
        tracing::info!(team = %record.team, check = %record.name, app = %record.app, url = %record.url, "check created");
        self.plan(Plan::Removed(removed));
        self.plan(if record.app.is_empty() {
            Plan::Check(record.id.clone())
        } else {
            Plan::App { team: record.team.clone(), app: record.app.clone() }
        });
        Ok(CheckView { record, targets: Vec::new(), last_hour: Histogram::default(), last_day: Histogram::default() })
    }

    async fn check_find(&self, identity: &Identity, name: &str) -> Result<CheckRecord, ApiError> {
        self.store.check_by_name(&identity.team, name).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no check {name} in team {}: see `strata checks list`", identity.team))
        })
    }

    async fn view(&self, record: CheckRecord) -> Result<CheckView, ApiError> {
        let now_minute = minute_of(now_ms());
        let last_hour = self.store.stats(&record.id, now_minute - 59).await?;
        let last_day = self.store.stats(&record.id, now_minute - 24 * 60 + 1).await?;
        let targets = self.live.with(|live| {
            live.get(&record.id).map(|c| c.targets.values().cloned().collect::<Vec<_>>()).unwrap_or_default()
        });
        Ok(CheckView { record, targets, last_hour, last_day })
    }

    /// A check of the caller's team with its targets and stats.
    pub async fn check_get(&self, identity: &Identity, name: &str) -> Result<CheckView, ApiError> {
        let record = self.check_find(identity, name).await?;
        self.view(record).await
    }

    /// The team's checks (of `app` when not empty), with their targets and stats.
    pub async fn checks_list(&self, identity: &Identity, app: &str) -> Result<Vec<CheckView>, ApiError> {
        let records = self.store.checks_list(&identity.team, (!app.is_empty()).then_some(app)).await?;
        let mut views = Vec::with_capacity(records.len());
        for record in records {
            views.push(self.view(record).await?);
        }
        Ok(views)
    }

    /// Deletes a check, its history and states; its open alerts resolve.
    pub async fn check_delete(&self, identity: &Identity, name: &str) -> Result<(), ApiError> {
        identity.require_write()?;
        let record = self.check_find(identity, name).await?;
        let mut tx = self.store.begin().await?;
        Store::check_delete(tx.conn(), &record.id).await?;
        let queued = alerts::resolve(
            &mut tx,
            &record.team,
            Condition::CheckFailed,
            &record.id,
            &format!("check {} was deleted", record.name),
        )
        .await
        .map_err(Failure::from)?;
        tx.commit().await?;
        if queued {
            self.deliveries_queued();
        }
        tracing::info!(team = %record.team, check = %record.name, "check deleted");
        self.plan(Plan::Removed(vec![record.id]));
        Ok(())
    }

    /// A check's latest results, newest first: (target, at, ok, latency, error).
    pub async fn check_history(
        &self,
        identity: &Identity,
        name: &str,
        limit: u32,
    ) -> Result<Vec<(String, i64, bool, u32, String)>, ApiError> {
        let record = self.check_find(identity, name).await?;
        let limit = if limit == 0 { 50 } else { limit.min(1000) };
        Ok(self.store.history(&record.id, i64::from(limit)).await?)
    }

    // ---- channels and rules ----

    /// Creates a channel: `kind` is "webhook" (URL and secret) or "nats" (subject).
    pub async fn channel_create(
        &self,
        identity: &Identity,
        name: &str,
        kind: &str,
        target: &str,
        secret: &str,
    ) -> Result<ChannelRecord, ApiError> {
        identity.require_write()?;
        validate_name("channel", name)?;
        match kind {
            "webhook" => {
                url_host_port(target)?;
                if !target.starts_with("http://") {
                    return Err(ApiError::InvalidArgument(
                        "webhook URLs must be http:// (deliver to an internal relay for HTTPS endpoints)".to_owned(),
                    ));
                }
                if secret.len() < 16 {
                    return Err(ApiError::InvalidArgument(
                        "a webhook needs a secret of at least 16 characters to sign its deliveries".to_owned(),
                    ));
                }
            }
            "nats" => {
                let valid = !target.is_empty()
                    && !target.contains([' ', '\t', '*', '>'])
                    && target.split('.').all(|token| !token.is_empty());
                if !valid {
                    return Err(ApiError::InvalidArgument(format!(
                        "invalid NATS subject {target:?}: use dot-separated tokens without wildcards"
                    )));
                }
            }
            _ => return Err(ApiError::InvalidArgument("a channel is a webhook or a NATS subject".to_owned())),
        }
        let channel = ChannelRecord {
            id: uuid::Uuid::now_v7().to_string(),
            team: identity.team.clone(),
            name: name.to_owned(),
            kind: kind.to_owned(),
            target: target.to_owned(),
            secret: secret.to_owned(),
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        Store::channel_insert(tx.conn(), &channel).await.map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                ApiError::AlreadyExists(format!("channel {name} exists"))
            }
            other => other.into(),
        })?;
        tx.commit().await?;
        Ok(channel)
    }

    /// The team's channels.
    pub async fn channels_list(&self, identity: &Identity) -> Result<Vec<ChannelRecord>, ApiError> {
        Ok(self.store.channels_list(&identity.team).await?)
    }

    /// Deletes a channel; deliveries still pending to it fail.
    pub async fn channel_delete(&self, identity: &Identity, name: &str) -> Result<(), ApiError> {
        identity.require_write()?;
        if self.store.channel_delete(&identity.team, name).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no channel {name} in team {}", identity.team)))
        }
    }

    /// Creates an alert rule; its channels must exist.
    pub async fn rule_create(&self, identity: &Identity, mut rule: RuleRecord) -> Result<RuleRecord, ApiError> {
        identity.require_write()?;
        validate_name("alert rule", &rule.name)?;
        if !rule.app.is_empty() {
            validate_name("app", &rule.app)?;
        }
        if !rule.check.is_empty() && rule.condition != Condition::CheckFailed {
            return Err(ApiError::InvalidArgument("only check_failed rules name a check".to_owned()));
        }
        if rule.channels.is_empty() {
            return Err(ApiError::InvalidArgument("name at least one channel to notify".to_owned()));
        }
        let mut tx = self.store.begin().await?;
        for channel in &rule.channels {
            if Store::channel_by_name(tx.conn(), &identity.team, channel).await?.is_none() {
                return Err(ApiError::NotFound(format!(
                    "no channel {channel} in team {}: create it with `strata alerts channel-add`",
                    identity.team
                )));
            }
        }
        rule.id = uuid::Uuid::now_v7().to_string();
        rule.team = identity.team.clone();
        rule.created_at = now_ms();
        if rule.crash_restarts == 0 {
            rule.crash_restarts = 3;
        }
        Store::rule_insert(tx.conn(), &rule).await.map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                ApiError::AlreadyExists(format!("alert rule {} exists", rule.name))
            }
            other => other.into(),
        })?;
        tx.commit().await?;
        Ok(rule)
    }

    /// The team's alert rules.
    pub async fn rules_list(&self, identity: &Identity) -> Result<Vec<RuleRecord>, ApiError> {
        Ok(self.store.rules_list(&identity.team).await?)
    }

    /// Deletes an alert rule (its alerts stay in the history).
    pub async fn rule_delete(&self, identity: &Identity, name: &str) -> Result<(), ApiError> {
        identity.require_write()?;
        if self.store.rule_delete(&identity.team, name).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no alert rule {name} in team {}", identity.team)))
        }
    }

    /// The team's alerts, open ones first.
    pub async fn alerts_list(&self, identity: &Identity) -> Result<Vec<AlertRecord>, ApiError> {
        Ok(self.store.alerts_list(&identity.team).await?)
    }

    // ---- the event log ----

    /// The team's events matching `filter`, oldest first.
    pub async fn events_list(
        &self,
        identity: &Identity,
        mut filter: EventFilter,
    ) -> Result<Vec<LoggedEvent>, ApiError> {
        filter.team = identity.team.clone();
        filter.limit = if filter.limit <= 0 { 100 } else { filter.limit.min(1000) };
        Ok(self.store.events(&filter).await?)
    }

    /// Live events; subscribe before reading the tail so nothing falls between.
    pub fn events_subscribe(&self) -> broadcast::Receiver<Arc<LoggedEvent>> {
        self.feed.subscribe()
    }

    /// Publishes a committed event to followers.
    pub fn event_logged(&self, event: LoggedEvent) {
        let _ = self.feed.send(Arc::new(event));
    }

    // ---- the planner: Live and the scheduler in step with the database ----

    /// Schedules every stored check (at start).
    pub async fn load_all(&self) -> Result<(), Failure> {
        for (team, app) in self.store.check_groups().await? {
            self.sync_app(&team, &app).await?;
        }
        Ok(())
    }

    /// Runs the planner until its senders are gone.
    pub async fn run_planner(self, mut plans: mpsc::UnboundedReceiver<Plan>) {
        while let Some(plan) = plans.recv().await {
            let outcome = match plan {
                Plan::App { team, app } => self.sync_app(&team, &app).await,
                Plan::Check(id) => match self.store.check_by_id(&id).await {
                    Ok(Some(record)) if record.app.is_empty() => {
                        self.sync_checks(&record.team.clone(), "", vec![record]).await
                    }
                    Ok(Some(record)) => self.sync_app(&record.team, &record.app).await,
                    Ok(None) => Ok(()),
                    Err(error) => Err(error.into()),
                },
                Plan::Removed(ids) => {
                    for id in ids {
                        self.live.with(|live| live.remove(&id));
                        self.scheduler.remove(&id);
                    }
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                tracing::error!(%error, "could not bring the schedule in step with the database");
            }
        }
    }

    /// Brings the checks of (team, app) in step: their targets are the
    /// app's instances, or the URL.
    pub async fn sync_app(&self, team: &str, app: &str) -> Result<(), Failure> {
        let checks = self.store.checks_list(team, Some(app)).await?;
        self.sync_checks(team, app, checks).await
    }

    /// Brings `checks`, all of (team, app), in step.
    async fn sync_checks(&self, team: &str, app: &str, checks: Vec<CheckRecord>) -> Result<(), Failure> {
        let instances = if app.is_empty() { Vec::new() } else { self.store.instances_of(team, app).await? };
        let app_id = match instances.first() {
            Some(instance) => instance.app_id.clone(),
            None if !app.is_empty() => self.store.app_id(team, app).await?.unwrap_or_default(),
            None => String::new(),
        };
        let mut resolved = Vec::new();
        for record in checks {
            let stored: HashMap<String, (State, i64)> =
                self.store.target_states(&record.id).await?.into_iter().map(|(t, s, since)| (t, (s, since))).collect();
            let targets: Vec<Arc<Target>> = if record.url.is_empty() {
                instances.iter().map(|i| Arc::new(target_of(i))).collect()
            } else {
                match url_host_port(&record.url) {
                    Ok((host, port)) => {
                        vec![Arc::new(Target { key: String::new(), host, port, app_id: app_id.clone() })]
                    }
                    Err(_) => Vec::new(),
                }
            };
            let def = Arc::new(CheckDef::new(record.clone(), app_id.clone()));
            let was_failing = self.live.with(|live| {
                let previous = live.remove(&record.id);
                let was_failing = previous.as_ref().is_some_and(CheckLive::any_failing);
                let mut old = previous.map(|c| c.targets).unwrap_or_default();
                let mut next = BTreeMap::new();
                for target in &targets {
                    let live_target = match old.remove(&target.key) {
                        Some(mut existing) => {
                            existing.target = target.clone();
                            existing
                        }
                        None => {
                            let (state, since) = stored.get(&target.key).copied().unwrap_or((State::Unknown, now_ms()));
                            TargetLive {
                                target: target.clone(),
                                confirmations: Confirmations::new(state),
                                since,
                                last: None,
                            }
                        }
                    };
                    next.insert(target.key.clone(), live_target);
                }
                let check = CheckLive { def: def.clone(), targets: next };
                let now_failing = check.any_failing();
                live.insert(record.id.clone(), check);
                was_failing && !now_failing
            });
            if was_failing {
                resolved.push(record.clone());
            }
            self.scheduler.set(def, targets);
        }
        // A failing target that went away (its instance stopped) leaves a
        // check with nothing failing: its alerts are over.
        for record in resolved {
            let mut tx = self.store.begin().await?;
            let summary = format!("check {} has no failing target left", record.name);
            let queued = alerts::resolve(&mut tx, &record.team, Condition::CheckFailed, &record.id, &summary).await?;
            tx.commit().await?;
            if queued {
                self.deliveries_queued();
            }
        }
        Ok(())
    }

    // ---- compute's events ----

    /// Applies one of compute's events inside the consumer's transaction;
    /// returns what to plan once it commits (the caller also wakes the
    /// deliverer then, for the alerts it may have queued).
    pub async fn on_compute_event(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<Vec<Plan>, HandleError> {
        let malformed = |e: serde_json::Error| HandleError::Fatal(format!("malformed {}: {e}", event.ty));
        let team = event.team.as_str();
        let now = now_ms();
        let mut plans = Vec::new();
        if events::INSTANCE_STARTED.matches(event) {
            let started: compute_pb::InstanceStarted = event.data_as().map_err(malformed)?;
            Store::app_upsert(tx.conn(), team, &started.app, &started.app_id, now).await.map_err(Failure::from)?;
            let instance = InstanceRecord {
                instance_id: started.instance_id,
                team: team.to_owned(),
                app_id: started.app_id,
                app: started.app.clone(),
                host: started.host,
                port: u16::try_from(started.port).unwrap_or(0),
            };
            Store::instance_upsert(tx.conn(), &instance, now).await.map_err(Failure::from)?;
            plans.push(Plan::App { team: team.to_owned(), app: started.app });
        } else if events::INSTANCE_STOPPING.matches(event) {
            let stopping: compute_pb::InstanceStopping = event.data_as().map_err(malformed)?;
            Store::instance_delete(tx.conn(), &stopping.instance_id).await.map_err(Failure::from)?;
            plans.push(Plan::App { team: team.to_owned(), app: stopping.app });
        } else if events::INSTANCE_STOPPED.matches(event) {
            let stopped: compute_pb::InstanceStopped = event.data_as().map_err(malformed)?;
            Store::instance_delete(tx.conn(), &stopped.instance_id).await.map_err(Failure::from)?;
            plans.push(Plan::App { team: team.to_owned(), app: stopped.app });
        } else if events::INSTANCE_CRASHED.matches(event) {
            // The instance keeps its id and comes back on a new port
            // (instance.started); until then its target fails its checks.
            let crashed: compute_pb::InstanceCrashed = event.data_as().map_err(malformed)?;
            let summary = format!(
                "instance {} of {} crashed {} times: {}",
                crashed.instance_id, crashed.app, crashed.restarts, crashed.reason
            );
            let trigger = Trigger {
                team,
                condition: Condition::CrashLoop,
                app: &crashed.app,
                check: "",
                key: &crashed.app,
                summary: &summary,
                restarts: crashed.restarts,
            };
            alerts::fire(tx, &trigger).await.map_err(Failure::from)?;
        } else if events::DEPLOYMENT_SUCCEEDED.matches(event) {
            let succeeded: compute_pb::DeploymentSucceeded = event.data_as().map_err(malformed)?;
            let app = succeeded.app.as_str();
            Store::app_upsert(tx.conn(), team, app, &succeeded.app_id, now).await.map_err(Failure::from)?;
            if self.settings.default_checks {
                self.default_check(tx, team, app).await?;
            }
            let summary = format!("{app} deployed release v{}", succeeded.release_version);
            for condition in [Condition::CrashLoop, Condition::DeploymentFailed] {
                alerts::resolve(tx, team, condition, app, &summary).await.map_err(Failure::from)?;
            }
            plans.push(Plan::App { team: team.to_owned(), app: app.to_owned() });
        } else if events::DEPLOYMENT_FAILED.matches(event) {
            let failed: compute_pb::DeploymentFailed = event.data_as().map_err(malformed)?;
            let summary =
                format!("deployment of {} release v{} failed: {}", failed.app, failed.release_version, failed.reason);
            let trigger = Trigger {
                team,
                condition: Condition::DeploymentFailed,
                app: &failed.app,
                check: "",
                key: &failed.app,
                summary: &summary,
                restarts: 0,
            };
            alerts::fire(tx, &trigger).await.map_err(Failure::from)?;
        } else if events::APP_DELETED.matches(event) {
            let deleted: compute_pb::AppDeleted = event.data_as().map_err(malformed)?;
            let mut removed = Vec::new();
            for check in Store::checks_in(tx.conn(), team, &deleted.app).await.map_err(Failure::from)? {
                Store::check_delete(tx.conn(), &check.id).await.map_err(Failure::from)?;
                let summary = format!("app {} was deleted", deleted.app);
                alerts::resolve(tx, team, Condition::CheckFailed, &check.id, &summary).await.map_err(Failure::from)?;
                removed.push(check.id);
            }
            Store::app_delete(tx.conn(), team, &deleted.app).await.map_err(Failure::from)?;
            plans.push(Plan::Removed(removed));
        }
        Ok(plans)
    }

    /// Creates the app's default HTTP check on `/` when it has no check.
    async fn default_check(&self, tx: &mut EventTx, team: &str, app: &str) -> Result<(), HandleError> {
        if !Store::checks_in(tx.conn(), team, app).await.map_err(Failure::from)?.is_empty() {
            return Ok(());
        }
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM checks WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(app)
            .fetch_optional(&mut *tx.conn())
            .await
            .map_err(Failure::from)?;
        if taken.is_some() {
            tracing::info!(team, app, "no default check: a check already has the app's name");
            return Ok(());
        }
        let record = CheckRecord {
            id: uuid::Uuid::now_v7().to_string(),
            team: team.to_owned(),
            name: app.to_owned(),
            app: app.to_owned(),
            url: String::new(),
            kind: Kind::Http,
            spec: Spec::default(),
            interval_ms: self.settings.default_interval_ms,
            timeout_ms: self.settings.default_timeout_ms,
            fail_after: 3,
            recover_after: 2,
            is_default: true,
            created_at: now_ms(),
        };
        Store::check_insert(tx.conn(), &record).await.map_err(Failure::from)?;
        tracing::info!(team, app, "default check created");
        Ok(())
    }

    /// Hands plans to the planner (after their transaction committed).
    pub fn apply_plans(&self, plans: Vec<Plan>) {
        for plan in plans {
            self.plan(plan);
        }
    }
}

fn target_of(instance: &InstanceRecord) -> Target {
    Target {
        key: instance.instance_id.clone(),
        host: instance.host.clone(),
        port: instance.port,
        app_id: instance.app_id.clone(),
    }
}

/// What a caller asks for when creating a check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub name: String,
    pub app: String,
    pub url: String,
    pub kind: Kind,
    pub spec: Spec,
    pub interval_secs: u32,
    pub timeout_ms: u32,
    pub fail_after: u32,
    pub recover_after: u32,
}
