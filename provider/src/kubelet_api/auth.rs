//! The kubelet API's gate, as the kubelet's with `--authentication-token-webhook`
//! and `--authorization-mode=Webhook`: authenticate (client certificate of
//! the client CA, else a bearer token through a cached and rate-capped
//! TokenReview), then authorize every request with a cached
//! SubjectAccessReview on `nodes/<subresource>` of this node.
//!
//! Answers: 401 `Unauthorized` without a usable identity, 429 when an
//! unknown token would need a TokenReview over the cap, 403 `Forbidden
//! (user=..., verb=..., resource=nodes, subresource=...)` when the apiserver
//! says no, 500 `Authorization error (...)` when it cannot be asked (never
//! cached).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, PostParams};
use offload_runtime::admin::SharedRegistry;
use offload_runtime::tls::PeerCertificates;
use tracing::{debug, info, warn};

use super::args::{AuthorizationMode, KubeletAuthArgs};
use super::authn::{CertError, bearer, cert_user, reviewed_user, token_key, token_review};
use super::authz::{Attributes, UserInfo, error_message, forbidden_message, review};
use super::cache::{TokenBucket, TtlCache};
use super::metrics::AuthMetrics;
use super::text;

/// At most this many tokens and decisions are cached (each); expired
/// entries, then those closest to expiry, make room for new ones.
const CACHE_CAPACITY: usize = 4096;

/// Who the caller is, or why nobody.
#[derive(Debug)]
enum Authn {
    User(UserInfo),
    /// 401, with the reason for the metric.
    Unauthenticated(&'static str),
    /// 429: the token is unknown and the TokenReview cap is reached.
    Throttled,
}

/// The apiserver's answer for one user and request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Allowed,
    Denied,
    Error,
}

/// What a request presents: the user of its verified client certificate
/// (set by the TLS layer only for a certificate of the client CA) and its
/// bearer token. Taken out of the request before any await: a `&Request` is
/// not `Send`.
type Credentials = (Option<Result<UserInfo, CertError>>, Option<String>);

fn credentials(req: &Request) -> Credentials {
    let cert = req
        .extensions()
        .get::<PeerCertificates>()
        .and_then(|p| p.0.first())
        .map(|leaf| cert_user(leaf));
    (cert, bearer(req.headers()).map(str::to_string))
}

/// Authentication and authorization of the kubelet API, cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// For TokenReviews and SubjectAccessReviews.
    client: Option<kube::Client>,
    token_review: bool,
    args: KubeletAuthArgs,
    /// SHA-256 of a token -> its user (`None`: not authenticated).
    tokens: Mutex<TtlCache<[u8; 32], Option<UserInfo>>>,
    decisions: Mutex<TtlCache<(UserInfo, Attributes), bool>>,
    bucket: Mutex<TokenBucket>,
    metrics: AuthMetrics,
}

impl Auth {
    /// The gate of node `node`. `client` asks the apiserver; without it
    /// bearer tokens are refused and the webhook mode refuses everything
    /// (500), so pass one unless the mode is `AlwaysAllow`.
    pub fn new(
        node: String,
        client: Option<kube::Client>,
        token_review: bool,
        args: KubeletAuthArgs,
        registry: &SharedRegistry,
    ) -> Self {
        let bucket = TokenBucket::new(
            args.token_review_qps,
            args.token_review_burst,
            Instant::now(),
        );
        if args.authorization_mode == AuthorizationMode::AlwaysAllow {
            warn!(
                "kubelet API authorization is AlwaysAllow: every certificate of the client CA \
                 and every valid token reads every pod's spec and logs"
            );
        }
        Auth {
            inner: Arc::new(Inner {
                node,
                client,
                token_review,
                args,
                tokens: Mutex::new(TtlCache::new(CACHE_CAPACITY)),
                decisions: Mutex::new(TtlCache::new(CACHE_CAPACITY)),
                bucket: Mutex::new(bucket),
                metrics: AuthMetrics::register(registry),
            }),
        }
    }

    /// The user of a verified client certificate, else the bearer token's.
    async fn authenticate(&self, (cert, token): Credentials) -> Authn {
        match cert {
            Some(Ok(user)) => return Authn::User(user),
            // Like the apiserver's union of authenticators: a token may still do.
            Some(Err(e)) => debug!(error = %e, "client certificate names no user"),
            None => {}
        }
        match token {
            Some(token) if self.inner.token_review => self.authenticate_token(&token).await,
            Some(_) => Authn::Unauthenticated("token-review-off"),
            None => Authn::Unauthenticated("no-credentials"),
        }
    }

    async fn authenticate_token(&self, token: &str) -> Authn {
        let i = &self.inner;
        let key = token_key(token);
        let cached = lock(&i.tokens).get(&key, Instant::now());
        if let Some(user) = cached {
            return user.map_or(Authn::Unauthenticated("bad-token"), Authn::User);
        }
        let Some(client) = &i.client else {
            return Authn::Unauthenticated("token-review-off");
        };
        if !lock(&i.bucket).try_take(Instant::now()) {
            i.metrics.token_reviews_throttled.inc();
            return Authn::Throttled;
        }
        let api: Api<TokenReview> = Api::all(client.clone());
        let user = match api
            .create(&PostParams::default(), &token_review(token))
            .await
        {
            Ok(r) => reviewed_user(r.status),
            Err(e) => {
                i.metrics.token_review("error");
                warn!(error = %e, "TokenReview failed");
                // Not cached: the token may be fine once the apiserver answers.
                return Authn::Unauthenticated("token-review-error");
            }
        };
        i.metrics.token_review(if user.is_some() {
            "authenticated"
        } else {
            "unauthenticated"
        });
        lock(&i.tokens).insert(key, user.clone(), i.args.token_ttl, Instant::now());
        user.map_or(Authn::Unauthenticated("bad-token"), Authn::User)
    }

    async fn authorize(&self, user: &UserInfo, attrs: Attributes) -> Decision {
        let i = &self.inner;
        let record = |d: Decision, source: &str| {
            let name = match d {
                Decision::Allowed => "allowed",
                Decision::Denied => "denied",
                Decision::Error => "error",
            };
            i.metrics
                .decision(name, attrs.verb, attrs.subresource, source);
            d
        };
        if i.args.authorization_mode == AuthorizationMode::AlwaysAllow {
            return record(Decision::Allowed, "always-allow");
        }
        let key = (user.clone(), attrs);
        let cached = lock(&i.decisions).get(&key, Instant::now());
        if let Some(allowed) = cached {
            let d = if allowed {
                Decision::Allowed
            } else {
                Decision::Denied
            };
            return record(d, "cache");
        }
        let Some(client) = &i.client else {
            return record(Decision::Error, "webhook");
        };
        let api: Api<SubjectAccessReview> = Api::all(client.clone());
        let status = match api
            .create(&PostParams::default(), &review(user, attrs, &i.node))
            .await
        {
            Ok(r) => r.status.unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, user = %user.name, verb = attrs.verb,
                      subresource = attrs.subresource, "SubjectAccessReview failed");
                return record(Decision::Error, "webhook");
            }
        };
        let allowed = status.allowed && status.denied != Some(true);
        let ttl = if allowed {
            i.args.authorized_ttl
        } else {
            info!(user = %user.name, verb = attrs.verb, subresource = attrs.subresource,
                  reason = status.reason.as_deref().unwrap_or(""), "kubelet API request forbidden");
            i.args.unauthorized_ttl
        };
        lock(&i.decisions).insert(key, allowed, ttl, Instant::now());
        record(
            if allowed {
                Decision::Allowed
            } else {
                Decision::Denied
            },
            "webhook",
        )
    }
}

/// A poisoned lock only means another request panicked mid-update of a
/// cache; its content is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The middleware in front of every route.
pub async fn gate(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let user = match auth.authenticate(credentials(&req)).await {
        Authn::User(u) => u,
        Authn::Unauthenticated(reason) => {
            auth.inner.metrics.unauthenticated(reason);
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        Authn::Throttled => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::RETRY_AFTER, "1"),
                ],
                "Too many unknown bearer tokens: TokenReviews are rate limited \
                 (--token-review-qps); retry later",
            )
                .into_response();
        }
    };
    let Some(attrs) = Attributes::of(req.method(), req.uri().path()) else {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not allowed", req.method()),
        );
    };
    match auth.authorize(&user, attrs).await {
        Decision::Allowed => next.run(req).await,
        Decision::Denied => text(StatusCode::FORBIDDEN, forbidden_message(&user, attrs)),
        Decision::Error => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_message(&user, attrs),
        ),
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
