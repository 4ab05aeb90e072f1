//! The store: one sqlx pool over SQLite (the embedded default, a file per
//! service) or Postgres (production), chosen by URL, with the same queries for
//! both through sqlx's `Any` driver (`$1` placeholders, TEXT ids, BIGINT
//! times in Unix milliseconds).

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{
    Any, AnyPool, Transaction,
    any::AnyPoolOptions,
    migrate::{MigrateError, Migrator},
};

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors opening or migrating a database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://FILE or postgres://...")]
    UnsupportedUrl(String),
    #[error("cannot create the database directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] MigrateError),
}

/// A service's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens the database at `url`; a SQLite file (and its directory) is
    /// created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let file = path.split('?').next().unwrap_or_default();
            if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
            }
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (url, Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_owned(), Backend::Postgres)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };

        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            Backend::Sqlite => {
                options
                    // WAL lets readers run beside the one writer; write
                    // transactions start IMMEDIATE (see `begin`), and wait
                    // for the lock instead of failing.
                    .max_connections(if max_connections == 0 { 4 } else { max_connections })
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::raw_sql(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .execute(conn)
                            .await
                            .map(|_| ())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                options.max_connections(if max_connections == 0 { 10 } else { max_connections }).connect(&url).await?
            }
        };
        Ok(Self { pool, backend })
    }

    /// Applies `migrator`'s migrations. Several migrators (the service's own,
    /// the events library's) share one database, so each ignores the others'.
    pub async fn migrate(&self, mut migrator: Migrator) -> Result<(), StoreError> {
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of one failing with
    /// SQLITE_BUSY when it upgrades its read lock.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// The pool, for reads and single statements.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Picks the migrations for this backend.
    pub fn pick(&self, sqlite: Migrator, postgres: Migrator) -> Migrator {
        match self.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }
}

/// Now, in Unix milliseconds: how every time is stored.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
