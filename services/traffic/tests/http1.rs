//! The ingress's HTTP/1.1 relay, byte for byte: chunked bodies both ways,
//! pipelining, HTTP/1.0 clients, `Expect: 100-continue`, HEAD, refused
//! smuggling, and upstream keep-alive. The app behind it is a hyper server
//! of the test's own (an independent HTTP implementation, and the edge this
//! test does not cover); its endpoint reaches traffic as compute's
//! `instance.started` event over the real NATS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use strata_events::{Bus, CloudEvent, EventType};
use strata_integration_tests::{TestEnv, wait_for, wait_serving};
use strata_kit::{Role, identity::BearerToken};
use strata_proto::{compute::v1 as compute_pb, traffic::v1 as pb};
use strata_traffic::wire::ChunkedDecoder;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const HOST: &str = "relay.example.test";

type AppBody = BoxBody<Bytes, Infallible>;

/// What the app answers: `/echo` describes the request it got; `/stream`
/// answers in three chunks of unknown total length.
async fn app(request: hyper::Request<Incoming>) -> Result<hyper::Response<AppBody>, Infallible> {
    let header =
        |name: &str| request.headers().get(name).map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
    if request.uri().path() == "/stream" {
        let frames =
            ["one,", "two,", "three"].map(|s| Ok::<_, Infallible>(Frame::data(Bytes::from_static(s.as_bytes()))));
        return Ok(hyper::Response::new(BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))));
    }
    let described = format!(
        "method={} path={} te={} cl={} xff={} via={} expect={} hop={}",
        request.method(),
        request.uri(),
        header("transfer-encoding"),
        header("content-length"),
        header("x-forwarded-for"),
        header("via"),
        header("expect"),
        header("x-hop"),
    );
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = format!("{described} body={}", String::from_utf8_lossy(&body));
    Ok(hyper::Response::new(BodyExt::boxed(Full::new(Bytes::from(text)))))
}

/// Starts the app; counts the connections it accepts.
async fn start_app(connections: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper::service::service_fn(app))
                    .await;
            });
        }
    });
    addr
}

/// A response as a client sees it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response from `stream`, leaving what follows it in `buf`.
async fn read_answer(stream: &mut TcpStream, buf: &mut BytesMut, head_request: bool) -> Answer {
    let (status, head, len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = response.parse(buf).unwrap() {
            break (response.code.unwrap(), String::from_utf8_lossy(&buf[..len]).to_lowercase(), len);
        }
        assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed before a response head");
    };
    let _ = buf.split_to(len);
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).map(|v| v.trim().parse::<usize>().unwrap());
    let mut body = Vec::new();
    let bodiless = head_request || status == 100 || status == 204 || status == 304;
    if bodiless {
        return Answer { status, head, body: String::new() };
    }
    if head.contains("transfer-encoding: chunked") {
        let mut decoder = ChunkedDecoder::default();
        loop {
            let used = decoder.decode(buf, |d| body.extend_from_slice(d)).unwrap();
            let _ = buf.split_to(used);
            if decoder.done() {
                break;
            }
            assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed inside a chunked body");
        }
    } else if let Some(length) = length {
        while buf.len() < length {
            assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed inside a body");
        }
        body = buf.split_to(length).to_vec();
    } else {
        stream.read_to_end(&mut body).await.unwrap();
        body.splice(0..0, buf.split().to_vec());
    }
    Answer { status, head, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Whether the ingress closed `stream` (after what was read).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await, Ok(Ok(0)))
}

struct Relay {
    env: TestEnv,
    traffic: strata_traffic::Running,
    stop: CancellationToken,
    ingress: SocketAddr,
    app_connections: Arc<AtomicUsize>,
}

impl Relay {
    async fn start() -> Self {
        let mut env = TestEnv::new();
        let app_connections = Arc::new(AtomicUsize::new(0));
        let app_addr = start_app(app_connections.clone()).await;
        let stop = CancellationToken::new();
        let traffic = strata_traffic::start(env.traffic_config(1).await, stop.clone()).await.unwrap();
        wait_serving(traffic.addr, strata_traffic::SERVICE_NAME).await;

        let team = env.team("relay");
        let token = env.token(&team, Role::Owner);
        let channel = Channel::from_shared(format!("http://{}", traffic.addr)).unwrap().connect().await.unwrap();
        let mut client = pb::traffic_service_client::TrafficServiceClient::with_interceptor(
            channel,
            BearerToken::new(&token).unwrap(),
        );
        client
            .create_route(pb::CreateRouteRequest {
                name: "relay".into(),
                spec: Some(pb::RouteSpec {
                    host: HOST.into(),
                    path_prefix: "/".into(),
                    backends: vec![pb::Backend { app: "hyper".into(), release: 0, weight: 1 }],
                    max_body_bytes: 1024,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        // The endpoint arrives the way compute announces it.
        let bus = Bus::connect(&env.nats, "relay-test").await.unwrap();
        let ty = EventType::new("compute", "instance", "started");
        let started = compute_pb::InstanceStarted {
            instance_id: "hyper-1".into(),
            app_id: "hyper".into(),
            app: "hyper".into(),
            release_version: 1,
            host: app_addr.ip().to_string(),
            port: u32::from(app_addr.port()),
        };
        let event = CloudEvent::new(ty, "hyper", &team, &started).unwrap();
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(serde_json::to_vec(&event).unwrap().into())
            .message_id(event.id.clone());
        bus.jetstream().send_publish(bus.subject(ty), publish).await.unwrap().await.unwrap();

        let ingress = traffic.ingress_addr;
        wait_for("the route to reach the app", Duration::from_secs(20), || async {
            let mut stream = TcpStream::connect(ingress).await.ok()?;
            let request = format!("GET /echo HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let answer = read_answer(&mut stream, &mut BytesMut::new(), false).await;
            (answer.status == 200).then_some(())
        })
        .await;
        Self { env, traffic, stop, ingress, app_connections }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.ingress).await.unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.traffic.wait().await.unwrap();
        self.env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_pipelines_and_old_clients_are_relayed_faithfully() {
    let relay = Relay::start().await;
    let mut stream = relay.connect().await;
    let mut buf = BytesMut::new();

    // A chunked request body, with an extension and a trailer, reaches the
    // app re-encoded; hop-by-hop fields (and those Connection names) do not.
    stream
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\n\
                 X-Hop: secret\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nTrailer-Field: t\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_answer(&mut stream, &mut buf, false).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.starts_with("method=POST path=/echo te=chunked cl=-"), "{answer:?}");
    assert!(answer.body.contains("xff=203.0.113.9, 127.0.0.1 via=1.1 strata"), "{answer:?}");
    assert!(answer.body.contains("hop=- body=hello world"), "{answer:?}");
    assert!(answer.head.contains("x-request-id: "), "{answer:?}");

    // Two requests in one write come back in order on the same connection.
    stream
        .write_all(
            format!("GET /echo?n=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let first = read_answer(&mut stream, &mut buf, false).await;
    let second = read_answer(&mut stream, &mut buf, false).await;
    assert!(first.body.contains("path=/echo?n=1") && second.body.contains("path=/echo?n=2"), "{first:?} {second:?}");

    // An answer of unknown length reaches an HTTP/1.1 client as chunks.
    stream.write_all(format!("GET /stream HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let streamed = read_answer(&mut stream, &mut buf, false).await;
    assert!(streamed.head.contains("transfer-encoding: chunked"), "{streamed:?}");
    assert_eq!(streamed.body, "one,two,three");

    // HEAD gets the length of the body it does not get, and the connection
    // goes on.
    stream.write_all(format!("HEAD /echo HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_answer(&mut stream, &mut buf, true).await;
    assert_eq!(head.status, 200);
    assert!(head.head.contains("content-length: "), "{head:?}");

    // `Expect: 100-continue`: the ingress says continue, then relays the body.
    stream
        .write_all(
            format!("PUT /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let proceed = read_answer(&mut stream, &mut buf, false).await;
    assert_eq!(proceed.status, 100, "{proceed:?}");
    stream.write_all(b"data").await.unwrap();
    let put = read_answer(&mut stream, &mut buf, false).await;
    assert!(
        put.body.contains("method=PUT") && put.body.contains("expect=- ") && put.body.ends_with("body=data"),
        "{put:?}"
    );

    // A chunked body past the route's limit (1 KiB) is refused and the
    // connection closed; the app never sees the whole of it.
    let mut big = format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        big.push_str(&format!("200\r\n{}\r\n", "x".repeat(512)));
    }
    big.push_str("0\r\n\r\n");
    stream.write_all(big.as_bytes()).await.unwrap();
    let refused = read_answer(&mut stream, &mut buf, false).await;
    assert_eq!(refused.status, 413, "{refused:?}");
    assert!(closed(&mut stream).await);

    // All of that went over one app connection (keep-alive), two at most
    // should the readiness probe's have been closed.
    let used = relay.app_connections.load(Ordering::SeqCst);
    assert!(used <= 2, "{used} app connections for one client connection");

    // An HTTP/1.0 client without keep-alive gets its answer and a close.
    let mut old = relay.connect().await;
    old.write_all(format!("GET /echo HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let answer = read_answer(&mut old, &mut BytesMut::new(), false).await;
    assert_eq!(answer.status, 200);
    assert!(answer.head.starts_with("http/1.1 200") && answer.head.contains("connection: close"), "{answer:?}");
    assert!(answer.body.contains("via=1.0 strata"), "{answer:?}");
    assert!(closed(&mut old).await);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_or_broken_requests_are_refused_before_any_app_sees_them() {
    let relay = Relay::start().await;
    let before = relay.app_connections.load(Ordering::SeqCst);
    let cases = [
        (
            "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        ),
        ("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        ("GET /echo HTTP/1.1\r\n\r\n", 400),
        ("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("GET /echo HTTP/1.1\r\nHost h\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let request = request.replace("Host: h", &format!("Host: {HOST}"));
        let mut stream = relay.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream, &mut BytesMut::new(), false).await;
        assert_eq!(answer.status, status, "{request:?} → {answer:?}");
        assert!(answer.head.contains("connection: close"), "{answer:?}");
        assert!(closed(&mut stream).await, "{request:?} left the connection open");
    }
    // A head larger than 64 KiB.
    let mut stream = relay.connect().await;
    let huge = format!("GET /echo HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n", "y".repeat(70_000));
    let _ = stream.write_all(huge.as_bytes()).await;
    assert_eq!(read_answer(&mut stream, &mut BytesMut::new(), false).await.status, 431);
    assert_eq!(relay.app_connections.load(Ordering::SeqCst), before, "no refused head reached the app");

    // A bad chunk inside a body already on its way.
    let mut stream = relay.connect().await;
    stream
        .write_all(
            format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_answer(&mut stream, &mut BytesMut::new(), false).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(closed(&mut stream).await);
    relay.stop().await;
}
