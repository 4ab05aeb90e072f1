//! Observe's store on PostgreSQL (`STRATA_TEST_POSTGRES_URL`, a database of
//! the test's own): checks, results and rollups, state changes with their
//! events, alerts to a NATS channel, the event log, and state that outlives
//! a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::observe::v1 as pb;

#[tokio::test(flavor = "multi_thread")]
async fn checks_alerts_and_the_event_log_on_postgres() {
    let mut env = TestEnv::new();
    let config = observe_config(&mut env, Backend::Postgres).await;
    assert!(config.database.url.starts_with("postgres://"));
    let observe = ObserveUnderTest::start(config.clone()).await;
    let team = env.team("green");
    let mut checks = observe.client(&env.token(&team, Role::Member)).await;
    let site = HttpServer::fixed().await;

    let subject = format!("alerts.{}", env.id);
    let mut alerts_feed = env.nats().await.subscribe(subject.clone()).await.unwrap();
    checks
        .create_channel(pb::CreateChannelRequest {
            name: "bus".to_owned(),
            target: Some(pb::create_channel_request::Target::Nats(pb::NatsChannel { subject })),
        })
        .await
        .unwrap();
    checks
        .create_alert_rule(pb::CreateAlertRuleRequest {
            name: "down".to_owned(),
            condition: pb::AlertCondition::CheckFailed.into(),
            check: "closed".to_owned(),
            channels: vec!["bus".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();

    checks
        .create_check(pb::CreateCheckRequest {
            name: "site".to_owned(),
            url: format!("http://{}/status", site.addr),
            kind: pb::CheckKind::Http.into(),
            http: Some(pb::HttpSpec { body_contains: "ok".to_owned(), ..Default::default() }),
            interval_secs: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    checks
        .create_check(pb::CreateCheckRequest {
            name: "closed".to_owned(),
            url: format!("tcp://{closed}"),
            kind: pb::CheckKind::Tcp.into(),
            interval_secs: 1,
            fail_after: 2,
            ..Default::default()
        })
        .await
        .unwrap();

    wait_check_state(&mut checks, "site", pb::TargetState::Passing).await;
    let failing = wait_check_state(&mut checks, "closed", pb::TargetState::Failing).await;

    // Results and per-minute rollups were written.
    let site_check = wait_for("rollups of the site check", Duration::from_secs(20), || {
        let mut checks = checks.clone();
        async move { get_check(&mut checks, "site").await.filter(|c| c.last_hour.as_ref().is_some_and(|s| s.runs >= 2)) }
    })
    .await;
    let hour = site_check.last_hour.unwrap();
    assert_eq!(hour.uptime, 1.0);
    assert!(hour.latency_p95_ms > 0.0 && hour.latency_p95_ms <= 1000.0, "{hour:?}");
    let history = checks
        .check_history(pb::CheckHistoryRequest { name: "site".to_owned(), limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(!history.is_empty() && history.iter().all(|r| r.ok), "{history:?}");

    // The failure went out as an event, into the event log, and as an alert on NATS.
    let message = tokio::time::timeout(Duration::from_secs(20), alerts_feed.next()).await.unwrap().unwrap();
    let alert: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!((alert["status"].as_str(), alert["check"].as_str()), (Some("firing"), Some("closed")), "{alert}");
    env.wait_event("dev.strata.observe.check.failed.v1", |e| e["subject"] == failing.id.as_str()).await;
    let logged = wait_for("the failure in the event log", Duration::from_secs(20), || {
        let mut checks = checks.clone();
        async move {
            let events = checks
                .list_events(pb::ListEventsRequest { r#type: "observe".to_owned(), ..Default::default() })
                .await
                .ok()?
                .into_inner()
                .events;
            (events.len() >= 2).then_some(events)
        }
    })
    .await;
    let types: Vec<&str> = logged.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(&types[..2], ["dev.strata.observe.check.failed.v1", "dev.strata.observe.alert.fired.v1"]);

    // Deleting the failing check resolves its alert.
    checks.delete_check(pb::DeleteCheckRequest { name: "closed".to_owned() }).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), alerts_feed.next()).await.unwrap().unwrap();
    let resolved: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["alert_id"], alert["alert_id"]);

    // A restart keeps checks, states and the log.
    observe.stop().await;
    let observe = ObserveUnderTest::start(config).await;
    let mut checks = observe.client(&env.token(&team, Role::Member)).await;
    let site_again = get_check(&mut checks, "site").await.expect("the check survives a restart");
    assert_eq!(site_again.id, site_check.id);
    wait_check_state(&mut checks, "site", pb::TargetState::Passing).await;
    let after = checks
        .list_events(pb::ListEventsRequest { r#type: "observe".to_owned(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(after.len() >= logged.len());

    observe.stop().await;
    env.cleanup().await;
}
