//! Administration of one PostgreSQL server on behalf of the data service: creating
//! and dropping a team's database and its login role, rotating passwords, listing what
//! the service manages, and taking and restoring backups with `pg_dump`/`pg_restore`.
//!
//! Every operation is idempotent, so a caller that crashed half way through simply
//! runs it again. DDL cannot take bind parameters, so the only text ever spliced into
//! SQL is an [`Ident`] (validated, then double-quoted) or a [`quote_literal`] string;
//! everything else goes through bind parameters. Statement logging is switched off on
//! the admin connections because the DDL carries passwords.
//!
//! Provisioning and dropping run on admin sessions of their own, each holding a
//! session-level advisory lock on the database it changes. A session that finished
//! cleanly is unlocked and kept for the next one (opening one forks a backend, which
//! costs several milliseconds); one that did not finish (an error, or the caller's
//! future dropped half way) is closed, and PostgreSQL releases its lock as the backend
//! exits. So a kept session never holds a lock or an open transaction.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sqlx::{
    AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgExecutor, PgPoolOptions},
};
use tokio::process::Command;
use tracing::{debug, info, warn};
use url::Url;

/// The longest identifier PostgreSQL keeps without truncating it (NAMEDATALEN - 1).
const MAX_IDENT_LEN: usize = 63;
/// Connections in the admin pool; DDL is rare, lookups are cheap.
const POOL_SIZE: u32 = 4;
/// Idle admin sessions kept for provisioning and dropping, beyond which they are closed.
const IDLE_SESSIONS: usize = 2;
/// How long an idle admin session is kept: as long as the pool keeps an idle connection
/// (sqlx's default), short of the idle timeouts of common firewalls and NATs.
const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long to wait for a connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long provisioning or dropping waits for another one on the same database
/// (and for any lock its DDL needs); set once per admin session.
const LOCK_TIMEOUT: &str = "SET lock_timeout = '30s'";
/// Databases that belong to PostgreSQL itself.
const SYSTEM_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];
/// Where Debian and most distributions install the client tools.
const TOOL_DIR: &str = "/usr/bin";
/// How much of a failing tool's stderr goes into the error.
const STDERR_TAIL_LINES: usize = 8;

// SQLSTATE codes this module handles.
const DUPLICATE_OBJECT: &str = "42710";
const DUPLICATE_DATABASE: &str = "42P04";
const UNDEFINED_OBJECT: &str = "42704";
const INVALID_CATALOG_NAME: &str = "3D000";

/// The condition, on a row of `pg_roles`, of a role with powers no team's role has.
macro_rules! role_is_powerful {
    () => {
        "rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls"
    };
}

/// What can go wrong administering PostgreSQL; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A name that is not a valid generated identifier.
    #[error(
        "{name} is not a valid database or role name: use 1 to 63 characters from a-z, 0-9 and _, starting with a letter"
    )]
    InvalidName {
        /// The rejected name, escaped and shortened for display.
        name: String,
    },
    /// Text for a literal that PostgreSQL cannot hold.
    #[error("the text contains a NUL character, which PostgreSQL cannot store: remove it")]
    NulInLiteral,
    /// An argument outside what the operation accepts.
    #[error("{0}")]
    InvalidArgument(String),
    /// The admin URL could not be parsed.
    #[error("the PostgreSQL admin URL is not valid ({reason}): expected postgres://user:password@host:port/database")]
    InvalidUrl {
        /// Why it was rejected (never the URL itself, which may hold a password).
        reason: String,
    },
    /// A database or role that belongs to PostgreSQL or to the admin, not to a team.
    #[error("{name} is reserved for the server's administration and cannot be managed by the data service")]
    Reserved {
        /// The refused name.
        name: String,
    },
    /// The server could not be reached or refused the admin login.
    #[error(
        "cannot reach PostgreSQL at {address}: {source} (check that the server is running and that the admin URL is right)"
    )]
    Connect {
        /// `host:port` of the server.
        address: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The server refused a statement.
    #[error("PostgreSQL at {address} could not {action}: {source}")]
    Database {
        /// `host:port` of the server.
        address: String,
        /// What was being done, e.g. "create database team_a".
        action: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The role does not exist.
    #[error("role {role} does not exist: provision its database first")]
    RoleNotFound {
        /// The missing role.
        role: String,
    },
    /// `pg_dump` or `pg_restore` is not installed.
    #[error("{tool} was not found in {TOOL_DIR} or on PATH: install the PostgreSQL client tools")]
    ToolMissing {
        /// The tool's name.
        tool: &'static str,
    },
    /// `pg_dump` or `pg_restore` ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// The tool's name.
        tool: &'static str,
        /// How it exited.
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write the backup".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A PostgreSQL identifier the data service generated: `^[a-z][a-z0-9_]{0,62}$` —
/// validated on construction, and always written quoted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Validates `s` as a generated identifier.
    pub fn new(s: &str) -> Result<Ident, PgError> {
        let mut chars = s.chars();
        let valid = s.len() <= MAX_IDENT_LEN
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid { Ok(Ident(s.to_owned())) } else { Err(PgError::InvalidName { name: for_display(s) }) }
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name double-quoted for SQL: `"name"`. The character set rules out any
    /// quote to escape; quoting keeps reserved words (`user`, `table`) usable.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes a string literal for DDL that cannot take bind parameters (passwords):
/// doubles single quotes; rejects NUL. A string with a backslash is written as an
/// `E'…'` literal with the backslash doubled, so it means the same whatever the
/// server's `standard_conforming_strings` says (as libpq's `PQescapeLiteral` does).
pub fn quote_literal(s: &str) -> Result<String, PgError> {
    if s.contains('\0') {
        return Err(PgError::NulInLiteral);
    }
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// One PostgreSQL server, reached with an admin URL.
#[derive(Clone)]
pub struct PgServer {
    pool: PgPool,
    options: PgConnectOptions,
    url: Url,
    /// Admin sessions that finished a provision or drop cleanly, most recent last.
    idle_sessions: Arc<Mutex<Vec<IdleSession>>>,
}

/// An unlocked admin session with no open transaction, and when it was last used.
struct IdleSession {
    conn: PgConnection,
    since: Instant,
}

/// What exists of a database and its role.
struct Existing {
    database: bool,
    role: bool,
}

impl fmt::Debug for PgServer {
    // By hand: the URL holds the admin password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer").field("address", &self.address()).finish()
    }
}

impl PgServer {
    /// Connects with `admin_url` (a role allowed to create databases and roles and to
    /// terminate sessions; a superuser in practice) and checks that it works: an
    /// unreachable server or a refused login fails here, within 5 s.
    pub async fn connect(admin_url: &str) -> Result<Self, PgError> {
        let url = Url::parse(admin_url).map_err(|e| PgError::InvalidUrl { reason: e.to_string() })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(PgError::InvalidUrl { reason: format!("the scheme is {:?}, not postgres", url.scheme()) });
        }
        let options = PgConnectOptions::from_str(admin_url)
            .map_err(|e| PgError::InvalidUrl { reason: e.to_string() })?
            .application_name("strata-data")
            // The DDL carries passwords: sqlx must never log it, even when slow.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options.clone());
        let server = PgServer { pool, options, url, idle_sessions: Arc::default() };
        // A session of its own first: the pool reports only "timed out" when it cannot
        // connect, this reports why (refused, authentication failed, unknown host). It
        // is kept for the first provision.
        let conn = server.session().await?;
        server.keep(conn).await;
        server.ping().await?;
        Ok(server)
    }

    /// `host:port` of the server (no credentials).
    pub fn address(&self) -> String {
        let host = self.options.get_host();
        let port = self.options.get_port();
        if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<(), PgError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(|e| self.error("answer a ping", e))
    }

    /// Creates or updates `role` and its `database` so that exactly that role can use
    /// it. Idempotent: the role (LOGIN, PASSWORD, CONNECTION LIMIT, NOSUPERUSER
    /// NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS) is created if missing, else its
    /// password and limit are updated; the database is created owned by the role if
    /// missing, else handed to it; `CONNECT` is revoked from PUBLIC and granted to the
    /// role; the database's connection limit is set and connections allowed (undoing a
    /// drop that stopped half way). Running it twice, or again after a crash half way
    /// through, ends in the same complete state. `connection_limit` is -1 for no limit.
    pub async fn provision(
        &self,
        database: &Ident,
        role: &Ident,
        password: &str,
        connection_limit: i32,
    ) -> Result<(), PgError> {
        self.check_database_name(database)?;
        self.check_role_name(role)?;
        check_password(password)?;
        if connection_limit < -1 {
            return Err(PgError::InvalidArgument(format!(
                "the connection limit must be -1 (no limit) or more, not {connection_limit}"
            )));
        }
        let started = Instant::now();
        let password = quote_literal(password)?;
        let (db, r) = (database.quoted(), role.quoted());

        // CREATE DATABASE cannot run in a transaction, so this is a plain session,
        // holding the database's advisory lock (see the module's documentation).
        let mut conn = self.locked_session(database).await?;
        let existing = self.existing(&mut conn, database, role).await?;

        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {connection_limit} PASSWORD {password}"
        );
        let alter_role = format!("ALTER ROLE {r} WITH {attributes}");
        if existing.role {
            self.exec(&mut conn, || format!("update role {role}"), alter_role).await?;
        } else {
            let create = format!("CREATE ROLE {r} WITH {attributes}");
            match self.exec(&mut conn, || format!("create role {role}"), create).await {
                Ok(()) => {}
                // Created meanwhile by someone not holding our lock: update it instead,
                // unless it was made an administrator's.
                Err(e) if e.sqlstate().as_deref() == Some(DUPLICATE_OBJECT) => {
                    self.existing_role_is_unprivileged(&mut conn, role).await?;
                    self.exec(&mut conn, || format!("update role {role}"), alter_role).await?;
                }
                Err(e) => return Err(e),
            }
        }

        let mut created = false;
        if !existing.database {
            let create = format!(
                "CREATE DATABASE {db} WITH OWNER {r} ALLOW_CONNECTIONS true IS_TEMPLATE false \
                 CONNECTION LIMIT {connection_limit}"
            );
            match self.exec(&mut conn, || format!("create database {database}"), create).await {
                Ok(()) => created = true,
                Err(e) if e.sqlstate().as_deref() == Some(DUPLICATE_DATABASE) => {}
                Err(e) => return Err(e),
            }
        }
        let mut statements = Vec::with_capacity(4);
        if !created {
            // Left by a run that stopped half way, or by someone else: set what
            // CREATE DATABASE would have.
            statements.push(format!("ALTER DATABASE {db} OWNER TO {r}"));
            statements.push(format!(
                "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true IS_TEMPLATE false \
                 CONNECTION LIMIT {connection_limit}"
            ));
        }
        statements.push(format!("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC"));
        statements.push(format!("GRANT CONNECT ON DATABASE {db} TO {r}"));
        // One simple query, which PostgreSQL runs as one transaction: one commit.
        self.exec(&mut conn, || format!("configure database {database}"), statements.join("; ")).await?;
        self.keep(conn).await;
        info!(
            %database, %role, connection_limit,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database provisioned"
        );
        Ok(())
    }

    /// Drops `database` and `role`. Idempotent: blocks new connections, terminates
    /// existing ones (`pg_terminate_backend`), drops the database if it exists, then
    /// terminates the role's sessions, drops what it owns or was granted in the admin
    /// database and the role itself if it exists.
    pub async fn drop_database(&self, database: &Ident, role: &Ident) -> Result<(), PgError> {
        self.check_database_name(database)?;
        self.check_role_name(role)?;
        let started = Instant::now();
        let (db, r) = (database.quoted(), role.quoted());
        let mut conn = self.locked_session(database).await?;
        let existing = self.existing(&mut conn, database, role).await?;

        if existing.database {
            let block = format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false");
            match self.exec(&mut conn, || format!("block connections to {database}"), block).await {
                Ok(()) => {}
                Err(e) if e.sqlstate().as_deref() == Some(INVALID_CATALOG_NAME) => {}
                // An interrupted DROP DATABASE leaves the database invalid, and an invalid
                // database cannot be altered, only dropped: go on to drop it.
                Err(e) => warn!(%database, error = %e, "could not block connections; dropping anyway"),
            }
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(database.as_str())
            .execute(&mut conn)
            .await
            .map_err(|e| self.error(format!("terminate the sessions on {database}"), e))?;
            // FORCE also terminates whoever got in between.
            let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
            self.exec(&mut conn, || format!("drop database {database}"), drop).await?;
        }

        if existing.role {
            self.terminate_role_sessions(&mut conn, role).await?;
            // Its grants on other databases and anything it owns here would block DROP ROLE.
            let owned = format!("DROP OWNED BY {r}");
            match self.exec(&mut conn, || format!("drop what role {role} owns"), owned).await {
                Ok(()) => {}
                Err(e) if e.sqlstate().as_deref() == Some(UNDEFINED_OBJECT) => {}
                Err(e) => return Err(e),
            }
            let drop = format!("DROP ROLE IF EXISTS {r}");
            self.exec(&mut conn, || format!("drop role {role}"), drop).await?;
        }
        self.keep(conn).await;
        info!(
            %database, %role,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database dropped"
        );
        Ok(())
    }

    /// Gives `role` a new password and terminates its existing sessions, so that
    /// nothing keeps using the old one.
    pub async fn set_password(&self, role: &Ident, password: &str) -> Result<(), PgError> {
        self.check_role_name(role)?;
        check_password(password)?;
        let password = quote_literal(password)?;
        let mut conn = self.pool.acquire().await.map_err(|e| self.error("connect", e))?;
        // Checked first, not left to ALTER ROLE: the server logs a failed statement,
        // and this one carries the password.
        if !self.existing_role_is_unprivileged(&mut *conn, role).await? {
            return Err(PgError::RoleNotFound { role: role.to_string() });
        }
        let sql = format!("ALTER ROLE {} WITH PASSWORD {password}", role.quoted());
        match self.exec(&mut *conn, || format!("set the password of role {role}"), sql).await {
            Ok(()) => {}
            // Dropped meanwhile.
            Err(e) if e.sqlstate().as_deref() == Some(UNDEFINED_OBJECT) => {
                return Err(PgError::RoleNotFound { role: role.to_string() });
            }
            Err(e) => return Err(e),
        }
        self.terminate_role_sessions(&mut *conn, role).await?;
        info!(%role, "password changed");
        Ok(())
    }

    /// Whether `database` exists.
    pub async fn database_exists(&self, database: &Ident) -> Result<bool, PgError> {
        self.database_exists_on(&self.pool, database).await
    }

    /// Whether `role` exists.
    pub async fn role_exists(&self, role: &Ident) -> Result<bool, PgError> {
        self.role_exists_on(&self.pool, role).await
    }

    /// Names of the databases and of the roles that start with `prefix`, each sorted
    /// (for reconciliation). The prefix is matched literally (`_` is not a wildcard)
    /// and may not be empty, which would list the server's own databases and roles.
    pub async fn managed(&self, prefix: &str) -> Result<(Vec<String>, Vec<String>), PgError> {
        if prefix.is_empty() {
            return Err(PgError::InvalidArgument(
                "the prefix of managed names is empty; it would match every database and role".to_owned(),
            ));
        }
        let databases = sqlx::query_scalar::<_, String>(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1) ORDER BY 1",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("list databases", e))?;
        let roles = sqlx::query_scalar::<_, String>(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, $1) ORDER BY 1",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("list roles", e))?;
        Ok((databases, roles))
    }

    /// `postgres://role:password@host:port/database`, with the password percent-encoded,
    /// and the admin URL's `sslmode` if it has one. The host is the one the data service
    /// reaches the server at.
    pub fn connection_url(&self, database: &Ident, role: &Ident, password: &str) -> String {
        let mut url = format!("postgres://{role}:{}@{}/{database}", percent_encode(password), self.address());
        if let Some(mode) = self.query_param("sslmode") {
            url.push_str("?sslmode=");
            url.push_str(&percent_encode(&mode));
        }
        url
    }

    /// Dumps `database` with `pg_dump --format=custom` into `out` and returns the file's
    /// size. The admin credentials reach `pg_dump` through its environment (`PGPASSWORD`),
    /// never its command line. The dump is written beside `out` and renamed into place
    /// when complete, so `out` is never a partial dump.
    pub async fn backup(&self, database: &Ident, out: &Path) -> Result<u64, PgError> {
        let started = Instant::now();
        let partial = partial_path(out)?;
        let mut file_arg = std::ffi::OsString::from("--file=");
        file_arg.push(&partial);
        let mut command = self.tool("pg_dump").await;
        command.arg("--format=custom").arg("--no-password").arg(file_arg).arg(format!("--dbname={database}"));
        if let Err(e) = run_tool("pg_dump", command).await {
            if let Err(rm) = tokio::fs::remove_file(&partial).await
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                warn!(path = %partial.display(), error = %rm, "could not remove a partial dump");
            }
            return Err(e);
        }
        tokio::fs::rename(&partial, out).await.map_err(|source| PgError::Io {
            action: "move the finished dump to",
            path: out.to_owned(),
            source,
        })?;
        let size = tokio::fs::metadata(out)
            .await
            .map_err(|source| PgError::Io { action: "read the size of", path: out.to_owned(), source })?
            .len();
        info!(
            %database, path = %out.display(), size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database backed up"
        );
        Ok(size)
    }

    /// Restores the `pg_dump --format=custom` file `file` into the existing, freshly
    /// provisioned `database`, in one transaction (all or nothing). Objects are created
    /// by and owned by `role` (`--no-owner --role`), so the role can read and write
    /// them; the dump's own grants, owners, tablespaces, subscriptions and security
    /// labels are left out, as they name roles and places of the original server.
    pub async fn restore(&self, file: &Path, database: &Ident, role: &Ident) -> Result<(), PgError> {
        self.check_database_name(database)?;
        self.check_role_name(role)?;
        let started = Instant::now();
        tokio::fs::metadata(file).await.map_err(|source| PgError::Io {
            action: "read the backup",
            path: file.to_owned(),
            source,
        })?;
        // A relative path starting with '-' would read as an option.
        let file_arg = if file.is_relative() { Path::new(".").join(file) } else { file.to_owned() };
        let mut command = self.tool("pg_restore").await;
        command
            .arg("--no-password")
            .arg(format!("--dbname={database}"))
            .arg(format!("--role={role}"))
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--no-tablespaces")
            .arg("--no-subscriptions")
            .arg("--no-security-labels")
            .arg("--single-transaction")
            .arg("--exit-on-error")
            .arg(file_arg);
        run_tool("pg_restore", command).await?;
        info!(
            %database, %role, path = %file.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database restored"
        );
        Ok(())
    }

    /// A new admin session of its own (not from the pool), for DDL and session locks.
    async fn session(&self) -> Result<PgConnection, PgError> {
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(source)) => return Err(PgError::Connect { address: self.address(), source }),
            Err(_) => {
                return Err(PgError::Connect {
                    address: self.address(),
                    source: sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    )),
                });
            }
        };
        sqlx::raw_sql(LOCK_TIMEOUT).execute(&mut conn).await.map_err(|e| self.error("set a lock timeout", e))?;
        Ok(conn)
    }

    /// An admin session holding the advisory lock of `database`, so that two provisions
    /// (or a provision and a drop) of it, from this process or another, do not
    /// interleave. A kept session is used if there is one; one that broke while idle
    /// (the server restarted, or terminated it) is replaced.
    async fn locked_session(&self, database: &Ident) -> Result<PgConnection, PgError> {
        let error = |e| self.error(format!("lock database {database} (another change to it is running)"), e);
        while let Some(mut conn) = self.take_idle().await {
            match advisory_lock(&mut conn, database).await {
                Ok(()) => return Ok(conn),
                Err(e) if is_broken(&e) => debug!(error = %e, "a kept admin session broke; using another"),
                Err(e) => return Err(error(e)),
            }
        }
        let mut conn = self.session().await?;
        advisory_lock(&mut conn, database).await.map_err(error)?;
        Ok(conn)
    }

    /// The most recently used idle session; those idle too long are closed.
    async fn take_idle(&self) -> Option<PgConnection> {
        let (conn, expired) = {
            let mut idle = self.idle_sessions.lock().unwrap_or_else(PoisonError::into_inner);
            let expired: Vec<IdleSession> =
                idle.extract_if(.., |s| s.since.elapsed() >= SESSION_IDLE_TIMEOUT).collect();
            (idle.pop().map(|s| s.conn), expired)
        };
        for session in expired {
            self.close(session.conn).await;
        }
        conn
    }

    /// Releases the advisory lock `conn` holds and keeps it for the next provision or
    /// drop. A session that cannot be unlocked is dropped, which unlocks it too.
    async fn keep(&self, mut conn: PgConnection) {
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut conn).await {
            debug!(error = %e, "unlocking an admin session failed; closing it");
            return;
        }
        let surplus = {
            let mut idle = self.idle_sessions.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_SESSIONS {
                idle.push(IdleSession { conn, since: Instant::now() });
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = surplus {
            self.close(conn).await;
        }
    }

    async fn close(&self, conn: PgConnection) {
        if let Err(e) = conn.close().await {
            debug!(error = %e, "closing an admin session failed");
        }
    }

    /// Runs `sql` as a simple query: statements joined with `;` run as one transaction.
    async fn exec<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        action: impl FnOnce() -> String,
        sql: String,
    ) -> Result<(), PgError> {
        // Only Ident::quoted, quote_literal and integers are spliced into `sql`.
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(executor).await.map(drop).map_err(|e| self.error(action(), e))
    }

    async fn database_exists_on<'e>(&self, executor: impl PgExecutor<'e>, database: &Ident) -> Result<bool, PgError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database.as_str())
            .fetch_one(executor)
            .await
            .map_err(|e| self.error(format!("look up database {database}"), e))
    }

    async fn role_exists_on<'e>(&self, executor: impl PgExecutor<'e>, role: &Ident) -> Result<bool, PgError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role.as_str())
            .fetch_one(executor)
            .await
            .map_err(|e| self.error(format!("look up role {role}"), e))
    }

    /// Whether `role` exists; an existing role with administrative powers is refused,
    /// as provisioning it would strip them and dropping it would remove an administrator.
    async fn existing_role_is_unprivileged<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        role: &Ident,
    ) -> Result<bool, PgError> {
        let powerful: Option<bool> =
            sqlx::query_scalar(concat!("SELECT ", role_is_powerful!(), " FROM pg_roles WHERE rolname = $1"))
                .bind(role.as_str())
                .fetch_optional(executor)
                .await
                .map_err(|e| self.error(format!("look up role {role}"), e))?;
        self.unprivileged(role, powerful)
    }

    /// Whether `database` and `role` exist, in one query; an existing role with
    /// administrative powers is refused, as for [`Self::existing_role_is_unprivileged`].
    async fn existing(&self, conn: &mut PgConnection, database: &Ident, role: &Ident) -> Result<Existing, PgError> {
        let (powerful, database_exists): (Option<bool>, bool) = sqlx::query_as(concat!(
            "SELECT (SELECT ",
            role_is_powerful!(),
            " FROM pg_roles WHERE rolname = $1), EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)"
        ))
        .bind(role.as_str())
        .bind(database.as_str())
        .fetch_one(conn)
        .await
        .map_err(|e| self.error(format!("look up database {database} and role {role}"), e))?;
        Ok(Existing { database: database_exists, role: self.unprivileged(role, powerful)? })
    }

    /// Whether a role exists, given whether it is powerful (`None`: it does not exist).
    fn unprivileged(&self, role: &Ident, powerful: Option<bool>) -> Result<bool, PgError> {
        match powerful {
            Some(true) => Err(PgError::Reserved { name: role.to_string() }),
            Some(false) => Ok(true),
            None => Ok(false),
        }
    }

    async fn terminate_role_sessions<'e>(&self, executor: impl PgExecutor<'e>, role: &Ident) -> Result<(), PgError> {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
        )
        .bind(role.as_str())
        .execute(executor)
        .await
        .map(drop)
        .map_err(|e| self.error(format!("terminate the sessions of role {role}"), e))
    }

    fn check_database_name(&self, database: &Ident) -> Result<(), PgError> {
        let admin_database = self.options.get_database().unwrap_or(self.options.get_username());
        if SYSTEM_DATABASES.contains(&database.as_str()) || database.as_str() == admin_database {
            return Err(PgError::Reserved { name: database.to_string() });
        }
        Ok(())
    }

    fn check_role_name(&self, role: &Ident) -> Result<(), PgError> {
        let name = role.as_str();
        if name.starts_with("pg_") || name == "postgres" || name == self.options.get_username() {
            return Err(PgError::Reserved { name: role.to_string() });
        }
        Ok(())
    }

    /// Classifies a driver error: no connection is `Connect`, anything else `Database`.
    fn error(&self, action: impl Into<String>, source: sqlx::Error) -> PgError {
        match source {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => PgError::Connect { address: self.address(), source },
            source => PgError::Database { address: self.address(), action: action.into(), source },
        }
    }

    /// The decoded value of a query parameter of the admin URL.
    fn query_param(&self, name: &str) -> Option<String> {
        self.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// `pg_dump` or `pg_restore`, reaching the server as the admin through libpq's
    /// environment variables so no credential is on a command line.
    async fn tool(&self, name: &'static str) -> Command {
        let installed = Path::new(TOOL_DIR).join(name);
        let program = match tokio::fs::metadata(&installed).await {
            Ok(meta) if meta.is_file() => installed,
            _ => PathBuf::from(name),
        };
        let mut command = Command::new(program);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // These would override or redirect what is set below.
            .env_remove("PGHOSTADDR")
            .env_remove("PGSERVICE")
            .env_remove("PGDATABASE")
            .env("PGPORT", self.options.get_port().to_string())
            .env("PGUSER", self.options.get_username())
            .env("PGAPPNAME", "strata-data")
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string());
        match self.options.get_socket() {
            Some(dir) => command.env("PGHOST", dir),
            None => command.env("PGHOST", self.options.get_host().trim_start_matches('[').trim_end_matches(']')),
        };
        let password = match self.url.password() {
            Some(encoded) => Some(percent_decode(encoded)),
            None => self.query_param("password"),
        };
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        for (param, var) in [("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")] {
            if let Some(value) = self.query_param(param) {
                command.env(var, value);
            }
        }
        command
    }
}

impl PgError {
    /// The SQLSTATE of a statement the server refused.
    fn sqlstate(&self) -> Option<String> {
        match self {
            PgError::Database { source: sqlx::Error::Database(e), .. } => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

/// Takes the session-level advisory lock of `database`, waiting up to the lock timeout.
async fn advisory_lock(conn: &mut PgConnection, database: &Ident) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("strata-data:{database}"))
        .execute(conn)
        .await
        .map(drop)
}

/// Whether `error` means the session is gone (the server closed, restarted or
/// terminated it), so that another session may well succeed.
fn is_broken(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P: the server shut the session down.
        sqlx::Error::Database(e) => e.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

fn check_password(password: &str) -> Result<(), PgError> {
    if password.is_empty() {
        // PostgreSQL stores an empty password as none at all: nobody could log in.
        return Err(PgError::InvalidArgument("the password is empty: give the role a password".to_owned()));
    }
    Ok(())
}

/// Runs a client tool to completion; a failure carries the tail of its stderr.
async fn run_tool(tool: &'static str, mut command: Command) -> Result<(), PgError> {
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PgError::ToolMissing { tool }),
        Err(source) => {
            return Err(PgError::Io { action: "run", path: PathBuf::from(tool), source });
        }
    };
    if output.status.success() {
        return Ok(());
    }
    Err(PgError::ToolFailed { tool, status: output.status.to_string(), stderr: stderr_tail(&output.stderr) })
}

/// The last lines a tool wrote to stderr, on one line.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "it wrote nothing to stderr".to_owned();
    }
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join(" | ")
}

/// `out` with `.partial` appended to its file name.
fn partial_path(out: &Path) -> Result<PathBuf, PgError> {
    let Some(name) = out.file_name() else {
        return Err(PgError::InvalidArgument(format!(
            "{} is not a file path: give the backup a file name",
            out.display()
        )));
    };
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(out.with_file_name(partial))
}

/// Percent-encodes everything but RFC 3986's unreserved characters. (`url`'s own
/// userinfo encoding leaves `%` alone, which a client would then decode.)
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            // Two hex digits make at most 255.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A rejected name as it can be shown: escaped and at most 80 characters.
fn for_display(s: &str) -> String {
    let shown: String = s.chars().take(80).collect();
    if shown.len() < s.len() { format!("{shown:?}…") } else { format!("{shown:?}") }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{future::Future, panic::AssertUnwindSafe};

    use futures::FutureExt;
    use strata_integration_tests::postgres_admin_url;

    use super::*;

    /// Runs `test` with a fresh name prefix against the test server
    /// (`STRATA_TEST_POSTGRES_URL`), then drops every database and role with that
    /// prefix with plain SQL, whether the test passed, failed or panicked.
    async fn with_prefix<F, Fut>(test: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let prefix = format!("strata_t_{:08x}_", rand::random::<u32>());
        let outcome = AssertUnwindSafe(test(prefix.clone())).catch_unwind().await;
        let mut admin = PgConnection::connect(&postgres_admin_url()).await.unwrap();
        let pattern = format!("{}%", prefix.replace('_', "\\_"));
        let databases: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(&pattern)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        for db in databases {
            let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
        }
        let roles: Vec<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
            .bind(&pattern)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        for role in roles {
            let sql = format!("DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\"");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
        }
        match outcome {
            Ok(result) => result.unwrap(),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The backend pid of the session `server` keeps, if it keeps one.
    async fn kept_pid(server: &PgServer) -> Option<i32> {
        let mut conn = server.take_idle().await?;
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await.unwrap();
        server.keep(conn).await;
        Some(pid)
    }

    #[tokio::test]
    async fn a_kept_session_is_reused_unlocked_and_replaced_when_it_breaks() {
        with_prefix(|prefix| async move {
            let server = PgServer::connect(&postgres_admin_url()).await?;
            let (db, role) = (Ident::new(&format!("{prefix}one"))?, Ident::new(&format!("{prefix}one_owner"))?);
            server.provision(&db, &role, "pw", 5).await?;
            let first = kept_pid(&server).await.expect("the session was not kept");
            server.drop_database(&db, &role).await?;
            assert_eq!(kept_pid(&server).await, Some(first), "the kept session was not reused");

            let mut admin = PgConnection::connect(&postgres_admin_url()).await?;
            let locks: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1")
                    .bind(first)
                    .fetch_one(&mut admin)
                    .await?;
            assert_eq!(locks, 0, "the kept session still holds an advisory lock");

            // As when the server restarts or an operator ends idle sessions.
            let ended: bool =
                sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)").bind(first).fetch_one(&mut admin).await?;
            assert!(ended);
            server.provision(&db, &role, "pw", 5).await?;
            assert!(server.database_exists(&db).await?);
            let second = kept_pid(&server).await.expect("the new session was not kept");
            assert_ne!(second, first);
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn a_provision_dropped_half_way_leaves_no_lock_behind() {
        with_prefix(|prefix| async move {
            let server = PgServer::connect(&postgres_admin_url()).await?;
            let (db, role) = (Ident::new(&format!("{prefix}cut"))?, Ident::new(&format!("{prefix}cut_owner"))?);
            // Hold the database's lock, as another process provisioning it would.
            let mut other = PgConnection::connect(&postgres_admin_url()).await?;
            advisory_lock(&mut other, &db).await?;

            let provision = tokio::spawn({
                let (server, db, role) = (server.clone(), db.clone(), role.clone());
                async move { server.provision(&db, &role, "pw", 5).await }
            });
            // Wait until the provision waits for the lock, then drop it there.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let waiting: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks held JOIN pg_locks waiting \
                     USING (locktype, database, classid, objid, objsubid) \
                     WHERE held.locktype = 'advisory' AND held.pid = pg_backend_pid() AND held.granted \
                     AND NOT waiting.granted)",
                )
                .fetch_one(&mut other)
                .await?;
                if waiting {
                    break;
                }
                assert!(Instant::now() < deadline, "the provision never waited for the lock");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            provision.abort();
            assert!(provision.await.is_err_and(|e| e.is_cancelled()));
            sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut other).await?;

            // Another process gets the lock at once, not after the 30 s lock timeout.
            let elsewhere = PgServer::connect(&postgres_admin_url()).await?;
            tokio::time::timeout(Duration::from_secs(10), elsewhere.provision(&db, &role, "pw", 5)).await??;
            tokio::time::timeout(Duration::from_secs(10), server.drop_database(&db, &role)).await??;
            assert!(!server.database_exists(&db).await?);
            Ok(())
        })
        .await;
    }

    #[test]
    fn percent_encoding_round_trips() {
        let password = "p@ss:w/o%rd #?&=é'\\";
        let encoded = percent_encode(password);
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{encoded}");
        assert_eq!(percent_decode(&encoded), password);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let stderr: String = (1..=20).map(|i| format!("line {i}\n\n")).collect();
        assert_eq!(
            stderr_tail(stderr.as_bytes()),
            "line 13 | line 14 | line 15 | line 16 | line 17 | line 18 | line 19 | line 20"
        );
        assert_eq!(stderr_tail(b""), "it wrote nothing to stderr");
    }

    #[test]
    fn partial_path_sits_beside_the_output() {
        assert_eq!(partial_path(Path::new("/tmp/a.dump")).ok(), Some(PathBuf::from("/tmp/a.dump.partial")));
        assert!(partial_path(Path::new("/")).is_err());
    }

    #[test]
    fn names_are_shown_escaped_and_short() {
        assert_eq!(for_display("a\"b"), "\"a\\\"b\"");
        assert!(for_display(&"x".repeat(200)).ends_with('…'));
    }
}
