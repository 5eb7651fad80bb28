//! Standalone mode: gateway-manager next to *another* Virtual Kubelet (for
//! example interLink's own), as a mutating admission webhook.
//!
//! # Which pods
//!
//! A pod is tunneled when it **targets the virtual node** at creation, i.e.
//! `spec.nodeName` is the node, or `spec.nodeSelector["kubernetes.io/hostname"]`
//! is the node (how interLink's docs pin a pod to its virtual node), and it
//! declares TCP `containerPort`s. A toleration of the virtual node's taint
//! alone is not enough: it only *allows* the pod there, the scheduler may
//! still put it on a real node, and tunnel ports would be wasted on it. Pods
//! that reach the node only through affinity rules get no tunnel.
//!
//! # The UID problem, and how allocation is keyed
//!
//! Mutating admission runs *before* the apiserver fills in `metadata.uid` (and,
//! for `generateName` pods, `metadata.name`), but the allocator and the pod's
//! Service are keyed by UID (a pod deleted and re-created under the same name
//! is another owner). So at admission the ports are **reserved** under a
//! provisional key (see [`admission::reservation_key`]):
//! - `admission:<namespace>/<name>` for a named pod: a second call for the
//!   same request (the apiserver may call a webhook again) gets the same ports;
//! - `admission:<namespace>/<generateName>*<request uid>` for a `generateName`
//!   pod (no name yet; the request UID makes it unique).
//!
//! The JSON patch puts the usual tunnel annotations on the pod (same keys and
//! values as in provider mode). **After creation**, the pod watcher sees the
//! pod with its UID: the annotation's gateway ports are held by a reservation
//! that matches the pod (same namespace, same name or a name generated from
//! the same prefix, same ports), so the reservation is handed over to the UID
//! without changing a single port ([`crate::ports::Allocator::transfer`]), and
//! then [`crate::GatewayManager::prepare_pod`] does what it does in provider mode
//! (Service `<pod>-tunnel` owned by the pod, `interlink.io/tunnel-service`).
//! Its allocation is idempotent, so a pod whose reservation was lost (the
//! webhook restarted between admission and creation, or the webhook was down
//! and `failurePolicy: Ignore` let the pod through) simply gets ports then,
//! and its annotations are patched; a pod whose annotated ports are held by
//! someone else gets fresh ones the same way.
//!
//! A reservation whose pod never appears (the create failed after admission:
//! name conflict, quota, another webhook denied it) is released after
//! `pending_ttl`. Ports are released when a tunneled pod is deleted or
//! finishes (Succeeded/Failed), and for pods deleted while the watch was
//! down (found missing on re-list). The watcher sees only the node's pods and
//! the unscheduled ones (field selectors), not every pod of the cluster.
//!
//! Annotations a pod carries *at admission* are never trusted (a copied
//! manifest carries another pod's ports): they are overwritten.
//!
//! # failurePolicy
//!
//! Default `Ignore`. A webhook matches pods by namespace/labels only, not by
//! `spec.nodeName`, so with `Fail` an unreachable gateway-manager would block
//! the creation of *every* pod it matches, including its own replacement pod
//! (the webhook could never come back) and system pods. With `Ignore`, a pod
//! admitted while the webhook is down is still reconciled by the watcher
//! after creation (ports allocated, annotations patched), which is enough
//! for a Virtual Kubelet that reads the pod when it creates it remotely after
//! scheduling; `Fail` is available (`--failure-policy Fail`) together with a
//! `--namespace-selector` that limits the webhook to opted-in namespaces.
//!
//! Dry-run creates get the patch they would get (ports allocated and
//! released at once, under a key of their own): `sideEffects: NoneOnDryRun`.

//!
//! # Modules
//!
//! - [`admission`]: the decisions, pure (which pods, reservation key, patch).
//! - [`reservations`]: [`Webhook`], the reservations and their hand-over to
//!   the created pods, the sweeper (expiry, retries).
//! - [`backstop`]: the pod watches that drive the hand-over and the releases.
//! - [`http`]: the HTTP handlers and the TLS accept loop.
//! - [`tls`]: the serving certificate.
//! - [`registration`]: the MutatingWebhookConfiguration.
//! - [`metrics`]: the webhook's metrics.

pub mod admission;
pub mod backstop;
pub mod http;
pub mod metrics;
pub mod registration;
pub mod reservations;
pub mod tls;

#[cfg(test)]
mod fixtures;

pub use admission::{
    Decision, HOSTNAME_LABEL, RESERVATION_PREFIX, annotation_patch, decide, reservation_key,
    reservation_matches, targets_node,
};
pub use http::{router_with_admin, routes, serve_tls_until};
pub use metrics::{ResultLabels, WebhookMetrics};
pub use registration::{Endpoint, Registration, WEBHOOK_NAME, parse_labels, unregister};
pub use reservations::Webhook;
pub use tls::{ServingCert, TlsError};

/// Path the apiserver posts AdmissionReviews to.
pub const MUTATE_PATH: &str = "/mutate";
