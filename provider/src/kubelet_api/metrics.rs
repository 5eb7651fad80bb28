//! Metrics of the kubelet API's authentication and authorization, prefixed
//! `offload_provider_kubelet_` in the process's registry.

use offload_runtime::admin::SharedRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allowed, denied or error.
    pub decision: String,
    pub verb: String,
    pub subresource: String,
    /// cache, webhook or always-allow.
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct AuthMetrics {
    /// TokenReviews sent, by result (authenticated, unauthenticated, error).
    pub token_reviews: Family<ResultLabels, Counter>,
    /// Bearer tokens refused with 429 because the TokenReview cap was reached.
    pub token_reviews_throttled: Counter,
    /// Authorization decisions.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Requests refused with 401, by reason (no-credentials, bad-certificate,
    /// bad-token).
    pub unauthenticated: Family<ReasonLabels, Counter>,
}

impl AuthMetrics {
    pub fn register(registry: &SharedRegistry) -> Self {
        registry.register("offload_provider_kubelet", |r| {
            let m = AuthMetrics {
                token_reviews: Family::default(),
                token_reviews_throttled: Counter::default(),
                decisions: Family::default(),
                unauthenticated: Family::default(),
            };
            r.register(
                "token_reviews",
                "TokenReviews sent for bearer tokens on the kubelet API, by result",
                m.token_reviews.clone(),
            );
            r.register(
                "token_reviews_throttled",
                "Bearer tokens answered 429 without a TokenReview (over --token-review-qps)",
                m.token_reviews_throttled.clone(),
            );
            r.register(
                "authorization_decisions",
                "Kubelet API authorization decisions (SubjectAccessReview or cache)",
                m.decisions.clone(),
            );
            r.register(
                "unauthenticated_requests",
                "Kubelet API requests answered 401, by reason",
                m.unauthenticated.clone(),
            );
            m
        })
    }

    pub fn token_review(&self, result: &str) {
        self.token_reviews
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn unauthenticated(&self, reason: &str) {
        self.unauthenticated
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn decision(&self, decision: &str, verb: &str, subresource: &str, source: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: decision.into(),
                verb: verb.into(),
                subresource: subresource.into(),
                source: source.into(),
            })
            .inc();
    }
}
