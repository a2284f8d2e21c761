//! Helpers every test binary of the workspace needs, written once: [`eventually`], which polls
//! a condition with a deadline (tests never sleep to synchronise), and [`http_get`], a raw
//! HTTP/1.0 GET for metrics pages and other plain endpoints. Tests and test harnesses only.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
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
