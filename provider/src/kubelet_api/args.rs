//! Flags of the kubelet API's authorization, named like the kubelet's.

use std::time::Duration;

use clap::{Args, ValueEnum};
use offload_runtime::duration::parse_duration;

/// How authenticated requests are authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthorizationMode {
    /// A SubjectAccessReview per request (cached), as the kubelet's
    /// `--authorization-mode=Webhook`.
    Webhook,
    /// Every authenticated caller may do everything: any certificate of the
    /// client CA and any service-account token reads every pod's spec and
    /// logs. Only for clusters where the provider may not create
    /// SubjectAccessReviews.
    AlwaysAllow,
}

#[derive(Clone, Debug, Args)]
pub struct KubeletAuthArgs {
    /// How the kubelet API authorizes an authenticated caller: the verb of
    /// the HTTP method on `nodes/<subresource>` of this node, the
    /// subresource by path as on a kubelet (`proxy` for `/pods` and
    /// `/containerLogs`; `stats`, `metrics`, `log`, `spec`, `configz`,
    /// `healthz`).
    #[arg(long, env = "AUTHORIZATION_MODE", value_enum, default_value_t = AuthorizationMode::Webhook)]
    pub authorization_mode: AuthorizationMode,

    /// How long an allowed SubjectAccessReview answer is cached.
    #[arg(long = "authorization-webhook-cache-authorized-ttl", env = "AUTHORIZATION_WEBHOOK_CACHE_AUTHORIZED_TTL",
          default_value = "5m", value_parser = parse_duration)]
    pub authorized_ttl: Duration,

    /// How long a denied SubjectAccessReview answer is cached.
    #[arg(long = "authorization-webhook-cache-unauthorized-ttl", env = "AUTHORIZATION_WEBHOOK_CACHE_UNAUTHORIZED_TTL",
          default_value = "30s", value_parser = parse_duration)]
    pub unauthorized_ttl: Duration,

    /// How long a TokenReview answer (authenticated or not) is cached.
    #[arg(long = "authentication-token-webhook-cache-ttl", env = "AUTHENTICATION_TOKEN_WEBHOOK_CACHE_TTL",
          default_value = "2m", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// TokenReviews per second for bearer tokens not in the cache; above it
    /// (after the burst) such requests get 429 without asking the apiserver,
    /// so a flood of made-up tokens cannot flood the apiserver.
    #[arg(long, env = "TOKEN_REVIEW_QPS", default_value_t = 10.0)]
    pub token_review_qps: f64,

    /// TokenReviews allowed at once before --token-review-qps applies.
    #[arg(long, env = "TOKEN_REVIEW_BURST", default_value_t = 20)]
    pub token_review_burst: u32,
}

impl Default for KubeletAuthArgs {
    fn default() -> Self {
        KubeletAuthArgs {
            authorization_mode: AuthorizationMode::Webhook,
            authorized_ttl: Duration::from_secs(300),
            unauthorized_ttl: Duration::from_secs(30),
            token_ttl: Duration::from_secs(120),
            token_review_qps: 10.0,
            token_review_burst: 20,
        }
    }
}
