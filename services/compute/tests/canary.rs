//! Canary deploys: a second release of an app runs beside the current one,
//! each at its own instance count, until deploying the canary's release
//! again promotes it or another deploy or a rollback ends it. Real apps from
//! `examples/`, the real NATS, SQLite and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use strata_integration_tests::{
    Backend, ComputeClient, ComputeUnderTest, TestEnv, deploy_command, finish_deploy, http_get, repo_root, wait_for,
    wait_instances,
};
use strata_kit::Role;
use strata_proto::compute::v1::{self as pb, deploy_request::Source};
use tonic::Code;

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    a_canary_runs_beside_the_current_release_until_it_is_promoted,
    a_rollback_ends_the_canary,
    a_canary_is_refused_when_it_cannot_be_one_and_a_failed_one_changes_nothing,
);

async fn setup(backend: Backend) -> (TestEnv, ComputeUnderTest, ComputeClient) {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(backend, "compute").await).await;
    let client = compute.client(&env.token(&env.team("blue"), Role::Member)).await;
    (env, compute, client)
}

fn hello() -> Source {
    Source::Command(pb::CommandSource {
        argv: vec!["python3".into(), "app.py".into()],
        workdir: repo_root().join("examples/python-hello").display().to_string(),
    })
}

/// Deploys the hello app as a normal release with `instances`.
async fn deploy_hello(client: &mut ComputeClient, app: &str, instances: u32) -> pb::Deployment {
    let hello = repo_root().join("examples/python-hello");
    deploy_command(client, app, &["python3", "app.py"], &hello, instances).await.unwrap()
}

/// Runs a deploy request to its outcome: the log and the deployment, or the
/// error, whether it came before the stream or in it.
async fn deploy(
    client: &mut ComputeClient,
    request: pb::DeployRequest,
) -> Result<(Vec<String>, pb::Deployment), tonic::Status> {
    finish_deploy(client.deploy(request).await?.into_inner()).await
}

/// Deploys `source` to `app` as its canary with `canary_instances`, and
/// expects it to succeed.
async fn deploy_canary(
    client: &mut ComputeClient,
    app: &str,
    source: Source,
    canary_instances: u32,
) -> (Vec<String>, pb::Deployment) {
    let request = pb::DeployRequest {
        app: app.to_owned(),
        source: Some(source),
        canary: true,
        canary_instances,
        ..Default::default()
    };
    let (log, deployment) = deploy(client, request).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{deployment:?} {log:?}");
    (log, deployment)
}

/// Waits until the app runs exactly `want` (release version → count)
/// instances, all running, and no other instance exists.
async fn wait_releases(client: &mut ComputeClient, app: &str, want: &[(u32, usize)]) -> Vec<pb::Instance> {
    let want: BTreeMap<u32, usize> = want.iter().copied().collect();
    wait_for(&format!("{app} to run {want:?} (release → instances)"), Duration::from_secs(40), || {
        let (mut client, want) = (client.clone(), want.clone());
        async move {
            let all = client
                .list_instances(pb::ListInstancesRequest { app: app.to_owned() })
                .await
                .ok()?
                .into_inner()
                .instances;
            let mut running = BTreeMap::new();
            for instance in all.iter().filter(|i| i.state == pb::InstanceState::Running as i32) {
                *running.entry(instance.release_version).or_insert(0) += 1;
            }
            (running == want && all.len() == want.values().sum::<usize>()).then_some(all)
        }
    })
    .await
}

async fn app(client: &mut ComputeClient, name: &str) -> pb::App {
    client.get_app(pb::GetAppRequest { app: name.to_owned() }).await.unwrap().into_inner()
}

/// Asserts that each instance answers from its own release.
async fn answers_from_own_release(instances: &[pb::Instance]) {
    for instance in instances {
        let (status, body) = http_get(instance.port, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("(release v{})", instance.release_version)), "{instance:?}: {body}");
    }
}

async fn a_canary_runs_beside_the_current_release_until_it_is_promoted(backend: Backend) {
    let (env, compute, mut client) = setup(backend).await;
    client.create_app(pb::CreateAppRequest { name: "web".into() }).await.unwrap();
    deploy_hello(&mut client, "web", 2).await;
    let v1 = wait_instances(&mut client, "web", 2, Some(1)).await;

    // The canary starts beside v1: v1 keeps both its instances.
    let (log, deployment) = deploy_canary(&mut client, "web", hello(), 0).await;
    assert_eq!((deployment.release_version, deployment.canary), (2, true), "{deployment:?}");
    assert!(log.iter().any(|l| l.contains("starting 1 canary instance(s) of v2 beside v1")), "{log:?}");
    let both = wait_releases(&mut client, "web", &[(1, 2), (2, 1)]).await;
    answers_from_own_release(&both).await;
    for instance in &v1 {
        assert!(both.iter().any(|i| i.id == instance.id), "v1's instance {} was replaced", instance.id);
    }
    let canary = both.iter().find(|i| i.release_version == 2).unwrap().clone();
    let got = app(&mut client, "web").await;
    assert_eq!(
        (got.release_version, got.desired_instances, got.running_instances),
        (1, 2, 2),
        "the current release is untouched: {got:?}"
    );
    assert_eq!((got.canary_version, got.canary_desired_instances, got.canary_running_instances), (2, 1, 1), "{got:?}");
    assert_eq!(got.status, pb::AppStatus::Running as i32, "both at their count is running: {got:?}");
    let started =
        env.wait_event("dev.strata.compute.deployment.started.v1", |e| e["data"]["releaseVersion"] == 2).await;
    assert_eq!(started["data"]["canary"], true, "{started}");
    let succeeded =
        env.wait_event("dev.strata.compute.deployment.succeeded.v1", |e| e["data"]["releaseVersion"] == 2).await;
    assert_eq!(succeeded["data"]["canary"], true, "{succeeded}");
    assert_eq!(succeeded["data"]["instances"], 1, "{succeeded}");

    // Scaling changes the current release's count only.
    let scaled = client.scale(pb::ScaleRequest { app: "web".into(), instances: 3 }).await.unwrap().into_inner();
    assert_eq!((scaled.desired_instances, scaled.canary_version, scaled.canary_desired_instances), (3, 2, 1));
    wait_releases(&mut client, "web", &[(1, 3), (2, 1)]).await;
    client.scale(pb::ScaleRequest { app: "web".into(), instances: 2 }).await.unwrap();
    wait_releases(&mut client, "web", &[(1, 2), (2, 1)]).await;
    env.wait_event("dev.strata.compute.instance.stopped.v1", |e| e["data"]["reason"] == "scaled down").await;
    let stopped: Vec<serde_json::Value> = env
        .events()
        .await
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "dev.strata.compute.instance.stopped.v1")
        .collect();
    assert!(
        stopped.iter().all(|e| e["data"]["reason"] == "scaled down" && e["data"]["releaseVersion"] == 1),
        "only the scaled-down v1 instance stopped: {stopped:?}"
    );

    // Deploying v2 again, not as a canary, promotes it: the canary's instance
    // stays and counts toward v2, v1's instances are drained.
    let request =
        pb::DeployRequest { app: "web".into(), source: Some(Source::ReleaseVersion(2)), ..Default::default() };
    let (log, deployment) = deploy(&mut client, request).await.unwrap();
    assert_eq!(
        (deployment.status, deployment.release_version),
        (pb::DeploymentStatus::Succeeded as i32, 2),
        "{deployment:?} {log:?}"
    );
    assert!(log.iter().any(|l| l.contains("promoting canary v2")), "{log:?}");
    let promoted = wait_instances(&mut client, "web", 2, Some(2)).await;
    assert!(promoted.iter().any(|i| i.id == canary.id), "the canary's instance was kept: {promoted:?}");
    answers_from_own_release(&promoted).await;
    let got = app(&mut client, "web").await;
    assert_eq!((got.release_version, got.desired_instances, got.running_instances), (2, 2, 2), "{got:?}");
    assert_eq!((got.canary_version, got.canary_desired_instances, got.canary_running_instances), (0, 0, 0), "{got:?}");
    for instance in &v1 {
        env.wait_event("dev.strata.compute.instance.stopped.v1", |e| {
            e["data"]["instanceId"] == instance.id.as_str() && e["data"]["reason"] == "replaced by release v2"
        })
        .await;
    }
    let releases = client.list_releases(pb::ListReleasesRequest { app: "web".into() }).await.unwrap().into_inner();
    assert_eq!(releases.releases.iter().map(|r| r.version).collect::<Vec<_>>(), [2, 1], "promotion builds nothing");

    compute.stop().await;
    env.cleanup().await;
}

async fn a_rollback_ends_the_canary(backend: Backend) {
    let (env, compute, mut client) = setup(backend).await;
    client.create_app(pb::CreateAppRequest { name: "shop".into() }).await.unwrap();
    deploy_hello(&mut client, "shop", 1).await;
    deploy_hello(&mut client, "shop", 0).await;
    wait_instances(&mut client, "shop", 1, Some(2)).await;
    let (_, deployment) = deploy_canary(&mut client, "shop", hello(), 2).await;
    assert_eq!(deployment.release_version, 3);
    let running = wait_releases(&mut client, "shop", &[(2, 1), (3, 2)]).await;
    answers_from_own_release(&running).await;
    let got = app(&mut client, "shop").await;
    assert_eq!((got.release_version, got.canary_version, got.canary_desired_instances), (2, 3, 2), "{got:?}");

    // Back to the release before the current one: v1 runs alone.
    let stream = client.rollback(pb::RollbackRequest { app: "shop".into(), version: 0 }).await.unwrap().into_inner();
    let (log, deployment) = finish_deploy(stream).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{log:?}");
    assert_eq!(deployment.release_version, 1);
    assert!(log.iter().any(|l| l.contains("ending canary v3")), "{log:?}");
    let rolled = wait_instances(&mut client, "shop", 1, Some(1)).await;
    answers_from_own_release(&rolled).await;
    let got = app(&mut client, "shop").await;
    assert_eq!((got.release_version, got.canary_version, got.canary_desired_instances), (1, 0, 0), "{got:?}");
    assert_eq!(got.status, pb::AppStatus::Running as i32, "{got:?}");
    env.wait_event("dev.strata.compute.instance.stopped.v1", |e| e["data"]["releaseVersion"] == 3).await;

    compute.stop().await;
    env.cleanup().await;
}

async fn a_canary_is_refused_when_it_cannot_be_one_and_a_failed_one_changes_nothing(backend: Backend) {
    let (env, compute, mut client) = setup(backend).await;
    client.create_app(pb::CreateAppRequest { name: "api".into() }).await.unwrap();
    let canary = |source: Source, instances: u32, canary_instances: u32| pb::DeployRequest {
        app: "api".into(),
        source: Some(source),
        instances,
        canary: true,
        canary_instances,
    };

    // Nothing to run beside yet.
    let refused = deploy(&mut client, canary(hello(), 0, 0)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("deploy a first release before a canary"), "{refused:?}");
    assert!(
        client
            .list_releases(pb::ListReleasesRequest { app: "api".into() })
            .await
            .unwrap()
            .into_inner()
            .releases
            .is_empty(),
        "a refused canary builds nothing"
    );

    deploy_hello(&mut client, "api", 1).await;
    let current = wait_instances(&mut client, "api", 1, Some(1)).await.remove(0);

    // The current release cannot be its own canary.
    let refused = deploy(&mut client, canary(Source::ReleaseVersion(1), 0, 0)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("v1 is the current release"), "{refused:?}");
    // A canary has its own count; `instances` is the current release's.
    let refused = deploy(&mut client, canary(hello(), 3, 0)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = deploy(&mut client, canary(hello(), 0, 101)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = deploy(
        &mut client,
        pb::DeployRequest { app: "api".into(), source: Some(hello()), canary_instances: 2, ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = deploy(&mut client, canary(Source::ReleaseVersion(9), 0, 0)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // A canary that never comes up is undone; v1 never noticed.
    let crashing = Source::Command(pb::CommandSource {
        argv: vec!["python3".into(), "-c".into(), "import sys; sys.exit(3)".into()],
        workdir: String::new(),
    });
    let (log, deployment) = deploy(&mut client, canary(crashing, 0, 0)).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Failed as i32, "{log:?}");
    assert_eq!((deployment.release_version, deployment.canary), (2, true), "{deployment:?}");
    let after = wait_instances(&mut client, "api", 1, Some(1)).await.remove(0);
    assert_eq!(after.id, current.id, "the current release's instance was never replaced");
    let got = app(&mut client, "api").await;
    assert_eq!((got.release_version, got.canary_version, got.canary_desired_instances), (1, 0, 0), "{got:?}");
    let failed = env.wait_event("dev.strata.compute.deployment.failed.v1", |e| e["data"]["releaseVersion"] == 2).await;
    assert_eq!(failed["data"]["canary"], true, "{failed}");
    // The record says so too: a failed canary, after a plain first deploy.
    let recorded: Vec<(u32, bool)> = client
        .list_deployments(pb::ListDeploymentsRequest { app: "api".into() })
        .await
        .unwrap()
        .into_inner()
        .deployments
        .iter()
        .map(|d| (d.release_version, d.canary))
        .collect();
    assert_eq!(recorded, vec![(2, true), (1, false)], "newest first");

    compute.stop().await;
    env.cleanup().await;
}
