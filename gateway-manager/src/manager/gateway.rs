//! The gateway's own objects: host-key Secret, ConfigMap, Deployment,
//! Services; and the IPs of its ready pods.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, PostParams};
use offload_runtime::kubeapi::{self, KeypairSecret};
use offload_wire::keys;
use tracing::info;

use super::{Error, GatewayManager};
use crate::objects::{self, GatewaySpec};
use crate::plan::ready_pod_ips;
use crate::signature::AllocationKey;

/// Key of the allocation key in its Secret.
const ALLOCATION_KEY: &str = "key";

fn allocation_key_secret(g: &GatewaySpec, name: &str, key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(g.namespace.clone()),
            labels: Some(BTreeMap::from([(
                keys::LABEL_MANAGED_BY.to_owned(),
                keys::MANAGED_BY_PROVIDER.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            ALLOCATION_KEY.to_owned(),
            ByteString(key),
        )])),
        ..Default::default()
    }
}
use offload_wire::tunnel::{self, SshdConfig};

impl GatewayManager {
    /// Create or update the gateway: host-key Secret (generated once, never
    /// overwritten), ConfigMap, Deployment and Services. Idempotent. Returns
    /// the gateway host public key.
    pub async fn ensure_gateway(&self) -> Result<String, Error> {
        let s = self.settings();
        let g = &s.gateway;
        let host_public = self.ensure_host_key(g).await?;
        self.ensure_allocation_key(g, &s.field_manager).await?;
        let sshd = SshdConfig::for_gateway_image().render();
        let ak = match &s.bastion_public_key {
            Some(k) => tunnel::authorized_keys(k, s.range, &s.listen_host)?,
            None => "# no bastion key configured yet\n".to_owned(),
        };
        let hash = objects::config_hash(&[&sshd, &ak, &host_public]);
        self.apply(&g.config_map(&sshd, &ak)).await?;
        self.apply(&g.deployment(&hash)).await?;
        self.apply(&g.cluster_service()).await?;
        if let Some(np) = g.nodeport_service_object() {
            self.apply(&np).await?;
        }
        if let Ok(mut k) = self.host_key.write() {
            *k = Some(host_public.clone());
        }
        Ok(host_public)
    }

    /// The host key Secret: generated once, then only read.
    async fn ensure_host_key(&self, g: &GatewaySpec) -> Result<String, Error> {
        let spec = KeypairSecret {
            namespace: g.namespace.clone(),
            name: g.host_key_secret(),
            private_key: objects::HOST_KEY_PRIVATE.to_owned(),
            comment: "offload-gateway".to_owned(),
        };
        let key = kubeapi::ensure_keypair_secret(&self.client, &spec, |private, public| {
            g.host_key_secret_object(private, public)
        })
        .await?;
        if key.created {
            info!(secret = %spec.name, "generated the gateway host key");
        }
        Ok(key.public)
    }

    /// The allocation key Secret (`<gateway>-allocation-key`): random,
    /// generated once, then only read; gateway-manager alone reads it.
    async fn ensure_allocation_key(&self, g: &GatewaySpec, fm: &str) -> Result<(), Error> {
        if self.allocation_key().is_ok() {
            return Ok(());
        }
        let name = format!("{}-allocation-key", g.name);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &g.namespace);
        let secret = match api.get_opt(&name).await? {
            Some(s) => s,
            None => {
                let key = AllocationKey::generate().map_err(|_| Error::Random)?;
                let obj = allocation_key_secret(g, &name, key);
                let pp = PostParams {
                    field_manager: Some(fm.to_owned()),
                    ..Default::default()
                };
                match api.create(&pp, &obj).await {
                    Ok(s) => {
                        info!(secret = %name, "generated the tunnel allocation key");
                        s
                    }
                    // Another replica made it first: use theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let key = secret
            .data
            .and_then(|d| d.get(ALLOCATION_KEY).cloned())
            .filter(|k| k.0.len() >= 16)
            .ok_or_else(|| Error::AllocationKey(name.clone()))?;
        if let Ok(mut k) = self.alloc_key.write() {
            *k = Some(Arc::new(AllocationKey::new(&key.0)));
        }
        Ok(())
    }

    /// IPs of the ready gateway pods.
    pub async fn gateway_ips(&self) -> Result<Vec<String>, Error> {
        let g = self.settings().gateway;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &g.namespace);
        let selector = g
            .selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok(ready_pod_ips(&list.items))
    }
}
