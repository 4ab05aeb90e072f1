//! The gateway's pass-through: calls reach the concern that owns them,
//! streaming included; unknown or unreachable concerns get clear gRPC errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_integration_tests::*;
use strata_kit::{Role, identity::BearerToken, settings::ServerSettings};
use strata_proto::compute::v1::{self as pb, compute_service_client::ComputeServiceClient};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_routed_to_their_concern() {
    let mut env = TestEnv::new();
    let compute = ComputeUnderTest::start(env.compute_config(Backend::Sqlite, "compute").await).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let gateway = strata_gateway::start(
        strata_gateway::Config {
            server: ServerSettings::local(0),
            upstreams: [
                ("compute".to_owned(), format!("http://{}", compute.addr)),
                ("traffic".to_owned(), format!("http://{dead}")),
            ]
            .into(),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    wait_serving(gateway.addr, "").await;
    let channel = Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
    let token = env.token(&env.team("blue"), Role::Member);
    let mut client = ComputeServiceClient::with_interceptor(channel.clone(), BearerToken::new(&token).unwrap());

    // Unary, client streaming and server streaming, all through the gateway.
    client.create_app(pb::CreateAppRequest { name: "via-gateway".into() }).await.unwrap();
    let archive = pack_dir(&repo_root().join("examples/python-hello"));
    let upload = upload(&mut client, "via-gateway", archive).await.unwrap();
    let (log, deployment) = deploy_upload(&mut client, "via-gateway", upload.id, 1).await.unwrap();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32, "{log:?}");
    assert!(log.len() > 2);

    // The services still decide who may call: the gateway passes the token on.
    let mut anonymous = ComputeServiceClient::new(channel.clone());
    assert_eq!(anonymous.list_apps(pb::ListAppsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);

    // A concern whose service is down, and a path no concern owns.
    let mut grpc = tonic::client::Grpc::new(channel);
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

    shutdown.cancel();
    gateway.wait().await.unwrap();
    compute.stop().await;
    env.cleanup().await;
}
