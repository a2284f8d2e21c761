//! Identity and the access-policy primitives the gateways share.
//!
//! - [`token`]: verifies the BFF's JWT into a [`Principal`] with a pinned algorithm, issuer and
//!   audience, and mints development tokens;
//! - [`interceptor`]: the tonic interceptor that puts the principal into request extensions,
//!   or answers `UNAUTHENTICATED`;
//! - [`limit`]: rate limits keyed by the verified subject, applied by the interceptor;
//! - [`policy`]: pure functions for geoblocking and visibility, from which each gateway builds
//!   its own rules (the consumer's and the creator's rules live in their gateways).

pub mod interceptor;
pub mod limit;
pub mod policy;
pub mod token;

pub use interceptor::Authenticator;
pub use token::{AuthSettings, Principal, TokenError, Verifier};
