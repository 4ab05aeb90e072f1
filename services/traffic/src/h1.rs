//! The ingress's HTTP/1.1 relay.
//!
//! hyper's server and client each drive a connection from a task of their
//! own and hand every request, response and body chunk across channels, so
//! relaying one exchange costs several task wake-ups and copies. A reverse
//! proxy relaying HTTP/1.1 to HTTP/1.1 needs none of that: here the client
//! connection's own task reads the request head (parsed in place by
//! httparse, see `wire`), writes the app's request on a pooled connection it
//! owns for the exchange, and relays the answer, usually in one read and one
//! write each way — the way nginx and HAProxy relay. HTTP/2 (prior
//! knowledge) is handed to hyper (`proxy`).
//!
//! What the relay guarantees: the request reaches the app with hop-by-hop
//! fields removed, the forwarding fields set and its body re-framed (a
//! `Content-Length` or re-encoded chunks, never a framing the app might read
//! differently); a request that never reached an app, or an idempotent one
//! without a body whose connection broke before any answer, is tried again;
//! the route's timeout (504) and body limit (413) hold; `Expect:
//! 100-continue` is answered by the ingress itself; upgrades (WebSocket)
//! become a byte tunnel on 101.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

use bytes::{Buf, BytesMut};
use strata_kit::net::HTTP2_PREFACE;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use crate::{
    proxy::Proxy,
    stats::RouteStats,
    table::{InFlight, MAX_ATTEMPTS, RouteEntry},
    wire::{self, BodyLength, ChunkedDecoder, Known, RequestHead, ResponseHead, push_number},
};

/// Largest request or response head.
const MAX_HEAD: usize = 64 * 1024;
/// Free space kept in a buffer before each read.
const READ_SPACE: usize = 8 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How a client connection ended.
pub enum Served {
    Done,
    /// It speaks HTTP/2: the stream and what was read of it.
    Http2(TcpStream, BytesMut),
}

enum Next {
    KeepAlive,
    Close,
}

/// Where a request's body stands when the ingress answers by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// None, or all of it went to the app.
    Done,
    /// Not read yet: dropped if it is all here, else the connection closes.
    Unread,
    /// Partly relayed: the connection must close.
    Broken,
}

/// Why a request body did not reach the app.
enum SendError {
    TooLarge,
    /// The client went away or broke the chunked coding.
    Client(Option<&'static str>),
    /// The app stopped reading (it may still have answered).
    App,
}

/// Why no response head came from the app.
enum ResponseError {
    /// The connection ended; `answered` says whether any byte came first.
    Closed {
        answered: bool,
    },
    Invalid(String),
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SPACE / 2 {
        buf.reserve(READ_SPACE);
    }
}

/// The host a request names, lower-case, without port or trailing dot.
fn normal_host(raw: &[u8]) -> Option<Cow<'_, str>> {
    let raw = std::str::from_utf8(raw).ok()?;
    let host = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw,
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request head the app gets.
fn write_request_head(out: &mut Vec<u8>, head: &RequestHead, host: &str, peer_ip: &[u8], id: &[u8]) {
    out.extend_from_slice(head.method());
    out.push(b' ');
    if head.path_needs_slash {
        out.push(b'/');
    }
    out.extend_from_slice(head.bytes(&head.path));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host_copied = false;
    for f in &head.fields {
        let name = head.bytes(&f.name);
        match f.known {
            Known::Other if head.listed.is_empty() || !head.is_listed(name) => {
                field(out, name, head.bytes(&f.value));
            }
            // An absolute-form target's authority replaces `Host`.
            Known::Host if head.host.as_ref() == Some(&f.value) => {
                field(out, name, head.bytes(&f.value));
                host_copied = true;
            }
            _ => {}
        }
    }
    if !host_copied && let Some(authority) = &head.host {
        field(out, b"host", head.bytes(authority));
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for f in head.fields.iter().filter(|f| f.known == Known::XForwardedFor) {
        out.extend_from_slice(head.bytes(&f.value));
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer_ip);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    field(out, b"x-forwarded-host", host.as_bytes());
    out.extend_from_slice(if head.minor == 0 { b"via: 1.0 strata\r\n" } else { b"via: 1.1 strata\r\n" });
    field(out, b"x-request-id", id);
    match head.body {
        BodyLength::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_number(out, n, 10);
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyLength::None | BodyLength::UntilClose => {}
    }
    if let Some(protocol) = &head.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        field(out, b"upgrade", head.bytes(protocol));
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response goes to the client.
struct Framing {
    /// Re-encode the body as chunks (its length is not known up front).
    chunked: bool,
    close: bool,
    /// The client is HTTP/1.0 and keeps the connection.
    keep_alive_1_0: bool,
    upgrade: bool,
}

/// The response head the client gets.
fn write_response_head(out: &mut Vec<u8>, response: &ResponseHead, id: &[u8], framing: &Framing) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_number(out, u64::from(response.code), 10);
    out.push(b' ');
    out.extend_from_slice(response.bytes(&response.reason));
    out.extend_from_slice(b"\r\n");
    for f in &response.fields {
        let name = response.bytes(&f.name);
        let relay = match f.known {
            Known::Other | Known::Host | Known::Expect | Known::XForwardedFor => {
                response.listed.is_empty() || !response.is_listed(name)
            }
            Known::Upgrade => framing.upgrade,
            // Re-framed below.
            _ => false,
        };
        if relay {
            field(out, name, response.bytes(&f.value));
        }
    }
    match response.body {
        BodyLength::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_number(out, n, 10);
            out.extend_from_slice(b"\r\n");
        }
        // HEAD and 304 answers say what the body's length would be.
        BodyLength::None => {
            if let Some(length) = &response.content_length {
                field(out, b"content-length", response.bytes(length));
            }
        }
        BodyLength::Chunked | BodyLength::UntilClose => {
            if framing.chunked {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
        }
    }
    field(out, b"x-request-id", id);
    if framing.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if framing.close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if framing.keep_alive_1_0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads the app's final response head into `buf`, skipping 1xx answers
/// (the ingress answers `Expect` itself).
async fn read_response<R: AsyncRead + Unpin>(
    app: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ResponseError> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            answered = true;
            match wire::parse_response(buf, head_request) {
                Ok(Some(response)) if (100..200).contains(&response.code) && response.code != 101 => continue,
                Ok(Some(response)) => return Ok(response),
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return Err(ResponseError::Invalid("response head too large".to_owned()));
                }
                Ok(None) => {}
                Err(message) => return Err(ResponseError::Invalid(message)),
            }
        }
        reserve(buf);
        match app.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ResponseError::Closed { answered }),
            Ok(_) => {}
        }
    }
}

/// Relays the rest of a request body from the client (`buf` holds what was
/// read already) to the app.
async fn send_body<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    client: &mut R,
    buf: &mut BytesMut,
    app: &mut W,
    body: BodyLength,
    limit: u64,
    stats: &RouteStats,
) -> Result<(), SendError> {
    match body {
        BodyLength::Length(mut left) => loop {
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            if take > 0 {
                app.write_all(&buf[..take]).await.map_err(|_| SendError::App)?;
                buf.advance(take);
                left -= take as u64;
                stats.add_bytes_in(take as u64);
            }
            if left == 0 {
                return Ok(());
            }
            reserve(buf);
            if client.read_buf(buf).await.unwrap_or(0) == 0 {
                return Err(SendError::Client(None));
            }
        },
        BodyLength::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let mut chunks = Vec::new();
            let mut total = 0u64;
            loop {
                let used = decoder
                    .decode(buf, |data| {
                        total += data.len() as u64;
                        wire::encode_chunk(&mut chunks, data);
                    })
                    .map_err(|e| SendError::Client(Some(e)))?;
                buf.advance(used);
                if total > limit {
                    return Err(SendError::TooLarge);
                }
                if decoder.done() {
                    chunks.extend_from_slice(wire::LAST_CHUNK);
                }
                if !chunks.is_empty() {
                    app.write_all(&chunks).await.map_err(|_| SendError::App)?;
                    chunks.clear();
                }
                if decoder.done() {
                    stats.add_bytes_in(total);
                    return Ok(());
                }
                reserve(buf);
                if client.read_buf(buf).await.unwrap_or(0) == 0 {
                    return Err(SendError::Client(None));
                }
            }
        }
        BodyLength::None | BodyLength::UntilClose => Ok(()),
    }
}

/// One client connection.
struct Conn<'p> {
    proxy: &'p Proxy,
    stream: TcpStream,
    /// The client's address, as `X-Forwarded-For` gives it.
    peer_ip: Vec<u8>,
    /// Read from the client, not yet used.
    buf: BytesMut,
    /// Read from the app, not yet relayed.
    up_buf: BytesMut,
    /// The request head for the app.
    head: Vec<u8>,
    /// What goes to the client next.
    out: Vec<u8>,
    /// The current request's id.
    id: Vec<u8>,
}

/// Serves one client connection until it closes, idles out or the ingress
/// stops; hands it back if it turns out to speak HTTP/2.
pub async fn serve(
    proxy: &Proxy,
    stream: TcpStream,
    peer: SocketAddr,
    header_read_timeout: Duration,
    shutdown: &CancellationToken,
    stopping: &AtomicBool,
) -> Served {
    let mut conn = Conn {
        proxy,
        stream,
        peer_ip: peer.ip().to_string().into_bytes(),
        buf: BytesMut::with_capacity(READ_SPACE),
        up_buf: BytesMut::new(),
        head: Vec::new(),
        out: Vec::new(),
        id: Vec::new(),
    };
    let idle = tokio::time::sleep(header_read_timeout);
    tokio::pin!(idle);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut first = true;
    loop {
        let mut waiting = false;
        let head = loop {
            if first && !conn.buf.is_empty() {
                let n = conn.buf.len().min(HTTP2_PREFACE.len());
                if conn.buf[..n] != HTTP2_PREFACE[..n] {
                    first = false;
                } else if n == HTTP2_PREFACE.len() {
                    return Served::Http2(conn.stream, conn.buf);
                }
            }
            if !first && !conn.buf.is_empty() {
                match wire::parse_request(&mut conn.buf) {
                    Ok(Some(head)) => break head,
                    Ok(None) if conn.buf.len() >= MAX_HEAD => {
                        conn.refuse(431, "the request head is larger than 64 KiB").await;
                        return Served::Done;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        conn.refuse(error.status(), &error.to_string()).await;
                        return Served::Done;
                    }
                }
            }
            reserve(&mut conn.buf);
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) => return Served::Done,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Served::Done,
            }
            if !waiting {
                idle.as_mut().reset(tokio::time::Instant::now() + header_read_timeout);
                waiting = true;
            }
            tokio::select! {
                biased;
                ready = conn.stream.readable() => if ready.is_err() { return Served::Done },
                () = idle.as_mut() => return Served::Done,
                () = cancelled.as_mut(), if conn.buf.is_empty() => return Served::Done,
            }
        };
        match conn.exchange(head).await {
            Next::KeepAlive if !stopping.load(Relaxed) => {}
            _ => return Served::Done,
        }
    }
}

impl Conn<'_> {
    /// Answers a request that cannot be read, and closes.
    async fn refuse(&mut self, status: u16, message: &str) {
        self.id.clear();
        self.proxy.write_request_id(None, &mut self.id);
        self.write_plain(status, message, true);
        let _ = self.stream.write_all(&self.out).await;
    }

    fn write_plain(&mut self, status: u16, message: &str, close: bool) {
        let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        push_number(&mut self.out, u64::from(status), 10);
        self.out.push(b' ');
        self.out.extend_from_slice(reason.as_bytes());
        self.out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
        push_number(&mut self.out, message.len() as u64 + 1, 10);
        self.out.extend_from_slice(b"\r\n");
        field(&mut self.out, b"x-request-id", &self.id);
        if close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(message.as_bytes());
        self.out.push(b'\n');
    }

    /// The ingress's own answer to a request; the connection stays open
    /// only if the request's body was read whole (or there was none).
    async fn answer(
        &mut self,
        status: u16,
        message: &str,
        route: Option<(&RouteEntry, Instant)>,
        head: &RequestHead,
        body: Body,
    ) -> Next {
        let mut close = head.close;
        match (body, head.body) {
            (Body::Done, _) | (Body::Unread, BodyLength::None) => {}
            (Body::Unread, BodyLength::Length(n)) if self.buf.len() as u64 >= n => self.buf.advance(n as usize),
            _ => close = true,
        }
        self.write_plain(status, message, close);
        if let Some((route, started)) = route {
            route.stats.record(status, started.elapsed());
        }
        match self.stream.write_all(&self.out).await {
            Ok(()) if !close => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    async fn exchange(&mut self, head: RequestHead) -> Next {
        let started = Instant::now();
        self.id.clear();
        let given = head.fields.iter().find(|f| f.known == Known::XRequestId).map(|f| head.bytes(&f.value));
        self.proxy.write_request_id(given, &mut self.id);
        let has_body = !matches!(head.body, BodyLength::None | BodyLength::Length(0));
        let unread = if has_body { Body::Unread } else { Body::Done };

        let Some(host) = head.host.as_ref().and_then(|h| normal_host(head.bytes(h))) else {
            return self.answer(400, "the request names no valid host", None, &head, unread).await;
        };
        let table = self.proxy.table.load();
        let Some(route) = table.lookup(&host, head.route_path()).cloned() else {
            drop(table);
            let message = format!("no route for {host}{}; see `strata routes list`", head.route_path());
            return self.answer(404, &message, None, &head, unread).await;
        };
        drop(table);
        let route = &*route;
        if let BodyLength::Length(n) = head.body
            && n > route.max_body_bytes
        {
            let message = format!("request body is larger than this route's limit of {} bytes", route.max_body_bytes);
            return self.answer(413, &message, Some((route, started)), &head, unread).await;
        }

        self.head.clear();
        write_request_head(&mut self.head, &head, &host, &self.peer_ip, &self.id);
        // A body that is here whole goes out with the head.
        let mut body_left = if has_body { head.body } else { BodyLength::None };
        if let BodyLength::Length(n) = body_left
            && self.buf.len() as u64 >= n
        {
            let n = n as usize;
            self.head.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            route.stats.add_bytes_in(n as u64);
            body_left = BodyLength::None;
        }
        let replayable = !has_body && head.idempotent();
        let head_request = head.method() == b"HEAD";
        let deadline = tokio::time::Instant::now() + route.timeout;
        let mut tried = Vec::new();
        let mut attempts = 0;
        let mut fresh = false;
        let mut asked_to_continue = false;
        loop {
            attempts += 1;
            let upstreams = &self.proxy.upstreams;
            let open = |addr| async move {
                if !fresh && let Some(stream) = upstreams.take_stream(addr) {
                    return Ok((stream, true));
                }
                upstreams.connect_stream(addr).await.map(|stream| (stream, false))
            };
            let (endpoint, (mut app, pooled)) = match route.connect(&mut tried, open).await {
                Ok(connected) => connected,
                Err((status, message)) => {
                    let body = if body_left == BodyLength::None { Body::Done } else { Body::Unread };
                    return self.answer(status, &message, Some((route, started)), &head, body).await;
                }
            };
            let in_flight = endpoint.begin();
            if app.write_all(&self.head).await.is_err() {
                // Nothing the app could act on reached it: try again.
                if attempts < MAX_ATTEMPTS {
                    if pooled {
                        fresh = true;
                    } else {
                        tried.push(endpoint);
                    }
                    continue;
                }
                let message = format!("app {} closed the connection before the request was sent", endpoint.app);
                let body = if body_left == BodyLength::None { Body::Done } else { Body::Unread };
                return self.answer(502, &message, Some((route, started)), &head, body).await;
            }
            self.up_buf.clear();
            let received = if body_left == BodyLength::None {
                tokio::time::timeout_at(deadline, read_response(&mut app, &mut self.up_buf, head_request))
                    .await
                    .map(|response| (Ok(()), response))
            } else {
                if head.expect_continue && !asked_to_continue {
                    asked_to_continue = true;
                    if self.stream.write_all(CONTINUE).await.is_err() {
                        return Next::Close;
                    }
                }
                let (mut app_read, mut app_write) = app.split();
                let send = send_body(
                    &mut self.stream,
                    &mut self.buf,
                    &mut app_write,
                    body_left,
                    route.max_body_bytes,
                    &route.stats,
                );
                let receive = read_response(&mut app_read, &mut self.up_buf, head_request);
                tokio::time::timeout_at(deadline, async {
                    tokio::pin!(send, receive);
                    tokio::select! {
                        sent = &mut send => match sent {
                            // Sent, or the app stopped reading: its answer decides.
                            Ok(()) | Err(SendError::App) => (sent, receive.await),
                            Err(error) => (Err(error), Err(ResponseError::Closed { answered: false })),
                        },
                        // An answer before the whole body: the rest of the
                        // body is not sent, and the client's connection ends
                        // after the answer.
                        response = &mut receive => (Err(SendError::App), response),
                    }
                })
                .await
            };
            let Ok((sent, response)) = received else {
                let message = format!("app {} did not answer within {:?}", endpoint.app, route.timeout);
                let body = if body_left == BodyLength::None { Body::Done } else { Body::Broken };
                return self.answer(504, &message, Some((route, started)), &head, body).await;
            };
            let body = if body_left == BodyLength::None || sent.is_ok() { Body::Done } else { Body::Broken };
            let (sent, response) = match (sent, response) {
                (Err(SendError::TooLarge), _) => {
                    let message =
                        format!("request body is larger than this route's limit of {} bytes", route.max_body_bytes);
                    return self.answer(413, &message, Some((route, started)), &head, Body::Broken).await;
                }
                (Err(SendError::Client(Some(problem))), _) => {
                    let message = format!("bad chunked request body: {problem}");
                    return self.answer(400, &message, Some((route, started)), &head, Body::Broken).await;
                }
                (Err(SendError::Client(None)), _) => return Next::Close,
                (sent, Ok(response)) => (sent.is_ok(), response),
                (_, Err(ResponseError::Closed { answered: false })) if attempts < MAX_ATTEMPTS && replayable => {
                    // A pooled connection the app had closed, or an instance
                    // that just went away: the request may go again.
                    tracing::debug!(addr = %endpoint.addr, "retrying an idempotent request");
                    if pooled {
                        fresh = true;
                    } else {
                        tried.push(endpoint);
                    }
                    continue;
                }
                (_, Err(ResponseError::Closed { .. })) => {
                    let message = format!("app {} closed the connection without answering", endpoint.app);
                    return self.answer(502, &message, Some((route, started)), &head, body).await;
                }
                (_, Err(ResponseError::Invalid(problem))) => {
                    let message = format!("app {} failed to answer: {problem}", endpoint.app);
                    return self.answer(502, &message, Some((route, started)), &head, body).await;
                }
            };
            return self.relay(route, started, &head, sent, response, app, endpoint.addr, in_flight).await;
        }
    }

    /// Relays the app's response; `sent` says whether the whole request
    /// body reached the app.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &mut self,
        route: &RouteEntry,
        started: Instant,
        head: &RequestHead,
        sent: bool,
        response: ResponseHead,
        mut app: TcpStream,
        addr: SocketAddr,
        in_flight: InFlight,
    ) -> Next {
        if response.code == 101 {
            if head.upgrade.is_none() {
                let body = if sent { Body::Done } else { Body::Broken };
                return self
                    .answer(502, "the app switched protocols unasked", Some((route, started)), head, body)
                    .await;
            }
            return self.tunnel(route, started, &response, app, in_flight).await;
        }
        let unframed = matches!(response.body, BodyLength::Chunked | BodyLength::UntilClose);
        let framing = Framing {
            chunked: unframed && head.minor == 1,
            close: head.close || !sent || (unframed && head.minor == 0),
            keep_alive_1_0: head.minor == 0,
            upgrade: false,
        };
        self.out.clear();
        write_response_head(&mut self.out, &response, &self.id, &framing);
        route.stats.record(response.code, started.elapsed());
        let relayed = self.relay_body(&mut app, response.body, framing.chunked).await;
        route.stats.add_bytes_out(relayed.unwrap_or_else(|n| n));
        drop(in_flight);
        let reusable = relayed.is_ok()
            && sent
            && !response.close
            && response.minor == 1
            && head.upgrade.is_none()
            && self.up_buf.is_empty();
        self.up_buf.clear();
        if reusable {
            self.proxy.upstreams.put_stream(addr, app);
        }
        match relayed {
            Ok(_) if !framing.close => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// Relays a response body after the head in `out`; `Ok(bytes)` once it
    /// is all relayed, `Err(bytes)` when either side failed first.
    async fn relay_body(&mut self, app: &mut TcpStream, body: BodyLength, chunked: bool) -> Result<u64, u64> {
        let mut bytes = 0u64;
        match body {
            BodyLength::None => {}
            BodyLength::Length(mut left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(self.up_buf.len());
                self.out.extend_from_slice(&self.up_buf[..take]);
                self.up_buf.advance(take);
                left -= take as u64;
                bytes += take as u64;
                while left > 0 {
                    self.stream.write_all(&self.out).await.map_err(|_| bytes)?;
                    self.out.clear();
                    reserve(&mut self.up_buf);
                    if app.read_buf(&mut self.up_buf).await.unwrap_or(0) == 0 {
                        return Err(bytes);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(self.up_buf.len());
                    self.out.extend_from_slice(&self.up_buf[..take]);
                    self.up_buf.advance(take);
                    left -= take as u64;
                    bytes += take as u64;
                }
            }
            BodyLength::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    let out = &mut self.out;
                    let used = decoder
                        .decode(&self.up_buf, |data| {
                            bytes += data.len() as u64;
                            if chunked {
                                wire::encode_chunk(out, data);
                            } else {
                                out.extend_from_slice(data);
                            }
                        })
                        .map_err(|_| bytes)?;
                    self.up_buf.advance(used);
                    if decoder.done() {
                        if chunked {
                            self.out.extend_from_slice(wire::LAST_CHUNK);
                        }
                        break;
                    }
                    self.stream.write_all(&self.out).await.map_err(|_| bytes)?;
                    self.out.clear();
                    reserve(&mut self.up_buf);
                    if app.read_buf(&mut self.up_buf).await.unwrap_or(0) == 0 {
                        return Err(bytes);
                    }
                }
            }
            BodyLength::UntilClose => loop {
                if !self.up_buf.is_empty() {
                    bytes += self.up_buf.len() as u64;
                    if chunked {
                        wire::encode_chunk(&mut self.out, &self.up_buf);
                    } else {
                        self.out.extend_from_slice(&self.up_buf);
                    }
                    self.up_buf.clear();
                }
                self.stream.write_all(&self.out).await.map_err(|_| bytes)?;
                self.out.clear();
                reserve(&mut self.up_buf);
                match app.read_buf(&mut self.up_buf).await {
                    Ok(0) => {
                        if chunked {
                            self.out.extend_from_slice(wire::LAST_CHUNK);
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => return Err(bytes),
                }
            },
        }
        self.stream.write_all(&self.out).await.map_err(|_| bytes)?;
        self.out.clear();
        Ok(bytes)
    }

    /// An upgrade the app accepted: relays the 101, then joins both
    /// connections byte for byte until either ends.
    async fn tunnel(
        &mut self,
        route: &RouteEntry,
        started: Instant,
        response: &ResponseHead,
        mut app: TcpStream,
        in_flight: InFlight,
    ) -> Next {
        let framing = Framing { chunked: false, close: false, keep_alive_1_0: false, upgrade: true };
        self.out.clear();
        write_response_head(&mut self.out, response, &self.id, &framing);
        self.out.extend_from_slice(&self.up_buf);
        self.up_buf.clear();
        route.stats.record(101, started.elapsed());
        if self.stream.write_all(&self.out).await.is_err() {
            return Next::Close;
        }
        if !self.buf.is_empty() {
            if app.write_all(&self.buf).await.is_err() {
                return Next::Close;
            }
            self.buf.clear();
        }
        if let Err(error) = tokio::io::copy_bidirectional(&mut self.stream, &mut app).await {
            tracing::debug!(%error, "upgraded connection ended");
        }
        drop(in_flight);
        Next::Close
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_for_routing() {
        assert_eq!(normal_host(b"Shop.Example.TEST:8080").as_deref(), Some("shop.example.test"));
        assert_eq!(normal_host(b"shop.example.test.").as_deref(), Some("shop.example.test"));
        assert_eq!(normal_host(b"[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normal_host(b":80"), None);
        assert_eq!(normal_host(b"\xff"), None);
    }

    #[test]
    fn the_app_gets_a_reframed_request_with_forwarding_fields() {
        let mut buf = BytesMut::from(
            "POST http://Shop.test/a?b HTTP/1.1\r\nHost: other\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
             X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: old\r\nContent-Length: 2\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\n",
        );
        let head = wire::parse_request(&mut buf).unwrap().unwrap();
        let mut out = Vec::new();
        write_request_head(&mut out, &head, "shop.test", b"192.0.2.7", b"req-1");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "POST /a?b HTTP/1.1\r\nAccept: */*\r\nhost: Shop.test\r\nx-forwarded-for: 10.0.0.1, 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: shop.test\r\nvia: 1.1 strata\r\nx-request-id: req-1\r\n\
             content-length: 2\r\n\r\n"
        );
    }

    #[test]
    fn the_client_gets_a_reframed_response() {
        let mut buf = BytesMut::from(
            "HTTP/1.0 200 OK\r\nServer: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX-Request-Id: app\r\n\r\n",
        );
        let response = wire::parse_response(&mut buf, false).unwrap().unwrap();
        let mut out = Vec::new();
        let framing = Framing { chunked: true, close: false, keep_alive_1_0: false, upgrade: false };
        write_response_head(&mut out, &response, b"id-9", &framing);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: x\r\ntransfer-encoding: chunked\r\nx-request-id: id-9\r\n\r\n"
        );
    }
}
