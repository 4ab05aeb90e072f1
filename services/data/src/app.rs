//! The data service's domain: servers, databases, credentials, bindings and
//! backups, and the reconciliation that makes the servers match the records.
//!
//! Every change that touches a PostgreSQL server is written as intent first
//! (a row in `provisioning`/`deleting` state, or a pending password), then
//! carried out with idempotent statements, then completed in a transaction
//! together with its event. A crash or an unreachable server at any point
//! leaves intent that a retry, or the reconciler, finishes: never an orphan
//! role or database, never an event without its state change.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use strata_kit::{Identity, Role, store::now_ms};
use strata_proto::data::v1 as pb;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::{
    crypto::{self, CryptoError, Sealer},
    events,
    model::{BackupRecord, BindingRecord, DatabaseRecord, DbState, ServerRecord},
    pg::{Ident, PgError, PgServer},
    store::{self, Store},
};

/// Data's operations fail with the shared API error (mapped to gRPC at the edge).
pub use strata_kit::ApiError as Error;

impl From<CryptoError> for Error {
    fn from(error: CryptoError) -> Self {
        Error::Internal(error.to_string())
    }
}

impl From<PgError> for Error {
    fn from(error: PgError) -> Self {
        match error {
            PgError::InvalidName { .. }
            | PgError::NulInLiteral
            | PgError::InvalidArgument(_)
            | PgError::Reserved { .. } => Error::InvalidArgument(error.to_string()),
            PgError::InvalidUrl { .. } | PgError::ToolMissing { .. } => Error::FailedPrecondition(error.to_string()),
            PgError::RoleNotFound { .. } => Error::NotFound(error.to_string()),
            PgError::Connect { .. } | PgError::Database { .. } | PgError::ToolFailed { .. } | PgError::Io { .. } => {
                tracing::warn!(%error, "PostgreSQL server operation failed");
                Error::Unavailable(format!(
                    "the database server did not complete the operation ({error}); retrying finishes it"
                ))
            }
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Connection limits per plan.
pub fn connection_limit(plan: &str) -> Option<i32> {
    match plan {
        "hobby" => Some(5),
        "standard" => Some(20),
        _ => None,
    }
}

pub use strata_kit::error::validate_name;

/// Settings of the domain.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where backups are kept.
    pub data_dir: PathBuf,
    /// First characters of every role and database this service creates; the
    /// reconciler treats anything else on a server as not its business.
    pub ident_prefix: String,
}

/// The data domain service.
#[derive(Clone)]
pub struct Data {
    store: Store,
    sealer: Sealer,
    settings: Arc<Settings>,
    /// Servers connected to, by id, with their names (a server's name never changes).
    servers: Arc<RwLock<HashMap<String, (PgServer, String)>>>,
    locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn not_found(name: &str, team: &str) -> Error {
    Error::NotFound(format!("database {name:?} not found in team {team}: `strata db list` shows yours"))
}

fn require_write(identity: &Identity) -> Result<()> {
    Ok(identity.require_write()?)
}

impl Data {
    pub fn new(store: Store, sealer: Sealer, settings: Settings) -> Self {
        Self { store, sealer, settings: Arc::new(settings), servers: Arc::default(), locks: Arc::default() }
    }

    async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// A connection to a registered server (connected on first use).
    async fn server(&self, id: &str) -> Result<PgServer> {
        if let Some((server, _)) = self.servers.read().await.get(id) {
            return Ok(server.clone());
        }
        let record = self
            .store
            .server_by_id(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("database server {id} is not registered")))?;
        let server = PgServer::connect(&self.sealer.open(&record.admin_url_enc)?).await?;
        self.servers.write().await.insert(id.to_owned(), (server.clone(), record.name));
        Ok(server)
    }

    /// Registers (or updates) a PostgreSQL server; admins only.
    pub async fn server_register(
        &self,
        identity: &Identity,
        name: &str,
        admin_url: &str,
        capacity: u32,
    ) -> Result<ServerRecord> {
        if identity.role != Role::Admin {
            return Err(Error::PermissionDenied("only platform admins register database servers".to_owned()));
        }
        self.server_register_trusted(name, admin_url, capacity).await
    }

    /// Registers a server from the service's own config.
    pub async fn server_register_trusted(&self, name: &str, admin_url: &str, capacity: u32) -> Result<ServerRecord> {
        validate_name("server", name)?;
        if capacity == 0 {
            return Err(Error::InvalidArgument("a server needs a capacity of at least 1 database".to_owned()));
        }
        let server = PgServer::connect(admin_url)
            .await
            .map_err(|e| Error::FailedPrecondition(format!("cannot reach the server at its admin URL: {e}")))?;
        let existing = self.store.servers().await?.into_iter().find(|s| s.name == name);
        let record = ServerRecord {
            id: existing.map_or_else(|| uuid::Uuid::now_v7().to_string(), |s| s.id),
            name: name.to_owned(),
            admin_url_enc: self.sealer.seal(admin_url)?,
            address: server.address(),
            capacity,
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::server_upsert(tx.conn(), &record).await?;
        tx.commit().await?;
        self.servers.write().await.insert(record.id.clone(), (server, record.name.clone()));
        tracing::info!(server = %record.name, address = %record.address, capacity, "database server registered");
        Ok(record)
    }

    pub async fn servers_list(&self, identity: &Identity) -> Result<Vec<(ServerRecord, u32)>> {
        if identity.role != Role::Admin {
            return Err(Error::PermissionDenied("only platform admins see database servers".to_owned()));
        }
        let load: HashMap<String, i64> = self.store.server_load().await?.into_iter().collect();
        Ok(self
            .store
            .servers()
            .await?
            .into_iter()
            .map(|s| {
                let n = load.get(&s.id).copied().unwrap_or(0);
                (s, u32::try_from(n).unwrap_or(0))
            })
            .collect())
    }

    async fn pick_server(&self) -> Result<ServerRecord> {
        let load: HashMap<String, i64> = self.store.server_load().await?.into_iter().collect();
        self.store
            .servers()
            .await?
            .into_iter()
            .filter(|s| load.get(&s.id).copied().unwrap_or(0) < i64::from(s.capacity))
            .min_by_key(|s| load.get(&s.id).copied().unwrap_or(0) * 1000 / i64::from(s.capacity.max(1)))
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "no database server has room: ask the platform team to register one (`RegisterServer`)".to_owned(),
                )
            })
    }

    pub async fn database_find(&self, identity: &Identity, name: &str) -> Result<DatabaseRecord> {
        validate_name("database", name)?;
        self.store.database_by_name(&identity.team, name).await?.ok_or_else(|| not_found(name, &identity.team))
    }

    /// The apps a database is bound to.
    pub async fn apps_of(&self, db: &DatabaseRecord) -> Result<Vec<String>> {
        Ok(self.store.bindings_of(&db.id).await?.into_iter().map(|b| b.app).collect())
    }

    pub async fn server_name(&self, db: &DatabaseRecord) -> Result<String> {
        if let Some((_, name)) = self.servers.read().await.get(&db.server_id) {
            return Ok(name.clone());
        }
        Ok(self.store.server_by_id(&db.server_id).await?.map(|s| s.name).unwrap_or_default())
    }

    /// Creates a database, or finishes the one an earlier attempt with the
    /// same request id (or name) started.
    pub async fn database_create(
        &self,
        identity: &Identity,
        name: &str,
        plan: &str,
        request_id: &str,
    ) -> Result<DatabaseRecord> {
        require_write(identity)?;
        validate_name("database", name)?;
        let plan = if plan.is_empty() { "hobby" } else { plan };
        if connection_limit(plan).is_none() {
            return Err(Error::InvalidArgument(format!("unknown plan {plan:?}: use hobby or standard")));
        }
        let _guard = self.lock(&format!("{}/{name}", identity.team)).await;
        if !request_id.is_empty()
            && let Some(db) = self.store.database_by_request(&identity.team, request_id).await?
        {
            if db.name != name {
                return Err(Error::AlreadyExists(format!(
                    "request id {request_id:?} already created database {:?}",
                    db.name
                )));
            }
            return self.finish_provisioning(db).await;
        }
        if let Some(db) = self.store.database_by_name(&identity.team, name).await? {
            if db.state == DbState::Deleting {
                return Err(Error::FailedPrecondition(format!(
                    "database {name:?} is being deleted; try again shortly"
                )));
            }
            return self.finish_provisioning(db).await;
        }
        let server = self.pick_server().await?;
        let id = uuid::Uuid::now_v7();
        // Generated, never derived from user input: the suffix is the id's random tail.
        let ident = format!("{}{}", self.settings.ident_prefix, &id.simple().to_string()[16..]);
        let db = DatabaseRecord {
            id: id.to_string(),
            team: identity.team.clone(),
            name: name.to_owned(),
            server_id: server.id,
            db_ident: ident.clone(),
            role_ident: ident,
            password_enc: self.sealer.seal(&crypto::password())?,
            pending_password_enc: None,
            plan: plan.to_owned(),
            state: DbState::Provisioning,
            request_id: request_id.to_owned(),
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::database_insert(tx.conn(), &db).await?;
        tx.commit().await?;
        self.finish_provisioning(db).await
    }

    /// Makes the server match a `provisioning` record, then marks it ready
    /// and announces it. Idempotent.
    async fn finish_provisioning(&self, mut db: DatabaseRecord) -> Result<DatabaseRecord> {
        if db.state != DbState::Provisioning {
            return Ok(db);
        }
        let server = self.server(&db.server_id).await?;
        let password = self.sealer.open(&db.password_enc)?;
        let limit = connection_limit(&db.plan).unwrap_or(5);
        server.provision(&Ident::new(&db.db_ident)?, &Ident::new(&db.role_ident)?, &password, limit).await?;
        let server_name = self.server_name(&db).await?;
        let mut tx = self.store.begin().await?;
        if !store::database_transition(tx.conn(), &db.id, DbState::Provisioning, DbState::Ready).await? {
            // The reconciler (or a retry) finished it first, and announced it.
            tx.rollback().await?;
            return Ok(self
                .store
                .database_by_id(&db.id)
                .await?
                .unwrap_or(DatabaseRecord { state: DbState::Ready, ..db }));
        }
        tx.emit(
            events::DATABASE_PROVISIONED,
            &db.id,
            &db.team,
            &pb::DatabaseProvisioned {
                database_id: db.id.clone(),
                database: db.name.clone(),
                server: server_name,
                plan: db.plan.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        db.state = DbState::Ready;
        tracing::info!(team = %db.team, database = %db.name, "database provisioned");
        Ok(db)
    }

    pub async fn databases_list(&self, identity: &Identity) -> Result<Vec<DatabaseRecord>> {
        Ok(self.store.databases_of_team(&identity.team).await?)
    }

    /// Deletes a database: its bindings, the database and its role.
    pub async fn database_delete(&self, identity: &Identity, name: &str) -> Result<()> {
        require_write(identity)?;
        let db = self.database_find(identity, name).await?;
        let _guard = self.lock(&format!("{}/{name}", identity.team)).await;
        let mut tx = self.store.begin().await?;
        store::database_set_state(tx.conn(), &db.id, DbState::Deleting).await?;
        tx.commit().await?;
        self.finish_deleting(db).await
    }

    async fn finish_deleting(&self, db: DatabaseRecord) -> Result<()> {
        let server = self.server(&db.server_id).await?;
        server.drop_database(&Ident::new(&db.db_ident)?, &Ident::new(&db.role_ident)?).await?;
        let bindings = self.store.bindings_of(&db.id).await?;
        let mut tx = self.store.begin().await?;
        for binding in &bindings {
            emit_binding_deleted(&mut tx, &db, binding).await?;
        }
        if !store::database_delete(tx.conn(), &db.id).await? {
            // Finished (and announced) by someone else meanwhile.
            tx.rollback().await?;
            return Ok(());
        }
        tx.emit(
            events::DATABASE_DELETED,
            &db.id,
            &db.team,
            &pb::DatabaseDeleted { database_id: db.id.clone(), database: db.name.clone() },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(team = %db.team, database = %db.name, "database deleted");
        Ok(())
    }

    /// The connection details. Viewers may not see them; services acting for
    /// the team (compute binding an app) may.
    pub async fn credentials(&self, identity: &Identity, name: &str) -> Result<pb::Credentials> {
        require_write(identity)?;
        let db = self.database_find(identity, name).await?;
        if db.state != DbState::Ready {
            return Err(Error::FailedPrecondition(format!("database {name:?} is not ready yet")));
        }
        let server = self.server(&db.server_id).await?;
        let password = self.sealer.open(&db.password_enc)?;
        let (db_ident, role) = (Ident::new(&db.db_ident)?, Ident::new(&db.role_ident)?);
        let address = server.address();
        let (host, port) = address.rsplit_once(':').unwrap_or((address.as_str(), "5432"));
        Ok(pb::Credentials {
            url: server.connection_url(&db_ident, &role, &password),
            host: host.to_owned(),
            port: port.parse().unwrap_or(5432),
            database: db_ident.as_str().to_owned(),
            user: role.as_str().to_owned(),
            password,
        })
    }

    /// A new password: the server gets it (and drops sessions using the old
    /// one), then bound apps are told to restart with it.
    pub async fn credentials_rotate(&self, identity: &Identity, name: &str) -> Result<DatabaseRecord> {
        require_write(identity)?;
        let db = self.database_find(identity, name).await?;
        if db.state != DbState::Ready {
            return Err(Error::FailedPrecondition(format!("database {name:?} is not ready yet")));
        }
        let _guard = self.lock(&format!("{}/{name}", identity.team)).await;
        let sealed = self.sealer.seal(&crypto::password())?;
        let mut tx = self.store.begin().await?;
        store::database_set_pending_password(tx.conn(), &db.id, Some(&sealed)).await?;
        tx.commit().await?;
        let db = DatabaseRecord { pending_password_enc: Some(sealed), ..db };
        self.finish_rotation(&db).await?;
        Ok(self.store.database_by_id(&db.id).await?.unwrap_or(db))
    }

    async fn finish_rotation(&self, db: &DatabaseRecord) -> Result<()> {
        let Some(pending) = &db.pending_password_enc else { return Ok(()) };
        let server = self.server(&db.server_id).await?;
        server.set_password(&Ident::new(&db.role_ident)?, &self.sealer.open(pending)?).await?;
        let apps = self.apps_of(db).await?;
        let mut tx = self.store.begin().await?;
        if !store::database_commit_password(tx.conn(), &db.id, pending).await? {
            tx.rollback().await?;
            return Ok(());
        }
        tx.emit(
            events::CREDENTIALS_ROTATED,
            &db.id,
            &db.team,
            &pb::CredentialsRotated { database_id: db.id.clone(), database: db.name.clone(), apps },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(team = %db.team, database = %db.name, "credentials rotated");
        Ok(())
    }

    pub async fn bind(&self, identity: &Identity, database: &str, app: &str) -> Result<BindingRecord> {
        require_write(identity)?;
        validate_name("app", app)?;
        let db = self.database_find(identity, database).await?;
        if db.state != DbState::Ready {
            return Err(Error::FailedPrecondition(format!("database {database:?} is not ready yet")));
        }
        let binding = BindingRecord {
            id: uuid::Uuid::now_v7().to_string(),
            database_id: db.id.clone(),
            team: db.team.clone(),
            app: app.to_owned(),
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::binding_insert(tx.conn(), &binding).await.map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::AlreadyExists(format!("database {database:?} is already bound to app {app:?}"))
            }
            other => other.into(),
        })?;
        tx.emit(
            events::BINDING_CREATED,
            &db.id,
            &db.team,
            &pb::BindingCreated {
                binding_id: binding.id.clone(),
                database_id: db.id.clone(),
                database: db.name.clone(),
                app: app.to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(team = %db.team, database = %db.name, app, "database bound");
        Ok(binding)
    }

    pub async fn unbind(&self, identity: &Identity, database: &str, app: &str) -> Result<()> {
        require_write(identity)?;
        let db = self.database_find(identity, database).await?;
        let binding = self
            .store
            .bindings_of(&db.id)
            .await?
            .into_iter()
            .find(|b| b.app == app)
            .ok_or_else(|| Error::NotFound(format!("database {database:?} is not bound to app {app:?}")))?;
        let mut tx = self.store.begin().await?;
        emit_binding_deleted(&mut tx, &db, &binding).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn bindings_list(&self, identity: &Identity, database: &str) -> Result<Vec<BindingRecord>> {
        let db = self.database_find(identity, database).await?;
        Ok(self.store.bindings_of(&db.id).await?)
    }

    /// Removes the bindings of an app compute deleted, inside the consumer's
    /// transaction.
    pub async fn app_deleted(&self, tx: &mut strata_events::EventTx, team: &str, app: &str) -> Result<()> {
        for binding in self.store.bindings_of_app(team, app).await? {
            if let Some(db) = self.store.database_by_id(&binding.database_id).await? {
                emit_binding_deleted(tx, &db, &binding).await?;
            }
        }
        Ok(())
    }

    /// A pg_dump of the database into the data directory.
    pub async fn backup_create(&self, identity: &Identity, database: &str) -> Result<BackupRecord> {
        require_write(identity)?;
        let db = self.database_find(identity, database).await?;
        if db.state != DbState::Ready {
            return Err(Error::FailedPrecondition(format!("database {database:?} is not ready yet")));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self.settings.data_dir.join("backups").join(&db.team);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| Error::Internal(e.to_string()))?;
        let path = dir.join(format!("{id}.dump"));
        let server = self.server(&db.server_id).await?;
        let size = match server.backup(&Ident::new(&db.db_ident)?, &path).await {
            Ok(size) => size,
            Err(error) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(error.into());
            }
        };
        let backup = BackupRecord {
            id,
            database_id: db.id.clone(),
            team: db.team.clone(),
            database: db.name.clone(),
            path: path.display().to_string(),
            size_bytes: size,
            created_at: now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::backup_insert(tx.conn(), &backup).await?;
        tx.commit().await?;
        Ok(backup)
    }

    pub async fn backups_list(&self, identity: &Identity, database: &str) -> Result<Vec<BackupRecord>> {
        let db = self.database_find(identity, database).await?;
        Ok(self.store.backups_of(&db.id).await?)
    }

    /// Restores a backup into a new database `name`.
    pub async fn backup_restore(&self, identity: &Identity, backup_id: &str, name: &str) -> Result<DatabaseRecord> {
        require_write(identity)?;
        let backup = self.store.backup_by_id(&identity.team, backup_id).await?.ok_or_else(|| {
            Error::NotFound(format!("backup {backup_id:?} not found: `strata db backups DB` lists them"))
        })?;
        if self.store.database_by_name(&identity.team, name).await?.is_some() {
            return Err(Error::AlreadyExists(format!("database {name:?} already exists: restore into a new name")));
        }
        let db = self.database_create(identity, name, "hobby", &format!("restore-{backup_id}-{name}")).await?;
        let server = self.server(&db.server_id).await?;
        let restored = server
            .restore(std::path::Path::new(&backup.path), &Ident::new(&db.db_ident)?, &Ident::new(&db.role_ident)?)
            .await;
        if let Err(error) = restored {
            // All or nothing: a half-restored database is not left behind.
            if let Err(cleanup) = self.database_delete(identity, name).await {
                tracing::warn!(%cleanup, database = name, "could not remove a failed restore; the reconciler will");
            }
            return Err(error.into());
        }
        tracing::info!(team = %db.team, database = %db.name, from = %backup.database, "backup restored");
        Ok(db)
    }

    /// One reconciliation pass: finishes interrupted work, then compares
    /// each server with the records and repairs what it can.
    pub async fn reconcile(&self) -> Result<()> {
        let records = self.store.databases_all().await?;
        for db in &records {
            let result = match db.state {
                DbState::Provisioning => self.finish_provisioning(db.clone()).await.map(|_| ()),
                DbState::Deleting => self.finish_deleting(db.clone()).await,
                DbState::Ready if db.pending_password_enc.is_some() => self.finish_rotation(db).await,
                DbState::Ready => Ok(()),
            };
            if let Err(error) = result {
                tracing::warn!(database = %db.name, team = %db.team, %error, "could not finish interrupted work yet");
            }
        }
        for record in self.store.servers().await? {
            let server = match self.server(&record.id).await {
                Ok(server) => server,
                Err(error) => {
                    tracing::warn!(server = %record.name, %error, "database server unreachable");
                    continue;
                }
            };
            // List the server first, then read the records: a record is
            // always written before its objects are created, so everything
            // listed here has its record by the time it is read.
            let (databases, roles) = server.managed(&self.settings.ident_prefix).await?;
            let records = self.store.databases_all().await?;
            let known: std::collections::HashSet<&str> =
                records.iter().flat_map(|d| [d.db_ident.as_str(), d.role_ident.as_str()]).collect();
            for orphan in databases.iter().chain(roles.iter()).filter(|n| !known.contains(n.as_str())) {
                // Records are written before anything is created on a server,
                // so an object with no record is left from outside: drop it.
                tracing::warn!(server = %record.name, object = %orphan, "dropping an orphan database/role no record knows");
                let ident = Ident::new(orphan)?;
                server.drop_database(&ident, &ident).await?;
            }
            for db in records.iter().filter(|d| d.server_id == record.id && d.state == DbState::Ready) {
                if !databases.contains(&db.db_ident) {
                    tracing::error!(server = %record.name, database = %db.name, team = %db.team, "a ready database is missing from its server");
                }
            }
        }
        Ok(())
    }

    /// Reconciles now and then every `interval` until `shutdown`.
    pub async fn run_reconciler(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            let pass = tokio::select! {
                () = shutdown.cancelled() => return,
                pass = self.reconcile() => pass,
            };
            if let Err(error) = pass {
                tracing::warn!(%error, "reconciliation failed, will try again");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

async fn emit_binding_deleted(
    tx: &mut strata_events::EventTx,
    db: &DatabaseRecord,
    binding: &BindingRecord,
) -> Result<()> {
    store::binding_delete(tx.conn(), &binding.id).await?;
    tx.emit(
        events::BINDING_DELETED,
        &db.id,
        &db.team,
        &pb::BindingDeleted {
            binding_id: binding.id.clone(),
            database_id: db.id.clone(),
            database: db.name.clone(),
            app: binding.app.clone(),
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["x\"; DROP ROLE postgres; --", "Upper", "", "a b", "1st", &"a".repeat(41)] {
            assert!(matches!(validate_name("database", bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
        assert!(validate_name("database", "orders-db").is_ok());
    }

    #[test]
    fn plans_have_connection_limits() {
        assert_eq!(connection_limit("hobby"), Some(5));
        assert_eq!(connection_limit("standard"), Some(20));
        assert_eq!(connection_limit("huge"), None);
    }
}
