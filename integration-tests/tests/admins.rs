//! Platform admins managed through the gateway's API (gRPC and REST): only a
//! platform admin's admin-scoped token may list, add or remove them; adding
//! is idempotent; the last admin stays; a change takes effect on the very
//! next call made with the subject's token (same connection, cached
//! admission or not); each change is announced through the outbox; and a
//! restart does not make a removed bootstrap admin an admin again. Against
//! SQLite and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_integration_tests::*;
use strata_proto::gateway::v1 as pb;
use tonic::{Code, Status};

async fn admins(client: &mut GatewayClient) -> Result<Vec<String>, Status> {
    let listed = client.list_platform_admins(pb::ListPlatformAdminsRequest {}).await?.into_inner().admins;
    Ok(listed.into_iter().map(|a| a.subject).collect())
}

async fn add(client: &mut GatewayClient, subject: &str) -> Result<pb::PlatformAdmin, Status> {
    Ok(client.add_platform_admin(pb::AddPlatformAdminRequest { subject: subject.to_owned() }).await?.into_inner())
}

async fn remove(client: &mut GatewayClient, subject: &str) -> Result<pb::PlatformAdmin, Status> {
    Ok(client.remove_platform_admin(pb::RemovePlatformAdminRequest { subject: subject.to_owned() }).await?.into_inner())
}

fn denied(result: Result<impl std::fmt::Debug, Status>, says: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("only platform admins, with an admin-scoped token"), "{}", status.message());
    assert!(status.message().contains(says), "{}", status.message());
}

async fn platform_admins(backend: Backend) {
    let mut env = TestEnv::new();
    let config = env.gateway_config(backend, &[]).await;
    let gw = GatewayUnderTest::start(config).await;
    let blue = env.team("blue");
    let mut admin = gw.gateway(&gw.admin_token).await;

    // The bootstrap admin is the only one, and its making was announced.
    let listed = admin.list_platform_admins(pb::ListPlatformAdminsRequest {}).await.unwrap().into_inner().admins;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].subject.as_str(), listed[0].created_by.as_str()), ("admin", "strata-bootstrap"));
    let bootstrapped = env.wait_event("dev.strata.gateway.admin.added.v1", |e| e["subject"] == "admin").await;
    assert_eq!(
        (bootstrapped["team"].as_str(), bootstrapped["data"]["addedBy"].as_str()),
        (Some(""), Some("strata-bootstrap"))
    );

    // A team owner is no platform admin; nor is an admin's token without admin scope.
    admin.create_team(pb::CreateTeamRequest { name: blue.clone(), owner: "ann".into() }).await.unwrap();
    let mut admin_for_blue = acting_for(gw.channel().await, &gw.admin_token, &blue);
    let token = |subject: &str, scope: pb::Scope| pb::CreateTokenRequest {
        name: format!("{subject}-laptop"),
        scopes: vec![scope as i32],
        ttl_seconds: 3600,
        subject: subject.to_owned(),
    };
    let ann_token = admin_for_blue.create_token(token("ann", pb::Scope::Write)).await.unwrap().into_inner().secret;
    let mut ann = gw.gateway(&ann_token).await;
    denied(admins(&mut ann).await, "ask a platform admin");
    denied(add(&mut ann, "ann").await, "ask a platform admin");
    denied(remove(&mut ann, "admin").await, "ask a platform admin");
    let plain = admin.create_token(token("admin", pb::Scope::Write)).await.unwrap().into_inner().secret;
    denied(admins(&mut gw.gateway(&plain).await).await, "not admin-scoped");

    // Subjects are checked; the last admin stays; only admins are removed.
    for bad in ["", "no spaces", "semi;colon"] {
        assert_eq!(add(&mut admin, bad).await.unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(remove(&mut admin, bad).await.unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
    }
    let last = remove(&mut admin, "admin").await.unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition, "{last:?}");
    assert!(last.message().contains("last platform admin"), "{}", last.message());
    assert_eq!(remove(&mut admin, "nobody").await.unwrap_err().code(), Code::NotFound);

    // Adding is idempotent: the same record, announced once.
    let carol = add(&mut admin, "carol").await.unwrap();
    assert_eq!((carol.subject.as_str(), carol.created_by.as_str()), ("carol", "admin"));
    assert_eq!(add(&mut admin, "carol").await.unwrap(), carol);
    assert_eq!(admins(&mut admin).await.unwrap(), ["admin", "carol"]);

    // Carol, a viewer of blue, gets an admin-scoped token and acts as an admin.
    ann.add_member(pb::AddMemberRequest { subject: "carol".into(), role: pb::TeamRole::Viewer as i32 }).await.unwrap();
    let carol_token = admin_for_blue.create_token(token("carol", pb::Scope::Admin)).await.unwrap().into_inner().secret;
    let mut carol = gw.gateway(&carol_token).await;
    let me = carol.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.role.as_str(), me.platform_admin), ("admin", true));
    assert_eq!(admins(&mut carol).await.unwrap(), ["admin", "carol"]);

    // Removed: her very next call, on the same connection, is a viewer's.
    let removed = remove(&mut admin, "carol").await.unwrap();
    assert_eq!(removed.subject, "carol");
    let me = carol.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.role.as_str(), me.platform_admin, me.team.as_str()), ("viewer", false, blue.as_str()));
    denied(admins(&mut carol).await, "ask a platform admin");
    let refused = carol.create_team(pb::CreateTeamRequest { name: env.team("carols"), owner: "carol".into() }).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    // Added again: her next call is an admin's again.
    add(&mut admin, "carol").await.unwrap();
    assert!(carol.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().platform_admin);
    carol.create_team(pb::CreateTeamRequest { name: env.team("carols"), owner: "carol".into() }).await.unwrap();

    // The same through REST.
    let (addr, root) = (gw.addr, gw.admin_token.as_str());
    let listed = http(addr, "GET", "/v1/admins", Some(root), None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    let subjects: Vec<&str> =
        listed["admins"].as_array().unwrap().iter().map(|a| a["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["admin", "carol"]);
    let body = serde_json::json!({"subject": "dave@example.com"});
    let added = http(addr, "POST", "/v1/admins", Some(root), Some(&body)).await;
    assert_eq!((added.status, added.json()["createdBy"].as_str()), (200, Some("admin")), "{}", added.body);
    let removed = http(addr, "DELETE", "/v1/admins/dave@example.com", Some(root), None).await;
    assert_eq!((removed.status, removed.json()["subject"].as_str()), (200, Some("dave@example.com")));
    http(addr, "DELETE", "/v1/admins/dave@example.com", Some(root), None).await.problem(404, "NOT_FOUND");
    http(addr, "GET", "/v1/admins", Some(&ann_token), None).await.problem(403, "PERMISSION_DENIED");
    let bad = serde_json::json!({"subject": "not valid"});
    http(addr, "POST", "/v1/admins", Some(root), Some(&bad)).await.problem(400, "INVALID_ARGUMENT");

    // An admin may step down while another remains; then carol is the last.
    remove(&mut carol, "admin").await.unwrap();
    denied(admins(&mut admin).await, "ask a platform admin");
    assert_eq!(remove(&mut carol, "carol").await.unwrap_err().code(), Code::FailedPrecondition);

    // Every change went out through the outbox, once each, in order.
    env.wait_event("dev.strata.gateway.admin.removed.v1", |e| e["subject"] == "admin").await;
    let events: Vec<serde_json::Value> = env.events().await.into_iter().map(|(_, e)| e).collect();
    let admin_events: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("dev.strata.gateway.admin."))
        .map(|e| {
            let ty = e["type"].as_str().unwrap().trim_start_matches("dev.strata.gateway.admin.").to_owned();
            let by = e["data"]["addedBy"].as_str().or(e["data"]["removedBy"].as_str()).unwrap().to_owned();
            (ty, e["subject"].as_str().unwrap().to_owned(), by)
        })
        .collect();
    let expected = [
        ("added.v1", "admin", "strata-bootstrap"),
        ("added.v1", "carol", "admin"),
        ("removed.v1", "carol", "admin"),
        ("added.v1", "carol", "admin"),
        ("added.v1", "dave@example.com", "admin"),
        ("removed.v1", "dave@example.com", "admin"),
        ("removed.v1", "admin", "carol"),
    ]
    .map(|(t, s, b)| (t.to_owned(), s.to_owned(), b.to_owned()));
    assert_eq!(admin_events, expected);

    // A restart does not make the removed bootstrap admin an admin again;
    // its token is kept, with its team role only.
    let first_token = gw.admin_token.clone();
    let config = gw.stop().await;
    let gw = GatewayUnderTest::start(config).await;
    assert_eq!(gw.admin_token, first_token);
    let me = gw.gateway(&gw.admin_token).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.role.as_str(), me.platform_admin), ("owner", false));
    assert_eq!(admins(&mut gw.gateway(&carol_token).await).await.unwrap(), ["carol"]);

    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_admins_are_managed_through_the_api_sqlite() {
    platform_admins(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_admins_are_managed_through_the_api_postgres() {
    platform_admins(Backend::Postgres).await;
}
