//! Teams and API tokens at the gateway: a token's whole life (create, use
//! through the gateway against compute, revoke → refused at once), role and
//! scope rules, team isolation, admins acting for a team, the bootstrap
//! admin, and services refusing forged or expired identities sent straight
//! to them. Against SQLite and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sqlx::{Connection, Row};
use strata_integration_tests::*;
use strata_kit::{
    Role,
    identity::{AUDIENCE, Claims, ISSUER},
};
use strata_proto::{
    compute::v1::{self as cpb, compute_service_client::ComputeServiceClient},
    gateway::v1 as pb,
};
use tonic::{Code, Status};

fn scopes(scopes: &[pb::Scope]) -> Vec<i32> {
    scopes.iter().map(|s| *s as i32).collect()
}

/// Creates a token through `gateway` and returns (id, secret).
async fn token(gateway: &mut GatewayClient, name: &str, scope: &[pb::Scope], subject: &str) -> (String, String) {
    let created = gateway
        .create_token(pb::CreateTokenRequest {
            name: name.to_owned(),
            scopes: scopes(scope),
            ttl_seconds: 0,
            subject: subject.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    (created.token.unwrap().id, created.secret)
}

async fn app_names(compute: &mut ComputeClient) -> Result<Vec<String>, Status> {
    Ok(compute.list_apps(cpb::ListAppsRequest {}).await?.into_inner().apps.into_iter().map(|a| a.name).collect())
}

async fn lifecycle(backend: Backend) {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let config = env.gateway_config(backend, &[("compute", compute.addr)]).await;
    let gw = GatewayUnderTest::start(config).await;
    let (blue, green) = (env.team("blue"), env.team("green"));

    // The platform admin makes two teams, then acts for blue to give its owner a token.
    let mut admin = gw.gateway(&gw.admin_token).await;
    let me = admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.subject.as_str(), me.role.as_str(), me.platform_admin), ("admin", "admin", true));
    admin.create_team(pb::CreateTeamRequest { name: blue.clone(), owner: "ann".into() }).await.unwrap();
    admin.create_team(pb::CreateTeamRequest { name: green.clone(), owner: "bob".into() }).await.unwrap();
    let again = admin.create_team(pb::CreateTeamRequest { name: blue.clone(), owner: "x".into() }).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let mut admin_for_blue = acting_for(gw.channel().await, &gw.admin_token, &blue);
    let created = admin_for_blue
        .create_token(pb::CreateTokenRequest {
            name: "laptop".into(),
            scopes: scopes(&[pb::Scope::Write]),
            ttl_seconds: 3600,
            subject: "ann".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ann_token = created.secret.clone();
    let ann_token_id = created.token.as_ref().unwrap().id.clone();
    assert!(ann_token.starts_with("strata_") && ann_token.len() >= 50, "high entropy");
    assert_eq!(created.token.as_ref().unwrap().scopes, scopes(&[pb::Scope::Read, pb::Scope::Write]));
    let mut admin_for_green = acting_for(gw.channel().await, &gw.admin_token, &green);
    let (_, bob_token) = {
        let created = admin_for_green
            .create_token(pb::CreateTokenRequest {
                name: "laptop".into(),
                scopes: scopes(&[pb::Scope::Write]),
                ttl_seconds: 0,
                subject: "bob".into(),
            })
            .await
            .unwrap()
            .into_inner();
        (created.token.unwrap().id, created.secret)
    };

    // Only the hash is stored.
    if backend == Backend::Sqlite {
        let url = gw.config.database.url.clone();
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let hash: String = sqlx::query("SELECT secret_hash FROM tokens WHERE id = $1")
            .bind(&ann_token_id)
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(hash, strata_gateway::token::hash(&ann_token));
        let file = url.trim_start_matches("sqlite://").to_owned();
        for path in [file.clone(), format!("{file}-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(!String::from_utf8_lossy(&bytes).contains(&ann_token[7..]), "the secret is in {path}");
        }
    }

    // Ann uses her token through the gateway against compute.
    let mut ann = gw.gateway(&ann_token).await;
    let mut ann_compute = gw.compute(&ann_token).await;
    ann_compute.create_app(cpb::CreateAppRequest { name: "shop".into() }).await.unwrap();
    assert_eq!(app_names(&mut ann_compute).await.unwrap(), vec!["shop".to_owned()]);
    let whoami = ann.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((whoami.team.as_str(), whoami.role.as_str(), whoami.platform_admin), (blue.as_str(), "owner", false));

    // Team isolation: bob sees none of blue's apps, and cannot act for blue.
    let mut bob_compute = gw.compute(&bob_token).await;
    assert!(app_names(&mut bob_compute).await.unwrap().is_empty());
    let mut bob_for_blue = acting_for(gw.channel().await, &bob_token, &blue);
    let refused = bob_for_blue.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Nor create teams, nor list blue's members.
    let mut bob = gw.gateway(&bob_token).await;
    let refused = bob.create_team(pb::CreateTeamRequest { name: env.team("mine"), owner: "bob".into() }).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    let bob_members = bob.list_members(pb::ListMembersRequest {}).await.unwrap().into_inner().members;
    assert_eq!(bob_members.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(), ["bob"]);
    let bob_teams = bob.list_teams(pb::ListTeamsRequest {}).await.unwrap().into_inner().teams;
    assert_eq!(bob_teams.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), [green.as_str()]);
    // The admin, acting for blue, sees blue's app; for its own team, not.
    let mut admin_compute = gw.compute(&gw.admin_token).await;
    assert!(app_names(&mut admin_compute).await.unwrap().is_empty());
    let admin_teams = admin.list_teams(pb::ListTeamsRequest {}).await.unwrap().into_inner().teams;
    assert!(admin_teams.iter().any(|t| t.name == blue) && admin_teams.iter().any(|t| t.name == green));

    // Roles: a viewer reads but does not change, and makes no tokens.
    ann.add_member(pb::AddMemberRequest { subject: "vic".into(), role: pb::TeamRole::Viewer as i32 }).await.unwrap();
    let (vic_token_id, vic_token) = token(&mut ann, "vic-laptop", &[pb::Scope::Write], "vic").await;
    let mut vic_compute = gw.compute(&vic_token).await;
    assert_eq!(app_names(&mut vic_compute).await.unwrap(), vec!["shop".to_owned()]);
    let denied = vic_compute.create_app(cpb::CreateAppRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let mut vic = gw.gateway(&vic_token).await;
    let denied = vic
        .create_token(pb::CreateTokenRequest {
            name: "x".into(),
            scopes: scopes(&[pb::Scope::Read]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = vic.add_member(pb::AddMemberRequest { subject: "eve".into(), role: pb::TeamRole::Owner as i32 }).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);

    // Scopes: a read-only token of an owner reads only, and cannot mint a writer.
    let (_, ann_read) = token(&mut ann, "dashboards", &[pb::Scope::Read], "").await;
    let mut ann_read_compute = gw.compute(&ann_read).await;
    assert_eq!(app_names(&mut ann_read_compute).await.unwrap(), vec!["shop".to_owned()]);
    let denied = ann_read_compute.create_app(cpb::CreateAppRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut ann_read_gw = gw.gateway(&ann_read).await;
    let denied = ann_read_gw
        .create_token(pb::CreateTokenRequest {
            name: "x".into(),
            scopes: scopes(&[pb::Scope::Write]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Nor may an owner hand out admin scope.
    let denied = ann
        .create_token(pb::CreateTokenRequest {
            name: "x".into(),
            scopes: scopes(&[pb::Scope::Admin]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Owners list the team's tokens; a viewer only its own, never a secret.
    let listed = ann.list_tokens(pb::ListTokensRequest { all: false }).await.unwrap().into_inner().tokens;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|t| t.hint.starts_with("strata_") && t.hint.chars().count() <= 12));
    let vic_listed = vic.list_tokens(pb::ListTokensRequest { all: false }).await.unwrap().into_inner().tokens;
    assert_eq!(vic_listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [vic_token_id.as_str()]);

    // The last owner stays; removing a member revokes its tokens at once.
    let last = ann.remove_member(pb::RemoveMemberRequest { subject: "ann".into() }).await.unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition);
    let removed = ann.remove_member(pb::RemoveMemberRequest { subject: "vic".into() }).await.unwrap().into_inner();
    assert_eq!(removed.revoked_tokens, 1);
    assert_eq!(app_names(&mut vic_compute).await.unwrap_err().code(), Code::Unauthenticated);

    // A role change takes effect on the very next call too.
    ann.add_member(pb::AddMemberRequest { subject: "max".into(), role: pb::TeamRole::Member as i32 }).await.unwrap();
    let (_, max_token) = token(&mut ann, "max-laptop", &[pb::Scope::Write], "max").await;
    let mut max_compute = gw.compute(&max_token).await;
    max_compute.create_app(cpb::CreateAppRequest { name: "max-app".into() }).await.unwrap();
    ann.add_member(pb::AddMemberRequest { subject: "max".into(), role: pb::TeamRole::Viewer as i32 }).await.unwrap();
    let denied = max_compute.create_app(cpb::CreateAppRequest { name: "max-app-2".into() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    max_compute.delete_app(cpb::DeleteAppRequest { app: "max-app".into() }).await.unwrap_err();
    ann_compute.delete_app(cpb::DeleteAppRequest { app: "max-app".into() }).await.unwrap();

    // Revocation takes effect on the very next call, on the same connection.
    let revoked = ann.revoke_token(pb::RevokeTokenRequest { id: ann_token_id.clone() }).await.unwrap().into_inner();
    assert!(revoked.revoked_at.is_some());
    let refused = app_names(&mut ann_compute).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("revoked"), "{}", refused.message());
    assert_eq!(ann.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    // Other tokens are untouched.
    assert_eq!(app_names(&mut ann_read_compute).await.unwrap(), vec!["shop".to_owned()]);

    // An expired token is refused (a one-second token, checked until it lapses).
    let mut ann_read_gw_owner = acting_for(gw.channel().await, &gw.admin_token, &blue);
    let short = ann_read_gw_owner
        .create_token(pb::CreateTokenRequest {
            name: "short".into(),
            scopes: scopes(&[pb::Scope::Read]),
            ttl_seconds: 1,
            subject: "ann".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let short_compute = gw.compute(&short).await;
    let expired = wait_for("the one-second token to expire", Duration::from_secs(10), || {
        let mut client = short_compute.clone();
        async move { app_names(&mut client).await.err() }
    })
    .await;
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{}", expired.message());

    // The events, through the outbox.
    let team_created = env.wait_event("dev.strata.gateway.team.created.v1", |e| e["data"]["team"] == blue).await;
    assert_eq!(team_created["data"]["owner"], "ann");
    assert_eq!(team_created["team"], blue.as_str());
    let revoked = env.wait_event("dev.strata.gateway.token.revoked.v1", |e| e["subject"] == ann_token_id).await;
    assert_eq!(revoked["data"]["revokedBy"], "ann");
    let removed = env.wait_event("dev.strata.gateway.token.revoked.v1", |e| e["subject"] == vic_token_id).await;
    assert_eq!(removed["data"]["reason"], "member removed");
    assert!(!serde_json::to_string(&env.events().await).unwrap().contains(&ann_token[7..]));

    gw.stop().await;
    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_lifecycle_roles_scopes_and_isolation_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_lifecycle_roles_scopes_and_isolation_postgres() {
    lifecycle(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn services_refuse_forged_or_expired_identities_sent_straight_to_them() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr)]).await;
    let gw = GatewayUnderTest::start(config).await;
    let team = env.team("admins");

    // The real thing works, through the gateway and (with a signed identity) directly.
    assert!(app_names(&mut gw.compute(&gw.admin_token).await).await.is_ok());
    assert!(app_names(&mut compute.client(&env.token(&team, Role::Member)).await).await.is_ok());

    // An identity signed with another key.
    let (other_private, _) = strata_kit::identity::generate_keypair().unwrap();
    let forged = strata_kit::identity::Signer::from_private_pem(&other_private)
        .unwrap()
        .mint("mallory", &team, Role::Admin, Duration::from_secs(60))
        .unwrap();
    let refused = app_names(&mut compute.client(&forged).await).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // An identity signed with the right key but expired.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims {
        sub: "ann".into(),
        team: team.clone(),
        role: Role::Owner,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now - 600,
        exp: now - 120,
    };
    let key = jsonwebtoken::EncodingKey::from_ed_pem(env.private_key_pem.as_bytes()).unwrap();
    let expired =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), &claims, &key).unwrap();
    let refused = app_names(&mut compute.client(&expired).await).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A tampered identity (the team changed after signing).
    let good = env.token(&team, Role::Viewer);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = "admin".into();
    parts[1] = engine.encode(serde_json::to_vec(&payload).unwrap());
    let refused = app_names(&mut compute.client(&parts.join(".")).await).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // An API token means nothing to a service: only the gateway knows it.
    let refused = app_names(&mut compute.client(&gw.admin_token).await).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // And the gateway takes only API tokens, not identities (even valid ones).
    let refused = app_names(&mut gw.compute(&env.token(&team, Role::Owner)).await).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // No credential at all.
    let refused = ComputeServiceClient::new(gw.channel().await).list_apps(cpb::ListAppsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    gw.stop().await;
    compute.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bootstrap_admin_token_is_kept_while_it_works_and_replaced_when_revoked() {
    let mut env = TestEnv::new();
    let config = env.gateway_config(Backend::Sqlite, &[]).await;
    let gw = GatewayUnderTest::start(config).await;
    let first = gw.admin_token.clone();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&gw.config.bootstrap.token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let config = gw.stop().await;

    // A restart keeps the token.
    let gw = GatewayUnderTest::start(config).await;
    assert_eq!(gw.admin_token, first);
    let mut admin = gw.gateway(&first).await;
    let me = admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.team, me.platform_admin), (env.team("admins"), true));
    admin.revoke_token(pb::RevokeTokenRequest { id: me.token_id }).await.unwrap();
    let config = gw.stop().await;

    // Revoked: the next start writes a new one, and only one team exists.
    let gw = GatewayUnderTest::start(config).await;
    assert_ne!(gw.admin_token, first);
    let mut admin = gw.gateway(&gw.admin_token).await;
    let teams = admin.list_teams(pb::ListTeamsRequest {}).await.unwrap().into_inner().teams;
    assert_eq!(teams.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), [env.team("admins")]);
    assert_eq!(teams[0].role, pb::TeamRole::Owner as i32);
    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_checks_cost_little() {
    // Measures the gateway's per-call token check (one indexed lookup and one
    // signature) on its own API, and prints it; the bound is generous, so it
    // only fails when something is badly wrong (a slow hash, a table scan).
    let mut env = TestEnv::new();
    let config = env.gateway_config(Backend::Sqlite, &[]).await;
    let gw = GatewayUnderTest::start(config).await;
    let mut admin = gw.gateway(&gw.admin_token).await;
    admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let calls = 500;
    let started = std::time::Instant::now();
    for _ in 0..calls {
        admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    }
    let per_call = started.elapsed() / calls;
    println!("authenticated WhoAmI through the gateway: {per_call:?} per call (sequential, SQLite)");
    assert!(per_call < Duration::from_millis(20), "{per_call:?}");
    gw.stop().await;
    env.cleanup().await;
}
