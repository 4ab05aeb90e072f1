//! Observe end to end with real apps run by compute, the real NATS and
//! SQLite: checks pass on a healthy app, fail after their confirmations
//! when it stops answering (with the event traffic acts on and exactly one
//! signed alert), and recover when it answers again; gRPC health and TCP
//! checks; the event log; and team scoping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use nix::{sys::signal, unistd::Pid};
use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::{compute::v1 as compute_pb, observe::v1 as pb};
use tonic::Code;

const SECRET: &str = "the-webhook-secret-0123456789";

fn hello_dir() -> std::path::PathBuf {
    repo_root().join("examples/python-hello")
}

async fn deploy_web(apps: &mut ComputeClient, name: &str) -> compute_pb::Instance {
    apps.create_app(compute_pb::CreateAppRequest { name: name.to_owned() }).await.unwrap();
    deploy_command(apps, name, &["python3", "app.py"], &hello_dir(), 1).await.unwrap();
    wait_instances(apps, name, 1, None).await.remove(0)
}

fn http_check(name: &str, app: &str, path: &str) -> pb::CreateCheckRequest {
    pb::CreateCheckRequest {
        name: name.to_owned(),
        app: app.to_owned(),
        kind: pb::CheckKind::Http.into(),
        http: Some(pb::HttpSpec { path: path.to_owned(), body_contains: "ok".to_owned(), ..Default::default() }),
        interval_secs: 1,
        timeout_ms: 500,
        fail_after: 3,
        recover_after: 2,
        ..Default::default()
    }
}

/// Waits until the receiver holds `n` deliveries and returns them, verified.
async fn wait_deliveries(hook: &WebhookReceiver, n: usize) -> Vec<serde_json::Value> {
    wait_for(&format!("{n} webhook deliveries"), Duration::from_secs(30), || async {
        (hook.received.lock().unwrap().len() >= n).then_some(())
    })
    .await;
    hook.verified(SECRET)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_app_fails_its_check_alerts_once_and_recovers() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let team = env.team("blue");
    let token = env.token(&team, Role::Member);
    let mut apps = compute.client(&token).await;
    let mut checks = observe.client(&token).await;

    let hook = WebhookReceiver::start().await;
    checks
        .create_channel(pb::CreateChannelRequest {
            name: "pager".to_owned(),
            target: Some(pb::create_channel_request::Target::Webhook(pb::WebhookChannel {
                url: hook.url(),
                secret: SECRET.to_owned(),
            })),
        })
        .await
        .unwrap();
    checks
        .create_alert_rule(pb::CreateAlertRuleRequest {
            name: "web-down".to_owned(),
            condition: pb::AlertCondition::CheckFailed.into(),
            app: "web".to_owned(),
            channels: vec!["pager".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();

    let instance = deploy_web(&mut apps, "web").await;

    // A deployed app gets a default HTTP check on `/`, on its instance.
    let default = wait_check_state(&mut checks, "web", pb::TargetState::Passing).await;
    assert!(default.default_check, "{default:?}");
    assert_eq!(default.targets.len(), 1, "{default:?}");
    assert_eq!(
        (default.targets[0].instance_id.as_str(), default.targets[0].port),
        (instance.id.as_str(), instance.port)
    );

    // A check of the app's own replaces the default one.
    checks.create_check(http_check("web-health", "web", "/healthz")).await.unwrap();
    let names: Vec<String> = checks
        .list_checks(pb::ListChecksRequest { app: "web".to_owned() })
        .await
        .unwrap()
        .into_inner()
        .checks
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["web-health".to_owned()]);
    let passing = wait_check_state(&mut checks, "web-health", pb::TargetState::Passing).await;
    assert!(hook.received.lock().unwrap().is_empty(), "no alert while the app is healthy");

    // Stop the app: it keeps its port but answers nothing.
    let pid = Pid::from_raw(i32::try_from(instance.pid).unwrap());
    signal::kill(pid, signal::Signal::SIGSTOP).unwrap();
    let failing = wait_check_state(&mut checks, "web-health", pb::TargetState::Failing).await;
    assert!(failing.targets[0].last_error.contains("timed out"), "{failing:?}");
    let history =
        checks.check_history(pb::CheckHistoryRequest { name: "web-health".to_owned(), limit: 3 }).await.unwrap();
    let latest = history.into_inner().results;
    assert_eq!(latest.len(), 3);
    assert!(latest.iter().all(|r| !r.ok && r.instance_id == instance.id), "3 confirmations: {latest:?}");

    let failed =
        env.wait_event("dev.strata.observe.check.failed.v1", |e| e["data"]["checkId"] == passing.id.as_str()).await;
    assert_eq!(failed["team"], team.as_str());
    assert_eq!(failed["subject"], passing.id.as_str());
    assert_eq!(failed["data"]["check"], "web-health");
    assert_eq!(failed["data"]["app"], "web");
    assert_eq!(failed["data"]["instanceId"], instance.id.as_str());
    assert_eq!(failed["data"]["host"], instance.host.as_str());
    assert_eq!(failed["data"]["port"], instance.port);
    assert!(!failed["data"]["appId"].as_str().unwrap_or_default().is_empty(), "{failed}");
    assert!(failed["data"]["reason"].as_str().unwrap_or_default().contains("timed out"), "{failed}");
    // Exactly `fail_after` failures in a row came before the event.
    let failed_at = humantime::parse_rfc3339(failed["time"].as_str().unwrap()).unwrap();
    let failed_ms = i64::try_from(failed_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let mut history = checks
        .check_history(pb::CheckHistoryRequest { name: "web-health".to_owned(), limit: 50 })
        .await
        .unwrap()
        .into_inner()
        .results;
    history.retain(|r| r.at.as_ref().is_some_and(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000) <= failed_ms));
    let run_before_event: Vec<bool> = history.iter().map(|r| r.ok).take_while(|ok| !ok).collect();
    assert_eq!(run_before_event.len(), 3, "failures in a row before check.failed: {history:?}");

    let fired = wait_deliveries(&hook, 1).await;
    assert_eq!(fired[0]["status"], "firing", "{fired:?}");
    assert_eq!((fired[0]["app"].as_str(), fired[0]["check"].as_str()), (Some("web"), Some("web-health")));
    assert_eq!(fired[0]["team"], team.as_str());

    // Back up: the check recovers after its confirmations and the alert resolves.
    signal::kill(pid, signal::Signal::SIGCONT).unwrap();
    wait_check_state(&mut checks, "web-health", pb::TargetState::Passing).await;
    env.wait_event("dev.strata.observe.check.recovered.v1", |e| {
        e["data"]["checkId"] == passing.id.as_str() && e["data"]["instanceId"] == instance.id.as_str()
    })
    .await;
    let delivered = wait_deliveries(&hook, 2).await;
    assert_eq!(delivered[1]["status"], "resolved", "{delivered:?}");
    assert_eq!(delivered[1]["alert_id"], delivered[0]["alert_id"]);
    let firing = delivered.iter().filter(|d| d["status"] == "firing").count();
    assert_eq!(firing, 1, "exactly one alert: {delivered:?}");

    // Scaling down is no failure: the instance's target goes when it is announced as stopping.
    apps.scale(compute_pb::ScaleRequest { app: "web".to_owned(), instances: 0 }).await.unwrap();
    wait_instances(&mut apps, "web", 0, None).await;
    wait_for("the stopped instance's target to go", Duration::from_secs(30), || {
        let mut checks = checks.clone();
        async move { get_check(&mut checks, "web-health").await.filter(|c| c.targets.is_empty()) }
    })
    .await;
    env.wait_event("dev.strata.compute.instance.stopped.v1", |e| e["data"]["instanceId"] == instance.id.as_str()).await;

    let events = env.events().await;
    let count = |ty: &str| events.iter().filter(|(_, e)| e["type"] == ty).count();
    assert_eq!(count("dev.strata.observe.check.failed.v1"), 1);
    assert_eq!(count("dev.strata.observe.check.recovered.v1"), 1);
    assert_eq!(count("dev.strata.observe.alert.fired.v1"), 1);
    assert_eq!(count("dev.strata.observe.alert.resolved.v1"), 1);
    let alerts = checks.list_alerts(pb::ListAlertsRequest {}).await.unwrap().into_inner().alerts;
    assert_eq!(alerts.len(), 1);
    assert!(!alerts[0].open && alerts[0].resolved_at.is_some(), "{alerts:?}");

    observe.stop().await;
    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_and_tcp_checks_against_real_endpoints() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let team = env.team("ops");
    let mut checks = observe.client(&env.token(&team, Role::Member)).await;
    let grpc = |name: &str, url: String, service: &str| pb::CreateCheckRequest {
        name: name.to_owned(),
        url,
        kind: pb::CheckKind::Grpc.into(),
        grpc: Some(pb::GrpcSpec { service: service.to_owned() }),
        interval_secs: 1,
        timeout_ms: 800,
        fail_after: 2,
        recover_after: 1,
        ..Default::default()
    };

    // Compute, a Strata service, through grpc.health.v1.
    checks
        .create_check(grpc("compute-health", format!("http://{}", compute.addr), "strata.compute.v1.ComputeService"))
        .await
        .unwrap();
    let check = wait_check_state(&mut checks, "compute-health", pb::TargetState::Passing).await;
    assert_eq!(check.targets[0].port, u32::from(compute.addr.port()));
    // A service the server does not have is not SERVING.
    checks
        .create_check(grpc("no-such-service", format!("http://{}", compute.addr), "strata.nope.v1.Nope"))
        .await
        .unwrap();
    let failing = wait_check_state(&mut checks, "no-such-service", pb::TargetState::Failing).await;
    assert!(
        failing.targets[0].last_error.contains("NotFound") || failing.targets[0].last_error.contains("not found"),
        "{failing:?}"
    );

    // TCP: a port that listens, and one that does not.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tcp = |name: &str, addr: std::net::SocketAddr| pb::CreateCheckRequest {
        name: name.to_owned(),
        url: format!("tcp://{addr}"),
        kind: pb::CheckKind::Tcp.into(),
        interval_secs: 1,
        fail_after: 2,
        ..Default::default()
    };
    checks.create_check(tcp("tcp-open", listener.local_addr().unwrap())).await.unwrap();
    checks.create_check(tcp("tcp-closed", closed)).await.unwrap();
    wait_check_state(&mut checks, "tcp-open", pb::TargetState::Passing).await;
    let closed_check = wait_check_state(&mut checks, "tcp-closed", pb::TargetState::Failing).await;
    assert!(closed_check.targets[0].last_error.contains("refused"), "{closed_check:?}");
    // URL targets name no instance in their events.
    let event = env.wait_event("dev.strata.observe.check.failed.v1", |e| e["data"]["check"] == "tcp-closed").await;
    assert_eq!(event["data"]["instanceId"], serde_json::Value::Null, "empty strings are left out: {event}");
    assert_eq!(event["data"]["port"], closed.port());

    // Bad requests say what is wrong.
    let bad = checks.create_check(pb::CreateCheckRequest { name: "Bad Name".to_owned(), ..tcp("x", closed) }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let both = pb::CreateCheckRequest { app: "web".to_owned(), ..tcp("both", closed) };
    assert_eq!(checks.create_check(both).await.unwrap_err().code(), Code::InvalidArgument);
    let again = checks.create_check(tcp("tcp-open", closed)).await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);

    checks.delete_check(pb::DeleteCheckRequest { name: "tcp-closed".to_owned() }).await.unwrap();
    assert_eq!(
        checks.get_check(pb::GetCheckRequest { name: "tcp-closed".to_owned() }).await.unwrap_err().code(),
        Code::NotFound
    );

    observe.stop().await;
    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_events_land_in_the_event_log_in_order_and_can_be_followed() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let team = env.team("blue");
    let token = env.token(&team, Role::Member);
    let mut apps = compute.client(&token).await;
    let mut log = observe.client(&token).await;

    let mut follow = log
        .follow_events(pb::FollowEventsRequest { app: "shop".to_owned(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    deploy_web(&mut apps, "shop").await;

    let wanted = [
        "dev.strata.compute.deployment.started.v1",
        "dev.strata.compute.instance.started.v1",
        "dev.strata.compute.deployment.succeeded.v1",
    ];
    let logged = wait_for("the deploy's events in the log", Duration::from_secs(30), || {
        let mut log = log.clone();
        async move {
            let events = log
                .list_events(pb::ListEventsRequest { app: "shop".to_owned(), ..Default::default() })
                .await
                .ok()?
                .into_inner()
                .events;
            events.iter().any(|e| e.r#type == wanted[2]).then_some(events)
        }
    })
    .await;
    let position = |ty: &str| logged.iter().position(|e| e.r#type == ty).unwrap_or_else(|| panic!("{ty} missing"));
    assert!(position(wanted[0]) < position(wanted[1]) && position(wanted[1]) < position(wanted[2]), "{logged:?}");
    assert!(logged.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(logged.iter().all(|e| e.team == team && e.app == "shop"));

    // The log's order is the stream's order.
    let stream_ids: Vec<String> = env.events().await.into_iter().map(|(id, _)| id).collect();
    let in_stream: Vec<usize> =
        logged.iter().map(|e| stream_ids.iter().position(|id| *id == e.id).expect("on the stream")).collect();
    assert!(in_stream.windows(2).all(|w| w[0] < w[1]), "{in_stream:?}");

    // Filters by type.
    let succeeded = log
        .list_events(pb::ListEventsRequest { r#type: "deployment.succeeded".to_owned(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(succeeded.len(), 1);
    let data: serde_json::Value = serde_json::from_str(&succeeded[0].data_json).unwrap();
    assert_eq!(data["app"], "shop");

    // The follower saw the same events live, in the same order.
    let mut followed = Vec::new();
    while followed.len() < logged.len() {
        let event = tokio::time::timeout(Duration::from_secs(20), follow.next()).await.unwrap().unwrap().unwrap();
        followed.push(event.id);
    }
    let logged_ids: Vec<String> = logged.iter().map(|e| e.id.clone()).collect();
    assert_eq!(followed, logged_ids);

    observe.stop().await;
    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_see_only_their_own_checks_and_events_and_viewers_only_read() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let (a, b) = (env.team("alpha"), env.team("beta"));
    let mut apps_a = compute.client(&env.token(&a, Role::Member)).await;
    let mut team_a = observe.client(&env.token(&a, Role::Member)).await;
    let mut team_b = observe.client(&env.token(&b, Role::Owner)).await;
    let mut viewer_a = observe.client(&env.token(&a, Role::Viewer)).await;

    deploy_web(&mut apps_a, "secret-app").await;
    team_a.create_check(http_check("a-check", "secret-app", "/healthz")).await.unwrap();
    wait_check_state(&mut team_a, "a-check", pb::TargetState::Passing).await;
    wait_for("alpha's deploy in its log", Duration::from_secs(30), || {
        let mut team_a = team_a.clone();
        async move {
            let events = team_a.list_events(pb::ListEventsRequest::default()).await.ok()?.into_inner().events;
            events.iter().any(|e| e.r#type == "dev.strata.compute.deployment.succeeded.v1").then_some(())
        }
    })
    .await;

    // Beta sees nothing of alpha's.
    assert!(team_b.list_checks(pb::ListChecksRequest::default()).await.unwrap().into_inner().checks.is_empty());
    let hidden = team_b.get_check(pb::GetCheckRequest { name: "a-check".to_owned() }).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let history = team_b.check_history(pb::CheckHistoryRequest { name: "a-check".to_owned(), limit: 5 }).await;
    assert_eq!(history.unwrap_err().code(), Code::NotFound);
    let delete = team_b.delete_check(pb::DeleteCheckRequest { name: "a-check".to_owned() }).await;
    assert_eq!(delete.unwrap_err().code(), Code::NotFound);
    let events = team_b.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    assert!(events.is_empty(), "beta sees alpha's events: {events:?}");
    let by_app = team_b
        .list_events(pb::ListEventsRequest { app: "secret-app".to_owned(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(by_app.is_empty());
    let mut follow =
        team_b.follow_events(pb::FollowEventsRequest { tail: 100, ..Default::default() }).await.unwrap().into_inner();

    // A viewer of alpha reads but does not change.
    let seen = viewer_a.list_checks(pb::ListChecksRequest::default()).await.unwrap().into_inner().checks;
    assert_eq!(seen.len(), 1);
    let refused = viewer_a.create_check(http_check("v-check", "secret-app", "/")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = viewer_a.delete_check(pb::DeleteCheckRequest { name: "a-check".to_owned() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(!viewer_a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events.is_empty());

    // New alpha events (a scale-up) never reach beta's follower.
    apps_a.scale(compute_pb::ScaleRequest { app: "secret-app".to_owned(), instances: 2 }).await.unwrap();
    wait_instances(&mut apps_a, "secret-app", 2, None).await;
    wait_for("the new instance in alpha's log", Duration::from_secs(30), || {
        let mut team_a = team_a.clone();
        async move {
            let events = team_a
                .list_events(pb::ListEventsRequest { r#type: "instance.started".to_owned(), ..Default::default() })
                .await
                .ok()?
                .into_inner()
                .events;
            (events.len() >= 2).then_some(())
        }
    })
    .await;
    let leaked = tokio::time::timeout(Duration::from_millis(500), follow.next()).await;
    assert!(leaked.is_err(), "beta's follower got {leaked:?}");

    // No credentials, no answers.
    let mut anonymous =
        pb::observe_service_client::ObserveServiceClient::connect(format!("http://{}", observe.addr)).await.unwrap();
    let refused = anonymous.list_checks(pb::ListChecksRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    observe.stop().await;
    compute.stop().await;
    env.cleanup().await;
}
