//! The web console: server-rendered pages (no front-end build) on the
//! gateway's port under `/console`. Sign in with an API token (kept in an
//! HttpOnly, SameSite=Strict cookie and checked like any call on every
//! request), then see the team's apps with their status, an app's releases,
//! instances, routes, checks and databases (the overview), the live event
//! feed and the catalog; deploy an earlier release and scale from the page.
//! Every read and change goes to the concern's own API with the caller's
//! identity, exactly as the CLI's would.

use std::fmt::Write as _;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt;
use strata_kit::identity::BearerToken;
use strata_proto::{
    compute::v1::{self as cpb, compute_service_client::ComputeServiceClient},
    gateway::v1 as pb,
    observe::v1::{self as opb, observe_service_client::ObserveServiceClient},
};
use tonic::{Status, service::interceptor::InterceptedService};

use crate::{
    app::{Caller, Gateway, GatewayError},
    auth::Auth,
    overview::Aggregator,
    proxy::{Upstream, Upstreams},
};

/// The cookie the console keeps the API token in.
const COOKIE: &str = "strata_console";

/// What the console's handlers share.
#[derive(Debug, Clone)]
pub struct Console {
    /// Checks the signed-in token.
    pub gateway: Gateway,
    /// Signs the identity the console calls with.
    pub auth: Auth,
    /// The app overview and the catalog.
    pub aggregator: Aggregator,
    /// The concerns' channels.
    pub upstreams: Upstreams,
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/console", get(home))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/apps/{app}", get(app_page))
        .route("/console/apps/{app}/scale", post(scale))
        .route("/console/apps/{app}/deploy", post(deploy_release))
        .route("/console/catalog", get(catalog))
        .route("/console/events", get(events))
        .route("/console/events/stream", get(events_stream))
        .with_state(console)
}

/// Text made safe for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `APP_STATUS_RUNNING` → `running`.
fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase().replace('_', " ")
}

fn page(status: StatusCode, title: &str, caller: Option<&Caller>, body: &str) -> Response {
    let nav = match caller {
        Some(c) => format!(
            "<nav><a href=\"/console\">Apps</a> <a href=\"/console/events\">Events</a> \
             <a href=\"/console/catalog\">Catalog</a> <span class=\"who\">{} · team <b>{}</b> · {}</span> \
             <form method=\"post\" action=\"/console/logout\" class=\"inline\"><button>Sign out</button></form></nav>",
            escape(&c.subject),
            escape(&c.team),
            escape(&format!("{:?}", c.role).to_lowercase())
        ),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · Strata</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>\
         <body><header><h1>Strata</h1>{nav}</header><main><h2>{title}</h2>{body}</main></body></html>",
        title = escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"),
    );
    response
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330}header{background:#1d2330;color:#fff;\
padding:.6rem 1.2rem;display:flex;gap:2rem;align-items:center}header h1{font-size:1.2rem;margin:0}nav a{color:#9cd;\
margin-right:1rem}nav .who{color:#ccc;margin:0 1rem}main{padding:1rem 1.2rem}table{border-collapse:collapse;\
margin-bottom:1.2rem}td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left}.inline{display:inline}\
.ok{color:#087f23}.bad{color:#b00020}.warn{background:#fff4ce;padding:.5rem;border:1px solid #e0c060}\
button{cursor:pointer}section{margin-bottom:1.5rem}";

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
    })
}

/// A refusal to change state for a request from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), host) {
        (Some(origin), Some(host)) => origin.split("://").nth(1) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The signed-in caller and its identity token, or the sign-in page.
async fn signed_in(console: &Console, headers: &HeaderMap) -> Result<(Caller, String), Response> {
    let Some(secret) = cookie_token(headers) else { return Err(login_page(StatusCode::OK, None)) };
    let caller = match console.gateway.authenticate(&secret, None).await {
        Ok(caller) => caller,
        Err(error) => {
            tracing::warn!(reason = %error, "console sign-in refused");
            return Err(login_page(StatusCode::UNAUTHORIZED, Some(&error.to_string())));
        }
    };
    let identity = console
        .auth
        .identity(&caller)
        .map_err(|e| error_page(&caller, GatewayError::Internal(format!("cannot sign an identity: {e}"))))?;
    Ok((caller, identity))
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=\"bad\">{}</p>", escape(e))).unwrap_or_default();
    page(
        status,
        "Sign in",
        None,
        &format!(
            "{error}<form method=\"post\" action=\"/console/login\"><p><label>API token <input name=\"token\" \
             type=\"password\" size=\"60\" autocomplete=\"off\" placeholder=\"strata_...\" required></label></p>\
             <p><button type=\"submit\">Sign in</button></p></form>\
             <p>Use the admin token `strata up` printed, or one from <code>strata tokens create</code>.</p>"
        ),
    )
}

fn error_page(caller: &Caller, error: GatewayError) -> Response {
    status_page(caller, &Status::from(error))
}

fn status_page(caller: &Caller, status: &Status) -> Response {
    let problem = crate::problem::Problem::from_status(status);
    page(
        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY),
        &problem.title,
        Some(caller),
        &format!("<p class=\"bad\">{}</p><p><a href=\"/console\">Back to the apps</a></p>", escape(&problem.detail)),
    )
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn compute(
    console: &Console,
    identity: &str,
) -> Result<ComputeServiceClient<InterceptedService<Upstream, BearerToken>>, Status> {
    let channel =
        console.upstreams.get("compute").ok_or_else(|| Status::unavailable("no compute service configured"))?;
    let bearer = BearerToken::new(identity).map_err(|e| Status::internal(e.to_string()))?;
    Ok(ComputeServiceClient::with_interceptor(channel, bearer))
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn home(State(console): State<Console>, headers: HeaderMap) -> Response {
    let (caller, identity) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let apps = match compute(&console, &identity) {
        Ok(mut client) => client.list_apps(cpb::ListAppsRequest {}).await.map(|r| r.into_inner().apps),
        Err(status) => Err(status),
    };
    let apps = match apps {
        Ok(apps) => apps,
        Err(status) => return status_page(&caller, &status),
    };
    let mut body = String::new();
    if apps.is_empty() {
        body.push_str("<p>No apps yet: <code>strata deploy examples/python-hello</code></p>");
    } else {
        body.push_str("<table><tr><th>App</th><th>Status</th><th>Release</th><th>Instances</th></tr>");
        for app in &apps {
            let status = enum_name(app.status().as_str_name(), "APP_STATUS_");
            let class = if app.status() == cpb::AppStatus::CrashLoop { "bad" } else { "ok" };
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/apps/{name}\">{name}</a></td><td class=\"{class}\">{status}</td>\
                 <td>v{release}</td><td>{running}/{desired}</td></tr>",
                name = escape(&app.name),
                release = app.release_version,
                running = app.running_instances,
                desired = app.desired_instances,
            );
        }
        body.push_str("</table>");
    }
    page(StatusCode::OK, "Apps", Some(&caller), &body)
}

async fn login(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    if cross_site(&headers) {
        return login_page(StatusCode::FORBIDDEN, Some("sign-in from another site refused"));
    }
    let Some(token) = form(&body).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v.trim().to_owned()) else {
        return login_page(StatusCode::BAD_REQUEST, Some("give an API token"));
    };
    if let Err(error) = console.gateway.authenticate(&token, None).await {
        tracing::warn!(reason = %error, "console sign-in refused");
        return login_page(StatusCode::UNAUTHORIZED, Some(&error.to_string()));
    }
    let mut response = redirect("/console");
    if let Ok(cookie) =
        HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age=43200"))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout(headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return login_page(StatusCode::FORBIDDEN, Some("sign-out from another site refused"));
    }
    let mut response = redirect("/console");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("strata_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn app_page(State(console): State<Console>, Path(app): Path<String>, headers: HeaderMap) -> Response {
    let (caller, identity) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let overview = match console.aggregator.app_overview(&identity, &app).await {
        Ok(overview) => overview,
        Err(error) => return error_page(&caller, error),
    };
    page(StatusCode::OK, &app, Some(&caller), &render_overview(&overview))
}

/// The overview of an app as HTML.
pub fn render_overview(overview: &pb::AppOverview) -> String {
    let mut body = String::new();
    if overview.partial {
        body.push_str("<p class=\"warn\">Partial: ");
        for u in &overview.unavailable {
            let _ = write!(body, "<b>{}</b> did not answer ({}). ", escape(&u.concern), escape(&u.message));
        }
        body.push_str("</p>");
    }
    let Some(app) = &overview.app else { return body };
    let name = escape(&app.name);
    let _ = write!(
        body,
        "<section><p>Status <b>{status}</b>, release <b>v{release}</b>, {running} of {desired} instances running.</p>\
         <form method=\"post\" action=\"/console/apps/{name}/scale\"><label>Instances \
         <input name=\"instances\" type=\"number\" min=\"0\" max=\"100\" value=\"{desired}\"></label> \
         <button type=\"submit\">Scale</button></form></section>",
        status = enum_name(app.status().as_str_name(), "APP_STATUS_"),
        release = app.release_version,
        running = app.running_instances,
        desired = app.desired_instances,
    );
    body.push_str("<section><h3>Releases</h3><table><tr><th>Version</th><th>Build</th><th>Command</th><th></th></tr>");
    for release in &overview.releases {
        let action = if release.version == app.release_version {
            "current".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/console/apps/{name}/deploy\" class=\"inline\">\
                 <input type=\"hidden\" name=\"version\" value=\"{v}\"><button type=\"submit\">Deploy v{v}</button></form>",
                v = release.version
            )
        };
        let _ = write!(
            body,
            "<tr><td>v{}</td><td>{}</td><td><code>{}</code></td><td>{action}</td></tr>",
            release.version,
            escape(&release.buildpack),
            escape(&release.command)
        );
    }
    body.push_str("</table></section><section><h3>Instances</h3><table><tr><th>Id</th><th>Release</th><th>State</th><th>Address</th><th>Restarts</th></tr>");
    for instance in &overview.instances {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>v{}</td><td>{}</td><td>{}:{}</td><td>{}</td></tr>",
            escape(&instance.id),
            instance.release_version,
            enum_name(instance.state().as_str_name(), "INSTANCE_STATE_"),
            escape(&instance.host),
            instance.port,
            instance.restarts
        );
    }
    body.push_str("</table></section><section><h3>Routes</h3><table><tr><th>Name</th><th>Host</th><th>Path</th><th>Backends</th></tr>");
    for route in &overview.routes {
        let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
        let backends: Vec<String> = route
            .backends
            .iter()
            .map(|b| {
                let release = if b.release == 0 { "current release".to_owned() } else { format!("v{}", b.release) };
                let share = (u64::from(b.weight) * 100).checked_div(total).unwrap_or(0);
                format!("{} {release} ({share}%)", escape(&b.app))
            })
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&route.name),
            escape(&route.host),
            escape(&route.path_prefix),
            backends.join(", "),
        );
    }
    body.push_str(
        "</table></section><section><h3>Checks</h3><table><tr><th>Name</th><th>Target</th><th>State</th></tr>",
    );
    for check in &overview.checks {
        let state = enum_name(check.state().as_str_name(), "TARGET_STATE_");
        let class = match check.state() {
            opb::TargetState::Failing => "bad",
            opb::TargetState::Passing => "ok",
            _ => "",
        };
        let target = if check.url.is_empty() {
            format!("{} instance(s) of the app", check.targets.len())
        } else {
            check.url.clone()
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td></tr>",
            escape(&check.name),
            escape(&target)
        );
    }
    body.push_str(
        "</table></section><section><h3>Databases</h3><table><tr><th>Name</th><th>State</th><th>Plan</th></tr>",
    );
    for database in &overview.databases {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&database.name),
            enum_name(database.state().as_str_name(), "DATABASE_STATE_"),
            escape(&database.plan)
        );
    }
    body.push_str("</table></section>");
    body
}

async fn scale(State(console): State<Console>, Path(app): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if cross_site(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let (caller, identity) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let Some(instances) = form(&body).into_iter().find(|(k, _)| k == "instances").and_then(|(_, v)| v.parse().ok())
    else {
        return error_page(&caller, GatewayError::InvalidArgument("give a number of instances".to_owned()));
    };
    let result = match compute(&console, &identity) {
        Ok(mut client) => client.scale(cpb::ScaleRequest { app: app.clone(), instances }).await.map(|_| ()),
        Err(status) => Err(status),
    };
    match result {
        Ok(()) => redirect(&format!("/console/apps/{}", url_segment(&app))),
        Err(status) => status_page(&caller, &status),
    }
}

async fn deploy_release(
    State(console): State<Console>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if cross_site(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let (caller, identity) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let Some(version) = form(&body).into_iter().find(|(k, _)| k == "version").and_then(|(_, v)| v.parse().ok()) else {
        return error_page(&caller, GatewayError::InvalidArgument("give a release version".to_owned()));
    };
    let outcome = async {
        let mut client = compute(&console, &identity)?;
        let mut progress = client.rollback(cpb::RollbackRequest { app: app.clone(), version }).await?.into_inner();
        while let Some(step) = progress.next().await {
            if let Some(cpb::deploy_progress::Event::Deployment(deployment)) = step?.event {
                return Ok(deployment);
            }
        }
        Err(Status::internal("the deployment ended without an outcome"))
    };
    match outcome.await {
        Ok(deployment) if deployment.status() == cpb::DeploymentStatus::Succeeded => {
            redirect(&format!("/console/apps/{}", url_segment(&app)))
        }
        Ok(deployment) => error_page(
            &caller,
            GatewayError::FailedPrecondition(format!("the deployment of v{version} failed: {}", deployment.reason)),
        ),
        Err(status) => status_page(&caller, &status),
    }
}

fn url_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn catalog(State(console): State<Console>, headers: HeaderMap) -> Response {
    let (caller, _) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let catalog = console.aggregator.catalog().await;
    let mut body = String::from(
        "<table><tr><th>Offering</th><th>Owner</th><th>Model</th><th>Health</th><th>Version</th><th>API</th><th>How to use</th></tr>",
    );
    for offering in &catalog.offerings {
        let health = enum_name(offering.health().as_str_name(), "HEALTH_");
        let class = match offering.health() {
            pb::Health::Serving => "ok",
            pb::Health::NotServing | pb::Health::Unreachable => "bad",
            _ => "",
        };
        let _ = write!(
            body,
            "<tr><td><b>{}</b><br>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{health}</td><td>{}</td>\
             <td>{}</td><td><code>{}</code></td></tr>",
            escape(&offering.name),
            escape(&offering.description),
            escape(&offering.owner_team),
            enum_name(offering.sharing_model().as_str_name(), "SHARING_MODEL_"),
            escape(&offering.version),
            escape(&offering.api),
            escape(&offering.how_to_use),
        );
    }
    body.push_str("</table>");
    page(StatusCode::OK, "Catalog", Some(&caller), &body)
}

fn observe(
    console: &Console,
    identity: &str,
) -> Result<ObserveServiceClient<InterceptedService<Upstream, BearerToken>>, Status> {
    let channel =
        console.upstreams.get("observe").ok_or_else(|| Status::unavailable("no observe service configured"))?;
    let bearer = BearerToken::new(identity).map_err(|e| Status::internal(e.to_string()))?;
    Ok(ObserveServiceClient::with_interceptor(channel, bearer))
}

fn event_row(event: &opb::Event) -> String {
    let time = event.time.as_ref().and_then(|t| u64::try_from(t.seconds).ok()).map(rfc3339).unwrap_or_default();
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&time),
        escape(&event.r#type),
        escape(&event.app),
        escape(&event.subject)
    )
}

/// `2026-11-26T09:00:00Z` for Unix `seconds`.
pub fn rfc3339(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rem = seconds % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

async fn events(State(console): State<Console>, headers: HeaderMap) -> Response {
    let (caller, identity) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let latest = match observe(&console, &identity) {
        Ok(mut client) => client
            .list_events(opb::ListEventsRequest { limit: 50, ..Default::default() })
            .await
            .map(|r| r.into_inner().events),
        Err(status) => Err(status),
    };
    let mut body = String::new();
    match latest {
        Ok(events) => {
            body.push_str(
                "<table><thead><tr><th>Time</th><th>Event</th><th>App</th><th>Subject</th></tr></thead><tbody id=\"feed\">",
            );
            for event in events.iter().rev() {
                body.push_str(&event_row(event));
            }
            body.push_str("</tbody></table>");
            // The live part: new events as they happen, newest first.
            body.push_str(
                "<script>const feed=document.getElementById('feed');\
                 const source=new EventSource('/console/events/stream');\
                 source.addEventListener('row',e=>{feed.insertAdjacentHTML('afterbegin',e.data)});</script>",
            );
        }
        Err(status) => {
            let _ = write!(body, "<p class=\"warn\">The event log is unavailable: {}</p>", escape(status.message()));
        }
    }
    page(StatusCode::OK, "Events", Some(&caller), &body)
}

/// New events as server-sent `row` events holding a rendered table row.
async fn events_stream(State(console): State<Console>, headers: HeaderMap) -> Response {
    let (caller, identity) = match signed_in(&console, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let stream = match observe(&console, &identity) {
        Ok(mut client) => client.follow_events(opb::FollowEventsRequest::default()).await.map(|r| r.into_inner()),
        Err(status) => Err(status),
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(status) => return status_page(&caller, &status),
    };
    let rows = stream.map(|event| {
        let chunk = match event {
            Ok(event) => format!("event: row\ndata: {}\n\n", event_row(&event)),
            Err(status) => format!("event: error\ndata: {}\n\n", escape(status.message())),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(chunk))
    });
    let mut response = Response::new(axum::body::Body::from_stream(rows));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_dates_are_rfc3339() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_683_600), "2026-11-26T09:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn only_our_own_cookie_and_same_site_posts_count() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b; strata_console=strata_xyz; c=d"));
        assert_eq!(cookie_token(&headers).as_deref(), Some("strata_xyz"));
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8700"));
        assert!(!cross_site(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8700"));
        assert!(!cross_site(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cross_site(&headers));
    }
}
