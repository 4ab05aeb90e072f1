//! The live event feed through the gateway: `GET /v1/events?follow=true` is a
//! server-sent event stream of the team's events from observe's event log,
//! and `GET /v1/events` the same log as a page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use strata_integration_tests::*;
use strata_kit::settings::{DatabaseSettings, IdentitySettings, ServerSettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread")]
async fn the_event_feed_streams_as_server_sent_events() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe_shutdown = tokio_util::sync::CancellationToken::new();
    let observe_config = strata_observe::Config {
        server: ServerSettings { grace_period_secs: 2, ..ServerSettings::local(0) },
        database: DatabaseSettings { url: env.database_url(Backend::Sqlite, "observe").await, max_connections: 0 },
        nats: env.nats.clone(),
        identity: IdentitySettings { public_key_pem: env.public_key_pem.clone(), ..IdentitySettings::default() },
        metrics: strata_kit::metrics::MetricsSettings::local(0),
        data_dir: env.dir.path().join("observe"),
        default_checks: false,
        ..strata_observe::Config::default()
    };
    let observe = strata_observe::start(observe_config, observe_shutdown.clone()).await.unwrap();
    wait_serving(observe.addr(), strata_observe::SERVICE_NAME).await;
    let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr), ("observe", observe.addr())]).await;
    let gw = GatewayUnderTest::start(config).await;
    let token = gw.admin_token.clone();
    let team = env.team("admins");

    // Open the feed, as a browser's EventSource would.
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/events?follow=true&tail=0 HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut feed = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        feed.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/event-stream"), "{head}");

    // Something happens in the team: it arrives on the feed.
    let created = http(gw.addr, "POST", "/v1/apps", Some(&token), Some(&json!({"name": "feed-app"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            feed.read_line(&mut line).await.unwrap();
            // Chunk sizes of the chunked encoding are not SSE lines.
            let line = line.trim_end().to_owned();
            if line.starts_with("data: ") && line.contains("compute.app.created") {
                lines.push(line);
                break lines;
            }
            if line.starts_with("id: ") || line.starts_with("event: ") {
                lines.push(line);
            }
        }
    })
    .await
    .expect("the app.created event on the feed within 30s");
    let data: serde_json::Value = serde_json::from_str(event.last().unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(data["type"], "dev.strata.compute.app.created.v1");
    assert_eq!(data["team"], team.as_str());
    assert!(event.iter().any(|l| l == "event: dev.strata.compute.app.created.v1"), "{event:?}");
    assert!(event.iter().any(|l| l.starts_with("id: ")), "{event:?}");

    // The same log, as a page.
    let page = http(gw.addr, "GET", "/v1/events?page_size=10", Some(&token), None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let events = page.json()["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["type"] == "dev.strata.compute.app.created.v1"), "{events:?}");
    // A mode's own parameters only: `tail` belongs to follow.
    http(gw.addr, "GET", "/v1/events?follow=maybe", Some(&token), None).await.problem(400, "INVALID_ARGUMENT");

    drop(feed);
    gw.stop().await;
    observe_shutdown.cancel();
    observe.wait().await.unwrap();
    compute.stop().await;
    env.cleanup().await;
}
