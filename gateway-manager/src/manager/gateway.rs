//! The gateway's own objects: host-key Secret, ConfigMap, Deployment,
//! Services; and the IPs of its ready pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PostParams};
use tracing::info;

use super::{Error, GatewayManager};
use crate::objects::{self, GatewaySpec};
use crate::plan::ready_pod_ips;
use crate::render::{self, SshdConfig};

impl GatewayManager {
    /// Create or update the gateway: host-key Secret (generated once, never
    /// overwritten), ConfigMap, Deployment and Services. Idempotent. Returns
    /// the gateway host public key.
    pub async fn ensure_gateway(&self) -> Result<String, Error> {
        let s = self.settings();
        let g = &s.gateway;
        let ns = g.namespace.as_str();
        let host_public = self.ensure_host_key(g).await?;
        let sshd = SshdConfig::for_gateway_image().render();
        let ak = match &s.bastion_public_key {
            Some(k) => render::authorized_keys(k, s.range, &s.listen_host)?,
            None => "# no bastion key configured yet\n".to_owned(),
        };
        let pp = self.pp();
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        cms.patch(&g.name, &pp, &Patch::Apply(&g.config_map(&sshd, &ak)))
            .await?;
        let hash = objects::config_hash(&[&sshd, &ak, &host_public]);
        let deps: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        deps.patch(&g.name, &pp, &Patch::Apply(&g.deployment(&hash)))
            .await?;
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        svcs.patch(&g.name, &pp, &Patch::Apply(&g.cluster_service()))
            .await?;
        if let Some(np) = g.nodeport_service_object() {
            svcs.patch(&g.nodeport_service(), &pp, &Patch::Apply(&np))
                .await?;
        }
        if let Ok(mut k) = self.host_key.write() {
            *k = Some(host_public.clone());
        }
        Ok(host_public)
    }

    async fn ensure_host_key(&self, g: &GatewaySpec) -> Result<String, Error> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &g.namespace);
        let name = g.host_key_secret();
        let existing = match secrets.get_opt(&name).await? {
            Some(s) => s,
            None => {
                let (private, public) = render::generate_ed25519("offload-gateway")?;
                match secrets
                    .create(
                        &PostParams::default(),
                        &g.host_key_secret_object(&private, &public),
                    )
                    .await
                {
                    Ok(_) => {
                        info!(secret = %name, "generated the gateway host key");
                        return Ok(public);
                    }
                    // Someone else created it first: use theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(&name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let data = existing.data.unwrap_or_default();
        if let Some(p) = data.get("ssh_host_ed25519_key.pub")
            && let Ok(k) = render::normalise_public_key(&String::from_utf8_lossy(&p.0))
        {
            return Ok(k);
        }
        let private = data
            .get("ssh_host_ed25519_key")
            .ok_or_else(|| Error::HostKeySecret(name.clone()))?;
        render::public_of_private(&String::from_utf8_lossy(&private.0))
            .map_err(|_| Error::HostKeySecret(name))
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
