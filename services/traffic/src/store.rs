//! The only place traffic touches its own SQL.

use sqlx::{AnyConnection, Row, any::AnyRow};
use strata_events::{EventTx, Outbox};

use crate::model::{AppRecord, Backend, EndpointRecord, RouteRecord, RouteSpec};

type Result<T> = std::result::Result<T, sqlx::Error>;

/// Traffic's database.
#[derive(Debug, Clone)]
pub struct Store {
    outbox: Outbox,
}

const ROUTE_COLUMNS: &str =
    "id, team, name, host, path_prefix, backends, max_body_bytes, timeout_ms, created_at, updated_at";

fn route_of(row: &AnyRow) -> Result<RouteRecord> {
    let backends: String = row.try_get("backends")?;
    let backends: Vec<Backend> =
        serde_json::from_str(&backends).map_err(|e| sqlx::Error::Decode(format!("route backends: {e}").into()))?;
    Ok(RouteRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        spec: RouteSpec {
            host: row.try_get("host")?,
            path_prefix: row.try_get("path_prefix")?,
            backends,
            max_body_bytes: u64::try_from(row.try_get::<i64, _>("max_body_bytes")?).unwrap_or(0),
            timeout_ms: u32::try_from(row.try_get::<i64, _>("timeout_ms")?).unwrap_or(0),
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn endpoint_of(row: &AnyRow) -> Result<EndpointRecord> {
    Ok(EndpointRecord {
        instance_id: row.try_get("instance_id")?,
        team: row.try_get("team")?,
        app: row.try_get("app")?,
        release: u32::try_from(row.try_get::<i64, _>("release")?).unwrap_or(0),
        host: row.try_get("host")?,
        port: u16::try_from(row.try_get::<i64, _>("port")?).unwrap_or(0),
        check_failed: row.try_get::<i64, _>("check_failed")? != 0,
    })
}

fn backends_json(spec: &RouteSpec) -> String {
    serde_json::to_string(&spec.backends).unwrap_or_else(|_| "[]".to_owned())
}

impl Store {
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.outbox.db().pool()
    }

    pub async fn begin(&self) -> Result<EventTx> {
        self.outbox.begin().await
    }

    pub async fn routes_all(&self) -> Result<Vec<RouteRecord>> {
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ROUTE_COLUMNS} FROM routes ORDER BY created_at, id")))
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(route_of).collect()
    }

    pub async fn endpoints_all(&self) -> Result<Vec<EndpointRecord>> {
        let rows = sqlx::query(
            "SELECT instance_id, team, app, release, host, port, check_failed FROM endpoints ORDER BY instance_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(endpoint_of).collect()
    }

    pub async fn apps_all(&self) -> Result<Vec<AppRecord>> {
        let rows = sqlx::query("SELECT team, app, first_seen FROM apps").fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(AppRecord {
                    team: row.try_get("team")?,
                    app: row.try_get("app")?,
                    first_seen: row.try_get("first_seen")?,
                })
            })
            .collect()
    }
}

pub async fn route_by_name(conn: &mut AnyConnection, team: &str, name: &str) -> Result<Option<RouteRecord>> {
    let row =
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE team = $1 AND name = $2")))
            .bind(team)
            .bind(name)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(route_of).transpose()
}

/// Every route, for the overlap check inside the writing transaction.
pub async fn routes_in(conn: &mut AnyConnection) -> Result<Vec<RouteRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ROUTE_COLUMNS} FROM routes"))).fetch_all(conn).await?;
    rows.iter().map(route_of).collect()
}

pub async fn route_insert(conn: &mut AnyConnection, route: &RouteRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO routes (id, team, name, host, path_prefix, backends, max_body_bytes, timeout_ms, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&route.id)
    .bind(&route.team)
    .bind(&route.name)
    .bind(&route.spec.host)
    .bind(&route.spec.path_prefix)
    .bind(backends_json(&route.spec))
    .bind(i64::try_from(route.spec.max_body_bytes).unwrap_or(i64::MAX))
    .bind(i64::from(route.spec.timeout_ms))
    .bind(route.created_at)
    .bind(route.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn route_update(conn: &mut AnyConnection, route: &RouteRecord) -> Result<()> {
    sqlx::query(
        "UPDATE routes SET host = $1, path_prefix = $2, backends = $3, max_body_bytes = $4, timeout_ms = $5, \
         updated_at = $6 WHERE id = $7",
    )
    .bind(&route.spec.host)
    .bind(&route.spec.path_prefix)
    .bind(backends_json(&route.spec))
    .bind(i64::try_from(route.spec.max_body_bytes).unwrap_or(i64::MAX))
    .bind(i64::from(route.spec.timeout_ms))
    .bind(route.updated_at)
    .bind(&route.id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn route_delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM routes WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

/// Records an app once; the first sighting wins.
pub async fn app_seen(conn: &mut AnyConnection, team: &str, app: &str, at: i64) -> Result<()> {
    sqlx::query("INSERT INTO apps (team, app, first_seen) VALUES ($1, $2, $3) ON CONFLICT (team, app) DO NOTHING")
        .bind(team)
        .bind(app)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn app_delete(conn: &mut AnyConnection, team: &str, app: &str) -> Result<()> {
    sqlx::query("DELETE FROM apps WHERE team = $1 AND app = $2").bind(team).bind(app).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM endpoints WHERE team = $1 AND app = $2").bind(team).bind(app).execute(conn).await?;
    Ok(())
}

pub async fn endpoint_upsert(conn: &mut AnyConnection, endpoint: &EndpointRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO endpoints (instance_id, team, app, release, host, port, check_failed) \
         VALUES ($1, $2, $3, $4, $5, $6, 0) \
         ON CONFLICT (instance_id) DO UPDATE SET host = excluded.host, port = excluded.port, \
         release = excluded.release",
    )
    .bind(&endpoint.instance_id)
    .bind(&endpoint.team)
    .bind(&endpoint.app)
    .bind(i64::from(endpoint.release))
    .bind(&endpoint.host)
    .bind(i64::from(endpoint.port))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn endpoint_delete(conn: &mut AnyConnection, instance_id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM endpoints WHERE instance_id = $1").bind(instance_id).execute(conn).await?;
    Ok(done.rows_affected() > 0)
}

pub async fn endpoint_check(conn: &mut AnyConnection, instance_id: &str, failed: bool) -> Result<bool> {
    let done = sqlx::query("UPDATE endpoints SET check_failed = $1 WHERE instance_id = $2")
        .bind(i64::from(failed))
        .bind(instance_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
