//! The gateway's listener: gRPC (HTTP/2), REST and the console (HTTP/1.1
//! or HTTP/2) on one port.
//!
//! HTTP/2 is served here, on the `h2` crate, rather than by hyper's server
//! (through tonic's): every call on a client connection runs inside that
//! connection's task, next to the connection itself. hyper spawns a task for
//! each call, so a call answered by an upstream wakes that task, which hands
//! the answer to the connection's task, which writes it: two wake-ups per
//! answer, and one write per answer. Here the upstream's answer wakes the
//! connection's task only; the calls answered meanwhile are written together.
//! On a gateway, whose work per call is all in moving calls between
//! connections, that is most of its cost (measured by
//! `cargo bench -p strata-gateway --bench gateway`).
//!
//! What a call is: one for a concern's service (`/strata.<concern>.v1...`,
//! the bulk) is authenticated and passed through ([`crate::proxy`]);
//! anything else (the gateway's own API, health, reflection, REST and the
//! console over HTTP/2) goes to the gateway's router. HTTP/1.1 connections,
//! told apart by their first bytes, are served by hyper with the same router.
//!
//! Lifecycle, as for every Strata server ([`strata_kit::server`]): on
//! shutdown, health says NOT_SERVING, no new connection is accepted, HTTP/2
//! clients get a GOAWAY and HTTP/1.1 connections close once idle; calls in
//! flight have the grace period to finish, after which what is left is closed.

use std::{convert::Infallible, future::poll_fn, time::Duration};

use axum::{
    body::Body,
    http::{Request, Response},
};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use hyper_util::rt::{TokioIo, TokioTimer};
use strata_kit::net::{HTTP2_PREFACE, Rewind};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

use crate::{
    auth::Auth,
    proxy::{self, H2Body, Upstreams},
};

/// How long a new connection may take to say which protocol it speaks.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls open at once on one HTTP/2 connection (hyper's default).
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// The largest header block a call may carry (hyper's default).
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Flow-control windows (as towards the upstreams: a source upload comes in
/// through here).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// What serves the calls: the pass-through and the gateway's router.
#[derive(Clone)]
pub struct Edge {
    upstreams: Upstreams,
    auth: Auth,
    router: axum::Router,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("upstreams", &self.upstreams).finish_non_exhaustive()
    }
}

impl Edge {
    /// `router` serves all but the calls passed through to `upstreams`
    /// (and must itself fall back on the pass-through, for HTTP/1.1).
    pub fn new(upstreams: Upstreams, auth: Auth, router: axum::Router) -> Self {
        Self { upstreams, auth, router }
    }

    /// Answers one HTTP/2 call.
    fn call(
        &self,
        request: Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
    ) -> BoxFuture<'static, ()> {
        let request = request.map(|recv| Body::new(H2Body::new(recv)));
        let upstream = proxy::concern_of(request.uri().path()).and_then(|concern| self.upstreams.get(concern));
        let answer: BoxFuture<'static, Response<Body>> = match upstream {
            Some(upstream) => {
                let auth = self.auth.clone();
                Box::pin(async move { proxy::pass_through(&auth, Some(upstream), request).await })
            }
            None => {
                let mut router = self.router.clone();
                Box::pin(async move {
                    match router.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                })
            }
        };
        let call = async move {
            // A call the client gives up on (RST_STREAM) is dropped, and
            // with it the upstream's stream, which is reset in turn.
            let response = tokio::select! {
                biased;
                response = answer => response,
                _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
            };
            let (mut head, body) = response.into_parts();
            proxy::strip_connection_headers(&mut head.headers);
            let end = http_body::Body::is_end_stream(&body);
            match respond.send_response(Response::from_parts(head, ()), end) {
                Ok(stream) if !end => proxy::pipe(body, stream).await,
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "could not answer a call"),
            }
        };
        // A call that panics takes down itself (its stream is reset), not
        // the connection's other calls, as it would in a task of its own.
        Box::pin(async move {
            if std::panic::AssertUnwindSafe(call).catch_unwind().await.is_err() {
                tracing::error!("a call panicked; its stream is reset");
            }
        })
    }
}

/// Serves on `listener` until `shutdown`, then drains within `grace`; sets
/// `health` NOT_SERVING as it stops accepting.
pub async fn serve(
    listener: TcpListener,
    edge: Edge,
    health: strata_kit::server::Health,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    // Fired once the grace period is over: closes what is still open.
    let close = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: let some close.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Calls are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let (edge, shutdown, close) = (edge.clone(), shutdown.clone(), close.clone());
        connections.spawn(async move {
            tokio::select! {
                () = connection(stream, edge, shutdown) => {}
                () = close.cancelled() => {}
            }
        });
    }
    drop(listener);
    health.set_not_serving().await;
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "grace period over, closing the calls still open");
        close.cancel();
        connections.wait().await;
    }
}

/// Serves one connection in the protocol its first bytes announce.
async fn connection(mut stream: TcpStream, edge: Edge, shutdown: CancellationToken) {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    let mut read = 0;
    let http2 = loop {
        let n = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.read(&mut first[read..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        read += n;
        if first[..read] != HTTP2_PREFACE[..read] {
            break false;
        }
        if read == HTTP2_PREFACE.len() {
            break true;
        }
    };
    let io = Rewind::new(Bytes::copy_from_slice(&first[..read]), stream);
    if http2 { serve_http2(io, edge, shutdown).await } else { serve_http1(io, edge.router, shutdown).await }
}

/// Runs an HTTP/2 connection: accepts its calls and runs them, all in this
/// task.
async fn serve_http2(io: Rewind, edge: Edge, shutdown: CancellationToken) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .handshake::<_, Bytes>(io);
    let mut connection = match handshake.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "HTTP/2 handshake failed");
            return;
        }
    };
    let mut calls = FuturesUnordered::new();
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop, if !draining => {
                // GOAWAY: no new calls; the ones open finish.
                connection.graceful_shutdown();
                draining = true;
            }
            Some(()) = calls.next(), if !calls.is_empty() => {}
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => calls.push(edge.call(request, respond)),
                Some(Err(error)) => {
                    if !error.is_go_away() && !error.is_io() {
                        tracing::debug!(%error, "HTTP/2 connection failed");
                    }
                    break;
                }
                None => break,
            },
        }
    }
}

/// Runs an HTTP/1.1 connection with hyper.
async fn serve_http1(io: Rewind, router: axum::Router, shutdown: CancellationToken) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut router = router.clone();
        async move { router.call(request.map(Body::new)).await.map_err(|never: Infallible| never) }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().timer(TokioTimer::new()).serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
