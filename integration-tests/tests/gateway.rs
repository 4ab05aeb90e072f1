//! The gateway's pass-through: calls reach the concern that owns them,
//! streaming included, with an API token; unknown or unreachable concerns get
//! clear gRPC errors. Its listener tells HTTP/1.1 from HTTP/2 by the first
//! bytes, however they arrive, and drains calls in flight when it stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_integration_tests::*;
use strata_kit::{Role, identity::BearerToken};
use strata_proto::compute::v1::{self as pb, compute_service_client::ComputeServiceClient};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_routed_to_their_concern() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = env.gateway_config(Backend::Sqlite, &[("compute", compute.addr), ("traffic", dead)]).await;
    let gateway = GatewayUnderTest::start(config).await;
    let channel = gateway.channel().await;
    let token = gateway.admin_token.clone();
    let mut client = ComputeServiceClient::with_interceptor(channel.clone(), BearerToken::new(&token).unwrap());

    // Unary, client streaming and server streaming, all through the gateway.
    client.create_app(pb::CreateAppRequest { name: "via-gateway".into() }).await.unwrap();
    let archive = pack_dir(&repo_root().join("examples/python-hello"));
    let upload = upload(&mut client, "via-gateway", archive).await.unwrap();
    let (log, deployment) = deploy_upload(&mut client, "via-gateway", upload.id, 1).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{log:?}");
    assert!(log.len() > 2);

    // No credential, or an identity token instead of an API token: refused.
    let mut anonymous = ComputeServiceClient::new(channel.clone());
    assert_eq!(anonymous.list_apps(pb::ListAppsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let jwt = env.token(&env.team("admins"), Role::Owner);
    let mut with_jwt = ComputeServiceClient::with_interceptor(channel.clone(), BearerToken::new(&jwt).unwrap());
    assert_eq!(with_jwt.list_apps(pb::ListAppsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);

    // A concern whose service is down, and a path no concern owns.
    let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        BearerToken::new(&token).unwrap(),
    ));
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::ListAppsRequest, pb::ListAppsResponse>::default();
    let down = grpc
        .unary(
            tonic::Request::new(pb::ListAppsRequest {}),
            "/strata.traffic.v1.TrafficService/ListRoutes".parse().unwrap(),
            codec.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    grpc.ready().await.unwrap();
    let unknown = grpc
        .unary(tonic::Request::new(pb::ListAppsRequest {}), "/strata.nothing.v1.X/Y".parse().unwrap(), codec)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented);

    // HTTP/1.1 whose first byte, sent alone, could still begin the HTTP/2
    // preface ("P..."): the listener waits for more before it decides.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(b"P").await.unwrap();
        stream.flush().await.unwrap();
        stream
            .write_all(b"UT /openapi.json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }

    // Stopping drains: a deployment streaming through the gateway when it is
    // told to stop runs to its end; then nothing more is accepted.
    let mut deploying = client
        .deploy(pb::DeployRequest {
            app: "via-gateway".into(),
            source: Some(pb::deploy_request::Source::ReleaseVersion(1)),
            instances: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = deploying.message().await.unwrap();
    assert!(first.is_some());
    let addr = gateway.addr;
    let (drained, _) = tokio::join!(finish_deploy(deploying), gateway.stop());
    let (log, deployment) = drained.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{log:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the gateway still accepts after stopping");

    compute.stop().await;
    env.cleanup().await;
}
