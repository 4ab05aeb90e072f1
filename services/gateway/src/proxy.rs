//! The gRPC pass-through: each call goes, unary or streaming, to the service
//! owning its package (`/strata.<concern>.v1.<Service>/<Method>`), with the
//! identity token the authentication layer put in place of the API token.
//!
//! Each upstream is a small fixed set of HTTP/2 connections, picked in turn,
//! each driven by one task. A call is opened on one of them from the task
//! serving it — no buffer or balancer task in front (as tonic's `Channel`
//! has), no dispatch task and per-call response task (as hyper's client
//! has): on a two-core gateway those hops cost more than the HTTP/2 work
//! itself. Bodies are forwarded as streams, both ways, with HTTP/2 flow
//! control, so server-, client- and bidirectional streaming calls pass
//! through like unary ones. A connection is made on first use and again,
//! lazily, once it has closed; one that stops answering pings is dropped; an
//! upstream that is down answers UNAVAILABLE.
//!
//! The same connections serve the gateway's own calls to the concerns (app
//! overview, catalog, REST, console): [`Upstream`] is a tower service tonic
//! clients run on.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::poll_fn,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{HeaderMap, Request, Response, Uri, Version, header, uri},
    response::IntoResponse,
};
use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use http_body::{Body as _, Frame};
use tokio::net::TcpStream;

use crate::auth::Auth;

/// Connections kept to each upstream. One HTTP/2 connection is driven by one
/// task, so one is not enough for a gateway on several cores; more than a
/// few only spreads the same calls thinner, and fewer, fuller connections
/// write several calls' frames per system call.
const CONNECTIONS: usize = 2;
/// How long connecting to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connection is pinged, to notice a peer that went away
/// without closing it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows (hyper's defaults: the protocol's 64 KiB would
/// throttle a source upload through the gateway).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The connections to each concern's service, by concern name.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    upstreams: Arc<BTreeMap<String, Upstream>>,
}

/// An upstream URL that is not one.
#[derive(Debug, thiserror::Error)]
#[error("upstream {concern}: invalid URL {url:?}: {reason}")]
pub struct InvalidUpstream {
    pub concern: String,
    pub url: String,
    pub reason: &'static str,
}

impl Upstreams {
    /// Upstreams at `urls` (concern → `http://host:port`), connected on
    /// first use: an upstream that is down now is tried again on each call.
    pub fn new(urls: &BTreeMap<String, String>) -> Result<Self, InvalidUpstream> {
        let upstreams = urls
            .iter()
            .map(|(concern, url)| Ok((concern.clone(), Upstream::new(concern, url)?)))
            .collect::<Result<_, InvalidUpstream>>()?;
        Ok(Self { upstreams: Arc::new(upstreams) })
    }

    /// The upstream serving `concern`.
    pub fn get(&self, concern: &str) -> Option<Upstream> {
        self.upstreams.get(concern).cloned()
    }
}

/// One concern's service: a few HTTP/2 connections to it, used in turn.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("concern", &self.pool.concern).field("at", &self.pool.address).finish()
    }
}

struct Pool {
    concern: String,
    /// `host:port`, as given.
    address: String,
    /// The same, as the requests' `:authority`.
    authority: uri::Authority,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// One connection slot: the live connection, if any.
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Live>>,
    /// Held while connecting, so that concurrent calls wait for one
    /// connection instead of each making their own.
    connecting: tokio::sync::Mutex<()>,
    /// The last failed attempt to connect: when, and why. The calls that
    /// waited on it fail with it rather than each trying (and, against an
    /// address that drops packets, waiting out the timeout) in turn.
    failed: Mutex<Option<(Instant, String)>>,
}

/// A connection: where calls are opened, and whether its task has ended.
#[derive(Clone)]
struct Live {
    sender: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// Why a call did not reach its upstream, or broke on the way.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the {concern} service at {address}: {source}")]
    Connect { concern: String, address: String, source: std::io::Error },
    #[error("the {concern} service at {address} did not accept a connection within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { concern: String, address: String },
    /// A call that waited on another's attempt to connect, which failed.
    #[error("{0}")]
    Unreachable(String),
    #[error("the {concern} service: {source}")]
    Http { concern: String, source: h2::Error },
}

impl Upstream {
    fn new(concern: &str, url: &str) -> Result<Self, InvalidUpstream> {
        let invalid = |reason| InvalidUpstream { concern: concern.to_owned(), url: url.to_owned(), reason };
        let parsed: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if parsed.scheme() != Some(&uri::Scheme::HTTP) {
            return Err(invalid("use http://host:port (the gateway speaks plain HTTP/2 to the services)"));
        }
        let host = parsed.host().ok_or_else(|| invalid("no host"))?;
        let address = format!("{host}:{}", parsed.port_u16().unwrap_or(80));
        let authority = address.parse().map_err(|_| invalid("not a host:port"))?;
        let pool = Pool {
            concern: concern.to_owned(),
            address,
            authority,
            slots: (0..CONNECTIONS).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        };
        Ok(Self { pool: Arc::new(pool) })
    }

    /// Sends `request` (origin-form: only its path is used) and returns the
    /// response as it starts; the bodies both ways stream.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<H2Body>, UpstreamError> {
        let (mut head, body) = request.into_parts();
        let mut parts = std::mem::take(&mut head.uri).into_parts();
        parts.scheme = Some(uri::Scheme::HTTP);
        parts.authority = Some(self.pool.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
        }
        // Scheme, authority and path are all set: this cannot fail.
        head.uri = Uri::from_parts(parts).unwrap_or_default();
        if head.version != Version::HTTP_2 {
            strip_connection_headers(&mut head.headers);
            head.version = Version::HTTP_2;
        }

        let slot = self.pool.pick();
        let live = slot.live(&self.pool).await?;
        let mut sender = match live.sender.ready().await {
            Ok(sender) => sender,
            // The connection closed since (the service restarted, say):
            // once more on a new one.
            Err(_) => {
                live.closed.store(true, Ordering::Release);
                slot.live(&self.pool).await?.sender.ready().await.map_err(|e| self.pool.http_error(e))?
            }
        };
        let end = body.is_end_stream();
        let (response, stream) =
            sender.send_request(Request::from_parts(head, ()), end).map_err(|e| self.pool.http_error(e))?;
        let response = if end {
            response.await
        } else {
            // Send the body while waiting for the answer; a body still
            // going when the answer starts (a bidirectional stream) goes on
            // in a task of its own.
            let pipe = Box::pin(pipe(body, stream));
            match futures::future::select(pipe, response).await {
                Either::Left(((), response)) => response.await,
                Either::Right((response, pipe)) => {
                    tokio::spawn(pipe);
                    response
                }
            }
        };
        let response = response.map_err(|e| self.pool.http_error(e))?;
        Ok(response.map(H2Body::new))
    }
}

impl Pool {
    fn pick(&self) -> &Slot {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.slots[n % self.slots.len()]
    }

    fn http_error(&self, source: h2::Error) -> UpstreamError {
        UpstreamError::Http { concern: self.concern.clone(), source }
    }

    async fn connect(&self) -> Result<Live, UpstreamError> {
        let (concern, address) = (self.concern.clone(), self.address.clone());
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(UpstreamError::Connect { concern, address, source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout { concern, address }),
        };
        // Calls are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|source| self.http_error(source))?;
        tracing::debug!(%concern, %address, "connected to upstream");
        let closed = Arc::new(AtomicBool::new(false));
        let ended = closed.clone();
        tokio::spawn(async move {
            let outcome = drive(connection).await;
            ended.store(true, Ordering::Release);
            match outcome {
                Ok(()) => tracing::debug!(%concern, %address, "upstream connection closed"),
                Err(error) => tracing::info!(%concern, %address, %error, "upstream connection lost"),
            }
        });
        Ok(Live { sender, closed })
    }
}

/// Runs a connection until it closes, pinging it every so often and giving
/// up on it when a ping goes unanswered.
async fn drive(mut connection: h2::client::Connection<TcpStream, Bytes>) -> Result<(), String> {
    let Some(mut pings) = connection.ping_pong() else {
        return connection.await.map_err(|e| e.to_string());
    };
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE_INTERVAL, KEEP_ALIVE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(KEEP_ALIVE_TIMEOUT);
    tokio::pin!(deadline);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            closed = &mut connection => return closed.map_err(|e| e.to_string()),
            pong = poll_fn(|cx| pings.poll_pong(cx)), if awaiting_pong => {
                pong.map_err(|e| e.to_string())?;
                awaiting_pong = false;
            }
            () = &mut deadline, if awaiting_pong => {
                return Err(format!("no answer to a ping within {} s", KEEP_ALIVE_TIMEOUT.as_secs()));
            }
            _ = every.tick(), if !awaiting_pong => {
                pings.send_ping(h2::Ping::opaque()).map_err(|e| e.to_string())?;
                deadline.as_mut().reset(tokio::time::Instant::now() + KEEP_ALIVE_TIMEOUT);
                awaiting_pong = true;
            }
        }
    }
}

impl Slot {
    /// The live connection, or a new one.
    async fn live(&self, pool: &Pool) -> Result<Live, UpstreamError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let asked = Instant::now();
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        if let Some(reason) = self.failed_since(asked) {
            return Err(UpstreamError::Unreachable(reason));
        }
        match pool.connect().await {
            Ok(live) => {
                if let Ok(mut slot) = self.live.lock() {
                    *slot = Some(live.clone());
                }
                Ok(live)
            }
            Err(error) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some((Instant::now(), error.to_string()));
                }
                Err(error)
            }
        }
    }

    /// Why connecting failed, if it did after `asked`.
    fn failed_since(&self, asked: Instant) -> Option<String> {
        let failed = self.failed.lock().ok()?;
        failed.as_ref().filter(|(at, _)| *at >= asked).map(|(_, reason)| reason.clone())
    }

    /// The slot's connection if its task still runs.
    fn current(&self) -> Option<Live> {
        self.live.lock().ok()?.as_ref().filter(|live| !live.closed.load(Ordering::Acquire)).cloned()
    }
}

/// Headers that only mean something on one HTTP/1 hop, which HTTP/2
/// forbids: a call that came in over HTTP/1.1 loses them on the way on.
pub(crate) fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::HOST] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
}

/// Forwards `body` on `stream` as its flow-control window allows, ending the
/// stream with the last data frame or the trailers; resets it if the body
/// fails, and stops if the upstream resets it.
pub(crate) async fn pipe(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            biased;
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "call body broke off; resetting the upstream call");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(granted)) => granted,
                        // Reset or closed under us: nothing more to send.
                        Some(Err(_)) | None => return,
                    };
                    let chunk = data.split_to(granted.min(data.len()));
                    // The last chunk of a body known to be complete ends the
                    // stream (a unary call: no empty frame after it).
                    let last = data.is_empty() && body.is_end_stream();
                    if stream.send_data(chunk, last).is_err() || last {
                        return;
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return;
                }
            }
        }
    }
}

/// A body streaming from an HTTP/2 peer (an upstream's response, or a call
/// the gateway's listener accepted), giving the window back as it is read.
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl H2Body {
    pub(crate) fn new(recv: h2::RecvStream) -> Self {
        Self { recv, data_done: false }
    }
}

impl std::fmt::Debug for H2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Body").finish_non_exhaustive()
    }
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// tonic clients (overview, catalog, REST, console) call through the same
/// connections.
impl<B> tower::Service<Request<B>> for Upstream
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<Self::Response, UpstreamError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let upstream = self.clone();
        Box::pin(async move {
            let response = upstream.send(request.map(Body::new)).await?;
            Ok(response.map(tonic::body::Body::new))
        })
    }
}

/// The concern a gRPC path belongs to: `/strata.compute.v1.X/Y` → `compute`.
pub fn concern_of(path: &str) -> Option<&str> {
    let service = path.strip_prefix('/')?.split('/').next()?;
    let mut parts = service.split('.');
    (parts.next()? == "strata").then_some(())?;
    parts.next()
}

/// A tower service authenticating each gRPC call ([`crate::auth`]) and
/// forwarding it to its concern's upstream. It authenticates by itself
/// rather than under the router's middleware: one layer less on the busiest
/// path.
pub fn service(
    upstreams: Upstreams,
    auth: Auth,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: axum::extract::Request| {
        let upstream = concern_of(request.uri().path()).and_then(|c| upstreams.get(c));
        let auth = auth.clone();
        async move { Ok::<_, Infallible>(pass_through(&auth, upstream, request).await) }
    })
}

/// Authenticates `request` and forwards it to `upstream`, the service of its
/// concern (none: no service serves it).
pub(crate) async fn pass_through(
    auth: &Auth,
    upstream: Option<Upstream>,
    request: axum::extract::Request,
) -> axum::response::Response {
    crate::auth::authenticated(auth, request, |request, _| forward(upstream, request)).await
}

/// Sends `request` to `upstream`, or says that no service serves it.
async fn forward(upstream: Option<Upstream>, request: axum::extract::Request) -> axum::response::Response {
    let Some(upstream) = upstream else {
        let path = request.uri().path();
        return if crate::auth::is_grpc(request.headers()) {
            tonic::Status::unimplemented(format!("no Strata service serves {path}")).into_http::<Body>()
        } else {
            crate::problem::Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                tonic::Code::NotFound,
                format!("no such resource: {} {path} (see /openapi.json)", request.method()),
            )
            .into_response()
        };
    };
    match upstream.send(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => {
            tracing::warn!(%error, "upstream unavailable");
            tonic::Status::unavailable(format!("the service behind this call is unavailable: {error}"))
                .into_http::<Body>()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_routed_by_their_package() {
        assert_eq!(concern_of("/strata.compute.v1.ComputeService/Deploy"), Some("compute"));
        assert_eq!(concern_of("/strata.traffic.v1.TrafficService/ListRoutes"), Some("traffic"));
        assert_eq!(concern_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(concern_of("/other.compute.v1.X/Y"), None);
        assert_eq!(concern_of(""), None);
    }

    #[test]
    fn upstreams_are_plain_http_urls() {
        let upstream = |url: &str| Upstream::new("compute", url);
        assert_eq!(upstream("http://127.0.0.1:8701").unwrap().pool.address, "127.0.0.1:8701");
        assert_eq!(upstream("http://compute").unwrap().pool.address, "compute:80");
        assert!(upstream("https://compute:8701").is_err());
        assert!(upstream("compute:8701").is_err());
        assert!(upstream("not a url").is_err());
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_is_unavailable() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let upstream = Upstream::new("compute", &format!("http://127.0.0.1:{port}")).unwrap();
        let request = Request::builder().uri("/strata.compute.v1.ComputeService/GetApp").body(Body::empty()).unwrap();
        assert!(matches!(upstream.send(request).await, Err(UpstreamError::Connect { .. })));

        // Calls waiting on one attempt share its failure.
        let calls = (0..20).map(|_| {
            let upstream = upstream.clone();
            let request = Request::builder().uri("/x.Y/Z").body(Body::empty()).unwrap();
            async move { upstream.send(request).await }
        });
        for result in futures::future::join_all(calls).await {
            assert!(matches!(result, Err(UpstreamError::Connect { .. } | UpstreamError::Unreachable(_))));
        }
    }

    /// A gRPC health service on `listener` until `stop`.
    fn serve(
        listener: tokio::net::TcpListener,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (_, health) = tonic_health::server::health_reporter();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
                .unwrap();
        })
    }

    #[tokio::test]
    async fn calls_reach_the_upstream_again_after_it_restarts() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Upstream::new("observe", &format!("http://{addr}")).unwrap();
        let mut client = HealthClient::new(upstream.clone());
        let check = || HealthCheckRequest { service: String::new() };

        let stop = tokio_util::sync::CancellationToken::new();
        let server = serve(listener, stop.clone());
        for _ in 0..CONNECTIONS * 2 {
            client.check(check()).await.unwrap();
        }
        stop.cancel();
        server.await.unwrap();

        // Once the gateway has seen the connections close, the next calls
        // open new ones to the restarted service.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while upstream.pool.slots.iter().any(|slot| slot.current().is_some()) {
            assert!(std::time::Instant::now() < deadline, "connections still open after the server stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let server = serve(tokio::net::TcpListener::bind(addr).await.unwrap(), stop.clone());
        for _ in 0..CONNECTIONS * 2 {
            client.check(check()).await.unwrap();
        }
        stop.cancel();
        server.await.unwrap();
    }
}
