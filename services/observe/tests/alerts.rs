//! Alerts beyond check failures: compute's crash loops and failed
//! deployments fire alerts that the app's next good deployment resolves,
//! and webhook deliveries are retried with backoff, signed and with the same
//! delivery id, until the receiver accepts them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::{compute::v1 as compute_pb, observe::v1 as pb};

async fn nats_channel(client: &mut ObserveClient, subject: &str) {
    client
        .create_channel(pb::CreateChannelRequest {
            name: "bus".to_owned(),
            target: Some(pb::create_channel_request::Target::Nats(pb::NatsChannel { subject: subject.to_owned() })),
        })
        .await
        .unwrap();
}

async fn rule(client: &mut ObserveClient, name: &str, condition: pb::AlertCondition, app: &str) {
    client
        .create_alert_rule(pb::CreateAlertRuleRequest {
            name: name.to_owned(),
            condition: condition.into(),
            app: app.to_owned(),
            channels: vec!["bus".to_owned()],
            crash_restarts: 2,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn next_alert(feed: &mut async_nats::Subscriber) -> serde_json::Value {
    let message = tokio::time::timeout(Duration::from_secs(40), feed.next()).await.expect("an alert").unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loops_and_failed_deployments_alert_until_a_good_deploy() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let team = env.team("blue");
    let token = env.token(&team, Role::Member);
    let mut apps = compute.client(&token).await;
    let mut alerts = observe.client(&token).await;
    let subject = format!("alerts.{}", env.id);
    let mut feed = env.nats().await.subscribe(subject.clone()).await.unwrap();
    nats_channel(&mut alerts, &subject).await;
    rule(&mut alerts, "looping", pb::AlertCondition::CrashLoop, "wobbly").await;
    rule(&mut alerts, "bad-deploy", pb::AlertCondition::DeploymentFailed, "").await;

    // Runs while the flag file is absent; exits at once while it exists.
    let flag = env.dir.path().join("crash");
    let script = format!("test -e {} && exit 3; exec python3 app.py", flag.display());
    let crasher = repo_root().join("examples/crasher");
    apps.create_app(compute_pb::CreateAppRequest { name: "wobbly".to_owned() }).await.unwrap();
    deploy_command(&mut apps, "wobbly", &["sh", "-c", &script], &crasher, 1).await.unwrap();
    let instance = wait_instances(&mut apps, "wobbly", 1, None).await.remove(0);

    std::fs::write(&flag, b"").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(instance.pid).unwrap()), nix::sys::signal::SIGKILL)
        .unwrap();
    let looping = next_alert(&mut feed).await;
    assert_eq!((looping["status"].as_str(), looping["condition"].as_str()), (Some("firing"), Some("crash_loop")));
    assert_eq!(looping["app"], "wobbly");
    assert!(looping["summary"].as_str().unwrap().contains("crashed"), "{looping}");

    let failed = apps
        .deploy(compute_pb::DeployRequest {
            app: "wobbly".to_owned(),
            source: Some(compute_pb::deploy_request::Source::Command(compute_pb::CommandSource {
                argv: vec!["python3".into(), "-c".into(), "import sys; sys.exit(3)".into()],
                workdir: String::new(),
            })),
            instances: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (_, deployment) = finish_deploy(failed).await.unwrap();
    assert_eq!(deployment.status, compute_pb::DeploymentStatus::Failed as i32);
    let bad = next_alert(&mut feed).await;
    assert_eq!((bad["status"].as_str(), bad["condition"].as_str()), (Some("firing"), Some("deployment_failed")));

    // A good deployment ends both.
    std::fs::remove_file(&flag).unwrap();
    deploy_command(&mut apps, "wobbly", &["sh", "-c", &script], &crasher, 1).await.unwrap();
    let mut resolved = vec![next_alert(&mut feed).await, next_alert(&mut feed).await];
    resolved.sort_by_key(|a| a["condition"].as_str().unwrap_or_default().to_owned());
    assert_eq!(resolved[0]["condition"], "crash_loop");
    assert_eq!(resolved[0]["alert_id"], looping["alert_id"]);
    assert_eq!(resolved[1]["condition"], "deployment_failed");
    assert_eq!(resolved[1]["alert_id"], bad["alert_id"]);
    assert!(resolved.iter().all(|a| a["status"] == "resolved"), "{resolved:?}");
    let open: Vec<pb::Alert> = alerts
        .list_alerts(pb::ListAlertsRequest {})
        .await
        .unwrap()
        .into_inner()
        .alerts
        .into_iter()
        .filter(|a| a.open)
        .collect();
    assert!(open.is_empty(), "{open:?}");

    observe.stop().await;
    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_deliveries_are_retried_with_backoff_until_accepted() {
    let mut env = TestEnv::new();
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let team = env.team("blue");
    let mut client = observe.client(&env.token(&team, Role::Member)).await;

    // Refuses the first two attempts with 503, then accepts.
    let attempts: Arc<Mutex<Vec<(Instant, http::HeaderMap, Bytes)>>> = Arc::default();
    let seen = attempts.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let receiver = HttpServer::start(move |parts, body| {
        seen.lock().unwrap().push((Instant::now(), parts.headers, body));
        let status =
            if count.fetch_add(1, Ordering::SeqCst) < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    })
    .await;
    let secret = "a-webhook-secret-for-retries";
    client
        .create_channel(pb::CreateChannelRequest {
            name: "hook".to_owned(),
            target: Some(pb::create_channel_request::Target::Webhook(pb::WebhookChannel {
                url: format!("http://{}/alerts", receiver.addr),
                secret: secret.to_owned(),
            })),
        })
        .await
        .unwrap();
    // A short secret cannot sign anything worth trusting.
    let weak = client
        .create_channel(pb::CreateChannelRequest {
            name: "weak".to_owned(),
            target: Some(pb::create_channel_request::Target::Webhook(pb::WebhookChannel {
                url: format!("http://{}/alerts", receiver.addr),
                secret: "short".to_owned(),
            })),
        })
        .await;
    assert_eq!(weak.unwrap_err().code(), tonic::Code::InvalidArgument);
    client
        .create_alert_rule(pb::CreateAlertRuleRequest {
            name: "down".to_owned(),
            condition: pb::AlertCondition::CheckFailed.into(),
            channels: vec!["hook".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    client
        .create_check(pb::CreateCheckRequest {
            name: "closed".to_owned(),
            url: format!("tcp://{closed}"),
            kind: pb::CheckKind::Tcp.into(),
            interval_secs: 1,
            fail_after: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    wait_for("three delivery attempts", Duration::from_secs(30), || async {
        (attempts.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    let attempts = attempts.lock().unwrap().clone();
    let delivery = |i: usize| attempts[i].1.get("x-strata-delivery").unwrap().to_str().unwrap().to_owned();
    assert_eq!(delivery(0), delivery(1), "one delivery, retried");
    assert_eq!(delivery(1), delivery(2));
    assert!(attempts[1].0 - attempts[0].0 >= Duration::from_millis(900), "backs off ~1 s");
    assert!(attempts[2].0 - attempts[1].0 >= Duration::from_millis(1900), "then ~2 s");
    for (_, headers, body) in &attempts {
        let expected = strata_observe::alerts::sign(secret, body);
        assert_eq!(headers.get("x-strata-signature").unwrap().to_str().unwrap(), expected);
    }
    let alert: serde_json::Value = serde_json::from_slice(&attempts[2].2).unwrap();
    assert_eq!((alert["status"].as_str(), alert["check"].as_str()), (Some("firing"), Some("closed")));

    observe.stop().await;
    env.cleanup().await;
}
