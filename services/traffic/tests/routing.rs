//! Traffic against real apps run by a real compute, over the real NATS and
//! SQLite: routes by host and path, default routes, splits, ejection, a
//! redeploy under load, the proxy's own answers, and static stability.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use strata_integration_tests::{
    Backend, ComputeClient, ComputeUnderTest, TestEnv, deploy_command, wait_for, wait_instances, wait_serving,
};
use strata_kit::{Role, identity::BearerToken};
use strata_proto::{compute::v1 as compute_pb, traffic::v1 as pb};
use tokio_util::sync::CancellationToken;
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

type TrafficClient = pb::traffic_service_client::TrafficServiceClient<InterceptedService<Channel, BearerToken>>;
type Http = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn echo_app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/echo_app.py")
}

struct Stack {
    env: TestEnv,
    compute: ComputeUnderTest,
    traffic: Option<strata_traffic::Running>,
    traffic_stop: CancellationToken,
    team: String,
    token: String,
    http: Http,
}

impl Stack {
    async fn start() -> Self {
        Self::start_with(TestEnv::new()).await
    }

    async fn start_with(mut env: TestEnv) -> Self {
        let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
        let traffic_stop = CancellationToken::new();
        let traffic = strata_traffic::start(env.traffic_config(2).await, traffic_stop.clone()).await.unwrap();
        wait_serving(traffic.addr, strata_traffic::SERVICE_NAME).await;
        let team = env.team("web");
        let token = env.token(&team, Role::Owner);
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self { env, compute, traffic: Some(traffic), traffic_stop, team, token, http }
    }

    fn ingress(&self) -> SocketAddr {
        self.traffic.as_ref().unwrap().ingress_addr
    }

    async fn traffic_client(&self, token: &str) -> TrafficClient {
        let addr = self.traffic.as_ref().unwrap().addr;
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        pb::traffic_service_client::TrafficServiceClient::with_interceptor(channel, BearerToken::new(token).unwrap())
    }

    async fn compute_client(&self) -> ComputeClient {
        self.compute.client(&self.token).await
    }

    /// Deploys the echo app as `app` with `instances` and waits until they run.
    async fn deploy(&self, app: &str, instances: u32) -> Vec<compute_pb::Instance> {
        let mut compute = self.compute_client().await;
        let _ = compute.create_app(compute_pb::CreateAppRequest { name: app.to_owned() }).await;
        let script = echo_app();
        let deployment = deploy_command(
            &mut compute,
            app,
            &["python3", script.to_str().unwrap()],
            script.parent().unwrap(),
            instances,
        )
        .await
        .unwrap();
        wait_instances(&mut compute, app, instances as usize, Some(deployment.release_version)).await
    }

    /// GET through the ingress with a Host header.
    async fn get(&self, host: &str, path: &str) -> (u16, String) {
        self.request(http::Method::GET, host, path, Bytes::new()).await
    }

    async fn request(&self, method: http::Method, host: &str, path: &str, body: Bytes) -> (u16, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.ingress()))
            .header(http::header::HOST, host)
            .body(Full::new(body))
            .unwrap();
        let response = self.http.request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until `host``path` answers 200 from `app` (any app when empty).
    async fn wait_routed(&self, host: &str, path: &str, app: &str) -> String {
        wait_for(&format!("{host}{path} routed to {app}"), Duration::from_secs(20), || async {
            let (status, body) = self.get(host, path).await;
            (status == 200 && (app.is_empty() || body.starts_with(&format!("app={app} ")))).then_some(body)
        })
        .await
    }

    async fn stop(mut self) {
        self.traffic_stop.cancel();
        if let Some(traffic) = self.traffic.take() {
            traffic.wait().await.unwrap();
        }
        self.compute.stop().await;
        self.env.cleanup().await;
    }
}

fn spec(host: &str, path: &str, backends: &[(&str, u32, u32)]) -> pb::RouteSpec {
    pb::RouteSpec {
        host: host.to_owned(),
        path_prefix: path.to_owned(),
        backends: backends
            .iter()
            .map(|(app, release, weight)| pb::Backend { app: (*app).into(), release: *release, weight: *weight })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_and_path_with_default_routes_events_and_numbers() {
    let stack = Stack::start().await;
    stack.deploy("web", 1).await;
    stack.deploy("api", 1).await;

    // Every deployed app is reachable at <app>.localhost, port or not.
    stack.wait_routed("web.localhost", "/", "web").await;
    let body = stack.wait_routed("web.localhost:8780", "/x", "web").await;
    assert!(body.contains("path=/x"), "{body}");
    assert!(body.contains("header x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("header x-forwarded-host: web.localhost"), "{body}");
    assert!(body.contains("header x-forwarded-proto: http"), "{body}");
    assert!(body.contains("header via: 1.1 strata"), "{body}");
    assert!(body.contains("header x-request-id: "), "{body}");
    let team_host = format!("api.{}.localhost", stack.team);
    stack.wait_routed(&team_host, "/", "api").await;

    let mut traffic = stack.traffic_client(&stack.token).await;
    let created = traffic
        .create_route(pb::CreateRouteRequest {
            name: "shop".into(),
            spec: Some(spec("Shop.Example.test", "/", &[("web", 0, 1)])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.host, "shop.example.test");
    traffic
        .create_route(pb::CreateRouteRequest {
            name: "shop-api".into(),
            spec: Some(spec("shop.example.test", "/api", &[("api", 0, 1)])),
        })
        .await
        .unwrap();
    // Longest prefix wins, on segment boundaries.
    assert!(stack.get("shop.example.test", "/api/orders").await.1.starts_with("app=api "));
    assert!(stack.get("shop.example.test", "/apiary").await.1.starts_with("app=web "));
    assert!(stack.get("shop.example.test", "/").await.1.starts_with("app=web "));
    // web has a route of its own now: its default route is gone; api's too.
    let (status, body) = stack.get("web.localhost", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no route for web.localhost/"), "{body}");

    // The same match twice, another team's overlap, a viewer, bad specs.
    let twice = traffic
        .create_route(pb::CreateRouteRequest {
            name: "again".into(),
            spec: Some(spec("shop.example.test", "/", &[("web", 0, 1)])),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists, "{twice:?}");
    let other_team = stack.env.team("other");
    let mut other = stack.traffic_client(&stack.env.token(&other_team, Role::Owner)).await;
    let hijack = other
        .create_route(pb::CreateRouteRequest {
            name: "steal".into(),
            spec: Some(spec("*.example.test", "/", &[("x", 0, 1)])),
        })
        .await
        .unwrap_err();
    assert_eq!(hijack.code(), Code::PermissionDenied, "{hijack:?}");
    assert!(other.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner().routes.is_empty());
    let mut viewer = stack.traffic_client(&stack.env.token(&stack.team, Role::Viewer)).await;
    let denied = viewer
        .create_route(pb::CreateRouteRequest {
            name: "v".into(),
            spec: Some(spec("v.example.test", "/", &[("web", 0, 1)])),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    for (bad, why) in [
        (spec("shop.example.test:80", "/", &[("web", 0, 1)]), "port"),
        (spec("x.example.test", "api", &[("web", 0, 1)]), "path"),
        (spec("x.example.test", "/", &[("web", 7, 0), ("web", 8, 0)]), "weights"),
        (spec("x.example.test", "/", &[]), "backends"),
    ] {
        let status =
            traffic.create_route(pb::CreateRouteRequest { name: "bad".into(), spec: Some(bad) }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{why}: {status:?}");
    }

    // Update and delete take effect at once, each with its event.
    traffic
        .update_route(pb::UpdateRouteRequest {
            name: "shop-api".into(),
            spec: Some(spec("shop.example.test", "/v2", &[("api", 0, 1)])),
        })
        .await
        .unwrap();
    assert!(stack.get("shop.example.test", "/api").await.1.starts_with("app=web "));
    assert!(stack.get("shop.example.test", "/v2").await.1.starts_with("app=api "));
    traffic.delete_route(pb::DeleteRouteRequest { name: "shop-api".into() }).await.unwrap();
    assert!(stack.get("shop.example.test", "/v2").await.1.starts_with("app=web "));
    stack.env.wait_event("dev.strata.traffic.route.created.v1", |e| e["data"]["route"]["name"] == "shop").await;
    stack.env.wait_event("dev.strata.traffic.route.updated.v1", |e| e["data"]["route"]["pathPrefix"] == "/v2").await;
    stack.env.wait_event("dev.strata.traffic.route.deleted.v1", |e| e["data"]["name"] == "shop-api").await;

    // Numbers over gRPC and as Prometheus series.
    let stats = traffic.get_route_stats(pb::GetRouteStatsRequest { name: "shop".into() }).await.unwrap().into_inner();
    assert!(stats.requests >= 4 && stats.status_2xx >= 4, "{stats:?}");
    assert!(stats.bytes_out > 0 && stats.latency_p99_ms > 0.0, "{stats:?}");
    let metrics_addr = stack.traffic.as_ref().unwrap().metrics_addr;
    let (status, text) = {
        let response = stack.http.get(format!("http://{metrics_addr}/metrics").parse().unwrap()).await.unwrap();
        let status = response.status().as_u16();
        (status, String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned())
    };
    assert_eq!(status, 200);
    let series = format!(
        "strata_traffic_requests_total{{team=\"{}\",route=\"shop\",app=\"web\",host=\"shop.example.test\",code=\"2xx\"}}",
        stack.team
    );
    assert!(text.contains(&series), "{text}");
    assert!(text.contains("strata_traffic_request_duration_seconds_bucket"), "{text}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_split_lands_near_its_weights() {
    let stack = Stack::start().await;
    // One app, two releases side by side: v1, then v2 as its canary. The
    // echo app answers with its release (STRATA_RELEASE).
    stack.deploy("web", 1).await;
    let mut compute = stack.compute_client().await;
    let script = echo_app();
    let stream = compute
        .deploy(compute_pb::DeployRequest {
            app: "web".into(),
            source: Some(compute_pb::deploy_request::Source::Command(compute_pb::CommandSource {
                argv: vec!["python3".into(), script.display().to_string()],
                workdir: script.parent().unwrap().display().to_string(),
            })),
            canary: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (log, deployment) = strata_integration_tests::finish_deploy(stream).await.unwrap();
    assert_eq!(
        (deployment.status, deployment.release_version),
        (compute_pb::DeploymentStatus::Succeeded as i32, 2),
        "{log:?}"
    );
    let instances = wait_instances(&mut compute, "web", 2, None).await;
    let mut releases: Vec<u32> = instances.iter().map(|i| i.release_version).collect();
    releases.sort();
    assert_eq!(releases, [1, 2], "v1 and its canary v2 both run: {instances:?}");

    let mut traffic = stack.traffic_client(&stack.token).await;
    traffic
        .create_route(pb::CreateRouteRequest {
            name: "split".into(),
            spec: Some(spec("split.example.test", "/", &[("web", 1, 90), ("web", 2, 10)])),
        })
        .await
        .unwrap();
    // Both releases' endpoints are known before counting.
    for release in ["v1", "v2"] {
        let answer = format!("app=web release={release} ");
        wait_for(&format!("an answer from web {release}"), Duration::from_secs(20), || async {
            let (status, body) = stack.get("split.example.test", "/").await;
            (status == 200 && body.starts_with(&answer)).then_some(())
        })
        .await;
    }
    let mut canary = 0;
    for _ in 0..1000 {
        let (status, body) = stack.get("split.example.test", "/").await;
        assert_eq!(status, 200, "{body}");
        if body.starts_with("app=web release=v2 ") {
            canary += 1;
        } else {
            assert!(body.starts_with("app=web release=v1 "), "{body}");
        }
    }
    // Binomial(1000, 0.1): σ ≈ 9.5, so 60..140 is beyond 4σ either way.
    assert!((60..=140).contains(&canary), "{canary} of 1000 went to the 10% release");
    stack.stop().await;
}

/// Runs GETs from `concurrency` tasks until `until` fires, counting answers
/// in `answered`; returns (started-at, status, body) of each.
async fn load(
    stack: &Stack,
    host: &str,
    concurrency: usize,
    answered: Arc<AtomicUsize>,
    until: CancellationToken,
) -> Vec<(Instant, u16, String)> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (answered, http, ingress, host) = (answered.clone(), stack.http.clone(), stack.ingress(), host.to_owned());
        let until = until.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !until.is_cancelled() {
                let started = Instant::now();
                let request = http::Request::get(format!("http://{ingress}/"))
                    .header(http::header::HOST, &host)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match http.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        seen.push((started, status, String::from_utf8_lossy(&body).into_owned()));
                    }
                    Err(error) => seen.push((started, 0, error.to_string())),
                }
                answered.fetch_add(1, Ordering::Relaxed);
                // Pacing, so eight loops leave the apps some CPU.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// Waits until the load has had `n` answers.
async fn wait_answers(answered: &Arc<AtomicUsize>, n: usize) {
    let what = format!("{n} answers");
    wait_for(&what, Duration::from_secs(60), || {
        let answered = answered.clone();
        async move { (answered.load(Ordering::Relaxed) >= n).then_some(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploy_and_killed_instance_under_load() {
    let stack = Stack::start().await;
    stack.deploy("steady", 2).await;
    stack.wait_routed("steady.localhost", "/", "steady").await;

    // A redeploy under load (2,000 requests and more): every one answered 2xx.
    let answered = Arc::new(AtomicUsize::new(0));
    let during = {
        let until = CancellationToken::new();
        let load = load(&stack, "steady.localhost", 8, answered.clone(), until.clone());
        let redeploy = async {
            wait_answers(&answered, 300).await;
            let instances = stack.deploy("steady", 2).await;
            // Keep the load on while the old instances drain.
            wait_answers(&answered, answered.load(Ordering::Relaxed) + 1000).await;
            wait_answers(&answered, 2000).await;
            until.cancel();
            instances
        };
        let (answers, _) = tokio::join!(load, redeploy);
        answers
    };
    let failed: Vec<_> = during.iter().filter(|(_, status, _)| !(200..300).contains(status)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed during the redeploy: {:?}",
        failed.len(),
        during.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        during.iter().any(|(_, _, b)| b.contains("release=v1"))
            && during.iter().any(|(_, _, b)| b.contains("release=v2"))
    );

    // An instance killed mid-load: once it is ejected, nothing fails.
    let mut compute = stack.compute_client().await;
    let victim = wait_instances(&mut compute, "steady", 2, None).await.remove(0);
    let answers = {
        let until = CancellationToken::new();
        answered.store(0, Ordering::Relaxed);
        let load = load(&stack, "steady.localhost", 8, answered.clone(), until.clone());
        let kill = async {
            wait_answers(&answered, 300).await;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim.pid as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            let killed_at = Instant::now();
            // Load on through the crash and until compute has replaced it.
            let compute = stack.compute_client().await;
            wait_for("the killed instance restarted", Duration::from_secs(40), || {
                let mut compute = compute.clone();
                async move {
                    let running = strata_integration_tests::running_instances(&mut compute, "steady").await;
                    (running.len() == 2 && running.iter().all(|i| i.pid != victim.pid)).then_some(())
                }
            })
            .await;
            wait_answers(&answered, answered.load(Ordering::Relaxed) + 1000).await;
            until.cancel();
            killed_at
        };
        let (answers, killed_at) = tokio::join!(load, kill);
        answers.into_iter().map(move |(at, status, body)| (at >= killed_at, status, body)).collect::<Vec<_>>()
    };
    let after: Vec<_> = answers.iter().filter(|(after, ..)| *after).collect();
    let failed: Vec<_> = after.iter().filter(|(_, status, _)| *status != 200).collect();
    assert!(after.len() > 100, "too few requests after the kill: {}", after.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests after the kill failed: {:?}",
        failed.len(),
        after.len(),
        &failed[..failed.len().min(5)]
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_answers_for_apps_that_cannot() {
    let stack = Stack::start().await;
    stack.deploy("echo", 1).await;
    let mut traffic = stack.traffic_client(&stack.token).await;
    let mut limited = spec("edge.example.test", "/", &[("echo", 0, 1)]);
    limited.max_body_bytes = 64;
    limited.timeout_ms = 300;
    traffic.create_route(pb::CreateRouteRequest { name: "edge".into(), spec: Some(limited) }).await.unwrap();
    traffic
        .create_route(pb::CreateRouteRequest {
            name: "nobody".into(),
            spec: Some(spec("nobody.example.test", "/", &[("ghost", 0, 1)])),
        })
        .await
        .unwrap();
    stack.wait_routed("edge.example.test", "/", "echo").await;

    let (status, body) = stack.request(http::Method::POST, "edge.example.test", "/", Bytes::from(vec![b'x'; 32])).await;
    assert_eq!((status, body.as_str()), (200, "read 32 bytes\n"));
    let (status, body) =
        stack.request(http::Method::POST, "edge.example.test", "/", Bytes::from(vec![b'x'; 100])).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = stack.get("edge.example.test", "/sleep?ms=2000").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer"), "{body}");
    let (status, body) = stack.get("nobody.example.test", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no instance of app ghost"), "{body}");
    let (status, _) = stack.get("unknown.example.test", "/").await;
    assert_eq!(status, 404);

    // HTTP/2 without TLS (prior knowledge) reaches the HTTP/1.1 app.
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(stack.ingress()).await.unwrap());
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://edge.example.test/h2").body(Full::new(Bytes::new())).unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("path=/h2") && body.contains("header via: 2 strata"), "{body}");

    // A WebSocket upgrade: 101 through the proxy, then bytes both ways.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(stack.ingress()).await.unwrap();
    socket
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: edge.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    socket.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    socket.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    stack.stop().await;
}

/// A NATS server of the test's own, so it can be stopped.
struct PrivateNats {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateNats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "nats-server"]
            .into_iter()
            .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
            .unwrap();
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server must be installed (.ci/test installs it)");
        Self { child, url: format!("nats://127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keeps_routing_when_nats_goes_away() {
    let mut nats = PrivateNats::start();
    wait_for("private NATS", Duration::from_secs(10), || async {
        async_nats::connect(&nats.url).await.ok().map(|_| ())
    })
    .await;
    let mut env = TestEnv::new();
    env.nats.url = nats.url.clone();
    let stack = Stack::start_with(env).await;
    stack.deploy("sturdy", 2).await;
    stack.wait_routed("sturdy.localhost", "/", "sturdy").await;

    let _ = nats.child.kill();
    let _ = nats.child.wait();
    for _ in 0..200 {
        let (status, body) = stack.get("sturdy.localhost", "/").await;
        assert_eq!(status, 200, "{body}");
    }
    // The control plane still reads what it knows.
    let mut traffic = stack.traffic_client(&stack.token).await;
    let routes = traffic.list_routes(pb::ListRoutesRequest { app: "sturdy".into() }).await.unwrap().into_inner().routes;
    assert!(routes.iter().any(|r| r.host == "sturdy.localhost" && r.is_default));
    let mut stack = stack;
    stack.traffic_stop.cancel();
    if let Some(traffic) = stack.traffic.take() {
        let _ = tokio::time::timeout(Duration::from_secs(30), traffic.wait()).await;
    }
    let Stack { compute, env, .. } = stack;
    compute.stop().await;
    drop(env);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_check_takes_an_instance_out_of_rotation() {
    let stack = Stack::start().await;
    let instances = stack.deploy("checked", 2).await;
    stack.wait_routed("checked.localhost", "/", "checked").await;
    let sick = instances[0].id.clone();

    // observe's verdicts, as observe publishes them (observe itself is not
    // under test here).
    let jetstream = async_nats::jetstream::new(stack.env.nats().await);
    let publish = |verb: &'static str| {
        let event = strata_events::CloudEvent::new(
            strata_events::EventType::new("observe", "check", verb),
            "check-1",
            &stack.team,
            &serde_json::json!({"checkId": "check-1", "check": "checked", "app": "checked", "instanceId": sick}),
        )
        .unwrap();
        let subject = format!("{}.observe.check.{verb}", stack.env.nats.subject_prefix);
        let jetstream = jetstream.clone();
        async move {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&event).unwrap().into())
                .message_id(event.id.clone());
            jetstream.send_publish(subject, message).await.unwrap().await.unwrap();
        }
    };
    let mut traffic = stack.traffic_client(&stack.token).await;
    let ejected = |traffic: &TrafficClient| {
        let mut traffic = traffic.clone();
        let sick = sick.clone();
        async move {
            let endpoints =
                traffic.list_endpoints(pb::ListEndpointsRequest { app: "checked".into() }).await.unwrap().into_inner();
            endpoints.endpoints.iter().find(|e| e.instance_id == sick).map(|e| e.ejected)
        }
    };

    publish("failed").await;
    wait_for("the failing instance ejected", Duration::from_secs(20), || async {
        ejected(&traffic).await.filter(|e| *e)
    })
    .await;
    for _ in 0..50 {
        let (status, body) = stack.get("checked.localhost", "/").await;
        assert_eq!(status, 200);
        assert!(!body.contains(&format!("instance={sick}")), "a request reached the ejected instance: {body}");
    }
    publish("recovered").await;
    wait_for("the instance back in rotation", Duration::from_secs(20), || async {
        ejected(&traffic).await.filter(|e| !*e)
    })
    .await;
    wait_for("a request to the recovered instance", Duration::from_secs(20), || async {
        stack.get("checked.localhost", "/").await.1.contains(&format!("instance={sick}")).then_some(())
    })
    .await;
    let _ = traffic.list_routes(pb::ListRoutesRequest::default()).await.unwrap();
    stack.stop().await;
}
