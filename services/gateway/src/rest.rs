//! REST/JSON: `/v1/...` resources transcoded onto the services' gRPC APIs.
//!
//! Each operation in [`OPERATIONS`] names one unary gRPC method; the request
//! message is built from the path parameters and then the query (GET, DELETE)
//! or the JSON body (POST, PATCH), in the canonical proto3 JSON mapping, and
//! the reply is returned in the same mapping: the REST answer *is* the gRPC
//! answer. The gateway adds only what HTTP needs: status codes, pagination of
//! lists, and `application/problem+json` errors. It decides nothing itself:
//! the call goes through the same channels, with the same identity, as a gRPC
//! call would.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use base64::Engine;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor};
use strata_proto::gateway::v1::gateway_service_server::GatewayServiceServer;
use tonic::{Code, Status};

use crate::{app::Caller, grpc::GatewayApi, problem::Problem, proxy::Upstreams};

/// One REST operation and the gRPC method it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `get`, `post`, `patch` or `delete`.
    pub method: &'static str,
    /// An axum path: `/v1/apps/{app}`; each `{param}` is a request field.
    pub path: &'static str,
    /// `package.Service/Method`.
    pub rpc: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Success status: 200, 201 (created) or 204 (no content).
    pub status: u16,
    /// For lists: the JSON name of the repeated field that is paginated.
    pub list: Option<&'static str>,
}

const fn op(
    method: &'static str,
    path: &'static str,
    rpc: &'static str,
    summary: &'static str,
    status: u16,
    list: Option<&'static str>,
) -> Operation {
    Operation { method, path, rpc, summary, status, list }
}

/// Every REST operation. The OpenAPI document is generated from this table
/// and the proto descriptors, so the two cannot disagree.
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    op("get", "/v1/whoami", "strata.gateway.v1.GatewayService/WhoAmI", "Who the platform takes the caller for", 200, None),
    op("get", "/v1/teams", "strata.gateway.v1.GatewayService/ListTeams", "The caller's teams", 200, Some("teams")),
    op("post", "/v1/teams", "strata.gateway.v1.GatewayService/CreateTeam", "Create a team (platform admins)", 201, None),
    op("get", "/v1/members", "strata.gateway.v1.GatewayService/ListMembers", "The team's members", 200, Some("members")),
    op("post", "/v1/members", "strata.gateway.v1.GatewayService/AddMember", "Add a member or change its role", 200, None),
    op("delete", "/v1/members/{subject}", "strata.gateway.v1.GatewayService/RemoveMember", "Remove a member and revoke its tokens", 200, None),
    op("get", "/v1/tokens", "strata.gateway.v1.GatewayService/ListTokens", "API tokens (never their secrets)", 200, Some("tokens")),
    op("post", "/v1/tokens", "strata.gateway.v1.GatewayService/CreateToken", "Create an API token; the secret is in this reply only", 201, None),
    op("delete", "/v1/tokens/{id}", "strata.gateway.v1.GatewayService/RevokeToken", "Revoke an API token", 200, None),
    op("get", "/v1/admins", "strata.gateway.v1.GatewayService/ListPlatformAdmins", "The platform admins (platform admins, admin-scoped token)", 200, Some("admins")),
    op("post", "/v1/admins", "strata.gateway.v1.GatewayService/AddPlatformAdmin", "Make a subject a platform admin; idempotent (platform admins, admin-scoped token)", 200, None),
    op("delete", "/v1/admins/{subject}", "strata.gateway.v1.GatewayService/RemovePlatformAdmin", "Take a subject's platform admin rights; never the last admin's (platform admins, admin-scoped token)", 200, None),
    op("get", "/v1/apps", "strata.compute.v1.ComputeService/ListApps", "The team's apps", 200, Some("apps")),
    op("post", "/v1/apps", "strata.compute.v1.ComputeService/CreateApp", "Create an app", 201, None),
    op("get", "/v1/apps/{app}", "strata.compute.v1.ComputeService/GetApp", "An app", 200, None),
    op("delete", "/v1/apps/{app}", "strata.compute.v1.ComputeService/DeleteApp", "Delete an app, its instances and releases", 204, None),
    op("get", "/v1/apps/{app}/overview", "strata.gateway.v1.GatewayService/GetAppOverview", "The app across every concern: releases, instances, routes, checks, databases (partial when a concern does not answer)", 200, None),
    op("get", "/v1/catalog", "strata.gateway.v1.GatewayService/GetCatalog", "What the platform offers: owner, version, health, API, sharing model, how to use", 200, None),
    op("get", "/v1/apps/{app}/releases", "strata.compute.v1.ComputeService/ListReleases", "An app's releases", 200, Some("releases")),
    op("get", "/v1/apps/{app}/deployments", "strata.compute.v1.ComputeService/ListDeployments", "An app's deployments", 200, Some("deployments")),
    op("get", "/v1/apps/{app}/instances", "strata.compute.v1.ComputeService/ListInstances", "An app's instances", 200, Some("instances")),
    op("post", "/v1/apps/{app}/scale", "strata.compute.v1.ComputeService/Scale", "Run N instances of the current release", 200, None),
    op("get", "/v1/apps/{app}/config", "strata.compute.v1.ComputeService/ListConfig", "An app's config vars (secrets masked)", 200, None),
    op("patch", "/v1/apps/{app}/config", "strata.compute.v1.ComputeService/SetConfig", "Set config vars (a new release rolls out)", 200, None),
    op("get", "/v1/databases", "strata.data.v1.DataService/ListDatabases", "The team's databases", 200, Some("databases")),
    op("post", "/v1/databases", "strata.data.v1.DataService/CreateDatabase", "Create a database", 201, None),
    op("get", "/v1/databases/{name}", "strata.data.v1.DataService/GetDatabase", "A database", 200, None),
    op("delete", "/v1/databases/{name}", "strata.data.v1.DataService/DeleteDatabase", "Delete a database", 204, None),
    op("get", "/v1/databases/{database}/bindings", "strata.data.v1.DataService/ListBindings", "The apps a database is bound to", 200, Some("bindings")),
    op("post", "/v1/databases/{database}/bindings", "strata.data.v1.DataService/Bind", "Bind a database to an app (DATABASE_URL)", 201, None),
    op("get", "/v1/routes", "strata.traffic.v1.TrafficService/ListRoutes", "The team's routes", 200, Some("routes")),
    op("post", "/v1/routes", "strata.traffic.v1.TrafficService/CreateRoute", "Create a route", 201, None),
    op("get", "/v1/routes/{name}", "strata.traffic.v1.TrafficService/GetRoute", "A route", 200, None),
    op("delete", "/v1/routes/{name}", "strata.traffic.v1.TrafficService/DeleteRoute", "Delete a route", 204, None),
    op("get", "/v1/checks", "strata.observe.v1.ObserveService/ListChecks", "The team's checks and their states", 200, Some("checks")),
    op("post", "/v1/checks", "strata.observe.v1.ObserveService/CreateCheck", "Create a check", 201, None),
    op("get", "/v1/checks/{name}", "strata.observe.v1.ObserveService/GetCheck", "A check", 200, None),
    op("delete", "/v1/checks/{name}", "strata.observe.v1.ObserveService/DeleteCheck", "Delete a check", 204, None),
    op("get", "/v1/events", "strata.observe.v1.ObserveService/ListEvents", "The team's event log", 200, Some("events")),
];

/// Lists are cut in pages of at most this many items.
pub const MAX_PAGE_SIZE: usize = 500;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// How long a transcoded call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The proto descriptors of every Strata API.
pub fn descriptors() -> Result<DescriptorPool, prost_reflect::DescriptorError> {
    DescriptorPool::decode(strata_proto::FILE_DESCRIPTOR_SET)
}

/// The gRPC method of `operation`.
pub fn method_of(pool: &DescriptorPool, operation: &Operation) -> Option<MethodDescriptor> {
    let (service, method) = operation.rpc.split_once('/')?;
    pool.get_service_by_name(service)?.methods().find(|m| m.name() == method)
}

/// The concern of `strata.<concern>.v1.Service/Method`.
fn concern_of_rpc(rpc: &str) -> &str {
    rpc.split('.').nth(1).unwrap_or_default()
}

/// The `{param}` names in a path.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// Whether the operation's fields other than path parameters come from the
/// query (GET, DELETE) rather than the body.
pub fn fields_in_query(operation: &Operation) -> bool {
    matches!(operation.method, "get" | "delete")
}

/// Where a transcoded call goes.
#[derive(Clone)]
enum Target {
    Remote(crate::proxy::Upstream),
    Local(GatewayServiceServer<GatewayApi>),
}

struct Resolved {
    operation: Operation,
    method: MethodDescriptor,
    /// The server-streaming method `?follow=true` turns the list into.
    follow: Option<MethodDescriptor>,
    target: Option<Target>,
}

/// Lists that can also be followed as server-sent events (`?follow=true`):
/// path, and the server-streaming method that follows it.
pub const FOLLOW: &[(&str, &str)] = &[("/v1/events", "strata.observe.v1.ObserveService/FollowEvents")];

/// The streaming method that follows `operation`, if any.
pub fn follow_of(pool: &DescriptorPool, operation: &Operation) -> Option<MethodDescriptor> {
    let (_, rpc) = FOLLOW.iter().find(|(path, _)| *path == operation.path && operation.method == "get")?;
    let (service, method) = rpc.split_once('/')?;
    pool.get_service_by_name(service)?.methods().find(|m| m.name() == method)
}

/// What the REST handlers share.
#[derive(Clone)]
pub struct Rest {
    operations: Arc<Vec<Resolved>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest").field("operations", &self.operations.len()).finish()
    }
}

/// An operation whose gRPC method is not in the descriptors.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The embedded descriptors do not decode.
    #[error("proto descriptors: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// An operation names a method the protos do not have.
    #[error("REST operation {0} names no known gRPC method")]
    UnknownMethod(&'static str),
}

impl Rest {
    /// Resolves every operation against the descriptors and the upstreams.
    pub fn new(upstreams: &Upstreams, local: GatewayServiceServer<GatewayApi>) -> Result<Self, RestError> {
        let pool = descriptors()?;
        let mut operations = Vec::with_capacity(OPERATIONS.len());
        for operation in OPERATIONS {
            let method = method_of(&pool, operation).ok_or(RestError::UnknownMethod(operation.rpc))?;
            let concern = concern_of_rpc(operation.rpc);
            let target = if concern == "gateway" {
                Some(Target::Local(local.clone()))
            } else {
                upstreams.get(concern).map(Target::Remote)
            };
            let follow = follow_of(&pool, operation);
            if FOLLOW.iter().any(|(path, _)| *path == operation.path && operation.method == "get") && follow.is_none() {
                return Err(RestError::UnknownMethod(operation.rpc));
            }
            operations.push(Resolved { operation: *operation, method, follow, target });
        }
        Ok(Self { operations: Arc::new(operations) })
    }

    /// The `/v1` routes.
    pub fn router(&self) -> axum::Router {
        let mut router = axum::Router::new();
        for (index, resolved) in self.operations.iter().enumerate() {
            let filter = match resolved.operation.method {
                "get" => MethodFilter::GET,
                "post" => MethodFilter::POST,
                "patch" => MethodFilter::PATCH,
                "put" => MethodFilter::PUT,
                _ => MethodFilter::DELETE,
            };
            let rest = self.clone();
            let handler = move |path: Path<Vec<(String, String)>>, request: Request| {
                let rest = rest.clone();
                async move { rest.handle(index, path.0, request).await }
            };
            router = router.route(resolved.operation.path, on(filter, handler));
        }
        router
    }

    async fn handle(&self, index: usize, params: Vec<(String, String)>, request: Request) -> Response {
        let Some(resolved) = self.operations.get(index) else {
            return Problem::new(StatusCode::NOT_FOUND, Code::NotFound, "no such operation").into_response();
        };
        match transcode(resolved, params, request).await {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        }
    }
}

/// A page of a list: where it starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Items skipped.
    pub offset: usize,
    /// Items in the page at most.
    pub size: usize,
}

impl Page {
    /// Reads `page_size` and `page_token`.
    pub fn parse(size: Option<&str>, token: Option<&str>) -> Result<Self, String> {
        let size = match size {
            None => DEFAULT_PAGE_SIZE,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| format!("page_size must be a number from 1 to {MAX_PAGE_SIZE}"))?,
        };
        let offset = match token {
            None | Some("") => 0,
            Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse().ok()))
                .ok_or_else(|| "page_token is not one this API gave out: start again without it".to_owned())?,
        };
        Ok(Self { offset, size })
    }

    /// The token of the page after this one.
    pub fn next_token(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{}", self.offset + self.size))
    }

    /// Cuts `items` to this page; returns the next page's token when there is more.
    pub fn apply(&self, items: &mut Vec<serde_json::Value>) -> Option<String> {
        let total = items.len();
        let end = self.offset.saturating_add(self.size).min(total);
        let start = self.offset.min(total);
        items.truncate(end);
        items.drain(..start);
        (end < total).then(|| self.next_token())
    }
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, detail)
}

/// A query parameter as the JSON value of `field`.
fn query_value(kind: &Kind, value: &str) -> Result<serde_json::Value, String> {
    match kind {
        Kind::Bool => match value {
            "true" => Ok(serde_json::Value::Bool(true)),
            "false" => Ok(serde_json::Value::Bool(false)),
            _ => Err(format!("{value:?} is not true or false")),
        },
        _ => Ok(serde_json::Value::String(value.to_owned())),
    }
}

/// Where in `value` a null is, if anywhere (`tags[2].name`).
fn null_at(value: &serde_json::Value, at: String) -> Option<String> {
    match value {
        serde_json::Value::Null => Some(if at.is_empty() { "the body".to_owned() } else { at }),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| null_at(item, format!("{at}[{i}]")))
        }
        serde_json::Value::Object(map) => map
            .iter()
            .find_map(|(key, item)| null_at(item, if at.is_empty() { key.clone() } else { format!("{at}.{key}") })),
        _ => None,
    }
}

/// The request message (of type `input`) for `resolved`, from path, query
/// and body. Query parameters named in `skip` (those of the other mode of a
/// followable list) are left out.
fn request_message(
    resolved: &Resolved,
    input: MessageDescriptor,
    params: Vec<(String, String)>,
    query: &[(String, String)],
    body: &Bytes,
    skip: &[String],
) -> Result<DynamicMessage, Problem> {
    let mut json = if fields_in_query(&resolved.operation) {
        serde_json::Map::new()
    } else if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("this operation takes a JSON object as its body (`{}` at least)"));
    } else {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(bad_request("the body must be a JSON object")),
            Err(error) => return Err(bad_request(format!("the body is not JSON: {error}"))),
        }
    };
    // proto3 JSON reads null as "unset"; the API says what a field is, so
    // null is refused rather than silently taken for a default.
    if let Some(path) = null_at(&serde_json::Value::Object(json.clone()), String::new()) {
        return Err(bad_request(format!("{path} is null: leave the field out instead")));
    }
    if fields_in_query(&resolved.operation) {
        for (key, value) in query {
            if (matches!(key.as_str(), "page_size" | "page_token") && resolved.operation.list.is_some())
                || skip.contains(key)
            {
                continue;
            }
            let field = input
                .get_field_by_name(key)
                .or_else(|| input.get_field_by_json_name(key))
                .filter(|f| !path_params(resolved.operation.path).any(|p| p == f.name()))
                .ok_or_else(|| bad_request(format!("unknown query parameter {key:?}")))?;
            let value = query_value(&field.kind(), value).map_err(|e| bad_request(format!("{key}: {e}")))?;
            json.insert(field.json_name().to_owned(), value);
        }
    }
    for (name, value) in params {
        let field = input.get_field_by_name(&name).ok_or_else(|| bad_request(format!("unknown parameter {name}")))?;
        json.remove(field.name());
        json.insert(field.json_name().to_owned(), serde_json::Value::String(value));
    }
    DynamicMessage::deserialize_with_options(
        input,
        serde_json::Value::Object(json),
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|error| bad_request(format!("invalid request: {error}")))
}

async fn transcode(resolved: &Resolved, params: Vec<(String, String)>, request: Request) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 4 * 1024 * 1024)
        .await
        .map_err(|e| Problem::new(StatusCode::PAYLOAD_TOO_LARGE, Code::InvalidArgument, e.to_string()))?;
    let query: Vec<(String, String)> =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let page = if resolved.operation.list.is_some() {
        Some(Page::parse(get("page_size"), get("page_token")).map_err(bad_request)?)
    } else {
        None
    };
    let follow = match (&resolved.follow, get("follow")) {
        (Some(method), Some("true")) => Some(method.clone()),
        (Some(_), None | Some("false")) => None,
        (Some(_), Some(other)) => return Err(bad_request(format!("follow: {other:?} is not true or false"))),
        (None, _) => None,
    };
    let input = follow.as_ref().map_or_else(|| resolved.method.input(), MethodDescriptor::input);
    // Parameters of the other mode of a followable list are not errors here.
    let skip: Vec<String> = match &resolved.follow {
        Some(streaming) => {
            let other = if follow.is_some() { resolved.method.input() } else { streaming.input() };
            other.fields().map(|f| f.name().to_owned()).chain(["follow".to_owned()]).collect()
        }
        None => Vec::new(),
    };
    let message = request_message(resolved, input, params, &query, &body, &skip)?;

    let mut call = tonic::Request::new(message);
    if follow.is_none() {
        call.set_timeout(CALL_TIMEOUT);
    }
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Ok(value) = value.parse()
    {
        call.metadata_mut().insert("authorization", value);
    }
    if let Some(caller) = parts.extensions.get::<Caller>() {
        call.extensions_mut().insert(caller.clone());
    }
    let path = format!("/{}", resolved.operation.rpc)
        .parse()
        .map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, "bad method path"))?;
    if let Some(streaming) = follow {
        let path = format!("/{}/{}", streaming.parent_service().full_name(), streaming.name())
            .parse()
            .map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, "bad method path"))?;
        let codec = DynamicCodec(streaming.output());
        let stream = match resolved.target.clone() {
            Some(Target::Remote(channel)) => server_streaming(channel, call, path, codec).await,
            Some(Target::Local(server)) => server_streaming(server, call, path, codec).await,
            None => Err(Status::unavailable(format!(
                "no {} service is configured behind this gateway",
                concern_of_rpc(resolved.operation.rpc)
            ))),
        }
        .map_err(|status| Problem::from_status(&status))?;
        return Ok(crate::sse::response(stream));
    }
    let codec = DynamicCodec(resolved.method.output());
    let reply = match resolved.target.clone() {
        None => {
            let concern = concern_of_rpc(resolved.operation.rpc);
            return Err(Problem::from_status(&Status::unavailable(format!(
                "no {concern} service is configured behind this gateway"
            ))));
        }
        Some(Target::Remote(channel)) => unary(channel, call, path, codec).await,
        Some(Target::Local(server)) => unary(server, call, path, codec).await,
    };
    let reply = reply.map_err(|status| Problem::from_status(&status))?;
    let status = StatusCode::from_u16(resolved.operation.status).unwrap_or(StatusCode::OK);
    if status == StatusCode::NO_CONTENT {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut json = serde_json::to_value(&reply).map_err(|e| {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, format!("cannot encode the reply: {e}"))
    })?;
    if let (Some(page), Some(list)) = (page, resolved.operation.list)
        && let serde_json::Value::Object(map) = &mut json
    {
        let mut items = match map.remove(list) {
            Some(serde_json::Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let next = page.apply(&mut items);
        map.insert(list.to_owned(), serde_json::Value::Array(items));
        if let Some(next) = next {
            map.insert("nextPageToken".to_owned(), serde_json::Value::String(next));
        }
    }
    Ok(json_response(status, &json))
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(axum::body::Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn unary<T>(
    service: T,
    call: tonic::Request<DynamicMessage>,
    path: axum::http::uri::PathAndQuery,
    codec: DynamicCodec,
) -> Result<DynamicMessage, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body, ResponseBody = tonic::body::Body>,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("the service is unavailable: {}", e.into())))?;
    Ok(grpc.unary(call, path, codec).await?.into_inner())
}

async fn server_streaming<T>(
    service: T,
    call: tonic::Request<DynamicMessage>,
    path: axum::http::uri::PathAndQuery,
    codec: DynamicCodec,
) -> Result<tonic::Streaming<DynamicMessage>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body, ResponseBody = tonic::body::Body>,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("the service is unavailable: {}", e.into())))?;
    Ok(grpc.server_streaming(call, path, codec).await?.into_inner())
}

/// Encodes and decodes dynamic messages of one reply type.
#[derive(Debug, Clone)]
struct DynamicCodec(MessageDescriptor);

#[derive(Debug)]
struct DynamicEncoder;

#[derive(Debug)]
struct DynamicDecoder(MessageDescriptor);

impl tonic::codec::Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.0.clone())
    }
}

impl tonic::codec::Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

impl tonic::codec::Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the reply: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_names_a_unary_method_and_its_path_fields() -> Result<(), RestError> {
        let pool = descriptors()?;
        for operation in OPERATIONS {
            let method = method_of(&pool, operation).ok_or(RestError::UnknownMethod(operation.rpc))?;
            assert!(!method.is_client_streaming() && !method.is_server_streaming(), "{}", operation.rpc);
            for param in path_params(operation.path) {
                assert!(method.input().get_field_by_name(param).is_some(), "{}: no field {param}", operation.rpc);
            }
            if let Some(list) = operation.list {
                let field = method.output().fields().find(|f| f.json_name() == list);
                assert!(field.is_some_and(|f| f.is_list()), "{}: no list {list}", operation.rpc);
            }
        }
        Ok(())
    }

    #[test]
    fn pages_cut_lists_and_tokens_round_trip() -> Result<(), String> {
        let mut items: Vec<serde_json::Value> = (0..5).map(serde_json::Value::from).collect();
        let first = Page::parse(Some("2"), None)?;
        let next = first.apply(&mut items).ok_or("a next page")?;
        assert_eq!(items, vec![serde_json::Value::from(0), serde_json::Value::from(1)]);
        let mut items: Vec<serde_json::Value> = (0..5).map(serde_json::Value::from).collect();
        let last = Page::parse(Some("3"), Some(&next))?;
        assert_eq!(last.apply(&mut items), None);
        assert_eq!(items, vec![serde_json::Value::from(2), serde_json::Value::from(3), serde_json::Value::from(4)]);
        assert!(Page::parse(Some("0"), None).is_err());
        assert!(Page::parse(Some("501"), None).is_err());
        assert!(Page::parse(None, Some("garbage!")).is_err());
        assert!(Page::parse(Some(""), None).is_err());
        assert_eq!(Page::parse(None, Some(""))?, Page { offset: 0, size: DEFAULT_PAGE_SIZE });
        assert_eq!(null_at(&serde_json::json!({"a": [1, {"b": null}]}), String::new()).as_deref(), Some("a[1].b"));
        assert_eq!(null_at(&serde_json::json!({"a": [1, {"b": 2}]}), String::new()), None);
        Ok(())
    }
}
