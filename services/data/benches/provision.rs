//! How long a team waits for a database: the median of 20 creates through
//! the data service's API (role + database + grants + the record and its
//! event), against 20 bare `CREATE ROLE` + `CREATE DATABASE` on the same server.
//! Each side does one untimed create first, so that neither is timed opening
//! its connections.
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

/// "median M ms (min A, max B)" of the samples.
fn summary(mut samples: Vec<Duration>) -> (Duration, String) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = samples[samples.len() / 2];
    let (min, max) = (samples[0], samples[samples.len() - 1]);
    (median, format!("median {:.1} ms (min {:.1}, max {:.1}) over {RUNS}", ms(median), ms(min), ms(max)))
}

#[tokio::main]
async fn main() {
    let mut env = TestEnv::new();
    let data = DataUnderTest::start(env.data_config(Backend::Sqlite).await).await;
    let mut client = data.client(&env.token(&env.team("bench"), Role::Member)).await;

    let mut api = Vec::new();
    for i in 0..=RUNS {
        let started = Instant::now();
        client
            .create_database(pb::CreateDatabaseRequest {
                name: format!("bench-{i}"),
                plan: String::new(),
                request_id: String::new(),
            })
            .await
            .unwrap();
        if i > 0 {
            api.push(started.elapsed());
        }
    }

    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    let mut raw = Vec::new();
    for i in 0..=RUNS {
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
        if i > 0 {
            raw.push(started.elapsed());
        }
    }

    let ((api, api_summary), (raw, raw_summary)) = (summary(api), summary(raw));
    println!("create through the API: {api_summary}");
    println!("raw CREATE DATABASE:     {raw_summary}");
    println!(
        "ratio: {:.2}x (the API adds a role, grants, a connection limit, the record and its event)",
        api.as_secs_f64() / raw.as_secs_f64()
    );
    data.stop().await;
    env.cleanup().await;
}
