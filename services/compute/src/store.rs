//! The only place compute touches SQL. Reads go to the pool; writes take the
//! connection of an [`strata_events::EventTx`], so the state change and its
//! events commit together.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row, any::AnyRow};
use strata_events::{EventTx, Outbox};
use strata_kit::Db;

use crate::model::{App, ConfigVar, Deployment, DeploymentStatus, InstanceRecord, Release, SourceKind, Upload};

type Result<T> = std::result::Result<T, sqlx::Error>;

/// Compute's database.
#[derive(Debug, Clone)]
pub struct Store {
    outbox: Outbox,
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn app_of(row: &AnyRow) -> Result<App> {
    Ok(App {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        release_id: row.try_get("release_id")?,
        instances: u32_of(row.try_get("instances")?),
        canary_release_id: row.try_get("canary_release_id")?,
        canary_instances: u32_of(row.try_get("canary_instances")?),
        created_at: row.try_get("created_at")?,
    })
}

fn release_of(row: &AnyRow) -> Result<Release> {
    let argv: String = row.try_get("argv")?;
    let env: String = row.try_get("env")?;
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    Ok(Release {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        version: u32_of(row.try_get("version")?),
        source: SourceKind::parse(&row.try_get::<String, _>("source")?),
        buildpack: row.try_get("buildpack")?,
        argv: serde_json::from_str(&argv).map_err(decode)?,
        workdir: row.try_get("workdir")?,
        env: serde_json::from_str::<BTreeMap<String, String>>(&env).map_err(decode)?,
        created_at: row.try_get("created_at")?,
    })
}

fn deployment_of(row: &AnyRow) -> Result<Deployment> {
    Ok(Deployment {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        release_id: row.try_get("release_id")?,
        version: u32_of(row.try_get("version")?),
        status: DeploymentStatus::parse(&row.try_get::<String, _>("status")?),
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        canary: row.try_get::<i64, _>("canary")? != 0,
    })
}

fn instance_of(row: &AnyRow) -> Result<InstanceRecord> {
    Ok(InstanceRecord {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        release_id: row.try_get("release_id")?,
        version: u32_of(row.try_get("version")?),
        state: row.try_get("state")?,
        host: row.try_get("host")?,
        port: u16::try_from(row.try_get::<i64, _>("port")?).unwrap_or(0),
        pid: u32_of(row.try_get("pid")?),
        pid_start: u64::try_from(row.try_get::<i64, _>("pid_start")?).unwrap_or(0),
        restarts: u32_of(row.try_get("restarts")?),
        started_at: row.try_get("started_at")?,
    })
}

const APP_COLUMNS: &str = "id, team, name, release_id, instances, canary_release_id, canary_instances, created_at";
const RELEASE_COLUMNS: &str = "id, app_id, version, source, buildpack, argv, workdir, env, created_at";
const DEPLOYMENT_COLUMNS: &str = "id, app_id, release_id, version, status, reason, created_at, finished_at, canary";

impl Store {
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    fn db(&self) -> &Db {
        self.outbox.db()
    }

    /// A write transaction that can carry events.
    pub async fn begin(&self) -> Result<EventTx> {
        self.outbox.begin().await
    }

    pub async fn app_by_name(&self, team: &str, name: &str) -> Result<Option<App>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {APP_COLUMNS} FROM apps WHERE team = $1 AND name = $2")))
            .bind(team)
            .bind(name)
            .fetch_optional(self.db().pool())
            .await?
            .as_ref()
            .map(app_of)
            .transpose()
    }

    pub async fn app_by_id(&self, id: &str) -> Result<Option<App>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db().pool())
            .await?
            .as_ref()
            .map(app_of)
            .transpose()
    }

    pub async fn apps_of_team(&self, team: &str) -> Result<Vec<App>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {APP_COLUMNS} FROM apps WHERE team = $1 ORDER BY name")))
            .bind(team)
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(app_of)
            .collect()
    }

    pub async fn apps_all(&self) -> Result<Vec<App>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {APP_COLUMNS} FROM apps")))
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(app_of)
            .collect()
    }

    pub async fn config_of(&self, app_id: &str) -> Result<Vec<ConfigVar>> {
        sqlx::query("SELECT key, value, secret FROM config_vars WHERE app_id = $1 ORDER BY key")
            .bind(app_id)
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(|row| {
                Ok(ConfigVar {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                    secret: row.try_get::<i64, _>("secret")? != 0,
                })
            })
            .collect()
    }

    pub async fn release_by_id(&self, id: &str) -> Result<Option<Release>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db().pool())
            .await?
            .as_ref()
            .map(release_of)
            .transpose()
    }

    pub async fn release_by_version(&self, app_id: &str, version: u32) -> Result<Option<Release>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app_id = $1 AND version = $2"
        )))
        .bind(app_id)
        .bind(i64::from(version))
        .fetch_optional(self.db().pool())
        .await?
        .as_ref()
        .map(release_of)
        .transpose()
    }

    /// Releases of an app, newest first.
    pub async fn releases_of(&self, app_id: &str) -> Result<Vec<Release>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app_id = $1 ORDER BY version DESC"
        )))
        .bind(app_id)
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(release_of)
        .collect()
    }

    /// Deployments of an app, newest first.
    pub async fn deployments_of(&self, app_id: &str) -> Result<Vec<Deployment>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE app_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(app_id)
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(deployment_of)
        .collect()
    }

    /// Deployments that never finished (compute stopped in the middle).
    pub async fn deployments_unfinished(&self) -> Result<Vec<Deployment>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE finished_at IS NULL ORDER BY created_at"
        )))
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(deployment_of)
        .collect()
    }

    pub async fn upload_by_id(&self, id: &str) -> Result<Option<Upload>> {
        sqlx::query("SELECT id, app_id, path, size_bytes, files, created_at FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db().pool())
            .await?
            .map(|row| {
                Ok(Upload {
                    id: row.try_get("id")?,
                    app_id: row.try_get("app_id")?,
                    path: row.try_get("path")?,
                    size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
                    files: u32_of(row.try_get("files")?),
                    created_at: row.try_get("created_at")?,
                })
            })
            .transpose()
    }

    /// Apps waiting for a release of their changed config: (app id, reason).
    pub async fn pending_releases(&self) -> Result<Vec<(String, String)>> {
        sqlx::query("SELECT app_id, reason FROM pending_releases ORDER BY created_at")
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("app_id")?, row.try_get("reason")?)))
            .collect()
    }

    pub async fn instances_all(&self) -> Result<Vec<InstanceRecord>> {
        sqlx::query(
            "SELECT id, app_id, release_id, version, state, host, port, pid, pid_start, restarts, started_at \
             FROM instances",
        )
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(instance_of)
        .collect()
    }
}

pub async fn app_insert(conn: &mut AnyConnection, app: &App) -> Result<()> {
    sqlx::query(
        "INSERT INTO apps (id, team, name, release_id, instances, canary_release_id, canary_instances, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&app.id)
    .bind(&app.team)
    .bind(&app.name)
    .bind(&app.release_id)
    .bind(i64::from(app.instances))
    .bind(&app.canary_release_id)
    .bind(i64::from(app.canary_instances))
    .bind(app.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets what should run: `release_id` at `instances` instances.
pub async fn app_set_desired(
    conn: &mut AnyConnection,
    app_id: &str,
    release_id: Option<&str>,
    instances: u32,
) -> Result<()> {
    sqlx::query("UPDATE apps SET release_id = $1, instances = $2 WHERE id = $3")
        .bind(release_id)
        .bind(i64::from(instances))
        .bind(app_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets how many instances of the current release should run, leaving the
/// release and the canary as they are.
pub async fn app_set_instances(conn: &mut AnyConnection, app_id: &str, instances: u32) -> Result<()> {
    sqlx::query("UPDATE apps SET instances = $1 WHERE id = $2")
        .bind(i64::from(instances))
        .bind(app_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the canary: `release_id` at `instances` instances beside the current
/// release, or none with `None` (and 0).
pub async fn app_set_canary(
    conn: &mut AnyConnection,
    app_id: &str,
    release_id: Option<&str>,
    instances: u32,
) -> Result<()> {
    sqlx::query("UPDATE apps SET canary_release_id = $1, canary_instances = $2 WHERE id = $3")
        .bind(release_id)
        .bind(i64::from(instances))
        .bind(app_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn app_delete(conn: &mut AnyConnection, app_id: &str) -> Result<()> {
    // Children go with the app (ON DELETE CASCADE needs foreign keys on in SQLite,
    // which the kit enables; delete explicitly anyway so both backends agree).
    for table in ["config_vars", "uploads", "deployments", "releases", "pending_releases"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE app_id = $1")))
            .bind(app_id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM apps WHERE id = $1").bind(app_id).execute(conn).await?;
    Ok(())
}

pub async fn config_upsert(conn: &mut AnyConnection, app_id: &str, var: &ConfigVar) -> Result<()> {
    sqlx::query(
        "INSERT INTO config_vars (app_id, key, value, secret) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (app_id, key) DO UPDATE SET value = excluded.value, secret = excluded.secret",
    )
    .bind(app_id)
    .bind(&var.key)
    .bind(&var.value)
    .bind(i64::from(var.secret))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn config_delete(conn: &mut AnyConnection, app_id: &str, key: &str) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM config_vars WHERE app_id = $1 AND key = $2")
        .bind(app_id)
        .bind(key)
        .execute(conn)
        .await?
        .rows_affected())
}

/// The next release version of an app (1 for the first).
pub async fn release_next_version(conn: &mut AnyConnection, app_id: &str) -> Result<u32> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM releases WHERE app_id = $1")
        .bind(app_id)
        .fetch_one(conn)
        .await?;
    Ok(u32_of(row.try_get::<i64, _>("v")?) + 1)
}

pub async fn release_insert(conn: &mut AnyConnection, release: &Release) -> Result<()> {
    let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
    sqlx::query(
        "INSERT INTO releases (id, app_id, version, source, buildpack, argv, workdir, env, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&release.id)
    .bind(&release.app_id)
    .bind(i64::from(release.version))
    .bind(release.source.as_str())
    .bind(&release.buildpack)
    .bind(serde_json::to_string(&release.argv).map_err(encode)?)
    .bind(&release.workdir)
    .bind(serde_json::to_string(&release.env).map_err(encode)?)
    .bind(release.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn deployment_insert(conn: &mut AnyConnection, deployment: &Deployment) -> Result<()> {
    sqlx::query(
        "INSERT INTO deployments (id, app_id, release_id, version, status, reason, created_at, finished_at, canary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&deployment.id)
    .bind(&deployment.app_id)
    .bind(&deployment.release_id)
    .bind(i64::from(deployment.version))
    .bind(deployment.status.as_str())
    .bind(&deployment.reason)
    .bind(deployment.created_at)
    .bind(deployment.finished_at)
    .bind(i64::from(deployment.canary))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn deployment_update(conn: &mut AnyConnection, deployment: &Deployment) -> Result<()> {
    sqlx::query(
        "UPDATE deployments SET release_id = $1, version = $2, status = $3, reason = $4, finished_at = $5 WHERE id = $6",
    )
    .bind(&deployment.release_id)
    .bind(i64::from(deployment.version))
    .bind(deployment.status.as_str())
    .bind(&deployment.reason)
    .bind(deployment.finished_at)
    .bind(&deployment.id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn upload_insert(conn: &mut AnyConnection, upload: &Upload) -> Result<()> {
    sqlx::query(
        "INSERT INTO uploads (id, app_id, path, size_bytes, files, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&upload.id)
    .bind(&upload.app_id)
    .bind(&upload.path)
    .bind(i64::try_from(upload.size_bytes).unwrap_or(i64::MAX))
    .bind(i64::from(upload.files))
    .bind(upload.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn upload_delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

pub async fn instance_upsert(conn: &mut AnyConnection, instance: &InstanceRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO instances (id, app_id, release_id, version, state, host, port, pid, pid_start, restarts, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, host = excluded.host, port = excluded.port, \
         pid = excluded.pid, pid_start = excluded.pid_start, restarts = excluded.restarts, started_at = excluded.started_at",
    )
    .bind(&instance.id)
    .bind(&instance.app_id)
    .bind(&instance.release_id)
    .bind(i64::from(instance.version))
    .bind(&instance.state)
    .bind(&instance.host)
    .bind(i64::from(instance.port))
    .bind(i64::from(instance.pid))
    .bind(i64::try_from(instance.pid_start).unwrap_or(i64::MAX))
    .bind(i64::from(instance.restarts))
    .bind(instance.started_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn instance_delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM instances WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

pub async fn pending_release_insert(conn: &mut AnyConnection, app_id: &str, reason: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_releases (app_id, reason, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (app_id) DO UPDATE SET reason = excluded.reason",
    )
    .bind(app_id)
    .bind(reason)
    .bind(strata_kit::store::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn pending_release_delete(conn: &mut AnyConnection, app_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM pending_releases WHERE app_id = $1").bind(app_id).execute(conn).await?;
    Ok(())
}
