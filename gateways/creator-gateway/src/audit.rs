//! The authorization audit: a structured log event (target `audit`) and a metric whenever a
//! track is withheld from a caller, with the reason. The creator gateway withholds for one
//! reason: the track belongs to someone else (answered as not found, like a missing one).

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

#[derive(Debug, Clone)]
pub(crate) struct Audit {
    withheld: Family<WithheldLabels, Counter>,
}

impl Audit {
    /// Registers `gateway_authorization_withheld_total{what,reason}`, as the consumer gateway
    /// names it.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let audit = Self {
            withheld: Family::default(),
        };
        registry.register(
            "gateway_authorization_withheld",
            "Tracks withheld from a caller, by reason",
            audit.withheld.clone(),
        );
        audit
    }

    /// Another user's track, answered as not found.
    pub(crate) fn not_owner(&self, track_id: &str, user: &str) {
        tracing::info!(target: "audit", track_id, user, reason = "not_owner", "track withheld");
        self.withheld
            .get_or_create(&WithheldLabels {
                what: "track",
                reason: "not_owner",
            })
            .inc();
    }
}
