//! The gateway's own objects: host-key Secret, ConfigMap, Deployment,
//! Services; and the IPs of its ready pods.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use offload_runtime::kubeapi::{self, KeypairSecret};
use tracing::info;

use super::{Error, GatewayManager};
use crate::objects::{self, GatewaySpec};
use crate::plan::ready_pod_ips;
use offload_wire::tunnel::{self, SshdConfig};

impl GatewayManager {
    /// Create or update the gateway: host-key Secret (generated once, never
    /// overwritten), ConfigMap, Deployment and Services. Idempotent. Returns
    /// the gateway host public key.
    pub async fn ensure_gateway(&self) -> Result<String, Error> {
        let s = self.settings();
        let g = &s.gateway;
        let host_public = self.ensure_host_key(g).await?;
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
