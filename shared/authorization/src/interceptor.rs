//! The tonic interceptor that authenticates every call of a gateway service: it reads
//! `authorization: Bearer <JWT>`, verifies it, and puts the [`Principal`] into the request's
//! extensions, or answers `UNAUTHENTICATED`. Health and reflection are not wrapped.
//!
//! Interceptors are synchronous, and a token may name a key the verifier has yet to load (the
//! identity provider rotated its keys). [`Authenticator::await_keys`] puts [`AwaitKeys`] in
//! front of a gateway's routes (gRPC and Twirp alike): it lets such a request wait for the
//! rate-limited reload of the key set, and then the interceptor verifies it as usual.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use service_runtime::shed::Ticket;
use tonic::{Request, Status, service::Interceptor, service::Routes};

use crate::{
    Principal, Verifier,
    client::ClientNames,
    limit::{RateLimitSettings, RateLimits},
    token::TokenError,
};

#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<Verifier>,
    limits: Option<Arc<RateLimits>>,
    clients: Option<Arc<ClientNames>>,
}

impl Authenticator {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            limits: None,
            clients: None,
        }
    }

    /// Also names each call's BFF client ([`crate::client`]) in the request's extensions, or
    /// refuses the call as [`ClientNames::identify`] says.
    pub fn with_clients(mut self, clients: ClientNames) -> Self {
        self.clients = Some(Arc::new(clients));
        self
    }

    /// Also applies rate limits keyed by the verified subject: a call over its budget is
    /// `RESOURCE_EXHAUSTED`, before any work is done for it.
    pub fn with_rate_limits(mut self, settings: &RateLimitSettings) -> Self {
        self.limits = Some(Arc::new(RateLimits::new(settings)));
        self
    }

    /// `routes` behind [`AwaitKeys`] when the verifier's keys come from a key set; `routes`
    /// as they are otherwise.
    pub fn await_keys(&self, routes: Routes) -> Routes {
        if !self.verifier.reloads_keys() {
            return routes;
        }
        Routes::from(routes.into_axum_router().layer(AwaitKeysLayer {
            verifier: self.verifier.clone(),
        }))
    }

    fn principal(&self, request: &Request<()>) -> Result<Principal, TokenError> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or(TokenError::Missing)?
            .to_str()
            .map_err(|_| TokenError::Malformed)?;
        self.verifier.verify(bearer(header)?)
    }
}

/// The token of an `authorization` header value.
fn bearer(header: &str) -> Result<&str, TokenError> {
    let (scheme, token) = header.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

/// Puts [`AwaitKeys`] around a service.
#[derive(Debug, Clone)]
pub struct AwaitKeysLayer {
    verifier: Arc<Verifier>,
}

impl<S> tower::Layer<S> for AwaitKeysLayer {
    type Service = AwaitKeys<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AwaitKeys {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// Before a request goes on, waits until the key its bearer token names is loaded, if it can
/// be ([`Verifier::prepare`]); it never answers a request itself.
#[derive(Debug, Clone)]
pub struct AwaitKeys<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S, B> tower::Service<http::Request<B>> for AwaitKeys<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this request; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|header| bearer(header).ok())
            .map(str::to_owned);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            if let Some(token) = token {
                verifier.prepare(&token).await;
            }
            inner.call(request).await
        })
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.principal(&request) {
            Ok(principal) => {
                if let Some(limits) = &self.limits
                    && !limits.admit(&principal)
                {
                    tracing::debug!(
                        user = principal.user().unwrap_or("anonymous"),
                        "rate limited"
                    );
                    return Err(Status::resource_exhausted(
                        "rate limit exceeded for this caller; retry later",
                    ));
                }
                if let Some(limits) = &self.limits
                    && let Some(ticket) = request.extensions().get::<Ticket>()
                    && !limits.admit_in_flight(&principal, ticket)
                {
                    tracing::debug!(
                        user = principal.user().unwrap_or("anonymous"),
                        "too many calls in flight"
                    );
                    return Err(Status::resource_exhausted(
                        "this caller has as many calls in flight as it may; retry with backoff",
                    ));
                }
                if let Some(clients) = &self.clients {
                    let client = clients.identify(request.metadata(), &principal)?;
                    // On the call's server span, so that traces can be told apart by client.
                    let span = tracing::Span::current();
                    span.record("client.name", client.name());
                    if let Some(version) = client.version() {
                        span.record("client.version", version);
                    }
                    request.extensions_mut().insert(client);
                }
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(error) => {
                tracing::debug!(%error, "unauthenticated call");
                Err(Status::unauthenticated(error.to_string()))
            }
        }
    }
}

/// The principal the interceptor stored; `UNAUTHENTICATED` if the service was not wrapped.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request carries no verified identity"))
}
