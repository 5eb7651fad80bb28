//! Tunnel Services are touched only when they are ours: a user can name any
//! Service of their namespace in `interlink.io/tunnel-service`, and a
//! `<pod>-tunnel` Service may already exist, made by someone else. A Service
//! that exists without our managed-by label and tunnel kind is foreign: the
//! pod gets a Warning event, and the Service, its labels and its Endpoints
//! are left exactly as they are (never applied, written or deleted).

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use offload_wire::keys;
use tracing::{info, warn};

use super::{Error, GatewayManager, lock};
use crate::objects::{LABEL_TUNNEL_KIND, TunnelServiceKind};

/// Event reason on the pod when a Service it names is not ours.
pub const REASON_FOREIGN_SERVICE: &str = "TunnelServiceNotManaged";

/// Whether gateway-manager made this Service (or Endpoints) as a tunnel
/// Service of this kind: our managed-by label and the tunnel kind label.
pub fn ours(
    labels: Option<&std::collections::BTreeMap<String, String>>,
    kind: TunnelServiceKind,
) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(keys::LABEL_MANAGED_BY) == Some(keys::MANAGED_BY_PROVIDER)
        && label(LABEL_TUNNEL_KIND) == Some(kind.label())
}

impl GatewayManager {
    /// Whether the tunnel may write Service `ns/name`: it does not exist,
    /// or it is ours. A foreign one is remembered (its Endpoints are never
    /// written) and a Warning event goes on `pod`.
    pub(super) async fn may_write_service(
        &self,
        pod: &Pod,
        ns: &str,
        name: &str,
        kind: TunnelServiceKind,
    ) -> Result<bool, Error> {
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let key = (ns.to_owned(), name.to_owned());
        match svcs.get_opt(name).await? {
            Some(s) if !ours(s.metadata.labels.as_ref(), kind) => {
                let first = lock(&self.index).foreign.insert(key);
                if first {
                    warn!(namespace = %ns, service = %name, "a tunnel Service name is taken by a Service we do not manage; left alone");
                    self.warn_foreign(pod, name).await;
                }
                Ok(false)
            }
            _ => {
                lock(&self.index).foreign.remove(&key);
                Ok(true)
            }
        }
    }

    async fn warn_foreign(&self, pod: &Pod, name: &str) {
        let ev = Event {
            type_: EventType::Warning,
            reason: REASON_FOREIGN_SERVICE.into(),
            note: Some(format!(
                "Service {name} exists and is not managed by {}: the tunnel does not apply, \
                 update or delete it; name another Service or delete that one",
                keys::MANAGED_BY_PROVIDER
            )),
            action: "ExposeTunnel".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            warn!(service = %name, error = %e, "cannot record event");
        }
    }

    /// Whether Service `ns/name` is one we must not write.
    pub(super) fn is_foreign(&self, ns: &str, name: &str) -> bool {
        lock(&self.index)
            .foreign
            .contains(&(ns.to_owned(), name.to_owned()))
    }

    /// Delete a tunnel Service and its Endpoints if they are ours (gone
    /// already is fine; a foreign one is left alone). The delete carries the
    /// UID we checked, so a Service re-created meanwhile is not deleted.
    pub(super) async fn delete_tunnel_service(
        &self,
        ns: &str,
        svc: &str,
        kind: TunnelServiceKind,
    ) -> Result<(), Error> {
        let key = (ns.to_owned(), svc.to_owned());
        lock(&self.index).written.remove(&key);
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        if let Some(s) = svcs.get_opt(svc).await? {
            if !ours(s.metadata.labels.as_ref(), kind) {
                // Stays marked foreign: a sync already under way must not
                // write its Endpoints either.
                lock(&self.index).foreign.insert(key);
                info!(namespace = %ns, service = %svc, "not deleting a Service we do not manage");
                return Ok(());
            }
            delete_with_uid(&svcs, svc, s.metadata.uid).await?;
        }
        lock(&self.index).foreign.remove(&key);
        let eps: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        if let Some(e) = eps.get_opt(svc).await?
            && ours(e.metadata.labels.as_ref(), kind)
        {
            delete_with_uid(&eps, svc, e.metadata.uid).await?;
        }
        Ok(())
    }
}

/// Delete `name` if it still has `uid`; gone or replaced is fine.
async fn delete_with_uid<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_our_tunnel_services_of_that_kind_are_ours() {
        let ours_pod = labels(&[
            (keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PROVIDER),
            (LABEL_TUNNEL_KIND, "pod"),
        ]);
        assert!(ours(Some(&ours_pod), TunnelServiceKind::Pod));
        assert!(!ours(Some(&ours_pod), TunnelServiceKind::Workload));
        let users = labels(&[("app", "db")]);
        assert!(!ours(Some(&users), TunnelServiceKind::Workload));
        assert!(!ours(None, TunnelServiceKind::Pod));
        let plugin = labels(&[
            (keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PLUGIN),
            (LABEL_TUNNEL_KIND, "workload"),
        ]);
        assert!(!ours(Some(&plugin), TunnelServiceKind::Workload));
    }
}
