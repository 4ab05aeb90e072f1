//! One app across every concern, through the gateway: asked at the same time
//! with one deadline; a concern that is down or hangs is reported and the
//! rest returned, marked partial; REST gives the gRPC answer. And the catalog
//! with each service's health.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use strata_integration_tests::*;
use strata_proto::{compute::v1 as cpb, data::v1 as dpb, gateway::v1 as pb};
use tonic::Code;

/// A TCP listener that accepts connections and never answers: a service
/// that hangs.
async fn black_hole() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

fn unavailable(overview: &pb::AppOverview) -> Vec<String> {
    let mut concerns: Vec<String> = overview.unavailable.iter().map(|u| u.concern.clone()).collect();
    concerns.sort();
    concerns
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_returns_what_answers_and_marks_the_rest() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let data = DataUnderTest::start(env.data_config(Backend::Sqlite).await).await;
    let hangs = black_hole().await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = env
        .gateway_config(
            Backend::Sqlite,
            &[("compute", compute.addr), ("data", data.addr), ("traffic", hangs), ("observe", down)],
        )
        .await;
    let deadline = Duration::from_millis(config.overview_deadline_ms);
    let gw = GatewayUnderTest::start(config).await;
    let token = gw.admin_token.clone();

    // An app with a running release and a bound database.
    let mut client = gw.compute(&token).await;
    client.create_app(cpb::CreateAppRequest { name: "shop".into() }).await.unwrap();
    let workdir = env.dir.path().join("www");
    std::fs::create_dir_all(&workdir).unwrap();
    deploy_command(&mut client, "shop", &["python3", "-m", "http.server", "$PORT"], &workdir, 1).await.unwrap();
    let data_channel = gw.channel().await;
    let mut databases = dpb::data_service_client::DataServiceClient::with_interceptor(
        data_channel,
        strata_kit::identity::BearerToken::new(&token).unwrap(),
    );
    databases
        .create_database(dpb::CreateDatabaseRequest {
            name: "orders".into(),
            plan: "hobby".into(),
            request_id: "overview-test".into(),
        })
        .await
        .unwrap();
    databases.bind(dpb::BindRequest { database: "orders".into(), app: "shop".into() }).await.unwrap();

    // Traffic hangs and observe is down: compute and data answer, the overview is partial, in time.
    let mut gateway = gw.gateway(&token).await;
    let started = Instant::now();
    let overview =
        gateway.get_app_overview(pb::GetAppOverviewRequest { app: "shop".into() }).await.unwrap().into_inner();
    let took = started.elapsed();
    assert!(took < deadline + Duration::from_millis(700), "took {took:?} for a deadline of {deadline:?}");
    assert_eq!(overview.app.as_ref().unwrap().name, "shop");
    assert!(!overview.releases.is_empty() && !overview.instances.is_empty(), "{overview:?}");
    assert_eq!(overview.databases.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["orders"]);
    assert!(overview.partial);
    assert_eq!(unavailable(&overview), ["observe", "traffic"]);
    let traffic = overview.unavailable.iter().find(|u| u.concern == "traffic").unwrap();
    assert!(
        traffic.message.contains("DeadlineExceeded") || traffic.message.contains("Cancelled"),
        "{}",
        traffic.message
    );

    // REST gives the same answer.
    let rest = http(gw.addr, "GET", "/v1/apps/shop/overview", Some(&token), None).await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    let rest = rest.json();
    assert_eq!(rest["app"]["id"], overview.app.as_ref().unwrap().id.as_str());
    assert_eq!(rest["partial"], true);
    assert_eq!(rest["databases"][0]["name"], "orders");
    assert_eq!(rest["releases"].as_array().unwrap().len(), overview.releases.len());
    assert_eq!(rest["unavailable"].as_array().unwrap().len(), 2);

    // The catalog shows who answers.
    let catalog = gateway.get_catalog(pb::GetCatalogRequest {}).await.unwrap().into_inner().offerings;
    let health = |name: &str| catalog.iter().find(|o| o.name == name).map(|o| o.health).unwrap();
    assert_eq!(health("compute"), pb::Health::Serving as i32);
    assert_eq!(health("data"), pb::Health::Serving as i32);
    assert_eq!(health("traffic"), pb::Health::Unreachable as i32);
    assert_eq!(health("observe"), pb::Health::Unreachable as i32);
    assert_eq!(health("examples"), pb::Health::NotApplicable as i32);
    assert!(catalog.iter().all(|o| !o.owner_team.is_empty() && !o.how_to_use.is_empty() && !o.api.is_empty()));
    let models: std::collections::BTreeSet<i32> = catalog.iter().map(|o| o.sharing_model).collect();
    assert_eq!(models.len(), 5, "every sharing model is represented");
    let rest_catalog = http(gw.addr, "GET", "/v1/catalog", Some(&token), None).await.json();
    assert_eq!(rest_catalog["offerings"].as_array().unwrap().len(), catalog.len());

    // Data stops too: still an answer, now without databases.
    data.stop().await;
    let overview =
        gateway.get_app_overview(pb::GetAppOverviewRequest { app: "shop".into() }).await.unwrap().into_inner();
    assert_eq!(overview.app.as_ref().unwrap().name, "shop");
    assert!(overview.databases.is_empty());
    assert_eq!(unavailable(&overview), ["data", "observe", "traffic"]);
    let catalog = gateway.get_catalog(pb::GetCatalogRequest {}).await.unwrap().into_inner().offerings;
    assert_eq!(catalog.iter().find(|o| o.name == "data").unwrap().health, pb::Health::Unreachable as i32);

    // Compute owns apps: an unknown app is not found, not partial.
    let missing = gateway.get_app_overview(pb::GetAppOverviewRequest { app: "nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    http(gw.addr, "GET", "/v1/apps/nope/overview", Some(&token), None).await.problem(404, "NOT_FOUND");

    gw.stop().await;
    compute.stop().await;
    env.cleanup().await;
}
