//! The only place the data service touches its own SQL.

use sqlx::{AnyConnection, Row, any::AnyRow};
use strata_events::{EventTx, Outbox};

use crate::model::{BackupRecord, BindingRecord, DatabaseRecord, DbState, ServerRecord};

type Result<T> = std::result::Result<T, sqlx::Error>;

/// The data service's database.
#[derive(Debug, Clone)]
pub struct Store {
    outbox: Outbox,
}

const SERVER_COLUMNS: &str = "id, name, admin_url_enc, address, capacity, created_at";
const DATABASE_COLUMNS: &str = "id, team, name, server_id, db_ident, role_ident, password_enc, pending_password_enc, \
                                plan, state, request_id, created_at";

fn server_of(row: &AnyRow) -> Result<ServerRecord> {
    Ok(ServerRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        admin_url_enc: row.try_get("admin_url_enc")?,
        address: row.try_get("address")?,
        capacity: u32::try_from(row.try_get::<i64, _>("capacity")?).unwrap_or(0),
        created_at: row.try_get("created_at")?,
    })
}

fn database_of(row: &AnyRow) -> Result<DatabaseRecord> {
    Ok(DatabaseRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        server_id: row.try_get("server_id")?,
        db_ident: row.try_get("db_ident")?,
        role_ident: row.try_get("role_ident")?,
        password_enc: row.try_get("password_enc")?,
        pending_password_enc: row.try_get("pending_password_enc")?,
        plan: row.try_get("plan")?,
        state: DbState::parse(&row.try_get::<String, _>("state")?),
        request_id: row.try_get("request_id")?,
        created_at: row.try_get("created_at")?,
    })
}

fn binding_of(row: &AnyRow) -> Result<BindingRecord> {
    Ok(BindingRecord {
        id: row.try_get("id")?,
        database_id: row.try_get("database_id")?,
        team: row.try_get("team")?,
        app: row.try_get("app")?,
        created_at: row.try_get("created_at")?,
    })
}

fn backup_of(row: &AnyRow) -> Result<BackupRecord> {
    Ok(BackupRecord {
        id: row.try_get("id")?,
        database_id: row.try_get("database_id")?,
        team: row.try_get("team")?,
        database: row.try_get("database")?,
        path: row.try_get("path")?,
        size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?).unwrap_or(0),
        created_at: row.try_get("created_at")?,
    })
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

    pub async fn servers(&self) -> Result<Vec<ServerRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY name")))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(server_of)
            .collect()
    }

    pub async fn server_by_id(&self, id: &str) -> Result<Option<ServerRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SERVER_COLUMNS} FROM servers WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(server_of)
            .transpose()
    }

    /// How many databases each server holds: (server id, count).
    pub async fn server_load(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query("SELECT server_id, COUNT(*) AS n FROM databases GROUP BY server_id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("server_id")?, row.try_get("n")?)))
            .collect()
    }

    pub async fn database_by_name(&self, team: &str, name: &str) -> Result<Option<DatabaseRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DATABASE_COLUMNS} FROM databases WHERE team = $1 AND name = $2"
        )))
        .bind(team)
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(database_of)
        .transpose()
    }

    pub async fn database_by_request(&self, team: &str, request_id: &str) -> Result<Option<DatabaseRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DATABASE_COLUMNS} FROM databases WHERE team = $1 AND request_id = $2"
        )))
        .bind(team)
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(database_of)
        .transpose()
    }

    pub async fn database_by_id(&self, id: &str) -> Result<Option<DatabaseRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DATABASE_COLUMNS} FROM databases WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(database_of)
            .transpose()
    }

    pub async fn databases_of_team(&self, team: &str) -> Result<Vec<DatabaseRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DATABASE_COLUMNS} FROM databases WHERE team = $1 ORDER BY name"
        )))
        .bind(team)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(database_of)
        .collect()
    }

    pub async fn databases_all(&self) -> Result<Vec<DatabaseRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DATABASE_COLUMNS} FROM databases")))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(database_of)
            .collect()
    }

    pub async fn bindings_of(&self, database_id: &str) -> Result<Vec<BindingRecord>> {
        sqlx::query("SELECT id, database_id, team, app, created_at FROM bindings WHERE database_id = $1 ORDER BY app")
            .bind(database_id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(binding_of)
            .collect()
    }

    pub async fn bindings_of_app(&self, team: &str, app: &str) -> Result<Vec<BindingRecord>> {
        sqlx::query("SELECT id, database_id, team, app, created_at FROM bindings WHERE team = $1 AND app = $2")
            .bind(team)
            .bind(app)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(binding_of)
            .collect()
    }

    pub async fn backups_of(&self, database_id: &str) -> Result<Vec<BackupRecord>> {
        sqlx::query(
            "SELECT id, database_id, team, database, path, size_bytes, created_at FROM backups \
             WHERE database_id = $1 ORDER BY created_at DESC",
        )
        .bind(database_id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(backup_of)
        .collect()
    }

    pub async fn backup_by_id(&self, team: &str, id: &str) -> Result<Option<BackupRecord>> {
        sqlx::query(
            "SELECT id, database_id, team, database, path, size_bytes, created_at FROM backups WHERE team = $1 AND id = $2",
        )
        .bind(team)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(backup_of)
        .transpose()
    }
}

pub async fn server_upsert(conn: &mut AnyConnection, server: &ServerRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO servers (id, name, admin_url_enc, address, capacity, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET admin_url_enc = excluded.admin_url_enc, address = excluded.address, \
         capacity = excluded.capacity",
    )
    .bind(&server.id)
    .bind(&server.name)
    .bind(&server.admin_url_enc)
    .bind(&server.address)
    .bind(i64::from(server.capacity))
    .bind(server.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn database_insert(conn: &mut AnyConnection, db: &DatabaseRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO databases (id, team, name, server_id, db_ident, role_ident, password_enc, pending_password_enc, \
         plan, state, request_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&db.id)
    .bind(&db.team)
    .bind(&db.name)
    .bind(&db.server_id)
    .bind(&db.db_ident)
    .bind(&db.role_ident)
    .bind(&db.password_enc)
    .bind(&db.pending_password_enc)
    .bind(&db.plan)
    .bind(db.state.as_str())
    .bind(&db.request_id)
    .bind(db.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn database_set_state(conn: &mut AnyConnection, id: &str, state: DbState) -> Result<()> {
    sqlx::query("UPDATE databases SET state = $1 WHERE id = $2").bind(state.as_str()).bind(id).execute(conn).await?;
    Ok(())
}

/// Moves a database from `from` to `to`; false when it was not in `from`
/// (someone else, the API or the reconciler, made the move first).
pub async fn database_transition(conn: &mut AnyConnection, id: &str, from: DbState, to: DbState) -> Result<bool> {
    let moved = sqlx::query("UPDATE databases SET state = $1 WHERE id = $2 AND state = $3")
        .bind(to.as_str())
        .bind(id)
        .bind(from.as_str())
        .execute(conn)
        .await?;
    Ok(moved.rows_affected() == 1)
}

pub async fn database_set_pending_password(conn: &mut AnyConnection, id: &str, sealed: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE databases SET pending_password_enc = $1 WHERE id = $2")
        .bind(sealed)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes the pending password the current one.
pub async fn database_commit_password(conn: &mut AnyConnection, id: &str, pending: &str) -> Result<bool> {
    let moved = sqlx::query(
        "UPDATE databases SET password_enc = pending_password_enc, pending_password_enc = NULL \
         WHERE id = $1 AND pending_password_enc = $2",
    )
    .bind(id)
    .bind(pending)
    .execute(conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Deletes a database's record and bindings; false when it was already gone.
pub async fn database_delete(conn: &mut AnyConnection, id: &str) -> Result<bool> {
    sqlx::query("DELETE FROM bindings WHERE database_id = $1").bind(id).execute(&mut *conn).await?;
    let deleted = sqlx::query("DELETE FROM databases WHERE id = $1").bind(id).execute(conn).await?;
    Ok(deleted.rows_affected() == 1)
}

pub async fn binding_insert(conn: &mut AnyConnection, binding: &BindingRecord) -> Result<()> {
    sqlx::query("INSERT INTO bindings (id, database_id, team, app, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&binding.id)
        .bind(&binding.database_id)
        .bind(&binding.team)
        .bind(&binding.app)
        .bind(binding.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn binding_delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM bindings WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

pub async fn backup_insert(conn: &mut AnyConnection, backup: &BackupRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO backups (id, database_id, team, database, path, size_bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&backup.id)
    .bind(&backup.database_id)
    .bind(&backup.team)
    .bind(&backup.database)
    .bind(&backup.path)
    .bind(i64::try_from(backup.size_bytes).unwrap_or(i64::MAX))
    .bind(backup.created_at)
    .execute(conn)
    .await?;
    Ok(())
}
