//! The process runtime: runs each app's instances as supervised child
//! processes and keeps reality equal to the desired state in the database.
//!
//! One task per instance supervises its process (readiness on its port,
//! restart with exponential backoff, graceful stop). One reconciler task,
//! level-triggered, compares every app's desired release and instance count
//! (and its canary's, a second release that runs beside the current one)
//! with the instances that exist and starts or stops instances: new ones are
//! started first and old ones are stopped only when every new one is ready, so
//! a release rolls out with no downtime. After a restart of compute, instances
//! that survived are adopted again and strays are killed.

pub mod process;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use strata_events::EventsError;
use strata_kit::store::now_ms;
use strata_proto::compute::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    events,
    model::{App, InstanceRecord, Release},
    store::{self, Store},
};
use process::{Launch, Proc};

/// How instances are run.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Where logs live (`logs/<app>/<instance>.log`).
    pub data_dir: PathBuf,
    /// The address instances listen on, as announced in events.
    pub host: String,
    /// How long an instance may take to accept connections on its port.
    pub ready_timeout: Duration,
    /// How long an instance gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How long a running instance keeps serving after `instance.stopping`
    /// is announced, so routers take it out of rotation before SIGTERM.
    pub drain_delay: Duration,
    /// This compute node's id, written into each instance's environment.
    pub node_id: String,
}

/// An instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Stopping,
    Crashed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Crashed => "crashed",
        }
    }

    pub fn to_proto(self) -> pb::InstanceState {
        match self {
            State::Starting => pb::InstanceState::Starting,
            State::Running => pb::InstanceState::Running,
            State::Stopping => pb::InstanceState::Stopping,
            State::Crashed => pb::InstanceState::Crashed,
        }
    }
}

/// What is known of an instance right now.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub id: String,
    pub app_id: String,
    pub release_id: String,
    pub version: u32,
    pub state: State,
    pub port: u16,
    pub pid: u32,
    pub restarts: u32,
    /// Failures since it last stayed up; drives the crash-loop status.
    pub consecutive_failures: u32,
    /// Why it last crashed.
    pub last_error: String,
    pub started_at: i64,
}

struct Slot {
    view: InstanceView,
    stop: CancellationToken,
    stop_reason: Arc<Mutex<String>>,
}

/// Crashes in a row after which an app is reported as crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 3;
/// An instance that stays up this long has its failure streak forgiven.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How often every app is reconciled even when nothing asked for it.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

struct Inner {
    store: Store,
    settings: RuntimeSettings,
    /// Fired when compute shuts down: from then on no instance is started.
    shutdown: CancellationToken,
    slots: Mutex<HashMap<String, Slot>>,
    changes: watch::Sender<u64>,
    reconcile: mpsc::UnboundedSender<Option<String>>,
    tasks: TaskTracker,
}

/// Handle to the runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("node_id", &self.inner.settings.node_id).finish_non_exhaustive()
    }
}

/// Errors of the runtime's own bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("events: {0}")]
    Events(#[from] EventsError),
}

impl Runtime {
    /// Adopts the instances a previous run left, kills strays, and starts the
    /// reconciler. Instances are stopped when `shutdown` fires and
    /// [`Runtime::drain`] is awaited.
    pub async fn start(
        store: Store,
        settings: RuntimeSettings,
        shutdown: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        let (reconcile, requests) = mpsc::unbounded_channel();
        let runtime = Runtime {
            inner: Arc::new(Inner {
                store,
                settings,
                slots: Mutex::new(HashMap::new()),
                changes: watch::Sender::new(0),
                reconcile,
                tasks: TaskTracker::new(),
                shutdown: shutdown.clone(),
            }),
        };
        runtime.adopt_survivors().await?;
        let reconciler = runtime.clone();
        tokio::spawn(async move { reconciler.run_reconciler(requests, shutdown).await });
        runtime.request_reconcile(None);
        Ok(runtime)
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the reconciler to look at one app (or all with `None`).
    pub fn request_reconcile(&self, app_id: Option<String>) {
        let _ = self.inner.reconcile.send(app_id);
    }

    /// A receiver that changes whenever any instance changes state.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|generation| *generation += 1);
    }

    /// The instances of an app, oldest first.
    pub fn instances_of(&self, app_id: &str) -> Vec<InstanceView> {
        let mut views: Vec<InstanceView> = self
            .slots()
            .values()
            .filter(|s| s.view.app_id == app_id)
            .map(|s| {
                let mut view = s.view.clone();
                // Asked to stop: no longer counts as serving, even before it exits.
                if s.stop.is_cancelled() {
                    view.state = State::Stopping;
                }
                view
            })
            .collect();
        views.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        views
    }

    /// The address instances listen on.
    pub fn host(&self) -> &str {
        &self.inner.settings.host
    }

    /// The log file of an instance.
    pub fn log_path(&self, app_id: &str, instance_id: &str) -> PathBuf {
        self.log_dir(app_id).join(format!("{instance_id}.log"))
    }

    /// Where an app's instance logs are.
    pub fn log_dir(&self, app_id: &str) -> PathBuf {
        self.inner.settings.data_dir.join("logs").join(app_id)
    }

    /// Stops every instance (compute is shutting down) and waits for them.
    pub async fn drain(&self) {
        // The shutdown token has fired, so `start_instance` adds no slot after this.
        for slot in self.slots().values() {
            stop_slot(slot, "compute is shutting down");
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Waits until `want` instances of `release_id` run, or one of them
    /// crashes, or `deadline` passes. Reports each instance that comes up.
    pub async fn wait_rollout(
        &self,
        app_id: &str,
        release_id: &str,
        want: u32,
        deadline: Duration,
        progress: impl Fn(String),
    ) -> Result<(), String> {
        let mut changes = self.changes();
        let until = tokio::time::Instant::now() + deadline;
        let mut reported = std::collections::HashSet::new();
        loop {
            let views: Vec<InstanceView> =
                self.instances_of(app_id).into_iter().filter(|v| v.release_id == release_id).collect();
            for view in views.iter().filter(|v| v.state == State::Running) {
                if reported.insert(view.id.clone()) {
                    progress(format!("instance {} is up on {}:{}", view.id, self.inner.settings.host, view.port));
                }
            }
            if let Some(crashed) = views.iter().find(|v| v.state == State::Crashed) {
                return Err(format!("instance {} crashed: {}", crashed.id, crashed.last_error));
            }
            let running = views.iter().filter(|v| v.state == State::Running).count();
            if running >= want as usize {
                return Ok(());
            }
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("compute is shutting down".to_owned()),
                Err(_) => {
                    return Err(format!(
                        "only {running} of {want} instances were ready within {}s",
                        deadline.as_secs()
                    ));
                }
            }
        }
    }

    async fn run_reconciler(self, mut requests: mpsc::UnboundedReceiver<Option<String>>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        loop {
            let request = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => None,
                request = requests.recv() => match request { Some(r) => r, None => return },
            };
            let result = match request {
                Some(app_id) => self.reconcile_app(&app_id).await,
                None => self.reconcile_all().await,
            };
            if let Err(error) = result {
                tracing::warn!(%error, "reconciliation failed, will try again");
            }
        }
    }

    async fn reconcile_all(&self) -> Result<(), RuntimeError> {
        let mut app_ids: Vec<String> = self.inner.store.apps_all().await?.into_iter().map(|a| a.id).collect();
        app_ids.extend(self.slots().values().map(|s| s.view.app_id.clone()));
        app_ids.sort();
        app_ids.dedup();
        for app_id in app_ids {
            self.reconcile_app(&app_id).await?;
        }
        Ok(())
    }

    /// Makes the instances of one app match its desired state: `instances`
    /// of the current release and `canary_instances` of the canary. Instances
    /// of any other release are stopped only once every desired one runs.
    async fn reconcile_app(&self, app_id: &str) -> Result<(), RuntimeError> {
        let app = self.inner.store.app_by_id(app_id).await?;
        let desired = match &app {
            Some(App { release_id: Some(release_id), .. }) => self.inner.store.release_by_id(release_id).await?,
            _ => None,
        };
        let (Some(app), Some(release)) = (app, desired) else {
            let slots = self.slots();
            for slot in slots.values().filter(|s| s.view.app_id == app_id) {
                stop_slot(slot, "the app was deleted");
            }
            return Ok(());
        };
        let canary = match &app.canary_release_id {
            Some(id) if *id != release.id => self.inner.store.release_by_id(id).await?,
            _ => None,
        };

        let mut wanted = vec![(&release, app.instances as usize, 0)];
        if let Some(canary) = &canary {
            wanted.push((canary, app.canary_instances as usize, 0));
        }
        {
            let slots = self.slots();
            let live = |s: &&Slot| s.view.app_id == app.id && s.view.state != State::Stopping && !s.stop.is_cancelled();
            let mut all_ready = true;
            for (release, want, to_start) in &mut wanted {
                let mut current: Vec<&Slot> =
                    slots.values().filter(live).filter(|s| s.view.release_id == release.id).collect();
                if current.len() < *want {
                    *to_start = *want - current.len();
                } else if current.len() > *want {
                    // Shed the least useful first: crashed, then starting, then the newest.
                    current.sort_by_key(|s| {
                        let rank = match s.view.state {
                            State::Crashed => 0,
                            State::Starting => 1,
                            _ => 2,
                        };
                        (rank, std::cmp::Reverse(s.view.started_at))
                    });
                    for slot in &current[..current.len() - *want] {
                        stop_slot(slot, "scaled down");
                    }
                    current.drain(..current.len() - *want);
                }
                all_ready &= *to_start == 0 && current.iter().all(|s| s.view.state == State::Running);
            }
            if all_ready {
                let reason = match &canary {
                    None => format!("replaced by release v{}", release.version),
                    Some(canary) => format!("replaced by release v{} and canary v{}", release.version, canary.version),
                };
                let keep = |s: &&Slot| {
                    s.view.release_id == release.id || canary.as_ref().is_some_and(|c| s.view.release_id == c.id)
                };
                for slot in slots.values().filter(live).filter(|s| !keep(s)) {
                    stop_slot(slot, &reason);
                }
            }
        }
        for (release, _, to_start) in wanted {
            for _ in 0..to_start {
                self.start_instance(&app, release, None);
            }
        }
        Ok(())
    }

    /// Starts supervising a new (or adopted) instance of `release`.
    fn start_instance(&self, app: &App, release: &Release, adopted: Option<(InstanceRecord, Proc)>) {
        let (id, restarts, port, pid, state) = match &adopted {
            Some((record, proc)) => (record.id.clone(), record.restarts, record.port, proc.pid, State::Running),
            None => (format!("{}-{}", app.name, short_id()), 0, 0, 0, State::Starting),
        };
        let view = InstanceView {
            id: id.clone(),
            app_id: app.id.clone(),
            release_id: release.id.clone(),
            version: release.version,
            state,
            port,
            pid,
            restarts,
            consecutive_failures: 0,
            last_error: String::new(),
            started_at: adopted.as_ref().map_or_else(now_ms, |(r, _)| r.started_at),
        };
        let stop = CancellationToken::new();
        let stop_reason = Arc::new(Mutex::new(String::new()));
        {
            let mut slots = self.slots();
            // Checked under the lock `drain` stops slots under: an instance is
            // either seen (and stopped) by the drain, or never started.
            if self.inner.shutdown.is_cancelled() {
                if let Some((_, proc)) = adopted {
                    proc.signal(nix::sys::signal::Signal::SIGTERM);
                }
                return;
            }
            slots.insert(id.clone(), Slot { view, stop: stop.clone(), stop_reason: stop_reason.clone() });
        }
        self.changed();
        let supervisor =
            Supervisor { runtime: self.clone(), app: app.clone(), release: release.clone(), id, stop, stop_reason };
        self.inner.tasks.spawn(supervisor.run(adopted.map(|(_, proc)| proc)));
    }

    /// Re-attaches to instances that outlived the previous run; forgets and
    /// reports those that did not; kills processes nobody knows.
    async fn adopt_survivors(&self) -> Result<(), RuntimeError> {
        let store = &self.inner.store;
        let mut adopted = std::collections::HashSet::new();
        for record in store.instances_all().await? {
            let app = store.app_by_id(&record.app_id).await?;
            let release = store.release_by_id(&record.release_id).await?;
            let proc = Proc::adopt(record.pid, record.pid_start, &record.id);
            match (app, release, proc) {
                (Some(app), Some(release), Some(proc)) if record.state == State::Running.as_str() => {
                    tracing::info!(app = %app.name, instance = %record.id, pid = proc.pid, "re-adopted a running instance");
                    adopted.insert(record.id.clone());
                    self.start_instance(&app, &release, Some((record, proc)));
                }
                (app, _, proc) => {
                    if let Some(proc) = proc {
                        proc.signal(nix::sys::signal::Signal::SIGKILL);
                    }
                    let mut tx = store.begin().await?;
                    store::instance_delete(tx.conn(), &record.id).await?;
                    if let Some(app) = app {
                        tx.emit(
                            events::INSTANCE_STOPPED,
                            &app.id,
                            &app.team,
                            &pb::InstanceStopped {
                                instance_id: record.id.clone(),
                                app_id: app.id.clone(),
                                app: app.name.clone(),
                                release_version: record.version,
                                host: record.host.clone(),
                                port: u32::from(record.port),
                                reason: "lost while compute was not running".to_owned(),
                            },
                        )
                        .await?;
                    }
                    tx.commit().await?;
                }
            }
        }
        for (pid, instance) in process::processes_of_node(&self.inner.settings.node_id) {
            if !adopted.contains(&instance) {
                tracing::warn!(pid, %instance, "killing a stray instance process nobody owns");
                process::kill_group(pid);
            }
        }
        Ok(())
    }
}

fn stop_slot(slot: &Slot, reason: &str) {
    if slot.stop.is_cancelled() {
        return;
    }
    if let Ok(mut r) = slot.stop_reason.lock() {
        *r = reason.to_owned();
    }
    slot.stop.cancel();
}

fn short_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    uuid[..8].to_owned()
}

/// Supervises one instance for its whole life.
struct Supervisor {
    runtime: Runtime,
    app: App,
    release: Release,
    id: String,
    stop: CancellationToken,
    stop_reason: Arc<Mutex<String>>,
}

enum Outcome {
    Stopped,
    Crashed { code: i32, reason: String },
}

impl Supervisor {
    fn update(&self, change: impl FnOnce(&mut InstanceView)) -> Option<InstanceView> {
        let view = {
            let mut slots = self.runtime.slots();
            let slot = slots.get_mut(&self.id)?;
            change(&mut slot.view);
            slot.view.clone()
        };
        self.runtime.changed();
        Some(view)
    }

    fn record(&self, view: &InstanceView, pid_start: u64) -> InstanceRecord {
        InstanceRecord {
            id: view.id.clone(),
            app_id: view.app_id.clone(),
            release_id: view.release_id.clone(),
            version: view.version,
            state: view.state.as_str().to_owned(),
            host: self.runtime.inner.settings.host.clone(),
            port: view.port,
            pid: view.pid,
            pid_start,
            restarts: view.restarts,
            started_at: view.started_at,
        }
    }

    fn launch(&self) -> Launch {
        let mut env = self.release.env.clone();
        env.insert("STRATA_APP".to_owned(), self.app.name.clone());
        env.insert("STRATA_RELEASE".to_owned(), format!("v{}", self.release.version));
        Launch {
            argv: self.release.argv.clone(),
            workdir: self.release.workdir.clone(),
            env,
            instance_id: self.id.clone(),
            node_id: self.runtime.inner.settings.node_id.clone(),
        }
    }

    /// Writes the instance's state and its event in one transaction, retrying
    /// while the database is unavailable (an instance's facts must not be lost).
    async fn persist(&self, view: &InstanceView, pid_start: u64, event: Option<InstanceEvent>) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_persist(view, pid_start, event.as_ref()).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(instance = %self.id, %error, "cannot record instance state, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_persist(
        &self,
        view: &InstanceView,
        pid_start: u64,
        event: Option<&InstanceEvent>,
    ) -> Result<(), RuntimeError> {
        let host = self.runtime.inner.settings.host.clone();
        let mut tx = self.runtime.inner.store.begin().await?;
        match event {
            Some(InstanceEvent::Stopped(_)) => store::instance_delete(tx.conn(), &view.id).await?,
            _ => store::instance_upsert(tx.conn(), &self.record(view, pid_start)).await?,
        }
        let (team, app_id, app) = (&self.app.team, &self.app.id, self.app.name.clone());
        match event {
            None => {}
            Some(InstanceEvent::Started) => {
                let data = pb::InstanceStarted {
                    instance_id: view.id.clone(),
                    app_id: app_id.clone(),
                    app,
                    release_version: view.version,
                    host,
                    port: u32::from(view.port),
                };
                tx.emit(events::INSTANCE_STARTED, app_id, team, &data).await?;
            }
            Some(InstanceEvent::Stopped(reason)) => {
                let data = pb::InstanceStopped {
                    instance_id: view.id.clone(),
                    app_id: app_id.clone(),
                    app,
                    release_version: view.version,
                    host,
                    port: u32::from(view.port),
                    reason: reason.clone(),
                };
                tx.emit(events::INSTANCE_STOPPED, app_id, team, &data).await?;
            }
            Some(InstanceEvent::Crashed { code, reason }) => {
                let data = pb::InstanceCrashed {
                    instance_id: view.id.clone(),
                    app_id: app_id.clone(),
                    app,
                    release_version: view.version,
                    host,
                    port: u32::from(view.port),
                    exit_code: *code,
                    reason: reason.clone(),
                    restarts: view.restarts,
                };
                tx.emit(events::INSTANCE_CRASHED, app_id, team, &data).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    fn log_line(&self, line: &str) {
        use std::io::Write;
        let path = self.runtime.log_path(&self.app.id, &self.id);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "[strata] {line}");
        }
    }

    async fn run(self, mut adopted: Option<Proc>) {
        loop {
            let was_adopted = adopted.is_some();
            let outcome = match adopted.take() {
                Some(proc) => self.supervise(proc, true).await,
                None => match self.spawn() {
                    Ok(proc) => self.supervise(proc, false).await,
                    Err(reason) => Outcome::Crashed { code: -1, reason },
                },
            };
            let Outcome::Crashed { code, reason } = outcome else { break };
            tracing::warn!(app = %self.app.name, instance = %self.id, code, %reason, adopted = was_adopted, "instance crashed");
            self.log_line(&format!("crashed: {reason}"));
            let Some(mut view) = self.update(|_| {}) else { break };
            view.state = State::Crashed;
            view.restarts += 1;
            view.consecutive_failures += 1;
            view.last_error = reason.clone();
            self.persist(&view, 0, Some(InstanceEvent::Crashed { code, reason })).await;
            let shown = view.clone();
            self.update(move |v| *v = shown);
            self.runtime.request_reconcile(Some(self.app.id.clone()));
            let exponent = view.consecutive_failures.saturating_sub(1).min(6);
            let backoff = (Duration::from_millis(500) * 2u32.pow(exponent)).min(Duration::from_secs(30));
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        // Stopped on purpose (or crashed and then told to stop).
        let reason = self.stop_reason.lock().map(|r| r.clone()).unwrap_or_default();
        let view = self.update(|v| v.state = State::Stopping);
        if let Some(view) = view {
            self.persist(&view, 0, Some(InstanceEvent::Stopped(reason.clone()))).await;
        }
        self.log_line(&format!("stopped: {reason}"));
        self.runtime.slots().remove(&self.id);
        self.runtime.changed();
        self.runtime.request_reconcile(Some(self.app.id.clone()));
    }

    fn spawn(&self) -> Result<Proc, String> {
        let port = process::free_port().map_err(|e| format!("no free port: {e}"))?;
        let log = self.runtime.log_path(&self.app.id, &self.id);
        let proc = process::spawn(&self.launch(), port, &log)
            .map_err(|e| format!("cannot start `{}`: {e}", self.release.argv.join(" ")))?;
        self.update(|v| {
            v.state = State::Starting;
            v.port = port;
            v.pid = proc.pid;
        });
        Ok(proc)
    }

    /// Watches a started process until it stops or crashes.
    async fn supervise(&self, mut proc: Proc, adopted: bool) -> Outcome {
        let settings = &self.runtime.inner.settings;
        let Some(view) = self.update(|_| {}) else { return Outcome::Stopped };
        let port = view.port;
        self.persist(&view, proc.start_time, None).await;

        if !adopted {
            enum Ready {
                Yes,
                Exited(process::Exit),
                TimedOut,
                Stop,
            }
            let ready = tokio::select! {
                () = process::wait_ready(&settings.host, port) => Ready::Yes,
                exit = proc.wait() => Ready::Exited(exit),
                () = tokio::time::sleep(settings.ready_timeout) => Ready::TimedOut,
                () = self.stop.cancelled() => Ready::Stop,
            };
            match ready {
                Ready::Yes => {}
                Ready::Stop => {
                    proc.stop(settings.stop_grace).await;
                    return Outcome::Stopped;
                }
                Ready::Exited(exit) => {
                    proc.signal(nix::sys::signal::Signal::SIGKILL);
                    return Outcome::Crashed {
                        code: exit.code,
                        reason: format!("exited with code {} before accepting connections on its port", exit.code),
                    };
                }
                Ready::TimedOut => {
                    proc.stop(settings.stop_grace).await;
                    return Outcome::Crashed {
                        code: -1,
                        reason: format!(
                            "did not accept connections on $PORT ({port}) within {}s",
                            settings.ready_timeout.as_secs()
                        ),
                    };
                }
            }
            // Record the fact (and its event) first, then show it: whoever
            // waits for this instance to run sees it only once it is committed.
            let Some(mut view) = self.update(|_| {}) else {
                proc.stop(settings.stop_grace).await;
                return Outcome::Stopped;
            };
            view.state = State::Running;
            view.started_at = now_ms();
            self.persist(&view, proc.start_time, Some(InstanceEvent::Started)).await;
            self.update(|v| {
                v.state = State::Running;
                v.started_at = view.started_at;
            });
            self.runtime.request_reconcile(Some(self.app.id.clone()));
        }

        let up_since = Instant::now();
        tokio::select! {
            exit = proc.wait() => {
                proc.signal(nix::sys::signal::Signal::SIGKILL);
                if up_since.elapsed() >= STABLE_AFTER {
                    self.update(|v| v.consecutive_failures = 0);
                }
                Outcome::Crashed { code: exit.code, reason: format!("exited with code {}", exit.code) }
            }
            () = self.stop.cancelled() => {
                self.announce_stopping(&view).await;
                tokio::select! {
                    () = tokio::time::sleep(settings.drain_delay) => {}
                    _ = proc.wait() => {}
                }
                proc.stop(settings.stop_grace).await;
                Outcome::Stopped
            }
        }
    }

    /// Tells routers this instance is going before it gets SIGTERM. Best
    /// effort: `instance.stopped` follows in any case.
    async fn announce_stopping(&self, view: &InstanceView) {
        let reason = self.stop_reason.lock().map(|r| r.clone()).unwrap_or_default();
        let data = pb::InstanceStopping {
            instance_id: view.id.clone(),
            app_id: self.app.id.clone(),
            app: self.app.name.clone(),
            release_version: view.version,
            host: self.runtime.inner.settings.host.clone(),
            port: u32::from(view.port),
            reason,
        };
        let announced = async {
            let mut tx = self.runtime.inner.store.begin().await?;
            tx.emit(events::INSTANCE_STOPPING, &self.app.id, &self.app.team, &data).await?;
            tx.commit().await?;
            Ok::<_, RuntimeError>(())
        };
        if let Err(error) = announced.await {
            tracing::warn!(instance = %view.id, %error, "could not announce that the instance is stopping");
        }
    }
}

enum InstanceEvent {
    Started,
    Stopped(String),
    Crashed { code: i32, reason: String },
}
