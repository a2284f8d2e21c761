//! The tonic interceptor that authenticates every call of a gateway service: it reads
//! `authorization: Bearer <JWT>`, verifies it, and puts the [`Principal`] into the request's
//! extensions, or answers `UNAUTHENTICATED`. Health and reflection are not wrapped.

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

use crate::{Principal, Verifier, token::TokenError};

#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<Verifier>,
}

impl Authenticator {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
        }
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
