//! A real Prometheus (Debian's `prometheus` package) scrapes observe's
//! metrics endpoint, and its query API returns the per-app rollups of a
//! deployed app's check. Without Prometheus installed this test fails and
//! says how to install it: it is never skipped silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use strata_integration_tests::*;
use strata_kit::Role;
use strata_proto::compute::v1 as compute_pb;

/// The Prometheus binary: `STRATA_TEST_PROMETHEUS`, else `prometheus` on the PATH or in /usr/bin.
fn prometheus_binary() -> PathBuf {
    if let Ok(path) = std::env::var("STRATA_TEST_PROMETHEUS") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("prometheus")).find(|p| p.is_file()))
        .unwrap_or_default();
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/prometheus")).filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!(
            "PROMETHEUS IS NOT INSTALLED: this test needs a real Prometheus. Install Debian's package \
             (`apt-get install prometheus`), run `.ci/test` (which installs it), or point \
             STRATA_TEST_PROMETHEUS at a prometheus binary."
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prometheus's instant query for `query`: the `data.result` array.
async fn query(port: u16, query: String) -> Option<Vec<serde_json::Value>> {
    let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let (status, body) = http_get(u32::from(port), &format!("/api/v1/query?query={encoded}")).await.ok()?;
    if status != 200 {
        return None;
    }
    let reply: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = reply["data"]["result"].as_array()?.clone();
    (!result.is_empty()).then_some(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_per_app_rollups() {
    let binary = prometheus_binary();
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let observe = ObserveUnderTest::start(observe_config(&mut env, Backend::Sqlite).await).await;
    let team = env.team("blue");
    let mut apps = compute.client(&env.token(&team, Role::Member)).await;
    let mut checks = observe.client(&env.token(&team, Role::Viewer)).await;

    apps.create_app(compute_pb::CreateAppRequest { name: "web".to_owned() }).await.unwrap();
    let hello = repo_root().join("examples/python-hello");
    deploy_command(&mut apps, "web", &["python3", "app.py"], &hello, 1).await.unwrap();
    // The default check on `/` produces the app's series.
    wait_check_state(&mut checks, "web", strata_proto::observe::v1::TargetState::Passing).await;

    let dir = env.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: strata-observe\n    \
             static_configs:\n      - targets: ['{}']\n",
            observe.metrics_addr
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = tokio::process::Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    wait_for("Prometheus ready", Duration::from_secs(30), || async {
        http_get(u32::from(port), "/-/ready").await.ok().filter(|(status, _)| *status == 200)
    })
    .await;

    let up = wait_for("observe scraped", Duration::from_secs(30), || {
        query(port, "up{job=\"strata-observe\"} == 1".to_owned())
    })
    .await;
    assert_eq!(up.len(), 1, "{up:?}");

    let selector = format!("team=\"{team}\",app=\"web\"");
    let uptime = wait_for("the app's uptime series", Duration::from_secs(30), || {
        query(port, format!("strata_observe_app_uptime_ratio{{{selector},window=\"1h\"}}"))
    })
    .await;
    assert_eq!(uptime[0]["value"][1], "1", "a healthy app: {uptime:?}");
    let check_up = wait_for("the check status series", Duration::from_secs(30), || {
        query(port, format!("strata_observe_check_up{{{selector},check=\"web\"}}"))
    })
    .await;
    assert_eq!(check_up[0]["value"][1], "1", "{check_up:?}");
    let targets = wait_for("the app's passing targets", Duration::from_secs(30), || {
        query(port, format!("strata_observe_app_targets{{{selector},state=\"passing\"}}"))
    })
    .await;
    assert_eq!(targets[0]["value"][1], "1", "{targets:?}");
    let latency = wait_for("the app's p95 latency", Duration::from_secs(30), || {
        query(port, format!("strata_observe_app_latency_seconds{{{selector},window=\"1h\",quantile=\"0.95\"}}"))
    })
    .await;
    let p95: f64 = latency[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p95 > 0.0 && p95 < 1.0, "{latency:?}");
    let runs = wait_for("the app's passing runs", Duration::from_secs(30), || {
        query(port, format!("strata_observe_check_runs_total{{{selector},result=\"ok\"}} > 0"))
    })
    .await;
    assert_eq!(runs[0]["metric"]["check"], "web");
    // Latency quantiles from the histogram, the Prometheus way.
    wait_for("histogram_quantile over the app's latency", Duration::from_secs(30), || {
        query(
            port,
            format!(
                "histogram_quantile(0.99, sum by (le) (rate(strata_observe_check_latency_seconds_bucket{{{selector}}}[30s])))"
            ),
        )
    })
    .await;

    prometheus.kill().await.unwrap();
    observe.stop().await;
    compute.stop().await;
    env.cleanup().await;
}
