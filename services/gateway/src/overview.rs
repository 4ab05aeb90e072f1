//! Aggregation: one app across every concern, and the catalog of what the
//! platform offers. The gateway asks each concern's own API, at the same time
//! and with one deadline, with the caller's identity; it keeps none of their
//! data and decides nothing about it. What does not answer in time is
//! reported, and the rest returned.

use std::{future::Future, time::Duration};

use strata_kit::identity::BearerToken;
use strata_proto::{
    compute::v1::{self as compute, compute_service_client::ComputeServiceClient},
    data::v1::{self as data, data_service_client::DataServiceClient},
    gateway::v1 as pb,
    observe::v1::{self as observe, observe_service_client::ObserveServiceClient},
    traffic::v1::{self as traffic, traffic_service_client::TrafficServiceClient},
};
use tonic::{Code, Status, service::interceptor::InterceptedService};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    app::GatewayError,
    proxy::{Upstream, Upstreams},
};

/// Asks the concerns, within a deadline.
#[derive(Debug, Clone)]
pub struct Aggregator {
    upstreams: Upstreams,
    deadline: Duration,
}

type Authed = InterceptedService<Upstream, BearerToken>;

/// Runs `call` within `deadline`, as a gRPC status.
async fn within<T>(deadline: Duration, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("no answer within {} ms", deadline.as_millis()))))
}

/// A request carrying the deadline to the service too.
fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

impl Aggregator {
    pub fn new(upstreams: Upstreams, deadline: Duration) -> Self {
        Self { upstreams, deadline }
    }

    fn channel(&self, concern: &str, identity: &str) -> Result<Authed, Status> {
        let channel = self
            .upstreams
            .get(concern)
            .ok_or_else(|| Status::unavailable(format!("no {concern} service is configured behind this gateway")))?;
        let bearer = BearerToken::new(identity).map_err(|e| Status::internal(e.to_string()))?;
        Ok(InterceptedService::new(channel, bearer))
    }

    /// The overview of `app`, asking as `identity` (the caller's signed identity).
    pub async fn app_overview(&self, identity: &str, app: &str) -> Result<pb::AppOverview, GatewayError> {
        let deadline = self.deadline;
        let compute = async {
            let mut client = ComputeServiceClient::new(self.channel("compute", identity)?);
            let (mut c1, mut c2) = (client.clone(), client.clone());
            let app_name = app.to_owned();
            let (app, releases, instances) = tokio::try_join!(
                client.get_app(request(compute::GetAppRequest { app: app_name.clone() }, deadline)),
                c1.list_releases(request(compute::ListReleasesRequest { app: app_name.clone() }, deadline)),
                c2.list_instances(request(compute::ListInstancesRequest { app: app_name }, deadline)),
            )?;
            Ok::<_, Status>((app.into_inner(), releases.into_inner().releases, instances.into_inner().instances))
        };
        let routes = async {
            let mut client = TrafficServiceClient::new(self.channel("traffic", identity)?);
            let reply =
                client.list_routes(request(traffic::ListRoutesRequest { app: app.to_owned() }, deadline)).await?;
            Ok::<_, Status>(reply.into_inner().routes)
        };
        let checks = async {
            let mut client = ObserveServiceClient::new(self.channel("observe", identity)?);
            let reply =
                client.list_checks(request(observe::ListChecksRequest { app: app.to_owned() }, deadline)).await?;
            Ok::<_, Status>(reply.into_inner().checks)
        };
        let databases = async {
            let mut client = DataServiceClient::new(self.channel("data", identity)?);
            let reply = client.list_databases(request(data::ListDatabasesRequest {}, deadline)).await?;
            Ok::<_, Status>(
                reply.into_inner().databases.into_iter().filter(|d| d.apps.iter().any(|a| a == app)).collect(),
            )
        };
        let (compute, routes, checks, databases) = tokio::join!(
            within(deadline, compute),
            within(deadline, routes),
            within(deadline, checks),
            within(deadline, databases),
        );

        let mut overview = pb::AppOverview::default();
        match compute {
            Ok((app, releases, instances)) => {
                overview.app = Some(app);
                overview.releases = releases;
                overview.instances = instances;
            }
            // Compute owns apps: what it says about this one is the answer.
            Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied | Code::Unauthenticated) => {
                return Err(match status.code() {
                    Code::NotFound => GatewayError::NotFound(status.message().to_owned()),
                    Code::PermissionDenied => GatewayError::PermissionDenied(status.message().to_owned()),
                    _ => GatewayError::Unauthenticated(status.message().to_owned()),
                });
            }
            Err(status) => unavailable(&mut overview, "compute", &status),
        }
        match routes {
            Ok(routes) => overview.routes = routes,
            Err(status) => unavailable(&mut overview, "traffic", &status),
        }
        match checks {
            Ok(checks) => overview.checks = checks,
            Err(status) => unavailable(&mut overview, "observe", &status),
        }
        match databases {
            Ok(databases) => overview.databases = databases,
            Err(status) => unavailable(&mut overview, "data", &status),
        }
        overview.partial = !overview.unavailable.is_empty();
        Ok(overview)
    }

    /// The catalog, with each managed service's health asked now.
    pub async fn catalog(&self) -> pb::Catalog {
        let checks = OFFERINGS.iter().map(|offering| async move {
            let health = match offering.concern {
                Some("gateway") => pb::Health::Serving,
                Some(concern) => self.health(concern).await,
                None => pb::Health::NotApplicable,
            };
            pb::Offering {
                name: offering.name.to_owned(),
                description: offering.description.to_owned(),
                owner_team: offering.owner_team.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                health: health as i32,
                api: offering.api.to_owned(),
                sharing_model: offering.sharing_model as i32,
                how_to_use: offering.how_to_use.to_owned(),
            }
        });
        pb::Catalog { offerings: futures::future::join_all(checks).await }
    }

    async fn health(&self, concern: &str) -> pb::Health {
        let Some(channel) = self.upstreams.get(concern) else { return pb::Health::NotApplicable };
        let mut client = HealthClient::new(channel);
        let check = client.check(request(HealthCheckRequest { service: String::new() }, self.deadline));
        match tokio::time::timeout(self.deadline, check).await {
            Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => pb::Health::Serving,
            Ok(Ok(_)) => pb::Health::NotServing,
            Ok(Err(_)) | Err(_) => pb::Health::Unreachable,
        }
    }
}

fn unavailable(overview: &mut pb::AppOverview, concern: &str, status: &Status) {
    tracing::info!(concern, code = ?status.code(), message = status.message(), "overview is partial");
    overview.unavailable.push(pb::Unavailable {
        concern: concern.to_owned(),
        message: format!("{:?}: {}", status.code(), status.message()),
    });
}

/// One entry of the catalog, as the platform describes it.
struct OfferingSpec {
    name: &'static str,
    description: &'static str,
    owner_team: &'static str,
    /// The upstream whose health is the offering's, if it is a service.
    concern: Option<&'static str>,
    api: &'static str,
    sharing_model: pb::SharingModel,
    how_to_use: &'static str,
}

/// What the platform offers (ARCHITECTURE.md's two tables, as data).
const OFFERINGS: &[OfferingSpec] = &[
    OfferingSpec {
        name: "compute",
        description: "Apps, immutable releases, zero-downtime deployments and instances: push code or a container and it runs.",
        owner_team: "platform-compute",
        concern: Some("compute"),
        api: "gRPC strata.compute.v1.ComputeService; REST /v1/apps",
        sharing_model: pb::SharingModel::ManagedService,
        how_to_use: "strata deploy ./app (build packs: Procfile, Cargo.toml, package.json, requirements.txt, static)",
    },
    OfferingSpec {
        name: "traffic",
        description: "Routes from host and path to apps, weighted splits between releases, the HTTP ingress.",
        owner_team: "platform-traffic",
        concern: Some("traffic"),
        api: "gRPC strata.traffic.v1.TrafficService; REST /v1/routes",
        sharing_model: pb::SharingModel::ManagedService,
        how_to_use: "every app gets <app>.localhost:8780; add routes with the API",
    },
    OfferingSpec {
        name: "observe",
        description: "Checks (HTTP, TCP, gRPC health), alerts and the platform's event log.",
        owner_team: "platform-observe",
        concern: Some("observe"),
        api: "gRPC strata.observe.v1.ObserveService; REST /v1/checks, /v1/events",
        sharing_model: pb::SharingModel::ManagedService,
        how_to_use: "each deployed app gets a default check; add checks and alert rules with the API",
    },
    OfferingSpec {
        name: "data",
        description: "PostgreSQL databases on demand, per team, bound to apps as DATABASE_URL, with backups.",
        owner_team: "platform-data",
        concern: Some("data"),
        api: "gRPC strata.data.v1.DataService; REST /v1/databases",
        sharing_model: pb::SharingModel::ManagedService,
        how_to_use: "strata db create orders && strata db bind orders my-app",
    },
    OfferingSpec {
        name: "gateway",
        description: "Teams, members and API tokens; the one endpoint for gRPC, REST and the console; this catalog.",
        owner_team: "platform-gateway",
        concern: Some("gateway"),
        api: "gRPC strata.gateway.v1.GatewayService; REST /v1 (OpenAPI at /openapi.json)",
        sharing_model: pb::SharingModel::ManagedService,
        how_to_use: "strata login --token strata_...; strata tokens create ci --scope read,write",
    },
    OfferingSpec {
        name: "service packages",
        description: "Each service as its own binary with its own config, and manifests to deploy it.",
        owner_team: "platform",
        concern: None,
        api: "binaries strata-compute, strata-traffic, strata-observe, strata-data, strata-gateway; deploy/",
        sharing_model: pb::SharingModel::Package,
        how_to_use: "run your own copy: strata-data --config deploy/config/data.toml",
    },
    OfferingSpec {
        name: "service kit",
        description: "The libraries every Strata service is built from: server bootstrap, config, identity, store, events.",
        owner_team: "platform",
        concern: None,
        api: "crates strata-kit, strata-events, strata-proto (libs/)",
        sharing_model: pb::SharingModel::SharedCode,
        how_to_use: "depend on libs/kit and libs/events; see services/data for a service built on them",
    },
    OfferingSpec {
        name: "examples",
        description: "Sample apps for each build pack.",
        owner_team: "platform",
        concern: None,
        api: "examples/",
        sharing_model: pb::SharingModel::Example,
        how_to_use: "strata deploy examples/python-hello",
    },
    OfferingSpec {
        name: "principles and patterns",
        description: "How the platform and its services are built and changed: architecture and style rules.",
        owner_team: "platform",
        concern: None,
        api: "docs ARCHITECTURE.md, STYLE.md",
        sharing_model: pb::SharingModel::Policy,
        how_to_use: "read them before changing a service; reviews hold changes to them",
    },
];
