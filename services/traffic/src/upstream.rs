//! Connections from the ingress to app instances: HTTP/1.1 with keep-alive,
//! one idle pool per endpoint address, one set of pools per ingress worker
//! (so a worker never waits on another's lock). Connecting is separate from
//! sending, so a request whose connection failed has not been consumed and
//! can go to another endpoint.
//!
//! Two kinds of connection are pooled: plain TCP streams for the ingress's
//! own HTTP/1.1 relay (`wire`, `h1`), and hyper client connections for
//! requests that arrive over HTTP/2.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::proxy::RequestBody;

/// Idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// A connection ready to carry one request.
pub type Sender = http1::SendRequest<RequestBody>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
}

/// One worker's connections to every endpoint.
#[derive(Debug)]
pub struct Upstreams {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
    streams: Mutex<HashMap<SocketAddr, Vec<tokio::net::TcpStream>>>,
    connect_timeout: Duration,
}

/// Whether an idle connection can still carry a request: the app has not
/// closed it and sent nothing unasked. Costs a system call only when the
/// reactor saw it become readable.
fn reusable(stream: &tokio::net::TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { idle: Mutex::new(HashMap::new()), streams: Mutex::new(HashMap::new()), connect_timeout })
    }

    /// An idle TCP connection to `addr` that is still open, if any.
    pub fn take_stream(&self, addr: SocketAddr) -> Option<tokio::net::TcpStream> {
        let mut streams = self.streams.lock().ok()?;
        let idle = streams.get_mut(&addr)?;
        while let Some(stream) = idle.pop() {
            if reusable(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Gives a TCP connection back after a complete exchange.
    pub fn put_stream(&self, addr: SocketAddr, stream: tokio::net::TcpStream) {
        if let Ok(mut streams) = self.streams.lock() {
            let idle = streams.entry(addr).or_default();
            if idle.len() < MAX_IDLE_PER_ENDPOINT {
                idle.push(stream);
            }
        }
    }

    /// A new TCP connection to `addr`.
    pub async fn connect_stream(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream, ConnectError> {
        self.tcp(addr).await
    }

    /// An idle connection to `addr` that can take a request now, if any.
    fn take_idle(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let senders = idle.get_mut(&addr)?;
        senders.retain(|s| !s.is_closed());
        // The most recently returned first. One that is still winding up its
        // last exchange stays for a later request.
        let ready = senders.iter().rposition(http1::SendRequest::is_ready)?;
        Some(senders.swap_remove(ready))
    }

    /// A connection to `addr`: an idle one, or a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Sender, ConnectError> {
        if let Some(sender) = self.take_idle(addr) {
            return Ok(sender);
        }
        self.connect(addr).await
    }

    async fn tcp(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream, ConnectError> {
        let stream = match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::TimedOut(self.connect_timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(ConnectError::Refused),
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, ConnectError> {
        let stream = self.tcp(addr).await?;
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Gives a connection back once its exchange is over.
    pub fn checkin(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let senders = idle.entry(addr).or_default();
            if senders.len() < MAX_IDLE_PER_ENDPOINT {
                senders.push(sender);
            }
        }
    }

    /// Forgets the idle connections of endpoints that are gone.
    pub fn retain(&self, live: impl Fn(&SocketAddr) -> bool) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|addr, _| live(addr));
        }
        if let Ok(mut streams) = self.streams.lock() {
            streams.retain(|addr, _| live(addr));
        }
    }
}
