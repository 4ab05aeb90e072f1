//! The ingress: an HTTP/1.1 and h2c reverse proxy. Each worker is an OS
//! thread with its own single-threaded runtime, its own listener on the
//! shared port (SO_REUSEPORT) and its own upstream connections, the way
//! nginx runs workers; they share only the routing table (read without a
//! lock) and atomic counters.
//!
//! HTTP/1.1 connections are relayed by the ingress's own relay (`h1`);
//! connections that open with the HTTP/2 preface are served by hyper here.
//! A request is matched by host and path, sent to an instance chosen by
//! weight and then by power of two choices, and streamed both ways. A
//! connection that fails before the request reached the app is retried on
//! another endpoint, and the endpoint is ejected for a while.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
    header::{self, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, UPGRADE},
};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strata_kit::net::Rewind;
use tokio_util::sync::CancellationToken;

use crate::{
    h1,
    stats::{self, RouteStats},
    table::{InFlight, MAX_ATTEMPTS, RouteEntry, Table},
    upstream::{Sender, Upstreams},
};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// How the ingress runs.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    pub listen: SocketAddr,
    /// Worker threads (each with its own runtime and listener).
    pub workers: usize,
    pub connect_timeout: Duration,
    /// Idle time before a client connection is closed.
    pub header_read_timeout: Duration,
}

/// Why a request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than this route's limit of {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
}

/// A request body on its way to an app: counted, and cut at the route's
/// limit.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Stream { inner: Incoming, limit: u64, seen: u64, stats: Arc<RouteStats> },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Stream { inner, limit, seen, stats } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        *seen += n;
                        stats.add_bytes_in(n);
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(BodyError::TooLarge(*limit))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(e)))),
                other => other.map(|_| None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// One exchange with an app, ended when the response body is done or
/// dropped: the endpoint's in-flight count goes down, the bytes are counted
/// and the connection goes back to the pool.
struct Exchange {
    stats: Arc<RouteStats>,
    bytes: u64,
    _in_flight: InFlight,
    connection: Option<(Arc<Upstreams>, SocketAddr, Sender)>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.stats.add_bytes_out(self.bytes);
        if let Some((upstreams, addr, sender)) = self.connection.take() {
            upstreams.checkin(addr, sender);
        }
    }
}

/// A response body: the app's, streamed, or the ingress's own short answer.
pub struct ResponseBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Upstream { inner: Incoming, exchange: Option<Exchange> },
}

impl ResponseBody {
    fn text(text: String) -> Self {
        ResponseBody(Kind::Full(Some(Bytes::from(text))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { inner, exchange } => {
                let polled = Pin::new(inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(data), Some(exchange)) = (frame.data_ref(), exchange.as_mut()) {
                            exchange.bytes += data.len() as u64;
                        }
                    }
                    // Done (or failed): hand the connection back now rather
                    // than when the server drops the body.
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(exchange.take()),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

/// One worker's request handler.
pub struct Proxy {
    pub(crate) table: Arc<ArcSwap<Table>>,
    pub(crate) upstreams: Arc<Upstreams>,
    /// `<process-random><worker>-<counter>` ids for requests that came without one.
    id_prefix: String,
    next_id: AtomicU64,
}

fn plain(status: StatusCode, request_id: &HeaderValue, message: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(message + "\n"));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    response
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(CONNECTION).cloned() {
        if let Ok(listed) = connection.to_str() {
            for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION] {
        headers.remove(name);
    }
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(UPGRADE);
}

/// The request's host, lower-case and without port.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    let raw = match request.uri().host() {
        Some(host) => host,
        None => request.headers().get(HOST)?.to_str().ok()?,
    };
    let host = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw,
    };
    let host = host.trim_end_matches('.');
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) { host.to_ascii_lowercase() } else { host.to_owned() })
}

impl Proxy {
    /// Appends the request's id: the client's own when it sent a usable
    /// one, else a new one.
    pub(crate) fn write_request_id(&self, given: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(id) = given.filter(|id| !id.is_empty() && id.len() <= 128) {
            out.extend_from_slice(id);
            return;
        }
        let n = self.next_id.fetch_add(1, Relaxed);
        out.extend_from_slice(self.id_prefix.as_bytes());
        crate::wire::push_number(out, n, 16);
    }

    fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(&X_REQUEST_ID)
            && id.len() <= 128
        {
            return id.clone();
        }
        let n = self.next_id.fetch_add(1, Relaxed);
        HeaderValue::try_from(format!("{}{n:x}", self.id_prefix)).unwrap_or(HeaderValue::from_static("-"))
    }

    async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<ResponseBody> {
        let started = Instant::now();
        let request_id = self.request_id(request.headers());
        let Some(host) = request_host(&request) else {
            return plain(StatusCode::BAD_REQUEST, &request_id, "the request names no host".to_owned());
        };
        let table = self.table.load();
        let Some(route) = table.lookup(&host, request.uri().path()) else {
            return plain(
                StatusCode::NOT_FOUND,
                &request_id,
                format!("no route for {host}{}; see `strata routes list`", request.uri().path()),
            );
        };
        let route = route.clone();
        drop(table);

        let declared =
            request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.max_body_bytes) {
            return self.answer(
                &route,
                started,
                plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &request_id,
                    format!("request body is larger than this route's limit of {} bytes", route.max_body_bytes),
                ),
            );
        }
        let (mut parts, body) = request.into_parts();
        self.forwarding_headers(&mut parts, &host, client, &request_id);
        let body = if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Stream { inner: body, limit: route.max_body_bytes, seen: 0, stats: route.stats.clone() }
        };
        let request = Request::from_parts(parts, body);
        let response = self.forward(&route, request, &request_id).await;
        self.answer(&route, started, response)
    }

    fn answer(&self, route: &RouteEntry, started: Instant, response: Response<ResponseBody>) -> Response<ResponseBody> {
        route.stats.record(response.status().as_u16(), started.elapsed());
        response
    }

    fn forwarding_headers(
        &self,
        parts: &mut http::request::Parts,
        host: &str,
        client: SocketAddr,
        request_id: &HeaderValue,
    ) {
        let version = parts.version;
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        let client_ip = client.ip().to_string();
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {client_ip}"),
            None => client_ip,
        };
        if let Ok(value) = HeaderValue::try_from(forwarded_for) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        if let Ok(value) = HeaderValue::try_from(host) {
            headers.insert(X_FORWARDED_HOST.clone(), value);
        }
        let via = if version == Version::HTTP_2 { "2 strata" } else { "1.1 strata" };
        headers.append(header::VIA, HeaderValue::from_static(via));
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        // HTTP/2 carries the host in :authority; an HTTP/1.1 app needs Host.
        if !headers.contains_key(HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(value) = HeaderValue::try_from(authority.as_str())
        {
            headers.insert(HOST, value);
        }
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let origin = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            if let Ok(uri) = origin.parse::<Uri>() {
                parts.uri = uri;
            }
        }
        parts.version = Version::HTTP_11;
    }

    async fn forward(
        &self,
        route: &RouteEntry,
        mut request: Request<RequestBody>,
        request_id: &HeaderValue,
    ) -> Response<ResponseBody> {
        let deadline = tokio::time::Instant::now() + route.timeout;
        let mut tried = Vec::new();
        // An idempotent request without a body can be sent again when its
        // connection broke before any answer (a keep-alive connection the
        // app closed, or an instance that just died).
        let replay = (matches!(request.body(), RequestBody::Empty) && idempotent(request.method()))
            .then(|| (request.method().clone(), request.uri().clone(), request.headers().clone()));
        loop {
            let upstreams = &self.upstreams;
            let (endpoint, mut sender) = match route.connect(&mut tried, |addr| upstreams.checkout(addr)).await {
                Ok(connected) => connected,
                Err((status, message)) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    return plain(status, request_id, message);
                }
            };
            let in_flight = endpoint.begin();
            let sent = tokio::time::timeout_at(deadline, sender.try_send_request(request)).await;
            let mut response = match sent {
                Err(_) => {
                    return plain(
                        StatusCode::GATEWAY_TIMEOUT,
                        request_id,
                        format!("app {} did not answer within {:?}", endpoint.app, route.timeout),
                    );
                }
                Ok(Ok(response)) => response,
                Ok(Err(mut error)) => {
                    let retry = if tried.len() + 1 >= MAX_ATTEMPTS {
                        None
                    } else if let Some(unsent) = error.take_message() {
                        // Never written to the connection (it closed first):
                        // the app has not seen it, so another endpoint may.
                        Some(unsent)
                    } else if let Some((method, uri, headers)) = replay.as_ref().filter(|_| !error.error().is_timeout())
                    {
                        tracing::debug!(addr = %endpoint.addr, error = %error.error(), "retrying an idempotent request");
                        let mut again = Request::new(RequestBody::Empty);
                        *again.method_mut() = method.clone();
                        *again.uri_mut() = uri.clone();
                        *again.headers_mut() = headers.clone();
                        Some(again)
                    } else {
                        None
                    };
                    if let Some(again) = retry {
                        tried.push(endpoint);
                        request = again;
                        continue;
                    }
                    let error = error.into_error();
                    let too_large = std::error::Error::source(&error)
                        .and_then(|s| s.downcast_ref::<BodyError>())
                        .is_some_and(|e| matches!(e, BodyError::TooLarge(_)));
                    if too_large {
                        return plain(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            request_id,
                            format!("request body is larger than this route's limit of {} bytes", route.max_body_bytes),
                        );
                    }
                    return plain(
                        StatusCode::BAD_GATEWAY,
                        request_id,
                        format!("app {} failed to answer: {error}", endpoint.app),
                    );
                }
            };
            strip_hop_by_hop(response.headers_mut());
            response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
            let exchange = Exchange {
                stats: route.stats.clone(),
                bytes: 0,
                _in_flight: in_flight,
                connection: Some((self.upstreams.clone(), endpoint.addr, sender)),
            };
            return response.map(|inner| ResponseBody(Kind::Upstream { inner, exchange: Some(exchange) }));
        }
    }
}

/// A running ingress.
#[derive(Debug)]
pub struct Ingress {
    pub addr: SocketAddr,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ingress {
    /// Waits (off the async runtime) until every worker has drained.
    pub async fn join(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Starts the workers. Returns once every worker listens; they stop
/// accepting on `shutdown` and finish their requests within `grace`.
pub fn start(
    settings: &IngressSettings,
    table: Arc<ArcSwap<Table>>,
    upstreams: &[Arc<Upstreams>],
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<Ingress> {
    let workers = settings.workers.max(1);
    // The first bind picks the port (when 0); the others share it.
    let first = listener(settings.listen)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first.into_std()?];
    for _ in 1..workers {
        listeners.push(listener(addr)?.into_std()?);
    }
    let process_id: u32 = rand::random();
    let mut threads = Vec::new();
    for (worker, std_listener) in listeners.into_iter().enumerate() {
        let proxy = Arc::new(Proxy {
            table: table.clone(),
            upstreams: upstreams[worker % upstreams.len()].clone(),
            id_prefix: format!("{process_id:08x}{worker:02x}-"),
            next_id: AtomicU64::new(0),
        });
        // A token of the worker's own: checking it never touches another
        // worker's cache lines.
        let shutdown = shutdown.child_token();
        let header_read_timeout = settings.header_read_timeout;
        let thread = std::thread::Builder::new().name(format!("strata-ingress-{worker}")).spawn(move || {
            stats::set_worker(worker);
            // Before sleeping in epoll_wait, the worker offers its core to
            // whatever else is runnable there once (clients, apps, the other
            // worker): the answers those produce are then often waiting when
            // the worker polls, instead of each waking it from sleep, which on
            // a busy machine means waiting for a core. On an idle machine the
            // yield returns at once. Measured with deploy/bench/proxy.sh:
            // Strata/nginx requests/s 1.06–1.18× without, 1.13–1.20× with; p99
            // 0.91–1.06× without, 0.76–0.97× with.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(std::thread::yield_now)
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(worker, %error, "ingress worker could not start its runtime");
                    return;
                }
            };
            runtime.block_on(serve_worker(std_listener, proxy, header_read_timeout, shutdown, grace));
        })?;
        threads.push(thread);
    }
    Ok(Ingress { addr, threads })
}

async fn serve_worker(
    std_listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let listener =
        match std_listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(std_listener)) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "ingress worker could not use its listener");
                return;
            }
        };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(hyper_util::rt::TokioTimer::new());
    let builder = Arc::new(builder);
    let connections = tokio_util::task::TaskTracker::new();
    // Read after every exchange: an atomic of this worker's, set once.
    let stopping = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (shutdown, stopping) = (shutdown.clone(), stopping.clone());
        async move {
            shutdown.cancelled().await;
            stopping.store(true, Relaxed);
        }
    });
    loop {
        let (stream, client) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(%error, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let served = h1::serve(&proxy, stream, client, header_read_timeout, &shutdown, &stopping).await;
            let (stream, read) = match served {
                h1::Served::Done => return,
                h1::Served::Http2(stream, read) => (stream, read),
            };
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, client).await) }
            });
            let io = TokioIo::new(Rewind::new(read.freeze(), stream));
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(remaining = connections.len(), "ingress connections still open after the grace period");
    }
}

/// Methods whose requests may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}
