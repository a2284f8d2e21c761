//! What the two domain gateways share, as `foundation-kit` is what the foundation services
//! share. Each gateway keeps its view, its commands, its rules and its one error enum; the
//! mechanisms below are written once, so that a fix in one reaches both and an operator meets
//! one vocabulary for one policy:
//!
//! - [`calls`]: the upstream caller. One deadline per request, from the caller's
//!   `grpc-timeout` less `calls.margin_ms`, carried across every upstream call of the request
//!   and capped per call by the upstream's `timeout_ms`; reads retry `UNAVAILABLE` once under
//!   a token-bucket budget (`[calls.retry]`), commands never; one rule for what counts as a
//!   timeout ([`UpstreamFailure`]).
//! - [`fanout`]: foundation work shared between concurrent requests: batching across
//!   requests, single flight and the counts cache (`[fanout]`).
//! - [`reads`]: the foundation's batched reads both gateways make, one call for many keys,
//!   each coalesced by [`fanout`].
//! - [`audit`]: `gateway_authorization_withheld` and `gateway_degraded_responses`, with the
//!   audit log events beside them.
//! - [`cursor`]: the gateways' own page tokens, sealed foundation tokens bound to the RPC,
//!   the caller and the query.
//! - [`governance`]: what each BFF client reads and may ask for: field usage per client and
//!   path, allowed masks, the fanout budget, and the `x-read-mask` header.
//! - [`edge`]: the `x-degraded-fields` response header, the signed-in user, the id rule at the
//!   edge, and the idempotency settings.

pub mod audit;
pub mod calls;
pub mod cursor;
pub mod edge;
pub mod fanout;
pub mod governance;
pub mod reads;

pub use audit::Audit;
pub use calls::{
    CallSettings, Calls, Deadline, RetrySettings, Upstream, UpstreamError, UpstreamFailure,
    outbound,
};
pub use cursor::{CursorSettings, Cursors, ForeignCursor, Scope};
pub use edge::{
    Anonymous, DEGRADED_FIELDS, IdempotencySettings, InvalidId, check_id, signed_in, with_degraded,
};
pub use fanout::{Fanout, FanoutSettings, Read};
pub use governance::{AllowedMaskSettings, BudgetSettings, Cost, Governance, requested_mask};
