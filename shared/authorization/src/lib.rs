//! Identity and the access-policy primitives the gateways share.
//!
//! - [`token`]: verifies the BFF's JWT into a [`Principal`] with a pinned algorithm, issuer and
//!   audience, and mints development tokens;
//! - [`keys`]: the keys tokens are verified with: one configured key, or a JSON Web Key Set
//!   from a file or URL, chosen by `kid` and reloaded so that keys rotate without a restart;
//! - [`interceptor`]: the tonic interceptor that puts the principal into request extensions,
//!   or answers `UNAUTHENTICATED`, and the layer that lets a request wait for a reload of the
//!   key set its token's `kid` calls for;
//! - [`client`]: which BFF client makes a call (a token claim, or trusted metadata), with
//!   the set of names bounded for metric labels;
//! - [`limit`]: rate limits keyed by the verified subject, applied by the interceptor;
//! - [`policy`]: pure functions for geoblocking and visibility, from which each gateway builds
//!   its own rules (the consumer's and the creator's rules live in their gateways).

pub mod client;
pub mod interceptor;
pub mod keys;
pub mod limit;
pub mod policy;
pub mod token;

pub use interceptor::Authenticator;
pub use token::{AuthSettings, Principal, TokenError, Verifier};
