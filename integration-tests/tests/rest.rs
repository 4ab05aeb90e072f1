//! The REST/JSON API on the gateway's port: the same answers as gRPC, HTTP
//! status codes and problem+json errors, pagination, the same token rules,
//! and the OpenAPI document served as checked in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use strata_integration_tests::*;
use strata_proto::{compute::v1 as cpb, gateway::v1 as pb};

#[tokio::test(flavor = "multi_thread")]
async fn rest_answers_like_grpc_with_http_statuses_and_problems() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let data = DataUnderTest::start(env.data_config(Backend::Sqlite).await).await;
    let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr), ("data", data.addr)]).await;
    let gw = GatewayUnderTest::start(config).await;
    let addr = gw.addr;
    let admin = gw.admin_token.clone();

    // The OpenAPI document needs no token and is the checked-in one.
    let doc = http(addr, "GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let checked_in = std::fs::read_to_string(repo_root().join("services/gateway/openapi.json")).unwrap();
    assert_eq!(doc.body, checked_in, "the served OpenAPI document differs from services/gateway/openapi.json");

    // No token, a bad token: 401 problems.
    let refused = http(addr, "GET", "/v1/apps", None, None).await;
    refused.problem(401, "UNAUTHENTICATED");
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    http(addr, "GET", "/v1/apps", Some("strata_nope"), None).await.problem(401, "UNAUTHENTICATED");

    // A team and its owner's token, over REST.
    let team = env.team("web");
    let created = http(addr, "POST", "/v1/teams", Some(&admin), Some(&json!({"name": team, "owner": "ann"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let token = http_with(
        addr,
        "POST",
        "/v1/tokens",
        Some(&admin),
        Some(&json!({"name": "ci", "scopes": ["SCOPE_WRITE"], "subject": "ann"})),
        &[("X-Strata-Team", &team)],
    )
    .await;
    assert_eq!(token.status, 201, "{}", token.body);
    let ann = token.json()["secret"].as_str().unwrap().to_owned();
    let me = http(addr, "GET", "/v1/whoami", Some(&ann), None).await.json();
    assert_eq!(
        (me["subject"].as_str(), me["team"].as_str(), me["role"].as_str()),
        (Some("ann"), Some(team.as_str()), Some("owner"))
    );

    // Create, read, list: the same messages as gRPC gives.
    let app = http(addr, "POST", "/v1/apps", Some(&ann), Some(&json!({"name": "web"}))).await;
    assert_eq!(app.status, 201, "{}", app.body);
    assert_eq!(app.json()["name"], "web");
    let via_rest = http(addr, "GET", "/v1/apps/web", Some(&ann), None).await;
    assert_eq!(via_rest.status, 200);
    assert_eq!(via_rest.header("content-type"), Some("application/json"));
    let mut grpc = gw.compute(&ann).await;
    let via_grpc = grpc.get_app(cpb::GetAppRequest { app: "web".into() }).await.unwrap().into_inner();
    let via_rest = via_rest.json();
    assert_eq!(via_rest["id"], via_grpc.id.as_str());
    assert_eq!(via_rest["team"], team.as_str());
    assert_eq!(via_rest["status"], "APP_STATUS_NEW");
    let grpc_json = serde_json::to_value(&via_grpc).unwrap();
    for key in ["id", "name", "team", "status"] {
        assert_eq!(via_rest[key], grpc_json[key], "{key}");
    }
    assert_eq!(
        humantime::parse_rfc3339(via_rest["createdAt"].as_str().unwrap()).unwrap(),
        humantime::parse_rfc3339(grpc_json["createdAt"].as_str().unwrap()).unwrap()
    );
    let gw_me = gw.gateway(&ann).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(me["tokenId"], gw_me.token_id.as_str());

    // Errors: not found, invalid, unknown field, wrong role, conflict.
    http(addr, "GET", "/v1/apps/nope", Some(&ann), None).await.problem(404, "NOT_FOUND");
    http(addr, "POST", "/v1/apps", Some(&ann), Some(&json!({"name": "Bad_Name"})))
        .await
        .problem(400, "INVALID_ARGUMENT");
    http(addr, "POST", "/v1/apps", Some(&ann), Some(&json!({"nmae": "x"}))).await.problem(400, "INVALID_ARGUMENT");
    http(addr, "POST", "/v1/apps", Some(&ann), Some(&json!({"name": "web"}))).await.problem(409, "ALREADY_EXISTS");
    http(addr, "GET", "/v1/apps?colour=red", Some(&ann), None).await.problem(400, "INVALID_ARGUMENT");
    http(addr, "GET", "/v1/nothing", Some(&ann), None).await.problem(404, "NOT_FOUND");
    let viewer =
        http(addr, "POST", "/v1/tokens", Some(&ann), Some(&json!({"name": "ro", "scopes": ["SCOPE_READ"]}))).await;
    let viewer = viewer.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(http(addr, "GET", "/v1/apps", Some(&viewer), None).await.status, 200);
    http(addr, "POST", "/v1/apps", Some(&viewer), Some(&json!({"name": "nope"})))
        .await
        .problem(403, "PERMISSION_DENIED");
    // A concern with no service behind this gateway.
    http(addr, "GET", "/v1/routes", Some(&ann), None).await.problem(503, "UNAVAILABLE");
    // Another concern, through the same token.
    let dbs = http(addr, "GET", "/v1/databases", Some(&ann), None).await;
    assert_eq!(dbs.status, 200, "{}", dbs.body);

    // Pagination.
    for name in ["api", "worker"] {
        assert_eq!(http(addr, "POST", "/v1/apps", Some(&ann), Some(&json!({"name": name}))).await.status, 201);
    }
    let first = http(addr, "GET", "/v1/apps?page_size=2", Some(&ann), None).await.json();
    assert_eq!(first["apps"].as_array().unwrap().len(), 2);
    let next = first["nextPageToken"].as_str().unwrap();
    let second = http(addr, "GET", &format!("/v1/apps?page_size=2&page_token={next}"), Some(&ann), None).await.json();
    assert_eq!(second["apps"].as_array().unwrap().len(), 1);
    assert!(second.get("nextPageToken").is_none());
    let mut names: Vec<String> = first["apps"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["apps"].as_array().unwrap())
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["api", "web", "worker"]);
    http(addr, "GET", "/v1/apps?page_size=0", Some(&ann), None).await.problem(400, "INVALID_ARGUMENT");

    // Delete: 204, then gone for gRPC too.
    let deleted = http(addr, "DELETE", "/v1/apps/worker", Some(&ann), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let gone = grpc.get_app(cpb::GetAppRequest { app: "worker".into() }).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // Revoking over REST: refused at once.
    let tokens = http(addr, "GET", "/v1/tokens", Some(&ann), None).await.json();
    let ro = tokens["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "ro").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!tokens.to_string().contains(&viewer));
    assert_eq!(http(addr, "DELETE", &format!("/v1/tokens/{ro}"), Some(&ann), None).await.status, 200);
    http(addr, "GET", "/v1/apps", Some(&viewer), None).await.problem(401, "UNAUTHENTICATED");

    gw.stop().await;
    data.stop().await;
    compute.stop().await;
    env.cleanup().await;
}
