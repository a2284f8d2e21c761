//! The authorization audit both gateways keep: a structured log event (target `audit`) and a
//! count in `gateway_authorization_withheld_total{what,reason}` whenever a track, a requested
//! field or a command is withheld from a caller, with the reason; and the count of degraded
//! responses by upstream method, `gateway_degraded_responses_total{source}`.
//!
//! Labels are the gateways' own fixed words (`&'static str`), never ids or caller input, so the
//! label sets stay bounded and nothing a caller may not see reaches a metric.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithheldLabels {
    what: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DegradedLabels {
    source: &'static str,
}

#[derive(Debug, Clone)]
pub struct Audit {
    withheld: Family<WithheldLabels, Counter>,
    degraded: Family<DegradedLabels, Counter>,
}

impl Audit {
    pub fn register(registry: &mut Registry) -> Self {
        let audit = Self {
            withheld: Family::default(),
            degraded: Family::default(),
        };
        registry.register(
            "gateway_authorization_withheld",
            "Tracks, requested fields and commands withheld from a caller, by reason",
            audit.withheld.clone(),
        );
        registry.register(
            "gateway_degraded_responses",
            "Responses answered without the data of a failed upstream, by upstream method",
            audit.degraded.clone(),
        );
        audit
    }

    /// A track the caller may not see (answered as not found, or left out of a batch).
    pub fn track_withheld(&self, track_id: &str, user: Option<&str>, reason: &'static str) {
        tracing::info!(target: "audit", track_id, user = user.unwrap_or("anonymous"), reason, "track withheld");
        self.count("track", reason);
    }

    /// A requested path left unset because the caller may not see its data.
    pub fn field_withheld(&self, path: &'static str, user: Option<&str>, reason: &'static str) {
        tracing::info!(target: "audit", path, user = user.unwrap_or("anonymous"), reason, "field withheld");
        self.count("field", reason);
    }

    /// A command refused on a track the caller may see (not downloadable, own track, own
    /// account).
    pub fn command_refused(&self, track_id: &str, user: Option<&str>, reason: &'static str) {
        tracing::info!(target: "audit", track_id, user = user.unwrap_or("anonymous"), reason, "command refused");
        self.count("command", reason);
    }

    /// A response answered without the data of `source`, an upstream method.
    pub fn degraded(&self, source: &'static str) {
        self.degraded
            .get_or_create(&DegradedLabels { source })
            .inc();
    }

    fn count(&self, what: &'static str, reason: &'static str) {
        self.withheld
            .get_or_create(&WithheldLabels { what, reason })
            .inc();
    }
}
