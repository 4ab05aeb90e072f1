//! The data service killed (SIGKILL) in the middle of creating a database:
//! after a restart there is either a complete, usable database or nothing,
//! and never an orphan role or database on the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::Connection;
use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::data::v1 as pb;

/// The real `strata-data` binary on a free port.
struct DataProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl DataProcess {
    fn spawn(env: &TestEnv, state_url: &str, key: &str) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // Lists of tables do not fit in environment variables: servers go in the file.
        let config = env.dir.path().join("data.toml");
        let servers =
            format!("[[servers]]\nname = \"local\"\nadmin_url = \"{}\"\ncapacity = 50\n", postgres_admin_url());
        std::fs::write(&config, servers).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strata-data"))
            .arg("--config")
            .arg(&config)
            .env("STRATA_DATA__SERVER__LISTEN", addr.to_string())
            .env("STRATA_DATA__DATA_DIR", env.dir.path().join("data"))
            .env("STRATA_DATA__DATABASE__URL", state_url)
            .env("STRATA_DATA__NATS__URL", &env.nats.url)
            .env("STRATA_DATA__NATS__STREAM", &env.nats.stream)
            .env("STRATA_DATA__NATS__SUBJECT_PREFIX", &env.nats.subject_prefix)
            .env("STRATA_DATA__IDENTITY__PUBLIC_KEY_PEM", &env.public_key_pem)
            .env("STRATA_DATA__CREDENTIALS_KEY", key)
            .env("STRATA_DATA__IDENT_PREFIX", env.db_prefix())
            .env("STRATA_DATA__RECONCILE_INTERVAL_SECS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DataProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn client(env: &TestEnv, addr: std::net::SocketAddr) -> DataClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    strata_proto::data::v1::data_service_client::DataServiceClient::with_interceptor(
        channel,
        strata_kit::identity::BearerToken::new(&env.token(&env.team("blue"), Role::Member)).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_create_leaves_all_or_nothing() {
    let mut env = TestEnv::new();
    let state = env.database_url(Backend::Sqlite, "data").await;
    let key = strata_data::crypto::Sealer::generate_key();
    for (round, delay_ms) in [0u64, 3, 8, 15, 30, 60].into_iter().enumerate() {
        let name = format!("db{round}");
        let mut data = DataProcess::spawn(&env, &state, &key);
        wait_serving(data.addr, strata_data::SERVICE_NAME).await;
        let mut api = client(&env, data.addr).await;
        let request =
            pb::CreateDatabaseRequest { name: name.clone(), plan: String::new(), request_id: format!("r{round}") };
        let call = tokio::spawn({
            let mut api = api.clone();
            let request = request.clone();
            async move { api.create_database(request).await }
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        data.kill();
        let _ = call.await;
        drop(api);

        // Restarted, it finishes what it had recorded, or there was nothing.
        let data = DataProcess::spawn(&env, &state, &key);
        wait_serving(data.addr, strata_data::SERVICE_NAME).await;
        api = client(&env, data.addr).await;
        let outcome = wait_for("a settled outcome", Duration::from_secs(30), || {
            let mut api = api.clone();
            let name = name.clone();
            async move {
                match api.get_database(pb::GetDatabaseRequest { name }).await {
                    Ok(db) if db.get_ref().state == pb::DatabaseState::Ready as i32 => Some(true),
                    Ok(_) => None,
                    Err(status) if status.code() == tonic::Code::NotFound => Some(false),
                    Err(_) => None,
                }
            }
        })
        .await;
        println!("round {round}: killed after {delay_ms} ms → {}", if outcome { "complete" } else { "nothing" });
        let (dbs, roles) = pg_objects(&env.db_prefix()).await;
        let listed = api.list_databases(pb::ListDatabasesRequest {}).await.unwrap().into_inner().databases;
        assert_eq!(dbs.len(), listed.len(), "round {round}: server databases {dbs:?} vs records {listed:?}");
        assert_eq!(roles.len(), listed.len(), "round {round}: server roles {roles:?} vs records {listed:?}");
        if outcome {
            let creds =
                api.get_credentials(pb::GetCredentialsRequest { name: name.clone() }).await.unwrap().into_inner();
            sqlx::PgConnection::connect(&creds.url).await.unwrap().close().await.unwrap();
            // A retry of the same request finds the same database.
            let again = api.create_database(request).await.unwrap().into_inner();
            assert_eq!(again.name, name);
        }
        drop(data);
    }
    env.cleanup().await;
}
