//! The per-field authorization audit: a structured log event (target `audit`) and a metric
//! whenever a track or a requested path is withheld from a caller, with the reason; and the
//! count of degraded responses.

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
pub(crate) struct Audit {
    withheld: Family<WithheldLabels, Counter>,
    degraded: Family<DegradedLabels, Counter>,
}

impl Audit {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let audit = Self {
            withheld: Family::default(),
            degraded: Family::default(),
        };
        registry.register(
            "gateway_authorization_withheld",
            "Tracks and requested fields withheld from a caller, by reason",
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
    pub(crate) fn track_withheld(&self, track_id: &str, user: Option<&str>, reason: &'static str) {
        tracing::info!(target: "audit", track_id, user = user.unwrap_or("anonymous"), reason, "track withheld");
        self.withheld
            .get_or_create(&WithheldLabels {
                what: "track",
                reason,
            })
            .inc();
    }

    /// A requested path left unset because the caller may not see its data.
    pub(crate) fn field_withheld(
        &self,
        path: &'static str,
        user: Option<&str>,
        reason: &'static str,
    ) {
        tracing::info!(target: "audit", path, user = user.unwrap_or("anonymous"), reason, "field withheld");
        self.withheld
            .get_or_create(&WithheldLabels {
                what: "field",
                reason,
            })
            .inc();
    }

    /// A command refused on a visible track (not downloadable, own track, own account).
    pub(crate) fn command_refused(&self, track_id: &str, user: Option<&str>, reason: &'static str) {
        tracing::info!(target: "audit", track_id, user = user.unwrap_or("anonymous"), reason, "command refused");
        self.withheld
            .get_or_create(&WithheldLabels {
                what: "command",
                reason,
            })
            .inc();
    }

    pub(crate) fn degraded(&self, source: &'static str) {
        self.degraded
            .get_or_create(&DegradedLabels { source })
            .inc();
    }
}
