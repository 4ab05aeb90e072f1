//! Databases on demand against the machine's real PostgreSQL: what a team
//! creates it can use, nobody else can, and nothing is ever left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sqlx::Connection;
use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::{compute::v1 as cpb, data::v1 as pb};
use tonic::Code;

async fn setup() -> (TestEnv, DataUnderTest, DataClient) {
    let mut env = TestEnv::new();
    let data = DataUnderTest::start(env.data_config(Backend::Sqlite).await).await;
    let client = data.client(&env.token(&env.team("blue"), Role::Member)).await;
    (env, data, client)
}

async fn create(client: &mut DataClient, name: &str, request_id: &str) -> Result<pb::Database, tonic::Status> {
    Ok(client
        .create_database(pb::CreateDatabaseRequest {
            name: name.into(),
            plan: String::new(),
            request_id: request_id.into(),
        })
        .await?
        .into_inner())
}

async fn credentials(client: &mut DataClient, name: &str) -> pb::Credentials {
    client.get_credentials(pb::GetCredentialsRequest { name: name.into() }).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_creates_a_database_and_uses_it() {
    let (env, data, mut client) = setup().await;
    let db = create(&mut client, "orders", "req-1").await.unwrap();
    assert_eq!(db.state, pb::DatabaseState::Ready as i32);
    assert_eq!((db.plan.as_str(), db.server.as_str()), ("hobby", "local"));

    let creds = credentials(&mut client, "orders").await;
    assert!(creds.database.starts_with(&env.db_prefix()), "generated names, never the user's: {creds:?}");
    let mut conn = sqlx::PgConnection::connect(&creds.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'tea')")
        .execute(&mut conn)
        .await
        .unwrap();
    let item: String = sqlx::query_scalar("SELECT item FROM orders WHERE id = 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(item, "tea");
    conn.close().await.unwrap();

    // The same request, or the same name, creates nothing new.
    assert_eq!(create(&mut client, "orders", "req-1").await.unwrap().id, db.id);
    assert_eq!(create(&mut client, "orders", "req-2").await.unwrap().id, db.id);
    let status = create(&mut client, "invoices", "req-1").await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let (dbs, roles) = pg_objects(&env.db_prefix()).await;
    assert_eq!((dbs.len(), roles.len()), (1, 1));

    // The event names the database and carries no secret.
    let event = env.wait_event("dev.strata.data.database.provisioned.v1", |_| true).await;
    assert_eq!(event["data"]["database"], "orders");
    assert!(!event.to_string().contains(&creds.password));
    let provisioned =
        env.events().await.iter().filter(|(_, e)| e["type"] == "dev.strata.data.database.provisioned.v1").count();
    assert_eq!(provisioned, 1);

    data.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_cannot_reach_each_others_databases() {
    let (env, data, mut blue) = setup().await;
    let mut green = data.client(&env.token(&env.team("green"), Role::Member)).await;
    create(&mut blue, "ledger", "").await.unwrap();
    create(&mut green, "notes", "").await.unwrap();

    assert_eq!(
        green.get_database(pb::GetDatabaseRequest { name: "ledger".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = green.list_databases(pb::ListDatabasesRequest {}).await.unwrap().into_inner().databases;
    assert_eq!(listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["notes"]);
    let creds = green.get_credentials(pb::GetCredentialsRequest { name: "ledger".into() }).await.unwrap_err();
    assert_eq!(creds.code(), Code::NotFound);

    // Green's own role, pointed at blue's database, is refused by PostgreSQL.
    let blue_creds = credentials(&mut blue, "ledger").await;
    let green_creds = credentials(&mut green, "notes").await;
    let (base, _) = green_creds.url.rsplit_once('/').unwrap();
    let trespass = format!("{base}/{}", blue_creds.database);
    assert!(trespass.contains(&green_creds.user));
    let refused = sqlx::PgConnection::connect(&trespass).await.unwrap_err().to_string();
    assert!(refused.contains("permission denied"), "{refused}");

    // Viewers may look but not read credentials.
    let mut viewer = data.client(&env.token(&env.team("blue"), Role::Viewer)).await;
    assert_eq!(viewer.list_databases(pb::ListDatabasesRequest {}).await.unwrap().into_inner().databases.len(), 1);
    let denied = viewer.get_credentials(pb::GetCredentialsRequest { name: "ledger".into() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    data.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_are_refused_and_nothing_is_created() {
    let (env, data, mut client) = setup().await;
    for name in ["x\"; DROP ROLE postgres; --", "Robert'); DROP TABLE students;--", "UPPER", "", &"a".repeat(41)] {
        let status = create(&mut client, name, "").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
    }
    let status = client
        .create_database(pb::CreateDatabaseRequest {
            name: "fine".into(),
            plan: "gigantic".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(pg_objects(&env.db_prefix()).await, (vec![], vec![]));
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    let postgres: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(postgres, 1);

    data.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_and_rotate_leave_nothing_usable_behind() {
    let (env, data, mut client) = setup().await;
    create(&mut client, "scratch", "").await.unwrap();
    let old = credentials(&mut client, "scratch").await;
    let mut session = sqlx::PgConnection::connect(&old.url).await.unwrap();

    let rotated = client.rotate_credentials(pb::RotateCredentialsRequest { name: "scratch".into() }).await.unwrap();
    assert_eq!(rotated.into_inner().state, pb::DatabaseState::Ready as i32);
    let new = credentials(&mut client, "scratch").await;
    assert_ne!(new.password, old.password);
    // This machine's PostgreSQL trusts local connections (no password check at
    // all), so the proof is in the catalogue: the role's verifier is the new
    // password's, and sessions opened with the old one were ended.
    assert!(password_matches(&old.user, &new.password).await, "the role does not have the new password");
    assert!(!password_matches(&old.user, &old.password).await, "the role still has the old password");
    assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err(), "a session with the old password survived");
    sqlx::PgConnection::connect(&new.url).await.unwrap().close().await.unwrap();
    let event = env.wait_event("dev.strata.data.credentials.rotated.v1", |_| true).await;
    assert!(!event.to_string().contains(&new.password));

    let _held_open = sqlx::PgConnection::connect(&new.url).await.unwrap();
    client.delete_database(pb::DeleteDatabaseRequest { name: "scratch".into() }).await.unwrap();
    assert_eq!(
        pg_objects(&env.db_prefix()).await,
        (vec![], vec![]),
        "database and role gone from pg_database/pg_roles"
    );
    assert_eq!(
        client.get_database(pb::GetDatabaseRequest { name: "scratch".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    env.wait_event("dev.strata.data.database.deleted.v1", |e| e["data"]["database"] == "scratch").await;

    data.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_restore_into_a_new_database() {
    let (env, data, mut client) = setup().await;
    create(&mut client, "precious", "").await.unwrap();
    let creds = credentials(&mut client, "precious").await;
    let mut conn = sqlx::PgConnection::connect(&creds.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE gems (name text); INSERT INTO gems VALUES ('ruby')").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let backup =
        client.create_backup(pb::CreateBackupRequest { database: "precious".into() }).await.unwrap().into_inner();
    assert!(backup.size_bytes > 0);
    let listed =
        client.list_backups(pb::ListBackupsRequest { database: "precious".into() }).await.unwrap().into_inner();
    assert_eq!(listed.backups[0].id, backup.id);

    let restored = client
        .restore_backup(pb::RestoreBackupRequest { backup_id: backup.id.clone(), name: "precious-copy".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state, pb::DatabaseState::Ready as i32);
    let copy = credentials(&mut client, "precious-copy").await;
    let mut conn = sqlx::PgConnection::connect(&copy.url).await.unwrap();
    let gem: String = sqlx::query_scalar("SELECT name FROM gems").fetch_one(&mut conn).await.unwrap();
    assert_eq!(gem, "ruby");
    sqlx::query("INSERT INTO gems VALUES ('opal')").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    data.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_finishes_interrupted_work_and_drops_orphans() {
    let (env, data, mut client) = setup().await;
    create(&mut client, "keeper", "").await.unwrap();
    // An object under the service's prefix that no record knows.
    let orphan = format!("{}orphan", env.db_prefix());
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{orphan}\""))).execute(&mut admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{orphan}\""))).execute(&mut admin).await.unwrap();

    wait_for("the orphan to be dropped", Duration::from_secs(20), || async {
        let (dbs, roles) = pg_objects(&env.db_prefix()).await;
        (!dbs.contains(&orphan) && !roles.contains(&orphan)).then_some(())
    })
    .await;
    let (dbs, _) = pg_objects(&env.db_prefix()).await;
    assert_eq!(dbs.len(), 1, "the recorded database is kept");

    data.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_app_answers_from_its_database_through_rotation_and_unbinding() {
    let mut env = TestEnv::new();
    let data = DataUnderTest::start(env.data_config(Backend::Sqlite).await).await;
    let mut compute_config = env.compute_config(Backend::Sqlite, "compute").await;
    compute_config.data_url = format!("http://{}", data.addr);
    compute_config.identity.signing_key_pem = env.private_key_pem.clone();
    let compute = ComputeUnderTest::start(compute_config).await;
    let team = env.team("blue");
    let token = env.token(&team, Role::Member);
    let mut apps = compute.client(&token).await;
    let mut dbs = data.client(&token).await;

    apps.create_app(cpb::CreateAppRequest { name: "counter".into() }).await.unwrap();
    deploy_command(&mut apps, "counter", &["python3", "app.py"], &repo_root().join("examples/python-db"), 1)
        .await
        .unwrap();
    let unbound = wait_instances(&mut apps, "counter", 1, Some(1)).await.remove(0);
    assert_eq!(http_get(unbound.port, "/").await.unwrap().0, 503);

    create(&mut dbs, "visits", "").await.unwrap();
    dbs.bind(pb::BindRequest { database: "visits".into(), app: "counter".into() }).await.unwrap();
    let event = env.wait_event("dev.strata.data.binding.created.v1", |_| true).await;
    assert!(!event.to_string().contains("postgres://"), "a binding event carries no URL: {event}");

    // Compute asks data for the URL and rolls out v2 with DATABASE_URL.
    let bound = wait_instances(&mut apps, "counter", 1, Some(2)).await.remove(0);
    assert_eq!(http_get(bound.port, "/").await.unwrap(), (200, "visits: 1\n".to_owned()));
    assert_eq!(http_get(bound.port, "/").await.unwrap(), (200, "visits: 2\n".to_owned()));
    let config = apps.list_config(cpb::ListConfigRequest { app: "counter".into() }).await.unwrap().into_inner();
    assert!(config.vars.iter().any(|v| v.key == "DATABASE_URL" && v.secret && !v.value.contains("postgres")));

    // Rotation: the app is re-released with the new URL and keeps answering.
    let old = credentials(&mut dbs, "visits").await;
    dbs.rotate_credentials(pb::RotateCredentialsRequest { name: "visits".into() }).await.unwrap();
    let rotated = wait_instances(&mut apps, "counter", 1, Some(3)).await.remove(0);
    assert_eq!(http_get(rotated.port, "/").await.unwrap(), (200, "visits: 3\n".to_owned()));
    assert!(!password_matches(&old.user, &old.password).await, "the old password was not revoked");

    // Unbinding takes DATABASE_URL away again.
    dbs.unbind(pb::UnbindRequest { database: "visits".into(), app: "counter".into() }).await.unwrap();
    let unbound = wait_instances(&mut apps, "counter", 1, Some(4)).await.remove(0);
    assert_eq!(http_get(unbound.port, "/").await.unwrap().0, 503);

    // Deleting the app in compute removes its bindings in data.
    dbs.bind(pb::BindRequest { database: "visits".into(), app: "counter".into() }).await.unwrap();
    wait_instances(&mut apps, "counter", 1, Some(5)).await;
    apps.delete_app(cpb::DeleteAppRequest { app: "counter".into() }).await.unwrap();
    wait_for("the binding to go with the app", Duration::from_secs(20), || {
        let mut dbs = dbs.clone();
        async move {
            let db = dbs.get_database(pb::GetDatabaseRequest { name: "visits".into() }).await.ok()?.into_inner();
            db.apps.is_empty().then_some(())
        }
    })
    .await;

    compute.stop().await;
    data.stop().await;
    env.cleanup().await;
}

/// Whether `role`'s stored SCRAM verifier was made from `password`
/// (checked with PostgreSQL's own hashing of the verifier's salt).
async fn password_matches(role: &str, password: &str) -> bool {
    use base64::Engine;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    let verifier: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    let (head, keys) = verifier.split_once('$').unwrap().1.split_once('$').unwrap();
    let (iterations, salt) = head.split_once(':').unwrap();
    let server_key = keys.split_once(':').unwrap().1;
    let salt = base64::engine::general_purpose::STANDARD.decode(salt).unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations.parse().unwrap(), &mut salted);
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&salted).unwrap();
    mac.update(b"Server Key");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()) == server_key
}
