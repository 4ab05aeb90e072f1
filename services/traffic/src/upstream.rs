//! Connections from the ingress to app instances: HTTP/1.1 with keep-alive,
//! one idle pool per endpoint address, one set of pools per ingress worker
//! (so a worker never waits on another's lock). Connecting is separate from
//! sending, so a request whose connection failed has not been consumed and
//! can go to another endpoint.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
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
    connect_timeout: Duration,
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { idle: Mutex::new(HashMap::new()), connect_timeout })
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

    /// A new connection of its own (for upgrades, which never go back).
    pub async fn connect_upgradable(&self, addr: SocketAddr) -> Result<Sender, ConnectError> {
        let stream = self.tcp(addr).await?;
        let (sender, connection) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
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
    }
}
