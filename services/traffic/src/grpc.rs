//! The gRPC edge of traffic: decode, call the domain, encode.

use strata_kit::Identity;
use strata_proto::traffic::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{
    app::{Traffic, route_pb},
    model::{Backend, RouteSpec},
};

/// The `strata.traffic.v1.TrafficService` implementation.
#[derive(Debug, Clone)]
pub struct TrafficApi {
    traffic: Traffic,
}

impl TrafficApi {
    pub fn new(traffic: Traffic) -> Self {
        Self { traffic }
    }
}

fn spec_of(spec: Option<pb::RouteSpec>) -> Result<RouteSpec, Status> {
    let spec = spec.ok_or_else(|| Status::invalid_argument("spec is required: host, path_prefix and backends"))?;
    Ok(RouteSpec {
        host: spec.host,
        path_prefix: spec.path_prefix,
        backends: spec
            .backends
            .into_iter()
            .map(|b| Backend { app: b.app, release: b.release, weight: b.weight })
            .collect(),
        max_body_bytes: spec.max_body_bytes,
        timeout_ms: spec.timeout_ms,
    })
}

#[tonic::async_trait]
impl pb::traffic_service_server::TrafficService for TrafficApi {
    #[tracing::instrument(skip_all, fields(route = %request.get_ref().name))]
    async fn create_route(&self, request: Request<pb::CreateRouteRequest>) -> Result<Response<pb::Route>, Status> {
        let who = Identity::of(&request)?;
        let request = request.into_inner();
        let route = self.traffic.route_create(&who, &request.name, spec_of(request.spec)?).await?;
        Ok(Response::new(route_pb(&route)))
    }

    async fn get_route(&self, request: Request<pb::GetRouteRequest>) -> Result<Response<pb::Route>, Status> {
        let who = Identity::of(&request)?;
        let route = self.traffic.route_get(&who, &request.get_ref().name)?;
        Ok(Response::new(route_pb(&route)))
    }

    async fn list_routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let who = Identity::of(&request)?;
        let routes = self.traffic.route_list(&who, &request.get_ref().app);
        Ok(Response::new(pb::ListRoutesResponse { routes: routes.iter().map(route_pb).collect() }))
    }

    #[tracing::instrument(skip_all, fields(route = %request.get_ref().name))]
    async fn update_route(&self, request: Request<pb::UpdateRouteRequest>) -> Result<Response<pb::Route>, Status> {
        let who = Identity::of(&request)?;
        let request = request.into_inner();
        let route = self.traffic.route_update(&who, &request.name, spec_of(request.spec)?).await?;
        Ok(Response::new(route_pb(&route)))
    }

    #[tracing::instrument(skip_all, fields(route = %request.get_ref().name))]
    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        let who = Identity::of(&request)?;
        self.traffic.route_delete(&who, &request.get_ref().name).await?;
        Ok(Response::new(pb::DeleteRouteResponse {}))
    }

    async fn get_route_stats(
        &self,
        request: Request<pb::GetRouteStatsRequest>,
    ) -> Result<Response<pb::RouteStats>, Status> {
        let who = Identity::of(&request)?;
        let name = &request.get_ref().name;
        let s = self.traffic.route_stats(&who, name)?;
        Ok(Response::new(pb::RouteStats {
            route: name.clone(),
            requests: s.requests,
            status_1xx: s.status[0],
            status_2xx: s.status[1],
            status_3xx: s.status[2],
            status_4xx: s.status[3],
            status_5xx: s.status[4],
            latency_p50_ms: s.quantile_ms(0.5),
            latency_p90_ms: s.quantile_ms(0.9),
            latency_p99_ms: s.quantile_ms(0.99),
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
        }))
    }

    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let who = Identity::of(&request)?;
        let endpoints = self.traffic.endpoint_list(&who, &request.get_ref().app).await?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: endpoints
                .into_iter()
                .map(|e| pb::Endpoint {
                    instance_id: e.record.instance_id,
                    app: e.record.app,
                    release: e.record.release,
                    address: format!("{}:{}", e.record.host, e.record.port),
                    in_flight: e.in_flight,
                    ejected: e.ejected,
                })
                .collect(),
        }))
    }
}
