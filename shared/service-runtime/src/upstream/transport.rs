//! The HTTP/2 connection an upstream channel calls over. Every call goes straight onto the
//! shared connection (a clone of hyper's `SendRequest`), with no worker task between the caller
//! and the connection: tonic's `Channel` puts a `tower::buffer` task there, which costs each
//! call two more task wake-ups, a queue and a semaphore. The connection is made at the first
//! call, one connect at a time: callers that queued behind a connect that failed get its
//! failure instead of each trying again. A connection that closed is replaced at the next call,
//! and a call the closed connection refused before sending anything is sent once more on the
//! new one.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{
    Request, Response, Uri,
    uri::{Authority, Scheme},
};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tonic::{Status, body::Body};

/// The error of a call that did not get an answer: a [`Status`] when it could not connect,
/// else the status of what failed on the connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the TLS handshake may take, as for tonic's channels.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client side of TLS for one upstream: the configuration (ALPN `h2`) and the name the
/// server's certificate must carry.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub name: ServerName<'static>,
}

/// A lazily connecting HTTP/2 channel to one upstream, cheap to clone: the clones share the
/// connection.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("authority", &self.shared.authority)
            .finish_non_exhaustive()
    }
}

struct Shared {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    connect_timeout: Duration,
    keep_alive: Duration,
    tls: Option<Tls>,
    /// The connection calls go over, while it is open.
    open: Mutex<Option<SendRequest<Body>>>,
    /// Connects made so far, counted when each ends.
    attempts: AtomicU64,
    /// One connect at a time, and the failure of the last one (none after a success).
    connecting: tokio::sync::Mutex<Option<Status>>,
}

impl Transport {
    /// A channel to `uri` (`http://` or, with `tls`, `https://`), which connects at its first
    /// call. `uri_key` names the setting in errors.
    pub fn new(
        uri_key: &str,
        uri: &Uri,
        connect_timeout: Duration,
        keep_alive: Duration,
        tls: Option<Tls>,
    ) -> Result<Self, String> {
        let scheme = uri
            .scheme()
            .filter(|scheme| matches!(scheme.as_str(), "http" | "https"))
            .ok_or_else(|| format!("{uri_key}: {uri:?} is not an http:// or https:// url"))?
            .clone();
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{uri_key}: {uri:?} has no host"))?
            .clone();
        let https = scheme == Scheme::HTTPS;
        if https != tls.is_some() {
            return Err(format!(
                "{uri_key}: TLS is needed exactly for an https:// url"
            ));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `[::1]` connects as `::1`.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            shared: Arc::new(Shared {
                scheme,
                authority,
                host,
                port,
                connect_timeout,
                keep_alive,
                tls,
                open: Mutex::new(None),
                attempts: AtomicU64::new(0),
                connecting: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

impl Shared {
    /// The open connection, if there is one.
    fn current(&self) -> Option<SendRequest<Body>> {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.as_ref().filter(|sender| !sender.is_closed()).cloned()
    }

    /// The open connection, connecting when there is none.
    async fn sender(&self) -> Result<SendRequest<Body>, Status> {
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last_failure = self.connecting.lock().await;
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        // A connect ended while this caller queued, and failed: that is this caller's answer.
        if self.attempts.load(Ordering::Acquire) != seen
            && let Some(failure) = last_failure.as_ref()
        {
            return Err(failure.clone());
        }
        let connected = self.connect().await;
        self.attempts.fetch_add(1, Ordering::Release);
        match connected {
            Ok(sender) => {
                *self
                    .open
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sender.clone());
                *last_failure = None;
                Ok(sender)
            }
            Err(failure) => {
                *last_failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> Status {
        Status::unavailable(format!("transport error: {}: {what}", self.authority))
    }

    /// The status of a call that failed on its connection: what tonic reads from hyper's
    /// error (UNAVAILABLE for a keep-alive timeout, the code of an HTTP/2 reset), and where it
    /// finds nothing (the connection broke or closed under the call), UNAVAILABLE, as gRPC
    /// says of a failed transport, so that a read may be retried.
    fn failed(&self, error: hyper::Error) -> Status {
        Status::try_from_error(Box::new(error)).unwrap_or_else(|error| self.unavailable(error))
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Status> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| self.unavailable("connect timed out"))?
        .map_err(|error| self.unavailable(format_args!("cannot connect: {error}")))?;
        tcp.set_nodelay(true)
            .map_err(|error| self.unavailable(error))?;
        match &self.tls {
            None => self.handshake(tcp).await,
            Some(tls) => {
                let stream = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tls.connector.connect(tls.name.clone(), tcp),
                )
                .await
                .map_err(|_| self.unavailable("TLS handshake timed out"))?
                .map_err(|error| self.unavailable(format_args!("TLS handshake: {error}")))?;
                self.handshake(stream).await
            }
        }
    }

    /// HTTP/2 over `io`, its connection driven on a task of its own.
    async fn handshake<I>(&self, io: I) -> Result<SendRequest<Body>, Status>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keep_alive)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|error| self.unavailable(format_args!("HTTP/2 handshake: {error}")))?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%authority, %error, "an upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// `request` addressed to this upstream: tonic's clients give the path only.
    fn address(&self, request: &mut Request<Body>) -> Result<(), BoxError> {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *request.uri_mut() = Uri::from_parts(parts)?;
        Ok(())
    }
}

impl tower::Service<Request<Body>> for Transport {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A call waits for its connection itself: nothing queues in front of the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.address(&mut request)?;
            let mut sender = shared.sender().await?;
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut error) => match error.take_message() {
                    // Refused before anything was sent: the connection had closed. Once more,
                    // on a new one.
                    Some(request) => {
                        let mut sender = shared.sender().await?;
                        match sender.try_send_request(request).await {
                            Ok(response) => response,
                            Err(error) if error.message().is_some() => {
                                return Err(shared.unavailable("the connection closed").into());
                            }
                            Err(error) => return Err(shared.failed(error.into_error()).into()),
                        }
                    }
                    None => return Err(shared.failed(error.into_error()).into()),
                },
            };
            Ok(response.map(Body::new))
        })
    }
}
