//! Rate limits keyed by the verified subject. A gateway's peer is the BFF for everyone, so the
//! peer address says nothing about who is calling; the token's `sub` does. Anonymous callers
//! share one budget per territory.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use service_runtime::shed::Ticket;

use crate::Principal;

/// The `[rate_limit]` section of a gateway's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Calls per second a signed-in user may make, on average (0: no limit).
    pub per_user_per_second: u32,
    /// How many calls a signed-in user may make at once after being idle.
    pub per_user_burst: u32,
    /// Calls per second all anonymous callers of one territory may make together (0: no limit).
    pub anonymous_per_territory_per_second: u32,
    pub anonymous_per_territory_burst: u32,
    /// The most calls a signed-in user has in flight at once (0: no cap). A call beyond it is
    /// RESOURCE_EXHAUSTED at once, so that one user cannot take the server's whole concurrency
    /// limit, with slow calls or calls that never send their message.
    #[serde(default)]
    pub max_in_flight_per_user: usize,
    /// The same for all anonymous callers of one territory together.
    #[serde(default)]
    pub max_in_flight_anonymous_per_territory: usize,
}

impl Default for RateLimitSettings {
    /// No limits.
    fn default() -> Self {
        Self {
            per_user_per_second: 0,
            per_user_burst: 0,
            anonymous_per_territory_per_second: 0,
            anonymous_per_territory_burst: 0,
            max_in_flight_per_user: 0,
            max_in_flight_anonymous_per_territory: 0,
        }
    }
}

fn limiter(per_second: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The limiters of one gateway.
#[derive(Debug)]
pub struct RateLimits {
    users: Option<DefaultKeyedRateLimiter<String>>,
    anonymous: Option<DefaultKeyedRateLimiter<String>>,
    in_flight_per_user: usize,
    in_flight_anonymous_per_territory: usize,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            users: limiter(settings.per_user_per_second, settings.per_user_burst),
            anonymous: limiter(
                settings.anonymous_per_territory_per_second,
                settings.anonymous_per_territory_burst,
            ),
            in_flight_per_user: settings.max_in_flight_per_user,
            in_flight_anonymous_per_territory: settings.max_in_flight_anonymous_per_territory,
        }
    }

    /// Counts the call of `ticket` against its caller's calls in flight: false when the
    /// caller already has as many as it may.
    pub fn admit_in_flight(&self, principal: &Principal, ticket: &Ticket) -> bool {
        match principal.user() {
            Some(user) => ticket.admit(&format!("user:{user}"), self.in_flight_per_user),
            None => ticket.admit(
                &format!("anonymous:{}", principal.territory),
                self.in_flight_anonymous_per_territory,
            ),
        }
    }

    /// Whether the principal may make one more call now.
    pub fn admit(&self, principal: &Principal) -> bool {
        let (limiter, key) = match principal.user() {
            Some(user) => (&self.users, user),
            None => (&self.anonymous, principal.territory.as_str()),
        };
        let Some(limiter) = limiter else {
            return true;
        };
        let admitted = limiter.check_key(&key.to_owned()).is_ok();
        // Keys of callers that have recovered their whole burst carry no state worth keeping.
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Principal {
        Principal {
            user_id: Some(id.into()),
            territory: "US".into(),
            client: None,
        }
    }

    fn anonymous(territory: &str) -> Principal {
        Principal {
            user_id: None,
            territory: territory.into(),
            client: None,
        }
    }

    #[test]
    fn each_user_has_a_budget_of_their_own() {
        let limits = RateLimits::new(&RateLimitSettings {
            per_user_per_second: 1,
            per_user_burst: 3,
            ..RateLimitSettings::default()
        });
        for _ in 0..3 {
            assert!(limits.admit(&user("usr_a")));
        }
        assert!(!limits.admit(&user("usr_a")), "the burst is spent");
        assert!(limits.admit(&user("usr_b")), "another user is not affected");
        assert!(
            limits.admit(&anonymous("US")),
            "anonymous callers are not limited here"
        );
    }

    #[test]
    fn anonymous_callers_share_a_budget_per_territory() {
        let limits = RateLimits::new(&RateLimitSettings {
            anonymous_per_territory_per_second: 1,
            anonymous_per_territory_burst: 2,
            ..RateLimitSettings::default()
        });
        assert!(limits.admit(&anonymous("DE")) && limits.admit(&anonymous("DE")));
        assert!(!limits.admit(&anonymous("DE")));
        assert!(limits.admit(&anonymous("FR")));
        assert!(
            (0..100).all(|_| limits.admit(&user("usr_a"))),
            "users are not limited here"
        );
    }
}
