//! Registration: the MutatingWebhookConfiguration that makes the apiserver
//! call us (built as a plain value, applied and deleted here).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Api, Client};
use offload_runtime::kubeapi::{self, field_manager};
use tracing::info;

use super::MUTATE_PATH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://host:port/mutate` (outside the cluster, or a fixed address).
    Url(String),
    /// An in-cluster Service.
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
}

/// What goes into the MutatingWebhookConfiguration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Name of the (cluster-wide) MutatingWebhookConfiguration.
    pub config_name: String,
    pub endpoint: Endpoint,
    /// PEM CA bundle the apiserver verifies the webhook with.
    pub ca_pem: String,
    /// `Ignore` or `Fail` (see the module docs).
    pub failure_policy: String,
    /// Only namespaces with these labels (empty: every namespace).
    pub namespace_labels: BTreeMap<String, String>,
    /// Only pods with these labels (empty: every pod).
    pub object_labels: BTreeMap<String, String>,
    pub timeout_seconds: i32,
}

/// Name of the one webhook inside the configuration (must be a qualified name).
pub const WEBHOOK_NAME: &str = "tunnel.gateway-manager.offload.dev";

fn selector(labels: &BTreeMap<String, String>) -> Option<LabelSelector> {
    (!labels.is_empty()).then(|| LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    })
}

impl Registration {
    /// The configuration object (admissionregistration.k8s.io/v1, fields
    /// Kubernetes 1.20 knows only).
    pub fn object(&self) -> MutatingWebhookConfiguration {
        let client_config = match &self.endpoint {
            Endpoint::Url(url) => WebhookClientConfig {
                url: Some(url.clone()),
                ca_bundle: Some(ByteString(self.ca_pem.clone().into_bytes())),
                service: None,
            },
            Endpoint::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                url: None,
                ca_bundle: Some(ByteString(self.ca_pem.clone().into_bytes())),
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(MUTATE_PATH.to_owned()),
                    port: Some(i32::from(*port)),
                }),
            },
        };
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.config_name.clone()),
                labels: Some(BTreeMap::from([(
                    offload_wire::keys::LABEL_MANAGED_BY.to_owned(),
                    "offload-gateway-manager".to_owned(),
                )])),
                ..Default::default()
            },
            webhooks: Some(vec![MutatingWebhook {
                name: WEBHOOK_NAME.to_owned(),
                admission_review_versions: vec!["v1".to_owned()],
                client_config,
                failure_policy: Some(self.failure_policy.clone()),
                match_policy: Some("Equivalent".to_owned()),
                namespace_selector: selector(&self.namespace_labels),
                object_selector: selector(&self.object_labels),
                reinvocation_policy: Some("Never".to_owned()),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned()]),
                    resources: Some(vec!["pods".to_owned()]),
                    scope: Some("Namespaced".to_owned()),
                }]),
                side_effects: "NoneOnDryRun".to_owned(),
                timeout_seconds: Some(self.timeout_seconds),
                match_conditions: None,
            }]),
        }
    }

    /// Create or update the configuration (server-side apply).
    pub async fn apply(&self, client: &Client) -> Result<(), kubeapi::Error> {
        kubeapi::apply(client, field_manager::GATEWAY_MANAGER, &self.object()).await?;
        info!(config = %self.config_name, "mutating webhook registered");
        Ok(())
    }
}

/// Delete a webhook configuration (404 is fine).
pub async fn unregister(client: &Client, config_name: &str) -> Result<(), kubeapi::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    kubeapi::delete_ignoring_404(&api, config_name).await
}

/// Parse `k=v,k2=v2` (label selector of equalities).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("{p:?} is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(format!("{p:?} has an empty key"));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn registration_object_is_scoped_and_1_20_clean() {
        let r = Registration {
            config_name: "offload-gm".into(),
            endpoint: Endpoint::Url("https://10.201.0.1:8443/mutate".into()),
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            failure_policy: "Ignore".into(),
            namespace_labels: BTreeMap::from([("offload".into(), "on".into())]),
            object_labels: BTreeMap::new(),
            timeout_seconds: 10,
        };
        let v = serde_json::to_value(r.object()).expect("json");
        let hook = &v["webhooks"][0];
        assert_eq!(
            hook["clientConfig"]["url"],
            "https://10.201.0.1:8443/mutate"
        );
        assert_eq!(hook["namespaceSelector"]["matchLabels"]["offload"], "on");
        assert!(hook.get("objectSelector").is_none());
        assert!(hook.get("matchConditions").is_none());
        assert_eq!(hook["sideEffects"], "NoneOnDryRun");
        assert_eq!(hook["rules"][0]["operations"][0], "CREATE");
        assert_eq!(hook["admissionReviewVersions"][0], "v1");
        assert_eq!(parse_labels("a=b, c=d").expect("labels").len(), 2);
        assert!(parse_labels("a").is_err());
        assert!(parse_labels("=b").is_err());
        assert_eq!(parse_labels("").expect("empty"), BTreeMap::new());
    }
}
