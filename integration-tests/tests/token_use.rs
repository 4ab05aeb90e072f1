//! When API tokens were last used: noted in memory on each admitted call,
//! written off the request path in coalesced flushes (one write per token
//! per flush) and at shutdown, and shown by ListTokens (gRPC and REST).
//! Flushes are triggered by the test (a direct call, or stopping the
//! gateway), never waited for. Against SQLite and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use strata_integration_tests::*;
use strata_kit::store::now_ms;
use strata_proto::gateway::v1 as pb;

fn ms(ts: &strata_proto::pbjson_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

/// The domain on its own: uses are written only by a flush, one row per token.
async fn flushes(backend: Backend) {
    let mut env = TestEnv::new();
    let config = env.gateway_config(backend, &[]).await;
    let (gateway, _outbox) = strata_gateway::open(&config).await.unwrap();
    let (secret, _) = gateway.bootstrap("admin", &env.team("admins"), None).await.unwrap();
    let last_used = |caller: strata_gateway::app::Caller| {
        let gateway = gateway.clone();
        async move {
            let tokens = gateway.token_list(&caller, true).await.unwrap();
            tokens.into_iter().find(|t| t.id == caller.token_id).unwrap().last_used_at
        }
    };

    assert_eq!(gateway.token_use_flush().await.unwrap(), 0, "nothing used, nothing written");
    let before = now_ms();
    let mut caller = None;
    for _ in 0..3 {
        caller = Some(gateway.authenticate(&secret, None).await.unwrap());
    }
    let caller = caller.unwrap();
    let after = now_ms();
    assert_eq!(last_used(caller.clone()).await, None, "no write on the request path");
    assert_eq!(gateway.token_use_flush().await.unwrap(), 1, "three uses, one write");
    let first = last_used(caller.clone()).await.unwrap();
    assert!((before..=after).contains(&first), "{before} <= {first} <= {after}");
    assert_eq!(gateway.token_use_flush().await.unwrap(), 0);

    // A later use shows only after the next flush.
    while now_ms() == first {
        tokio::task::yield_now().await;
    }
    gateway.authenticate(&secret, None).await.unwrap();
    assert_eq!(last_used(caller.clone()).await, Some(first));
    assert_eq!(gateway.token_use_flush().await.unwrap(), 1);
    assert!(last_used(caller).await.unwrap() > first);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_uses_are_written_by_flushes_only_sqlite() {
    flushes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_uses_are_written_by_flushes_only_postgres() {
    flushes(Backend::Postgres).await;
}

/// Through the gateway: calls over gRPC and REST, then a stop (which
/// flushes), then ListTokens after a restart.
async fn through_the_gateway(backend: Backend) {
    let mut env = TestEnv::new();
    let config = env.gateway_config(backend, &[]).await;
    let started = Instant::now();
    let gw = GatewayUnderTest::start(config).await;
    let mut admin = gw.gateway(&gw.admin_token).await;
    let created = |name: &str| pb::CreateTokenRequest {
        name: name.to_owned(),
        scopes: vec![pb::Scope::Read as i32],
        ttl_seconds: 3600,
        subject: String::new(),
    };
    let used = admin.create_token(created("used")).await.unwrap().into_inner();
    let unused = admin.create_token(created("unused")).await.unwrap().into_inner();
    let (used_id, unused_id) = (used.token.unwrap().id, unused.token.unwrap().id);

    let before = now_ms();
    let mut client = gw.gateway(&used.secret).await;
    for _ in 0..5 {
        client.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    }
    let rest = http(gw.addr, "GET", "/v1/whoami", Some(&used.secret), None).await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    let after = now_ms();
    let listed = admin.list_tokens(pb::ListTokensRequest { all: true }).await.unwrap().into_inner().tokens;
    // Unless the periodic flush came first (a very slow machine), nothing is
    // written yet: the calls above wrote nothing themselves.
    if started.elapsed() < strata_gateway::usage::FLUSH_INTERVAL {
        assert!(listed.iter().all(|t| t.id != used_id || t.last_used_at.is_none()), "{listed:?}");
    }

    // Stopping flushes; the restarted gateway shows the use, to the ms.
    let config = gw.stop().await;
    let gw = GatewayUnderTest::start(config).await;
    let mut admin = gw.gateway(&gw.admin_token).await;
    let listed = admin.list_tokens(pb::ListTokensRequest { all: true }).await.unwrap().into_inner().tokens;
    let token = |id: &str| listed.iter().find(|t| t.id == id).unwrap().clone();
    let at = ms(token(&used_id).last_used_at.as_ref().expect("a last use after the flush"));
    assert!((before..=after).contains(&at), "{before} <= {at} <= {after}");
    assert_eq!(token(&unused_id).last_used_at, None);
    // The admin's own token was used (to list) before the stop too.
    assert!(listed.iter().any(|t| t.name == "bootstrap" && t.last_used_at.is_some()), "{listed:?}");

    // REST shows it in the proto3 JSON mapping.
    let rest = http(gw.addr, "GET", "/v1/tokens?all=true", Some(&gw.admin_token), None).await;
    let tokens = rest.json()["tokens"].as_array().unwrap().clone();
    let used = tokens.iter().find(|t| t["id"] == used_id.as_str()).unwrap();
    let parsed = humantime::parse_rfc3339_weak(used["lastUsedAt"].as_str().unwrap()).unwrap();
    let parsed = parsed.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(parsed, at);
    assert!(tokens.iter().find(|t| t["id"] == unused_id.as_str()).unwrap().get("lastUsedAt").is_none());

    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_show_when_they_were_last_used_sqlite() {
    through_the_gateway(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_show_when_they_were_last_used_postgres() {
    through_the_gateway(Backend::Postgres).await;
}
