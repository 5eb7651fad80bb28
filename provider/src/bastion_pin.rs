//! The bastion's SSH key, pinned on first use.
//!
//! The gateway authorizes one key: whoever holds it may open reverse
//! forwards on every gateway port. That key comes from the plugin
//! (`GET /bastion/publicKey`), so a plugin answer must never silently
//! replace it. The first key seen is pinned in the ConfigMap
//! `<gateway name>-bastion-pin` of the gateway's namespace (a provider
//! restart keeps it; a gateway that already authorizes a key pins that one);
//! afterwards a different key is refused: the gateway keeps the pinned key,
//! the node gets a Warning Event `BastionKeyRefused` and the counter
//! `offload_provider_bastion_key_refused` grows.
//!
//! Rotation is an explicit step (docs/setup.md): annotate the pin ConfigMap
//! with the new key's fingerprint (`offload.dev/accept-bastion-key:
//! SHA256:...`, as `ssh-keygen -lf` prints it) or delete the ConfigMap (the
//! next key is then pinned on first use again).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use offload_runtime::kubeapi::field_manager;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tracing::warn;

/// Annotation on the pin ConfigMap naming the fingerprint of the one key the
/// provider may switch to.
pub const ACCEPT_ANNOTATION: &str = "offload.dev/accept-bastion-key";
/// Keys of the pin ConfigMap.
pub const KEY_PUBLIC_KEY: &str = "publicKey";
pub const KEY_FINGERPRINT: &str = "fingerprint";
/// Event reasons (on the virtual node).
pub const REASON_REFUSED: &str = "BastionKeyRefused";
pub const REASON_ROTATED: &str = "BastionKeyRotated";

/// The OpenSSH SHA-256 fingerprint of a public key line (`ssh-ed25519 AAAA...`):
/// `SHA256:<base64 without padding>`, what `ssh-keygen -lf` prints.
pub fn fingerprint(key: &str) -> Option<String> {
    let blob = key.split_whitespace().nth(1)?;
    let raw = STANDARD.decode(blob).ok()?;
    Some(format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(raw))
    ))
}

/// The pin as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pin {
    /// The pinned public key; `None` when the ConfigMap has none.
    pub key: Option<String>,
    /// The fingerprint an operator accepted for the next key.
    pub accept: Option<String>,
}

/// What to do with the key the plugin offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The pinned key: nothing changes.
    Keep,
    /// Nothing pinned yet: pin and authorize this one.
    PinFirst,
    /// Another key, accepted by the operator's annotation: authorize and pin it.
    Rotate,
    /// Another key, not accepted: the gateway keeps the pinned one.
    Refuse { pinned: String, offered: String },
}

/// Fingerprints compare without regard to a missing `SHA256:` prefix or
/// surrounding blanks; the base64 itself is case-sensitive.
fn same_fingerprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        s.strip_prefix("SHA256:").unwrap_or(s).to_owned()
    };
    norm(a) == norm(b)
}

/// The decision for `offered` (a normalised key) against `pin`.
pub fn decide(pin: Option<&Pin>, offered: &str) -> Decision {
    let Some(pinned) = pin.and_then(|p| p.key.as_deref()) else {
        return Decision::PinFirst;
    };
    if pinned == offered {
        return Decision::Keep;
    }
    let offered_fp = fingerprint(offered).unwrap_or_else(|| "(not a key)".into());
    let accepted = pin
        .and_then(|p| p.accept.as_deref())
        .is_some_and(|a| same_fingerprint(a, &offered_fp));
    if accepted {
        Decision::Rotate
    } else {
        Decision::Refuse {
            pinned: fingerprint(pinned).unwrap_or_else(|| "(not a key)".into()),
            offered: offered_fp,
        }
    }
}

/// The pin ConfigMap of a gateway.
#[derive(Clone)]
pub struct PinStore {
    api: Api<ConfigMap>,
    name: String,
}

impl PinStore {
    pub fn new(client: &kube::Client, namespace: &str, gateway_name: &str) -> Self {
        PinStore {
            api: Api::namespaced(client.clone(), namespace),
            name: format!("{gateway_name}-bastion-pin"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn load(&self) -> Result<Option<Pin>, kube::Error> {
        let Some(cm) = self.api.get_opt(&self.name).await? else {
            return Ok(None);
        };
        let key = cm
            .data
            .as_ref()
            .and_then(|d| d.get(KEY_PUBLIC_KEY))
            .and_then(|k| offload_wire::tunnel::normalise_public_key(k).ok());
        let accept = cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ACCEPT_ANNOTATION))
            .cloned();
        Ok(Some(Pin { key, accept }))
    }

    /// Pins `key`; a rotation acceptance is used up.
    pub async fn save(&self, key: &str) -> Result<(), kube::Error> {
        let fp = fingerprint(key).unwrap_or_default();
        let patch = serde_json::json!({
            "metadata": {"annotations": {ACCEPT_ANNOTATION: null}},
            "data": {KEY_PUBLIC_KEY: key, KEY_FINGERPRINT: fp},
        });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {
                        "name": self.name,
                        "labels": {offload_wire::keys::LABEL_MANAGED_BY: offload_wire::keys::MANAGED_BY_PROVIDER},
                    },
                    "data": {KEY_PUBLIC_KEY: key, KEY_FINGERPRINT: fp},
                }))
                .map_err(kube::Error::SerdeError)?;
                let pp = PostParams {
                    field_manager: Some(field_manager::PROVIDER.into()),
                    ..Default::default()
                };
                self.api.create(&pp, &cm).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}

/// The metrics of the pin (registered once per process).
#[derive(Clone, Default)]
pub struct PinMetrics {
    refused: Counter,
    mismatch: Gauge,
}

impl PinMetrics {
    pub fn register(metrics: Option<&crate::metrics::Metrics>) -> Self {
        let m = PinMetrics::default();
        if let Some(metrics) = metrics {
            metrics.registry().register("offload_provider", |r| {
                r.register(
                    "bastion_key_refused",
                    "Bastion keys offered by the plugin and refused because another key is pinned",
                    m.refused.clone(),
                );
                r.register(
                    "bastion_key_mismatch",
                    "1 while the plugin offers a bastion key other than the pinned one (alert on it)",
                    m.mismatch.clone(),
                );
            });
        }
        m
    }
}

/// Where the follower reports what the operator must know.
pub struct Reporter {
    pub client: kube::Client,
    pub node: String,
    pub metrics: PinMetrics,
}

impl Reporter {
    /// A core/v1 Event on the Node, as the kubelet writes them (namespace
    /// `default`, no `eventTime`): `kubectl describe node` lists it. (An
    /// events.k8s.io Event about a cluster-scoped object is refused by
    /// 1.20 apiservers.)
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let ev = k8s_openapi::api::core::v1::Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}.", self.node)),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                // As the kubelet does: `kubectl describe node` finds events by it.
                uid: Some(self.node.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(note),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(field_manager::PROVIDER.into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some(field_manager::PROVIDER.into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        };
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), "default");
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }
}

#[cfg(test)]
mod tests;

mod follow;
pub use follow::{follow, initial_key};
