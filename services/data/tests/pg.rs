//! `strata_data::pg` against the machine's real PostgreSQL server
//! (`STRATA_TEST_POSTGRES_URL`): each test provisions databases and roles under its
//! own prefix (`strata_t_<random hex>_`) and drops everything with that prefix when it
//! ends, also when it fails.
//!
//! Where the server trusts every login (as the development machine's does), a wrong
//! password is accepted, so the password tests check what the server stored and fall
//! back from "the old password is refused" to "the stored secret changed"; pointed at a
//! server that checks passwords they assert the refusal too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{future::Future, panic::AssertUnwindSafe};

use anyhow::{Context, Result, bail, ensure};
use futures::FutureExt;
use sqlx::{Connection, Executor, PgConnection, Row};
use strata_data::pg::{Ident, PgError, PgServer, quote_literal};
use strata_integration_tests::postgres_admin_url;

/// A password that needs quoting in SQL and percent-encoding in a URL.
const AWKWARD_PASSWORD: &str = "p@ss:w/o%rd'#?\\ é\"";

/// One test's names and its admin connection.
#[derive(Clone)]
struct Fixture {
    prefix: String,
    server: PgServer,
}

impl Fixture {
    fn ident(&self, suffix: &str) -> Ident {
        Ident::new(&format!("{}{suffix}", self.prefix)).unwrap()
    }

    /// A database and its role: `<prefix><name>` and `<prefix><name>_owner`.
    fn pair(&self, name: &str) -> (Ident, Ident) {
        (self.ident(name), self.ident(&format!("{name}_owner")))
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&postgres_admin_url()).await.unwrap()
    }

    /// Drops every database and role with the prefix, without the code under test.
    async fn cleanup(&self) {
        let mut admin = self.admin().await;
        let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
        let databases: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(&pattern)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        for db in databases {
            let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
            admin.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
        }
        let roles: Vec<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
            .bind(&pattern)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        for role in roles {
            admin.execute(sqlx::AssertSqlSafe(format!("DROP OWNED BY \"{role}\""))).await.unwrap();
            admin.execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\""))).await.unwrap();
        }
    }
}

/// Runs `test` with a fresh prefix and cleans up after it, whether it passes,
/// returns an error or panics.
async fn with_fixture<F, Fut>(test: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let server = PgServer::connect(&postgres_admin_url()).await.expect("the test PostgreSQL server is reachable");
    let fixture = Fixture { prefix: format!("strata_t_{:08x}_", rand::random::<u32>()), server };
    let outcome = AssertUnwindSafe(test(fixture.clone())).catch_unwind().await;
    fixture.cleanup().await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Connects as `role` and proves it can create, write and read a table.
async fn write_and_read(url: &str) -> Result<()> {
    let mut conn = PgConnection::connect(url).await.context("connect as the role")?;
    conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)").await?;
    sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind("hello").execute(&mut conn).await?;
    let body: String = sqlx::query_scalar("SELECT body FROM notes WHERE id = 1").fetch_one(&mut conn).await?;
    ensure!(body == "hello", "read back {body:?}");
    conn.close().await?;
    Ok(())
}

/// The SQLSTATE of a failed connection or query.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

/// Whether the server refuses `role` with a wrong password (a `trust` server does not).
async fn server_checks_passwords(fx: &Fixture, database: &Ident, role: &Ident) -> bool {
    let wrong = fx.server.connection_url(database, role, "certainly-not-the-password");
    PgConnection::connect(&wrong).await.is_err()
}

/// The role's stored secret (a SCRAM verifier), as the admin sees it.
async fn stored_secret(fx: &Fixture, role: &Ident) -> Option<String> {
    sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role.as_str())
        .fetch_one(&mut fx.admin().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn provision_gives_the_role_a_database_it_can_use() {
    with_fixture(|fx| async move {
        let (db, role) = fx.pair("app");
        fx.server.provision(&db, &role, AWKWARD_PASSWORD, 7).await?;
        assert!(fx.server.database_exists(&db).await?);
        assert!(fx.server.role_exists(&role).await?);

        let url = fx.server.connection_url(&db, &role, AWKWARD_PASSWORD);
        assert!(url.starts_with(&format!("postgres://{role}:")), "{url}");
        assert!(url.ends_with(&format!("@{}/{db}", fx.server.address())), "{url}");
        write_and_read(&url).await?;

        let mut admin = fx.admin().await;
        let row = sqlx::query(
            "SELECT r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolconnlimit, \
                    d.datconnlimit, pg_get_userbyid(d.datdba)::text AS owner, \
                    has_database_privilege('public', d.oid, 'CONNECT') AS public_connect \
             FROM pg_roles r, pg_database d WHERE r.rolname = $1 AND d.datname = $2",
        )
        .bind(role.as_str())
        .bind(db.as_str())
        .fetch_one(&mut admin)
        .await?;
        assert!(row.get::<bool, _>("rolcanlogin"));
        assert!(!row.get::<bool, _>("rolsuper"));
        assert!(!row.get::<bool, _>("rolcreatedb"));
        assert!(!row.get::<bool, _>("rolcreaterole"));
        assert_eq!(row.get::<i32, _>("rolconnlimit"), 7);
        assert_eq!(row.get::<i32, _>("datconnlimit"), 7);
        assert_eq!(row.get::<String, _>("owner"), role.as_str());
        assert!(!row.get::<bool, _>("public_connect"));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn provision_twice_updates_the_password_and_limit() {
    with_fixture(|fx| async move {
        let (db, role) = fx.pair("twice");
        fx.server.provision(&db, &role, "first-password", 5).await?;
        let first_secret = stored_secret(&fx, &role).await;
        fx.server.provision(&db, &role, "second-password", 3).await?;
        assert_ne!(stored_secret(&fx, &role).await, first_secret, "the password was not changed");

        write_and_read(&fx.server.connection_url(&db, &role, "second-password")).await?;
        if server_checks_passwords(&fx, &db, &role).await {
            let old = PgConnection::connect(&fx.server.connection_url(&db, &role, "first-password")).await;
            assert!(old.is_err(), "the first password still works");
        }
        let limits: (i32, i32) = sqlx::query_as(
            "SELECT r.rolconnlimit, d.datconnlimit FROM pg_roles r, pg_database d \
             WHERE r.rolname = $1 AND d.datname = $2",
        )
        .bind(role.as_str())
        .bind(db.as_str())
        .fetch_one(&mut fx.admin().await)
        .await?;
        assert_eq!(limits, (3, 3));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn provision_completes_what_a_crash_left_half_done() {
    with_fixture(|fx| async move {
        // What a crash could leave: the role without its password, the database owned
        // by the admin and open to PUBLIC, and connections blocked by an interrupted drop.
        let (db, role) = fx.pair("half");
        let mut admin = fx.admin().await;
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE ROLE {} LOGIN", role.quoted()))).await?;
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", db.quoted()))).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", db.quoted())))
            .await?;

        fx.server.provision(&db, &role, "whole-again", 2).await?;

        write_and_read(&fx.server.connection_url(&db, &role, "whole-again")).await?;
        let (owner, public_connect): (String, bool) = sqlx::query_as(
            "SELECT pg_get_userbyid(datdba)::text, has_database_privilege('public', oid, 'CONNECT') \
             FROM pg_database WHERE datname = $1",
        )
        .bind(db.as_str())
        .fetch_one(&mut admin)
        .await?;
        assert_eq!(owner, role.as_str());
        assert!(!public_connect, "PUBLIC can still connect");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn another_role_cannot_connect_to_the_database() {
    with_fixture(|fx| async move {
        let (db_a, role_a) = fx.pair("a");
        let (db_b, role_b) = fx.pair("b");
        fx.server.provision(&db_a, &role_a, "password-a", 5).await?;
        fx.server.provision(&db_b, &role_b, "password-b", 5).await?;

        let intruder = fx.server.connection_url(&db_a, &role_b, "password-b");
        match PgConnection::connect(&intruder).await {
            Ok(_) => bail!("role {role_b} connected to {db_a}"),
            Err(e) => {
                // insufficient_privilege: "permission denied for database ..."
                assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
                assert!(e.to_string().contains("permission denied"), "{e}");
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn drop_removes_database_and_role_even_while_a_client_is_connected() {
    with_fixture(|fx| async move {
        let (db, role) = fx.pair("gone");
        fx.server.provision(&db, &role, "doomed", 5).await?;
        let url = fx.server.connection_url(&db, &role, "doomed");
        let mut client = PgConnection::connect(&url).await?;
        client.execute("SELECT 1").await?;

        fx.server.drop_database(&db, &role).await?;

        assert!(!fx.server.database_exists(&db).await?);
        assert!(!fx.server.role_exists(&role).await?);
        let mut admin = fx.admin().await;
        let left: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1), \
                    (SELECT count(*) FROM pg_roles WHERE rolname = $2)",
        )
        .bind(db.as_str())
        .bind(role.as_str())
        .fetch_one(&mut admin)
        .await?;
        assert_eq!(left, (0, 0));
        assert!(client.execute("SELECT 1").await.is_err(), "the client's session survived the drop");

        // Again, and for names that never existed.
        fx.server.drop_database(&db, &role).await?;
        let (never_db, never_role) = fx.pair("never");
        fx.server.drop_database(&never_db, &never_role).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn set_password_replaces_the_old_one_and_ends_its_sessions() {
    with_fixture(|fx| async move {
        let (db, role) = fx.pair("rotate");
        fx.server.provision(&db, &role, "old-password", 5).await?;
        let mut session = PgConnection::connect(&fx.server.connection_url(&db, &role, "old-password")).await?;
        session.execute("SELECT 1").await?;
        let old_secret = stored_secret(&fx, &role).await;

        fx.server.set_password(&role, AWKWARD_PASSWORD).await?;

        assert!(session.execute("SELECT 1").await.is_err(), "the session with the old password survived");
        assert_ne!(stored_secret(&fx, &role).await, old_secret, "the stored secret did not change");
        write_and_read(&fx.server.connection_url(&db, &role, AWKWARD_PASSWORD)).await?;
        if server_checks_passwords(&fx, &db, &role).await {
            let old = PgConnection::connect(&fx.server.connection_url(&db, &role, "old-password")).await;
            assert!(old.is_err(), "the old password still works");
        }

        let missing = fx.ident("nobody");
        let err = fx.server.set_password(&missing, "whatever").await.unwrap_err();
        assert!(matches!(err, PgError::RoleNotFound { .. }), "{err}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn managed_lists_databases_and_roles_by_prefix() {
    with_fixture(|fx| async move {
        let (db1, role1) = fx.pair("one");
        let (db2, role2) = fx.pair("two");
        fx.server.provision(&db1, &role1, "pw-one", 5).await?;
        fx.server.provision(&db2, &role2, "pw-two", 5).await?;

        let (databases, roles) = fx.server.managed(&fx.prefix).await?;
        assert_eq!(databases, vec![db1.to_string(), db2.to_string()]);
        assert_eq!(roles, vec![role1.to_string(), role2.to_string()]);

        // `_` is matched literally, not as LIKE's any-character.
        let (databases, _) = fx.server.managed(&format!("{}on_", fx.prefix)).await?;
        assert!(databases.is_empty(), "{databases:?}");
        let (databases, roles) = fx.server.managed(&format!("{}one", fx.prefix)).await?;
        assert_eq!((databases, roles), (vec![db1.to_string()], vec![role1.to_string()]));

        assert!(matches!(fx.server.managed("").await, Err(PgError::InvalidArgument(_))));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn backup_then_restore_into_a_new_database() {
    with_fixture(|fx| async move {
        let (src, src_role) = fx.pair("src");
        fx.server.provision(&src, &src_role, "source-pw", 5).await?;
        let mut conn = PgConnection::connect(&fx.server.connection_url(&src, &src_role, "source-pw")).await?;
        conn.execute(
            "CREATE SCHEMA billing;
             CREATE TABLE billing.invoices (id bigserial PRIMARY KEY, amount numeric NOT NULL);
             CREATE VIEW billing.totals AS SELECT sum(amount) AS total FROM billing.invoices;
             INSERT INTO billing.invoices (amount) VALUES (12.50), (7.25);",
        )
        .await?;
        conn.close().await?;

        let dir = tempfile::tempdir()?;
        let file = dir.path().join("src.dump");
        let size = fx.server.backup(&src, &file).await?;
        assert!(size > 0);
        assert_eq!(size, std::fs::metadata(&file)?.len());
        assert!(!dir.path().join("src.dump.partial").exists());

        let (dst, dst_role) = fx.pair("dst");
        fx.server.provision(&dst, &dst_role, "target-pw", 5).await?;
        fx.server.restore(&file, &dst, &dst_role).await?;

        let mut conn = PgConnection::connect(&fx.server.connection_url(&dst, &dst_role, "target-pw")).await?;
        let total: String = sqlx::query_scalar("SELECT total::text FROM billing.totals").fetch_one(&mut conn).await?;
        assert_eq!(total, "19.75");
        // The sequence came along and belongs to the role too.
        let id: i64 = sqlx::query_scalar("INSERT INTO billing.invoices (amount) VALUES (1) RETURNING id")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(id, 3);
        conn.execute("UPDATE billing.invoices SET amount = amount + 1").await?;
        conn.execute("DELETE FROM billing.invoices WHERE id = 1").await?;
        let owners: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT pg_get_userbyid(relowner)::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'billing'",
        )
        .fetch_all(&mut conn)
        .await?;
        assert_eq!(owners, vec![dst_role.to_string()]);
        conn.close().await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn backup_and_restore_fail_clearly() {
    with_fixture(|fx| async move {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("missing.dump");
        let err = fx.server.backup(&fx.ident("missing"), &file).await.unwrap_err();
        assert!(matches!(err, PgError::ToolFailed { tool: "pg_dump", .. }), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(std::fs::read_dir(dir.path())?.next().is_none(), "a failed dump left a file behind");

        let (db, role) = fx.pair("target");
        fx.server.provision(&db, &role, "pw", 5).await?;
        let garbage = dir.path().join("garbage.dump");
        std::fs::write(&garbage, b"not a dump")?;
        let err = fx.server.restore(&garbage, &db, &role).await.unwrap_err();
        assert!(matches!(err, PgError::ToolFailed { tool: "pg_restore", .. }), "{err}");
        let err = fx.server.restore(&dir.path().join("absent.dump"), &db, &role).await.unwrap_err();
        assert!(matches!(err, PgError::Io { .. }), "{err}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn administrators_and_system_databases_are_refused() {
    with_fixture(|fx| async move {
        let (db, role) = fx.pair("x");
        let postgres = Ident::new("postgres")?;
        for result in [
            fx.server.provision(&postgres, &role, "pw", 5).await,
            fx.server.provision(&db, &postgres, "pw", 5).await,
            fx.server.drop_database(&Ident::new("template1")?, &role).await,
            fx.server.set_password(&postgres, "pw").await,
        ] {
            assert!(matches!(result, Err(PgError::Reserved { .. })), "{result:?}");
        }

        // An existing role with powers is not demoted by provisioning nor dropped.
        let (admin_db, admin_role) = fx.pair("ops");
        let mut admin = fx.admin().await;
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE ROLE {} LOGIN CREATEDB", admin_role.quoted()))).await?;
        let err = fx.server.provision(&admin_db, &admin_role, "pw", 5).await.unwrap_err();
        assert!(matches!(err, PgError::Reserved { .. }), "{err}");
        let err = fx.server.drop_database(&admin_db, &admin_role).await.unwrap_err();
        assert!(matches!(err, PgError::Reserved { .. }), "{err}");
        let still: bool = sqlx::query_scalar("SELECT rolcreatedb FROM pg_roles WHERE rolname = $1")
            .bind(admin_role.as_str())
            .fetch_one(&mut admin)
            .await?;
        assert!(still);
        assert!(!fx.server.database_exists(&admin_db).await?);

        for (password, limit) in [("", 5), ("pw", -2)] {
            let result = fx.server.provision(&db, &role, password, limit).await;
            assert!(matches!(result, Err(PgError::InvalidArgument(_))), "{result:?}");
        }
        let result = fx.server.provision(&db, &role, "nul\0byte", 5).await;
        assert!(matches!(result, Err(PgError::NulInLiteral)), "{result:?}");
        assert!(!fx.server.role_exists(&role).await?);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn connect_fails_clearly() {
    let err = PgServer::connect("postgres://postgres:s3cret-pw@127.0.0.1:1/postgres").await.unwrap_err();
    assert!(matches!(err, PgError::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");

    for url in ["not a url", "mysql://root:s3cret-pw@127.0.0.1/x", "postgres://u:s3cret-pw@127.0.0.1:99999/x"] {
        let err = PgServer::connect(url).await.unwrap_err();
        assert!(matches!(err, PgError::InvalidUrl { .. }), "{url}: {err}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    }

    let server = PgServer::connect(&postgres_admin_url()).await.unwrap();
    server.ping().await.unwrap();
    let url = url::Url::parse(&postgres_admin_url()).unwrap();
    let expected = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    assert_eq!(server.address(), expected);
    assert!(!format!("{server:?}").contains('@'));
}

#[test]
fn ident_accepts_generated_names_only() {
    for good in ["a", "team_42_db", &format!("a{}", "b".repeat(62))] {
        let ident = Ident::new(good).unwrap();
        assert_eq!(ident.as_str(), good);
        assert_eq!(ident.quoted(), format!("\"{good}\""));
    }
    for bad in [
        "x\"; DROP ROLE postgres; --",
        "Team",
        "",
        "1abc",
        "_abc",
        "a-b",
        "a b",
        "café",
        &format!("a{}", "b".repeat(63)),
    ] {
        let err = Ident::new(bad).unwrap_err();
        assert!(matches!(err, PgError::InvalidName { .. }), "{bad:?}: {err}");
    }
}

#[test]
fn quote_literal_doubles_quotes() {
    assert_eq!(quote_literal("plain").unwrap(), "'plain'");
    assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
    assert_eq!(quote_literal("'; DROP ROLE postgres; --").unwrap(), "'''; DROP ROLE postgres; --'");
    assert_eq!(quote_literal("back\\slash'").unwrap(), "E'back\\\\slash'''");
    assert!(matches!(quote_literal("nul\0"), Err(PgError::NulInLiteral)));
}
