//! Compute end to end: real apps from `examples/`, the real NATS, SQLite and
//! Postgres. Each scenario runs on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::compute::v1 as pb;
use tonic::Code;

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    deploy_from_source_serves_and_announces_cloudevents,
    killed_instance_comes_back,
    scale_up_and_down,
    rollback_to_an_earlier_release,
    restart_of_compute_keeps_exactly_the_desired_instances,
    bad_input_is_refused_and_leaves_nothing_behind,
    teams_cannot_see_each_other,
    failed_rollout_leaves_the_running_release_untouched,
);

fn hello_dir() -> std::path::PathBuf {
    repo_root().join("examples/python-hello")
}

async fn setup(backend: Backend) -> (TestEnv, ComputeUnderTest, String, ComputeClient) {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(backend, "compute").await).await;
    let team = env.team("blue");
    let client = compute.client(&env.token(&team, Role::Member)).await;
    (env, compute, team, client)
}

async fn create(client: &mut ComputeClient, name: &str) -> pb::App {
    client.create_app(pb::CreateAppRequest { name: name.to_owned() }).await.unwrap().into_inner()
}

async fn deploy_hello(client: &mut ComputeClient, app: &str, instances: u32) -> pb::Deployment {
    deploy_command(client, app, &["python3", "app.py"], &hello_dir(), instances).await.unwrap()
}

async fn deploy_from_source_serves_and_announces_cloudevents(backend: Backend) {
    let (env, compute, team, mut client) = setup(backend).await;
    let app = create(&mut client, "hello").await;

    let upload = upload(&mut client, "hello", pack_dir(&hello_dir())).await.unwrap();
    assert!(upload.files >= 2, "{upload:?}");
    let (log, deployment) = deploy_upload(&mut client, "hello", upload.id, 1).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{deployment:?} {log:?}");
    assert!(log.iter().any(|l| l.contains("Procfile detected")), "{log:?}");

    let instances = running_instances(&mut client, "hello").await;
    assert_eq!(instances.len(), 1);
    let (status, body) = http_get(instances[0].port, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("hello from python-hello (release v1)"), "{body}");

    let got = client.get_app(pb::GetAppRequest { app: "hello".into() }).await.unwrap().into_inner();
    assert_eq!((got.release_version, got.running_instances), (1, 1));
    assert_eq!(got.status, pb::AppStatus::Running as i32);

    // Read the events back from the stream itself, not from the publisher.
    env.wait_event("dev.strata.compute.deployment.succeeded.v1", |_| true).await;
    let events = env.events().await;
    let types: Vec<&str> = events.iter().map(|(_, e)| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "dev.strata.compute.app.created.v1",
            "dev.strata.compute.deployment.started.v1",
            "dev.strata.compute.instance.started.v1",
            "dev.strata.compute.deployment.succeeded.v1",
        ]
    );
    for (msg_id, event) in &events {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(msg_id, event["id"].as_str().unwrap(), "Nats-Msg-Id is the event id");
        assert_eq!(uuid::Uuid::parse_str(msg_id).unwrap().get_version_num(), 7);
        assert_eq!(event["source"], "/strata/compute");
        assert_eq!(event["subject"], app.id.as_str());
        assert_eq!(event["team"], team.as_str());
        assert_eq!(event["datacontenttype"], "application/json");
        humantime::parse_rfc3339(event["time"].as_str().unwrap()).unwrap();
    }
    let started: pb::InstanceStarted = serde_json::from_value(events[2].1["data"].clone()).unwrap();
    assert_eq!((started.port, started.host.as_str(), started.release_version), (instances[0].port, "127.0.0.1", 1));
    assert_eq!(started.instance_id, instances[0].id);

    compute.stop().await;
    env.cleanup().await;
}

async fn killed_instance_comes_back(backend: Backend) {
    let (env, compute, _team, mut client) = setup(backend).await;
    create(&mut client, "phoenix").await;
    deploy_hello(&mut client, "phoenix", 1).await;
    let before = wait_instances(&mut client, "phoenix", 1, None).await.remove(0);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(before.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();

    let crashed = env
        .wait_event("dev.strata.compute.instance.crashed.v1", |e| e["data"]["instanceId"] == before.id.as_str())
        .await;
    assert_eq!(crashed["data"]["restarts"], 1);
    let after = wait_for("the instance to run again", Duration::from_secs(30), || {
        let mut client = client.clone();
        let id = before.id.clone();
        async move {
            let running = running_instances(&mut client, "phoenix").await;
            running.into_iter().find(|i| i.id == id && i.restarts >= 1 && i.pid != before.pid)
        }
    })
    .await;
    assert_eq!(http_get(after.port, "/").await.unwrap().0, 200);
    assert_eq!(running_instances(&mut client, "phoenix").await.len(), 1);

    compute.stop().await;
    env.cleanup().await;
}

async fn scale_up_and_down(backend: Backend) {
    let (env, compute, _team, mut client) = setup(backend).await;
    create(&mut client, "elastic").await;
    deploy_hello(&mut client, "elastic", 1).await;
    wait_instances(&mut client, "elastic", 1, None).await;

    let app = client.scale(pb::ScaleRequest { app: "elastic".into(), instances: 3 }).await.unwrap().into_inner();
    assert_eq!(app.desired_instances, 3);
    let three = wait_instances(&mut client, "elastic", 3, Some(1)).await;
    let mut ports: Vec<u32> = three.iter().map(|i| i.port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each instance has its own port");
    for instance in &three {
        assert_eq!(http_get(instance.port, "/").await.unwrap().0, 200);
    }

    client.scale(pb::ScaleRequest { app: "elastic".into(), instances: 1 }).await.unwrap();
    let one = wait_instances(&mut client, "elastic", 1, Some(1)).await;
    assert_eq!(http_get(one[0].port, "/").await.unwrap().0, 200);
    env.wait_event("dev.strata.compute.instance.stopped.v1", |e| e["data"]["reason"] == "scaled down").await;

    compute.stop().await;
    env.cleanup().await;
}

async fn rollback_to_an_earlier_release(backend: Backend) {
    let (env, compute, _team, mut client) = setup(backend).await;
    create(&mut client, "timetravel").await;
    deploy_hello(&mut client, "timetravel", 1).await;
    client
        .set_config(pb::SetConfigRequest { app: "timetravel".into(), vars: vars(&[("GREETING", "hi")]), secret: false })
        .await
        .unwrap();
    // A config change is a new release of the same artifact (v2), rolled out at once.
    let instance = wait_instances(&mut client, "timetravel", 1, Some(2)).await.remove(0);
    assert!(http_get(instance.port, "/").await.unwrap().1.contains("release v2"));
    assert_eq!(http_get(instance.port, "/env/GREETING").await.unwrap(), (200, "hi".to_owned()));

    let stream =
        client.rollback(pb::RollbackRequest { app: "timetravel".into(), version: 0 }).await.unwrap().into_inner();
    let (log, deployment) = finish_deploy(stream).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{log:?}");
    assert_eq!(deployment.release_version, 1);
    let instance = wait_instances(&mut client, "timetravel", 1, Some(1)).await.remove(0);
    assert!(http_get(instance.port, "/").await.unwrap().1.contains("release v1"));
    assert_eq!(http_get(instance.port, "/env/GREETING").await.unwrap().0, 404, "v1 predates the config var");

    let app = client.get_app(pb::GetAppRequest { app: "timetravel".into() }).await.unwrap().into_inner();
    assert_eq!(app.release_version, 1);
    let releases =
        client.list_releases(pb::ListReleasesRequest { app: "timetravel".into() }).await.unwrap().into_inner();
    assert_eq!(releases.releases.iter().map(|r| r.version).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(releases.releases[0].config_keys, ["GREETING"]);

    let missing = client.rollback(pb::RollbackRequest { app: "timetravel".into(), version: 9 }).await;
    let missing = match missing {
        Ok(stream) => finish_deploy(stream.into_inner()).await.err().unwrap(),
        Err(status) => status,
    };
    assert_eq!(missing.code(), Code::NotFound);

    compute.stop().await;
    env.cleanup().await;
}

async fn restart_of_compute_keeps_exactly_the_desired_instances(backend: Backend) {
    let (env, compute, team, mut client) = setup(backend).await;
    create(&mut client, "durable").await;
    deploy_hello(&mut client, "durable", 2).await;
    wait_instances(&mut client, "durable", 2, None).await;

    let config = compute.stop().await;
    let compute = ComputeUnderTest::start(config).await;
    let mut client = compute.client(&env.token(&team, Role::Member)).await;
    let instances = wait_instances(&mut client, "durable", 2, Some(1)).await;
    for instance in &instances {
        assert_eq!(http_get(instance.port, "/").await.unwrap().0, 200);
    }
    // Level-triggered: a few reconcile rounds later there are still exactly two.
    let generation_wait = Duration::from_secs(6);
    tokio::time::sleep(generation_wait).await;
    assert_eq!(running_instances(&mut client, "durable").await.len(), 2);

    compute.stop().await;
    env.cleanup().await;
}

/// A tar.gz whose single entry is named `name` verbatim (tar::Builder would
/// refuse unsafe names, so the header is written by hand).
fn archive_with_entry(name: &str) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    let data = b"evil";
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, &data[..]).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

async fn bad_input_is_refused_and_leaves_nothing_behind(backend: Backend) {
    let (env, compute, team, mut client) = setup(backend).await;

    for name in ["Bad_Name", "x\"; DROP TABLE apps; --", "", &"a".repeat(41)] {
        let status = client.create_app(pb::CreateAppRequest { name: name.to_owned() }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    }
    assert!(client.list_apps(pb::ListAppsRequest {}).await.unwrap().into_inner().apps.is_empty());

    let app = create(&mut client, "target").await;
    for archive in [archive_with_entry("../escape.txt"), archive_with_entry("/etc/evil"), b"not a tarball".to_vec()] {
        let status = upload(&mut client, "target", archive).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let uploads = compute.config.data_dir.join("apps").join(&app.id).join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "a refused upload left files: {left:?}");
    assert!(!env.dir.path().join("escape.txt").exists());

    let status = client
        .deploy(pb::DeployRequest {
            app: "target".into(),
            source: Some(pb::deploy_request::Source::Command(pb::CommandSource {
                argv: vec![],
                workdir: String::new(),
            })),
            instances: 1,
            ..Default::default()
        })
        .await;
    let code = match status {
        Err(status) => status.code(),
        Ok(stream) => finish_deploy(stream.into_inner()).await.unwrap_err().code(),
    };
    assert_eq!(code, Code::InvalidArgument);
    let set = client
        .set_config(pb::SetConfigRequest { app: "target".into(), vars: vars(&[("PORT", "1")]), secret: false })
        .await
        .unwrap_err();
    assert_eq!(set.code(), Code::InvalidArgument);

    // No credentials, a forged token, a viewer writing.
    let mut anonymous = compute.anonymous().await;
    assert_eq!(anonymous.list_apps(pb::ListAppsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let forger = TestEnv::new();
    let mut forged = compute.client(&forger.token(&team, Role::Admin)).await;
    assert_eq!(forged.list_apps(pb::ListAppsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let mut viewer = compute.client(&env.token(&team, Role::Viewer)).await;
    assert_eq!(viewer.list_apps(pb::ListAppsRequest {}).await.unwrap().into_inner().apps.len(), 1);
    let denied = viewer.create_app(pb::CreateAppRequest { name: "sneaky".into() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Only the one valid change was announced.
    env.wait_event("dev.strata.compute.app.created.v1", |_| true).await;
    let types: Vec<String> =
        env.events().await.into_iter().map(|(_, e)| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["dev.strata.compute.app.created.v1"]);
    assert!(
        client
            .list_releases(pb::ListReleasesRequest { app: "target".into() })
            .await
            .unwrap()
            .into_inner()
            .releases
            .is_empty()
    );
    let deployments = client.list_deployments(pb::ListDeploymentsRequest { app: "target".into() }).await.unwrap();
    assert!(deployments.into_inner().deployments.is_empty());

    compute.stop().await;
    env.cleanup().await;
}

async fn teams_cannot_see_each_other(backend: Backend) {
    let (env, compute, _team, mut blue) = setup(backend).await;
    let mut green = compute.client(&env.token(&env.team("green"), Role::Owner)).await;
    create(&mut blue, "secret-app").await;
    blue.set_config(pb::SetConfigRequest {
        app: "secret-app".into(),
        vars: vars(&[("API_KEY", "s3cr3t-value-123")]),
        secret: true,
    })
    .await
    .unwrap();

    assert_eq!(green.get_app(pb::GetAppRequest { app: "secret-app".into() }).await.unwrap_err().code(), Code::NotFound);
    assert!(green.list_apps(pb::ListAppsRequest {}).await.unwrap().into_inner().apps.is_empty());
    assert_eq!(
        green.delete_app(pb::DeleteAppRequest { app: "secret-app".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        green.list_config(pb::ListConfigRequest { app: "secret-app".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    // Names are per team: green can have its own.
    create(&mut green, "secret-app").await;
    assert_eq!(blue.list_apps(pb::ListAppsRequest {}).await.unwrap().into_inner().apps.len(), 1);

    // Secrets are masked even for their own team.
    let config = blue.list_config(pb::ListConfigRequest { app: "secret-app".into() }).await.unwrap().into_inner();
    assert_eq!(config.vars[0].value, "••••23");
    assert!(config.vars[0].secret);

    compute.stop().await;
    env.cleanup().await;
}

async fn failed_rollout_leaves_the_running_release_untouched(backend: Backend) {
    let (env, compute, _team, mut client) = setup(backend).await;
    create(&mut client, "steady").await;
    deploy_hello(&mut client, "steady", 1).await;
    let good = wait_instances(&mut client, "steady", 1, Some(1)).await.remove(0);

    let stream = client
        .deploy(pb::DeployRequest {
            app: "steady".into(),
            source: Some(pb::deploy_request::Source::Command(pb::CommandSource {
                argv: vec!["python3".into(), "-c".into(), "import sys; sys.exit(3)".into()],
                workdir: String::new(),
            })),
            instances: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (_log, deployment) = finish_deploy(stream).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Failed as i32);
    assert!(deployment.reason.contains("code 3"), "{}", deployment.reason);
    env.wait_event("dev.strata.compute.deployment.failed.v1", |e| e["data"]["releaseVersion"] == 2).await;

    let after = wait_instances(&mut client, "steady", 1, Some(1)).await.remove(0);
    assert_eq!(after.id, good.id, "the running instance was never replaced");
    assert_eq!(http_get(after.port, "/").await.unwrap().0, 200);
    let app = client.get_app(pb::GetAppRequest { app: "steady".into() }).await.unwrap().into_inner();
    assert_eq!(app.release_version, 1);

    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_can_be_read_and_followed() {
    let (env, compute, _team, mut client) = setup(Backend::Sqlite).await;
    create(&mut client, "chatty").await;
    deploy_hello(&mut client, "chatty", 1).await;
    let instance = wait_instances(&mut client, "chatty", 1, None).await.remove(0);

    let mut follow = client
        .stream_logs(pb::StreamLogsRequest { app: "chatty".into(), tail: 10, follow: true })
        .await
        .unwrap()
        .into_inner();
    http_get(instance.port, "/healthz").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = follow.message().await.unwrap().unwrap();
            if line.text.contains("GET /healthz") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(line.instance_id, instance.id);

    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_app_stops_its_instances() {
    let (env, compute, _team, mut client) = setup(Backend::Sqlite).await;
    let app = create(&mut client, "ephemeral").await;
    deploy_hello(&mut client, "ephemeral", 2).await;
    let instances = wait_instances(&mut client, "ephemeral", 2, None).await;

    client.delete_app(pb::DeleteAppRequest { app: "ephemeral".into() }).await.unwrap();
    for instance in &instances {
        assert!(http_get(instance.port, "/").await.is_err(), "instance {} still answers", instance.id);
    }
    assert_eq!(client.get_app(pb::GetAppRequest { app: "ephemeral".into() }).await.unwrap_err().code(), Code::NotFound);
    env.wait_event("dev.strata.compute.app.deleted.v1", |e| e["subject"] == app.id.as_str()).await;
    assert!(!compute.config.data_dir.join("apps").join(&app.id).exists());

    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_grpc_clients_see_health_and_reflection() {
    let (env, compute, _team, _client) = setup(Backend::Sqlite).await;
    let python = std::env::var("STRATA_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = repo_root().join("target/pyenv/bin/python");
        if venv.exists() { venv.display().to_string() } else { "python3".to_owned() }
    });
    let output = tokio::process::Command::new(&python)
        .arg(repo_root().join("integration-tests/py/stock_client.py"))
        .arg(compute.addr.to_string())
        .arg(strata_compute::SERVICE_NAME)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "stock client failed (run .ci/test, which installs grpcio into target/pyenv): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["health"], "SERVING");
    let services: Vec<&str> = report["services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(services.contains(&strata_compute::SERVICE_NAME), "{services:?}");

    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_app_is_reported_as_crash_looping_and_recovers() {
    let (env, compute, _team, mut client) = setup(Backend::Sqlite).await;
    let crash_file = env.dir.path().join("crash-now");
    create(&mut client, "wobbly").await;
    client
        .set_config(pb::SetConfigRequest {
            app: "wobbly".into(),
            vars: vars(&[("CRASH_FILE", crash_file.to_str().unwrap())]),
            secret: false,
        })
        .await
        .unwrap();
    deploy_command(&mut client, "wobbly", &["python3", "app.py"], &repo_root().join("examples/crasher"), 1)
        .await
        .unwrap();
    let instance = wait_instances(&mut client, "wobbly", 1, None).await.remove(0);

    // From now on every start fails: restarts back off and the app shows it.
    std::fs::write(&crash_file, "").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(instance.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("crash-loop status", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            let app = client.get_app(pb::GetAppRequest { app: "wobbly".into() }).await.ok()?.into_inner();
            (app.status == pb::AppStatus::CrashLoop as i32).then_some(())
        }
    })
    .await;
    let crashes =
        env.events().await.into_iter().filter(|(_, e)| e["type"] == "dev.strata.compute.instance.crashed.v1").count();
    assert!(crashes >= 3, "{crashes} crash events");

    // Fixed: the next restart succeeds and the app is running again.
    std::fs::remove_file(&crash_file).unwrap();
    wait_for("recovery", Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let app = client.get_app(pb::GetAppRequest { app: "wobbly".into() }).await.ok()?.into_inner();
            (app.status == pb::AppStatus::Running as i32).then_some(())
        }
    })
    .await;
    let back = running_instances(&mut client, "wobbly").await.remove(0);
    assert_eq!(http_get(back.port, "/").await.unwrap().0, 200);

    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_build_leaves_the_running_release_untouched() {
    let (env, compute, _team, mut client) = setup(Backend::Sqlite).await;
    create(&mut client, "builder").await;
    deploy_hello(&mut client, "builder", 1).await;
    let running = wait_instances(&mut client, "builder", 1, Some(1)).await.remove(0);

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "no app here").unwrap();
    let upload = upload(&mut client, "builder", pack_dir(empty.path())).await.unwrap();
    let (log, deployment) = deploy_upload(&mut client, "builder", upload.id, 0).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Failed as i32);
    assert!(deployment.reason.contains("no build pack recognises"), "{}", deployment.reason);
    assert!(log.iter().any(|l| l.contains("build failed")), "{log:?}");

    let still = wait_instances(&mut client, "builder", 1, Some(1)).await.remove(0);
    assert_eq!(still.id, running.id);
    assert_eq!(http_get(still.port, "/").await.unwrap().0, 200);
    let releases = client.list_releases(pb::ListReleasesRequest { app: "builder".into() }).await.unwrap().into_inner();
    assert_eq!(releases.releases.len(), 1, "a failed build makes no release");
    let app = client.get_app(pb::GetAppRequest { app: "builder".into() }).await.unwrap().into_inner();
    let release_dirs =
        std::fs::read_dir(compute.config.data_dir.join("apps").join(&app.id).join("releases")).map(|d| d.count());
    assert_eq!(release_dirs.unwrap_or(0), 0, "the failed build's work directory is removed");

    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_back_while_the_old_release_drains_never_drops_to_zero() {
    let (env, compute, _team, mut client) = setup(Backend::Sqlite).await;
    create(&mut client, "flipflop").await;
    deploy_hello(&mut client, "flipflop", 2).await;
    wait_instances(&mut client, "flipflop", 2, Some(1)).await;
    // v2 (a config release) serves; v1 is told to stop; roll back at once.
    client
        .set_config(pb::SetConfigRequest { app: "flipflop".into(), vars: vars(&[("MOOD", "fickle")]), secret: false })
        .await
        .unwrap();
    let stream =
        client.rollback(pb::RollbackRequest { app: "flipflop".into(), version: 1 }).await.unwrap().into_inner();
    let (_, deployment) = finish_deploy(stream).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32);
    // Success means instances of v1 that are not on their way out serve now.
    let serving = running_instances(&mut client, "flipflop").await;
    let v1: Vec<_> = serving.iter().filter(|i| i.release_version == 1).collect();
    assert_eq!(v1.len(), 2, "{serving:?}");
    for instance in v1 {
        assert_eq!(http_get(instance.port, "/").await.unwrap().0, 200);
    }
    wait_instances(&mut client, "flipflop", 2, Some(1)).await;

    compute.stop().await;
    env.cleanup().await;
}
