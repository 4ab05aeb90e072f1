//! How long a team waits for a database: the median of 20 creates through
//! the data service's API (role + database + grants + the record and its
//! event), against 20 bare `CREATE ROLE` + `CREATE DATABASE` on the same server.
//!
//!     cargo bench -p strata-data --bench provision
//!
//! Needs NATS (`STRATA_TEST_NATS_URL`, default 127.0.0.1:4222) and PostgreSQL
//! (`STRATA_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/postgres).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sqlx::Connection;
use strata_integration_tests::{Backend, DataUnderTest, TestEnv, postgres_admin_url};
use strata_kit::Role;
use strata_proto::data::v1 as pb;

const RUNS: usize = 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut env = TestEnv::new();
    let data = DataUnderTest::start(env.data_config(Backend::Sqlite).await).await;
    let mut client = data.client(&env.token(&env.team("bench"), Role::Member)).await;

    let mut api = Vec::new();
    for i in 0..RUNS {
        let started = Instant::now();
        client
            .create_database(pb::CreateDatabaseRequest {
                name: format!("bench-{i}"),
                plan: String::new(),
                request_id: String::new(),
            })
            .await
            .unwrap();
        api.push(started.elapsed());
    }

    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    let mut raw = Vec::new();
    for i in 0..RUNS {
        let name = format!("{}raw_{i}", env.db_prefix());
        let started = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{name}\" LOGIN PASSWORD 'bench-password'")))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\" OWNER \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        raw.push(started.elapsed());
    }

    let (api, raw) = (median(api), median(raw));
    println!("create through the API: median {:.1} ms over {RUNS}", api.as_secs_f64() * 1e3);
    println!("raw CREATE DATABASE:     median {:.1} ms over {RUNS}", raw.as_secs_f64() * 1e3);
    println!(
        "ratio: {:.2}x (the API adds a role, grants, a connection limit, the record and its event)",
        api.as_secs_f64() / raw.as_secs_f64()
    );
    data.stop().await;
    env.cleanup().await;
}
