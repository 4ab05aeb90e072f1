//! Compute's domain: the rules for apps, config, uploads, releases and
//! deployments. Every operation takes the caller's [`Identity`] and only ever
//! sees that team's apps: another team's app is simply not found.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::{Stream, StreamExt};
use strata_kit::{Identity, store::now_ms};
use strata_proto::compute::v1 as pb;
use tokio::{io::AsyncWriteExt, sync::mpsc};

use crate::{
    archive, buildpack, events,
    model::{App, ConfigVar, Deployment, DeploymentStatus, Release, SourceKind, Upload},
    runtime::{CRASH_LOOP_AFTER, InstanceView, Runtime, State},
    store::{self, Store},
};

/// Compute's operations fail with the shared API error (mapped to gRPC at the edge).
pub use strata_kit::ApiError as Error;

type Result<T> = std::result::Result<T, Error>;

/// Limits and places for compute's work.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Largest accepted upload (compressed).
    pub max_upload_bytes: u64,
    /// Largest unpacked source tree.
    pub max_unpacked_bytes: u64,
    /// How long a build may run.
    pub build_timeout: Duration,
    /// How long a rollout may take before it is failed and undone.
    pub rollout_timeout: Duration,
}

/// What to deploy.
#[derive(Debug, Clone)]
pub enum Source {
    Upload(String),
    Command {
        argv: Vec<String>,
        workdir: String,
    },
    /// An existing release of the app, by version: deployed again, not built.
    Release(u32),
}

/// The most instances one release of an app may run.
const MAX_INSTANCES: u32 = 100;

/// Where a deployed release goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Replaces the current release and ends any canary; `instances` 0 keeps
    /// the app's count.
    Replace { instances: u32 },
    /// Runs beside the current release as its canary, with `instances` of
    /// its own; the current release keeps its instances.
    Canary { instances: u32 },
    /// Replaces the current release with the same artifact under new config,
    /// keeping the instance count and any canary: a config change is not a
    /// decision about which code runs.
    Reconfigure,
}

impl Placement {
    /// The placement a deploy request asks for: `instances` for a
    /// replacement, or a canary of `canary_instances` (1 when 0).
    pub fn of_request(instances: u32, canary: bool, canary_instances: u32) -> Result<Self> {
        if !canary {
            if canary_instances > 0 {
                return Err(Error::InvalidArgument(
                    "canary_instances is the size of a canary: deploy with canary set, or leave it out".to_owned(),
                ));
            }
            if instances > MAX_INSTANCES {
                return Err(Error::InvalidArgument(format!(
                    "{instances} instances is more than the limit of {MAX_INSTANCES}"
                )));
            }
            return Ok(Placement::Replace { instances });
        }
        if instances > 0 {
            return Err(Error::InvalidArgument(
                "a canary leaves the current release's instance count as it is: give the canary's own count as \
                 canary_instances (`--canary-instances N`), not instances"
                    .to_owned(),
            ));
        }
        if canary_instances > MAX_INSTANCES {
            return Err(Error::InvalidArgument(format!(
                "{canary_instances} canary instances is more than the limit of {MAX_INSTANCES}"
            )));
        }
        Ok(Placement::Canary { instances: canary_instances.max(1) })
    }

    fn is_canary(self) -> bool {
        matches!(self, Placement::Canary { .. })
    }
}

/// What runs of an app, next to what should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppState {
    pub status: pb::AppStatus,
    /// Running instances of the current release.
    pub running: u32,
    /// Running instances of the canary release.
    pub canary_running: u32,
}

/// A step of a deployment, streamed to the caller.
#[derive(Debug, Clone)]
pub enum Progress {
    Log(String),
    Release(Release),
}

/// The compute domain service.
#[derive(Clone)]
pub struct Compute {
    store: Store,
    runtime: Runtime,
    settings: Arc<Settings>,
    app_locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Validates an app name: a DNS label of at most 40 characters.
pub fn validate_app_name(name: &str) -> Result<()> {
    strata_kit::error::validate_name("app", name)
}

/// Validates a config key: an environment variable name the platform does not own.
pub fn validate_config_key(key: &str) -> Result<()> {
    let valid = key.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && key.len() <= 128;
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "invalid config key {key:?}: use uppercase letters, digits and underscores, not starting with a digit"
        )));
    }
    if key == "PORT" || key.starts_with("STRATA_") {
        return Err(Error::InvalidArgument(format!("{key} is set by the platform and cannot be configured")));
    }
    Ok(())
}

/// A secret's value as it may be shown.
pub fn mask(value: &str) -> String {
    let tail: String = value.chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
    if value.chars().count() <= 6 { "••••".to_owned() } else { format!("••••{tail}") }
}

impl Compute {
    pub fn new(store: Store, runtime: Runtime, settings: Settings) -> Self {
        Self { store, runtime, settings: Arc::new(settings), app_locks: Arc::default() }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Closes deployments a previous run left open (compute stopped in the
    /// middle of one): they are recorded as failed, with their event. What
    /// should run is still decided by the apps' desired state.
    pub async fn recover_interrupted(&self) -> Result<()> {
        for deployment in self.store.deployments_unfinished().await? {
            let Some(app) = self.store.app_by_id(&deployment.app_id).await? else { continue };
            tracing::warn!(app = %app.name, version = deployment.version, "closing a deployment interrupted by a restart");
            self.deployment_fail(
                &app,
                deployment,
                false,
                "interrupted: compute stopped during the deployment".to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    /// Serialises the operations that change one app.
    async fn lock_app(&self, app_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.app_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(app_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The caller's app called `name`.
    pub async fn app_find(&self, identity: &Identity, name: &str) -> Result<App> {
        validate_app_name(name)?;
        self.store.app_by_name(&identity.team, name).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "app {name:?} not found in team {}: `strata apps list` shows your apps",
                identity.team
            ))
        })
    }

    pub async fn app_create(&self, identity: &Identity, name: &str) -> Result<App> {
        validate_app_name(name)?;
        if self.store.app_by_name(&identity.team, name).await?.is_some() {
            return Err(Error::AlreadyExists(format!("team {} already has an app called {name:?}", identity.team)));
        }
        let app = App {
            id: uuid::Uuid::now_v7().to_string(),
            team: identity.team.clone(),
            name: name.to_owned(),
            release_id: None,
            instances: 1,
            canary_release_id: None,
            canary_instances: 0,
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::app_insert(tx.conn(), &app).await.map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::AlreadyExists(format!("team {} already has an app called {name:?}", identity.team))
            }
            other => other.into(),
        })?;
        tx.emit(
            events::APP_CREATED,
            &app.id,
            &app.team,
            &pb::AppCreated { app_id: app.id.clone(), app: app.name.clone() },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(team = %app.team, app = %app.name, "app created");
        Ok(app)
    }

    pub async fn app_list(&self, identity: &Identity) -> Result<Vec<App>> {
        Ok(self.store.apps_of_team(&identity.team).await?)
    }

    /// Deletes an app: desired state first (so the reconciler stops its
    /// instances), then its files.
    pub async fn app_delete(&self, identity: &Identity, name: &str) -> Result<()> {
        let app = self.app_find(identity, name).await?;
        let _guard = self.lock_app(&app.id).await;
        let mut tx = self.store.begin().await?;
        store::app_delete(tx.conn(), &app.id).await?;
        tx.emit(
            events::APP_DELETED,
            &app.id,
            &app.team,
            &pb::AppDeleted { app_id: app.id.clone(), app: app.name.clone() },
        )
        .await?;
        tx.commit().await?;
        self.runtime.request_reconcile(Some(app.id.clone()));
        let mut changes = self.runtime.changes();
        let stopped = tokio::time::timeout(self.settings.rollout_timeout, async {
            while !self.runtime.instances_of(&app.id).is_empty() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(app = %app.name, "instances of a deleted app are still stopping");
        }
        let app_dir = self.settings.data_dir.join("apps").join(&app.id);
        if let Err(error) = tokio::fs::remove_dir_all(&app_dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %app_dir.display(), "could not remove the app's files");
        }
        let _ = tokio::fs::remove_dir_all(self.runtime.log_dir(&app.id)).await;
        tracing::info!(team = %app.team, app = %app.name, "app deleted");
        Ok(())
    }

    /// The app's status, derived from what runs: the current release and
    /// the canary are each at their count, and nothing else runs.
    pub fn app_status(&self, app: &App) -> AppState {
        fn of<'a>(instances: &'a [InstanceView], release: Option<&String>) -> Vec<&'a InstanceView> {
            match release {
                Some(release) => instances.iter().filter(|i| &i.release_id == release).collect(),
                None => Vec::new(),
            }
        }
        fn running(instances: &[&InstanceView]) -> u32 {
            instances.iter().filter(|i| i.state == State::Running).count() as u32
        }
        let instances = self.runtime.instances_of(&app.id);
        let current = of(&instances, app.release_id.as_ref());
        let canary = of(&instances, app.canary_release_id.as_ref());
        let canary_want = if app.canary_release_id.is_some() { app.canary_instances } else { 0 };
        let state =
            AppState { status: pb::AppStatus::Deploying, running: running(&current), canary_running: running(&canary) };
        let status = if app.release_id.is_none() {
            pb::AppStatus::New
        } else if current
            .iter()
            .chain(&canary)
            .any(|i| i.state != State::Running && i.consecutive_failures >= CRASH_LOOP_AFTER)
        {
            pb::AppStatus::CrashLoop
        } else if app.instances == 0 && canary_want == 0 && instances.is_empty() {
            pb::AppStatus::Idle
        } else if state.running == app.instances
            && state.canary_running == canary_want
            && instances.len() == current.len() + canary.len()
        {
            pb::AppStatus::Running
        } else {
            pb::AppStatus::Deploying
        };
        AppState { status, ..state }
    }

    /// The version of the app's current release; 0 before the first deploy.
    pub async fn release_version_of(&self, app: &App) -> Result<u32> {
        self.version_of(app.release_id.as_deref()).await
    }

    /// The version of the app's canary release; 0 when it has none.
    pub async fn canary_version_of(&self, app: &App) -> Result<u32> {
        self.version_of(app.canary_release_id.as_deref()).await
    }

    async fn version_of(&self, release_id: Option<&str>) -> Result<u32> {
        Ok(match release_id {
            Some(id) => self.store.release_by_id(id).await?.map_or(0, |r| r.version),
            None => 0,
        })
    }

    pub async fn config_list(&self, identity: &Identity, name: &str) -> Result<Vec<ConfigVar>> {
        let app = self.app_find(identity, name).await?;
        Ok(self.store.config_of(&app.id).await?)
    }

    pub async fn config_set(
        &self,
        identity: &Identity,
        name: &str,
        vars: &BTreeMap<String, String>,
        secret: bool,
    ) -> Result<Vec<ConfigVar>> {
        if vars.is_empty() {
            return Err(Error::InvalidArgument("no config vars given: pass KEY=VALUE pairs".to_owned()));
        }
        for key in vars.keys() {
            validate_config_key(key)?;
        }
        let app = self.app_find(identity, name).await?;
        let _guard = self.lock_app(&app.id).await;
        let mut tx = self.store.begin().await?;
        for (key, value) in vars {
            store::config_upsert(tx.conn(), &app.id, &ConfigVar { key: key.clone(), value: value.clone(), secret })
                .await?;
        }
        tx.commit().await?;
        tracing::info!(app = %app.name, keys = ?vars.keys().collect::<Vec<_>>(), secret, "config set");
        self.release_config(&app).await?;
        Ok(self.store.config_of(&app.id).await?)
    }

    pub async fn config_unset(&self, identity: &Identity, name: &str, keys: &[String]) -> Result<Vec<ConfigVar>> {
        let app = self.app_find(identity, name).await?;
        let _guard = self.lock_app(&app.id).await;
        let mut tx = self.store.begin().await?;
        for key in keys {
            if store::config_delete(tx.conn(), &app.id, key).await? == 0 {
                return Err(Error::NotFound(format!("app {name:?} has no config var {key:?}")));
            }
        }
        tx.commit().await?;
        self.release_config(&app).await?;
        Ok(self.store.config_of(&app.id).await?)
    }

    /// Sets (or, with `None`, removes) a config var that another concern
    /// provides (DATABASE_URL from a binding), inside the caller's
    /// transaction, and queues a release with it. Unknown apps are ignored:
    /// the binding outlived its app.
    pub async fn provided_config(
        &self,
        tx: &mut strata_events::EventTx,
        team: &str,
        app_name: &str,
        key: &str,
        value: Option<&str>,
        reason: &str,
    ) -> Result<()> {
        let Some(app) = self.store.app_by_name(team, app_name).await? else {
            tracing::info!(team, app = app_name, key, "config for an app that does not exist; ignored");
            return Ok(());
        };
        match value {
            Some(value) => {
                let var = ConfigVar { key: key.to_owned(), value: value.to_owned(), secret: true };
                store::config_upsert(tx.conn(), &app.id, &var).await?;
            }
            None => {
                store::config_delete(tx.conn(), &app.id, key).await?;
            }
        }
        store::pending_release_insert(tx.conn(), &app.id, reason).await?;
        tracing::info!(team, app = app_name, key, reason, "provided config changed; a release is queued");
        Ok(())
    }

    /// Rolls out the queued config releases, until `shutdown`.
    pub async fn run_pending_releases(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            let pending = match self.store.pending_releases().await {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::warn!(%error, "cannot read queued releases");
                    continue;
                }
            };
            for (app_id, reason) in pending {
                let work = async {
                    let _guard = self.lock_app(&app_id).await;
                    if let Some(app) = self.store.app_by_id(&app_id).await? {
                        match self.release_config(&app).await {
                            Ok(()) | Err(Error::FailedPrecondition(_)) => {}
                            Err(other) => return Err(other),
                        }
                    }
                    let mut tx = self.store.begin().await?;
                    store::pending_release_delete(tx.conn(), &app_id).await?;
                    tx.commit().await?;
                    Ok::<_, Error>(())
                };
                // A rollout can take a while: shutting down must not wait for it
                // (the queued row stays and is picked up on the next start).
                let outcome = tokio::select! {
                    () = shutdown.cancelled() => return,
                    outcome = work => outcome,
                };
                if let Err(error) = outcome {
                    tracing::warn!(app = %app_id, %reason, %error, "queued release not done yet, will retry");
                }
            }
        }
    }

    /// After a config change, releases the running artifact again with the
    /// new config (as a new version) and rolls it out with no downtime. A
    /// canary keeps running as it is. The caller holds the app's lock.
    async fn release_config(&self, app: &App) -> Result<()> {
        // Read again under the lock: a deploy may have finished since the
        // caller looked, and its release is the one to reconfigure.
        let Some(app) = &self.store.app_by_id(&app.id).await? else { return Ok(()) };
        let Some(current_id) = &app.release_id else { return Ok(()) };
        let Some(current) = self.store.release_by_id(current_id).await? else { return Ok(()) };
        let env = self.store.config_of(&app.id).await?.into_iter().map(|v| (v.key, v.value)).collect();
        let mut release = Release { id: uuid::Uuid::now_v7().to_string(), env, created_at: now_ms(), ..current };
        let mut deployment = Deployment {
            id: uuid::Uuid::now_v7().to_string(),
            app_id: app.id.clone(),
            release_id: Some(release.id.clone()),
            version: 0,
            status: DeploymentStatus::RollingOut,
            reason: String::new(),
            created_at: now_ms(),
            finished_at: None,
            canary: false,
        };
        let mut tx = self.store.begin().await?;
        release.version = store::release_next_version(tx.conn(), &app.id).await?;
        deployment.version = release.version;
        store::release_insert(tx.conn(), &release).await?;
        store::deployment_insert(tx.conn(), &deployment).await?;
        self.emit_deployment_started(&mut tx, app, &deployment).await?;
        tx.commit().await?;
        let (progress, _ignored) = mpsc::unbounded_channel();
        let version = release.version;
        let outcome = self.roll_out(app.clone(), release, deployment, Placement::Reconfigure, &progress).await?;
        if outcome.status == DeploymentStatus::Failed {
            return Err(Error::FailedPrecondition(format!(
                "the config is saved, but release v{version} with it did not start ({}); the previous release \
                 keeps running",
                outcome.reason
            )));
        }
        Ok(())
    }

    /// Receives an upload, checks it, and keeps it for a deploy. A bad or
    /// oversized archive is refused and leaves nothing behind.
    pub async fn upload_receive(
        &self,
        identity: &Identity,
        name: &str,
        mut chunks: impl Stream<Item = Result<Vec<u8>>> + Unpin,
    ) -> Result<Upload> {
        identity.require_write()?;
        let app = self.app_find(identity, name).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self.settings.data_dir.join("apps").join(&app.id).join("uploads");
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(format!("{id}.tar.gz"));
        let received = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let mut size = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > self.settings.max_upload_bytes {
                    return Err(Error::InvalidArgument(format!(
                        "the upload is larger than the limit of {} bytes: leave build output and dependencies \
                         out (.strataignore)",
                        self.settings.max_upload_bytes
                    )));
                }
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            let check_path = path.clone();
            let limit = self.settings.max_unpacked_bytes;
            let summary = tokio::task::spawn_blocking(move || archive::inspect(&check_path, limit))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(archive_error)?;
            let upload = Upload {
                id: id.clone(),
                app_id: app.id.clone(),
                path: path.display().to_string(),
                size_bytes: size,
                files: summary.files,
                created_at: now_ms(),
            };
            let mut tx = self.store.begin().await?;
            store::upload_insert(tx.conn(), &upload).await?;
            tx.commit().await?;
            Ok(upload)
        }
        .await;
        if received.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        received
    }

    /// Builds a release from `source` (or takes the existing release it
    /// names) and rolls it out where `placement` says.
    pub async fn deploy(
        &self,
        identity: &Identity,
        name: &str,
        source: Source,
        placement: Placement,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<Deployment> {
        identity.require_write()?;
        let app = self.app_find(identity, name).await?;
        let upload = match &source {
            Source::Upload(id) => {
                Some(self.store.upload_by_id(id).await?.filter(|u| u.app_id == app.id).ok_or_else(|| {
                    Error::NotFound(format!("upload {id:?} not found for app {name:?}: upload again"))
                })?)
            }
            Source::Command { argv, .. } if argv.is_empty() || argv[0].is_empty() => {
                return Err(Error::InvalidArgument(
                    "the command is empty: give a program and its arguments".to_owned(),
                ));
            }
            Source::Release(0) => {
                return Err(Error::InvalidArgument(
                    "release version 0 is no release: name one `strata releases` lists, e.g. v3".to_owned(),
                ));
            }
            Source::Command { .. } | Source::Release(_) => None,
        };
        let _guard = self.lock_app(&app.id).await;
        let app =
            self.store.app_by_id(&app.id).await?.ok_or_else(|| Error::NotFound(format!("app {name:?} was deleted")))?;
        if placement.is_canary() && app.release_id.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "app {name:?} has no release yet: deploy a first release before a canary"
            )));
        }
        if let Source::Release(version) = source {
            let release = self.store.release_by_version(&app.id, version).await?.ok_or_else(|| {
                Error::NotFound(format!("app {name:?} has no release v{version}: `strata releases` lists them"))
            })?;
            if placement.is_canary() && app.release_id.as_ref() == Some(&release.id) {
                return Err(Error::InvalidArgument(format!(
                    "v{version} is the current release of {name:?}: a canary runs another release beside it \
                     (deploy new code with canary set, or name another release)"
                )));
            }
            let line = if placement.is_canary() {
                format!("-----> deploying v{version} of {} again, as its canary", app.name)
            } else {
                format!("-----> deploying v{version} of {} again", app.name)
            };
            return self.deploy_existing(app, release, placement, line, &progress).await;
        }

        let release_id = uuid::Uuid::now_v7().to_string();
        let mut deployment = Deployment {
            id: uuid::Uuid::now_v7().to_string(),
            app_id: app.id.clone(),
            release_id: None,
            version: 0,
            status: DeploymentStatus::Building,
            reason: String::new(),
            created_at: now_ms(),
            finished_at: None,
            canary: placement.is_canary(),
        };
        let mut tx = self.store.begin().await?;
        deployment.version = store::release_next_version(tx.conn(), &app.id).await?;
        store::deployment_insert(tx.conn(), &deployment).await?;
        self.emit_deployment_started(&mut tx, &app, &deployment).await?;
        tx.commit().await?;

        let say = |line: String| {
            let _ = progress.send(Progress::Log(line));
        };
        say(format!("-----> building v{} of {}", deployment.version, app.name));
        let release_dir = self.settings.data_dir.join("apps").join(&app.id).join("releases").join(&release_id);
        let built = self.build(&source, upload.as_ref(), &release_dir, &progress).await;
        let (buildpack, argv, workdir) = match built {
            Ok(built) => built,
            Err(reason) => {
                let _ = tokio::fs::remove_dir_all(&release_dir).await;
                say(format!("-----> build failed: {reason}"));
                return self.deployment_fail(&app, deployment, false, reason).await;
            }
        };
        let env = self.store.config_of(&app.id).await?.into_iter().map(|v| (v.key, v.value)).collect();
        let release = Release {
            id: release_id,
            app_id: app.id.clone(),
            version: deployment.version,
            source: if upload.is_some() { SourceKind::Archive } else { SourceKind::Command },
            buildpack,
            argv,
            workdir,
            env,
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::release_insert(tx.conn(), &release).await?;
        if let Some(upload) = &upload {
            store::upload_delete(tx.conn(), &upload.id).await?;
        }
        tx.commit().await?;
        if let Some(upload) = &upload {
            let _ = tokio::fs::remove_file(&upload.path).await;
        }
        let _ = progress.send(Progress::Release(release.clone()));
        self.roll_out(app, release, deployment, placement, &progress).await
    }

    /// Deploys an earlier release again: `version`, or the one before the
    /// current release when 0. It ends a canary (promotes it, when `version`
    /// is the canary's).
    pub async fn rollback(
        &self,
        identity: &Identity,
        name: &str,
        version: u32,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<Deployment> {
        identity.require_write()?;
        let app = self.app_find(identity, name).await?;
        let _guard = self.lock_app(&app.id).await;
        let app =
            self.store.app_by_id(&app.id).await?.ok_or_else(|| Error::NotFound(format!("app {name:?} was deleted")))?;
        let current = self.release_version_of(&app).await?;
        let target = if version == 0 {
            if current <= 1 {
                return Err(Error::FailedPrecondition(format!(
                    "app {name:?} has no release before v{current} to roll back to"
                )));
            }
            let mut found = None;
            for v in (1..current).rev() {
                if let Some(r) = self.store.release_by_version(&app.id, v).await? {
                    found = Some(r);
                    break;
                }
            }
            found
        } else {
            self.store.release_by_version(&app.id, version).await?
        };
        let release = target.ok_or_else(|| {
            Error::NotFound(format!("app {name:?} has no release v{version}: `strata releases` lists them"))
        })?;
        let line = format!("-----> rolling back {} to v{}", app.name, release.version);
        self.deploy_existing(app, release, Placement::Replace { instances: 0 }, line, &progress).await
    }

    /// Rolls out a release that is already built. The caller holds the
    /// app's lock.
    async fn deploy_existing(
        &self,
        app: App,
        release: Release,
        placement: Placement,
        line: String,
        progress: &mpsc::UnboundedSender<Progress>,
    ) -> Result<Deployment> {
        let deployment = Deployment {
            id: uuid::Uuid::now_v7().to_string(),
            app_id: app.id.clone(),
            release_id: Some(release.id.clone()),
            version: release.version,
            status: DeploymentStatus::RollingOut,
            reason: String::new(),
            created_at: now_ms(),
            finished_at: None,
            canary: placement.is_canary(),
        };
        let mut tx = self.store.begin().await?;
        store::deployment_insert(tx.conn(), &deployment).await?;
        self.emit_deployment_started(&mut tx, &app, &deployment).await?;
        tx.commit().await?;
        let _ = progress.send(Progress::Log(line));
        let _ = progress.send(Progress::Release(release.clone()));
        self.roll_out(app, release, deployment, placement, progress).await
    }

    async fn emit_deployment_started(
        &self,
        tx: &mut strata_events::EventTx,
        app: &App,
        deployment: &Deployment,
    ) -> Result<()> {
        tx.emit(
            events::DEPLOYMENT_STARTED,
            &app.id,
            &app.team,
            &pb::DeploymentStarted {
                deployment_id: deployment.id.clone(),
                app_id: app.id.clone(),
                app: app.name.clone(),
                release_version: deployment.version,
                canary: deployment.canary,
            },
        )
        .await?;
        Ok(())
    }

    /// Builds the source into (buildpack, argv, workdir).
    async fn build(
        &self,
        source: &Source,
        upload: Option<&Upload>,
        release_dir: &Path,
        progress: &mpsc::UnboundedSender<Progress>,
    ) -> std::result::Result<(String, Vec<String>, String), String> {
        match (source, upload) {
            (Source::Command { argv, workdir }, _) => {
                let workdir = if workdir.is_empty() {
                    tokio::fs::create_dir_all(release_dir).await.map_err(|e| e.to_string())?;
                    release_dir.display().to_string()
                } else {
                    workdir.clone()
                };
                if !Path::new(&workdir).is_dir() {
                    return Err(format!("the working directory {workdir} does not exist"));
                }
                let _ = progress.send(Progress::Log(format!("-----> command: {}", argv.join(" "))));
                Ok(("command".to_owned(), argv.clone(), workdir))
            }
            (Source::Upload(_), Some(upload)) => {
                let archive_path = PathBuf::from(&upload.path);
                let dest = release_dir.to_path_buf();
                let limit = self.settings.max_unpacked_bytes;
                tokio::task::spawn_blocking(move || archive::extract(&archive_path, &dest, limit))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let (log_tx, mut log_rx) = mpsc::unbounded_channel();
                let forward = {
                    let progress = progress.clone();
                    tokio::spawn(async move {
                        while let Some(line) = log_rx.recv().await {
                            let _ = progress.send(Progress::Log(line));
                        }
                    })
                };
                let built =
                    tokio::time::timeout(self.settings.build_timeout, buildpack::build(release_dir, &log_tx)).await;
                drop(log_tx);
                let _ = forward.await;
                let built = built
                    .map_err(|_| format!("the build took longer than {}s", self.settings.build_timeout.as_secs()))?
                    .map_err(|e| e.to_string())?;
                Ok((built.buildpack.to_owned(), built.argv, release_dir.display().to_string()))
            }
            (Source::Upload(id), None) => Err(format!("upload {id} is gone")),
            (Source::Release(version), _) => Err(format!("release v{version} is already built")),
        }
    }

    /// Makes `release` the desired one (or, for a canary, the desired
    /// canary) and waits for it to serve; undoes the switch when it does not,
    /// so what ran before is left untouched. The caller holds the app's lock
    /// and passes the app as it was before the rollout.
    async fn roll_out(
        &self,
        app: App,
        release: Release,
        mut deployment: Deployment,
        placement: Placement,
        progress: &mpsc::UnboundedSender<Progress>,
    ) -> Result<Deployment> {
        let say = |line: String| {
            let _ = progress.send(Progress::Log(line));
        };
        let want = match placement {
            Placement::Replace { instances } if instances > 0 => instances,
            Placement::Replace { .. } | Placement::Reconfigure => app.instances,
            Placement::Canary { instances } => instances,
        };
        let canary = placement.is_canary();
        deployment.status = DeploymentStatus::RollingOut;
        deployment.release_id = Some(release.id.clone());
        let mut tx = self.store.begin().await?;
        if canary {
            store::app_set_canary(tx.conn(), &app.id, Some(&release.id), want).await?;
        } else {
            store::app_set_desired(tx.conn(), &app.id, Some(&release.id), want).await?;
            if placement != Placement::Reconfigure {
                store::app_set_canary(tx.conn(), &app.id, None, 0).await?;
            }
        }
        store::deployment_update(tx.conn(), &deployment).await?;
        tx.commit().await?;
        if canary {
            let current = self.release_version_of(&app).await?;
            say(format!("-----> starting {want} canary instance(s) of v{} beside v{current}", release.version));
        } else {
            say(format!("-----> starting {want} instance(s) of v{}", release.version));
            if placement != Placement::Reconfigure && app.canary_release_id.is_some() {
                let ended = self.canary_version_of(&app).await?;
                if app.canary_release_id.as_ref() == Some(&release.id) {
                    say(format!("-----> promoting canary v{ended}: its instances stay"));
                } else {
                    say(format!("-----> ending canary v{ended}"));
                }
            }
        }
        self.runtime.request_reconcile(Some(app.id.clone()));

        let outcome = self
            .runtime
            .wait_rollout(&app.id, &release.id, want, self.settings.rollout_timeout, |line| {
                say(format!("       {line}"));
            })
            .await;
        match outcome {
            Ok(()) => {
                // The new release serves: that is success. The reconciler now
                // drains the old instances (SIGTERM, grace period) on its own.
                deployment.status = DeploymentStatus::Succeeded;
                deployment.finished_at = Some(now_ms());
                let mut tx = self.store.begin().await?;
                store::deployment_update(tx.conn(), &deployment).await?;
                tx.emit(
                    events::DEPLOYMENT_SUCCEEDED,
                    &app.id,
                    &app.team,
                    &pb::DeploymentSucceeded {
                        deployment_id: deployment.id.clone(),
                        app_id: app.id.clone(),
                        app: app.name.clone(),
                        release_version: release.version,
                        instances: want,
                        canary,
                    },
                )
                .await?;
                tx.commit().await?;
                self.runtime.request_reconcile(Some(app.id.clone()));
                if canary {
                    say(format!(
                        "-----> canary v{} is serving beside the current release; routes decide its share",
                        release.version
                    ));
                } else {
                    say(format!("-----> v{} is serving", release.version));
                }
                tracing::info!(app = %app.name, version = release.version, canary, "deployment succeeded");
                Ok(deployment)
            }
            Err(reason) => {
                say(format!("-----> rollout failed: {reason}"));
                self.deployment_fail(&app, deployment, true, reason).await
            }
        }
    }

    /// Records a failed deployment and, with `restore`, sets the app's
    /// desired state (release, canary and their counts) back to `app`'s.
    async fn deployment_fail(
        &self,
        app: &App,
        mut deployment: Deployment,
        restore: bool,
        reason: String,
    ) -> Result<Deployment> {
        deployment.status = DeploymentStatus::Failed;
        deployment.reason = reason.clone();
        deployment.finished_at = Some(now_ms());
        let mut tx = self.store.begin().await?;
        if restore {
            store::app_set_desired(tx.conn(), &app.id, app.release_id.as_deref(), app.instances).await?;
            store::app_set_canary(tx.conn(), &app.id, app.canary_release_id.as_deref(), app.canary_instances).await?;
        }
        store::deployment_update(tx.conn(), &deployment).await?;
        tx.emit(
            events::DEPLOYMENT_FAILED,
            &app.id,
            &app.team,
            &pb::DeploymentFailed {
                deployment_id: deployment.id.clone(),
                app_id: app.id.clone(),
                app: app.name.clone(),
                release_version: deployment.version,
                reason,
                canary: deployment.canary,
            },
        )
        .await?;
        tx.commit().await?;
        self.runtime.request_reconcile(Some(app.id.clone()));
        tracing::warn!(app = %app.name, version = deployment.version, reason = %deployment.reason, "deployment failed");
        Ok(deployment)
    }

    pub async fn releases_list(&self, identity: &Identity, name: &str) -> Result<Vec<Release>> {
        let app = self.app_find(identity, name).await?;
        Ok(self.store.releases_of(&app.id).await?)
    }

    pub async fn deployments_list(&self, identity: &Identity, name: &str) -> Result<Vec<Deployment>> {
        let app = self.app_find(identity, name).await?;
        Ok(self.store.deployments_of(&app.id).await?)
    }

    /// Sets the current release's instance count (a canary keeps its own);
    /// the reconciler does the rest.
    pub async fn scale(&self, identity: &Identity, name: &str, instances: u32) -> Result<App> {
        identity.require_write()?;
        if instances > MAX_INSTANCES {
            return Err(Error::InvalidArgument(format!(
                "{instances} instances is more than the limit of {MAX_INSTANCES}"
            )));
        }
        let app = self.app_find(identity, name).await?;
        let _guard = self.lock_app(&app.id).await;
        let mut tx = self.store.begin().await?;
        store::app_set_instances(tx.conn(), &app.id, instances).await?;
        tx.commit().await?;
        self.runtime.request_reconcile(Some(app.id.clone()));
        tracing::info!(app = %app.name, instances, "scaled");
        let app =
            self.store.app_by_id(&app.id).await?.ok_or_else(|| Error::NotFound(format!("app {name:?} was deleted")))?;
        Ok(app)
    }

    pub async fn instances_list(&self, identity: &Identity, name: &str) -> Result<Vec<InstanceView>> {
        let app = self.app_find(identity, name).await?;
        Ok(self.runtime.instances_of(&app.id))
    }
}

fn archive_error(error: archive::ArchiveError) -> Error {
    if error.is_invalid_input() {
        Error::InvalidArgument(error.to_string())
    } else {
        Error::Internal(error.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_dns_labels() {
        for good in ["a", "web", "billing-api", "a1", &"x".repeat(40)] {
            assert!(validate_app_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "1app", "app-", "a_b", "a.b", "x\"; DROP TABLE apps; --", &"x".repeat(41)] {
            assert!(matches!(validate_app_name(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }

    #[test]
    fn config_keys_are_env_names_not_owned_by_the_platform() {
        assert!(validate_config_key("DATABASE_URL").is_ok());
        for bad in ["lower", "1X", "PORT", "STRATA_NODE_ID", "A-B", ""] {
            assert!(validate_config_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_deploy_request_asks_for_a_replacement_or_a_canary_of_its_own_size() {
        assert_eq!(Placement::of_request(0, false, 0).unwrap(), Placement::Replace { instances: 0 });
        assert_eq!(Placement::of_request(3, false, 0).unwrap(), Placement::Replace { instances: 3 });
        assert_eq!(Placement::of_request(0, true, 0).unwrap(), Placement::Canary { instances: 1 });
        assert_eq!(Placement::of_request(0, true, 4).unwrap(), Placement::Canary { instances: 4 });
        for (instances, canary, canary_instances) in [(2, true, 0), (0, false, 2), (0, true, 101), (101, false, 0)] {
            assert!(
                matches!(Placement::of_request(instances, canary, canary_instances), Err(Error::InvalidArgument(_))),
                "{instances} {canary} {canary_instances}"
            );
        }
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(mask("hunter2-long-secret"), "••••et");
        assert_eq!(mask("short"), "••••");
    }
}
