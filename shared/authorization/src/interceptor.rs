//! The tonic interceptor that authenticates every call of a gateway service: it reads
//! `authorization: Bearer <JWT>`, verifies it, and puts the [`Principal`] into the request's
//! extensions, or answers `UNAUTHENTICATED`. Health and reflection are not wrapped.

use std::sync::Arc;

use service_runtime::shed::Ticket;
use tonic::{Request, Status, service::Interceptor};

use crate::{
    Principal, Verifier,
    limit::{RateLimitSettings, RateLimits},
    token::TokenError,
};

#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<Verifier>,
    limits: Option<Arc<RateLimits>>,
}

impl Authenticator {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            limits: None,
        }
    }

    /// Also applies rate limits keyed by the verified subject: a call over its budget is
    /// `RESOURCE_EXHAUSTED`, before any work is done for it.
    pub fn with_rate_limits(mut self, settings: &RateLimitSettings) -> Self {
        self.limits = Some(Arc::new(RateLimits::new(settings)));
        self
    }

    fn principal(&self, request: &Request<()>) -> Result<Principal, TokenError> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or(TokenError::Missing)?
            .to_str()
            .map_err(|_| TokenError::Malformed)?;
        let (scheme, token) = header.split_once(' ').ok_or(TokenError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Missing);
        }
        self.verifier.verify(token.trim())
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
