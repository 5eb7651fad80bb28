//! Ownership on the remote cluster: objects are *created*, never applied over
//! someone else's, and deleted only when their labels say they are ours, with
//! a UID precondition so a replacement made in between is never hit.
//!
//! "Ours" means: our managed-by label, the local pod's UID as source label,
//! and this plugin instance's label (objects of releases before the instance
//! label, which lack it, count as ours; another instance's never do).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams, Preconditions},
};
use offload_wire::keys;
use tracing::{debug, info, warn};

use super::{FIELD_MANAGER, Namespaced, Remote, RemoteError, is_status, rejected};

/// Whose an existing remote object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Made by this instance for this local pod.
    Ours,
    /// Unmanaged, or another pod's or another plugin instance's.
    Foreign,
}

/// The ownership decision from an object's labels.
pub fn ownership(labels: &BTreeMap<String, String>, uid: &str, instance: &str) -> Ownership {
    let is = |k: &str, v: &str| labels.get(k).is_some_and(|x| x == v);
    let instance_ok = labels
        .get(keys::LABEL_PLUGIN_INSTANCE)
        .is_none_or(|x| x == instance);
    if is(keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PLUGIN)
        && is(keys::LABEL_SOURCE_POD_UID, uid)
        && instance_ok
    {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

/// The decision when an object of ours already exists but cannot be read
/// (the plugin's RBAC has no `get` on Secrets): ours only if the pod it
/// belongs to already existed, i.e. an earlier create of this very pod made
/// it. Next to a pod created just now it can only be someone else's.
pub fn unreadable_ownership(pod_created_now: bool) -> Ownership {
    if pod_created_now {
        Ownership::Foreign
    } else {
        Ownership::Ours
    }
}

/// What is compared to decide whether an existing object of ours needs an
/// update (a retried create whose ConfigMap changed in between).
pub trait Payload {
    fn same_payload(&self, other: &Self) -> bool;
}

impl Payload for ConfigMap {
    fn same_payload(&self, other: &Self) -> bool {
        self.data == other.data && self.binary_data == other.binary_data
    }
}

impl Payload for Secret {
    fn same_payload(&self, other: &Self) -> bool {
        self.data == other.data
            && self.string_data == other.string_data
            && self.type_ == other.type_
    }
}

/// The message of a refused create: names the object, never its content.
fn foreign(kind: &str, ns: &str, name: &str) -> RemoteError {
    RemoteError::Conflict(format!(
        "{kind} {ns}/{name} already exists on the remote cluster and is not managed by this plugin \
         instance for this pod; it was left alone and nothing was created"
    ))
}

/// One object created by the request under way (for the roll-back).
pub(super) struct Created {
    kind: &'static str,
    name: String,
    uid: String,
}

impl Remote {
    /// Adds this instance's label to `labels`.
    pub(super) fn instance_labels(&self, labels: &mut Option<BTreeMap<String, String>>) {
        labels.get_or_insert_with(BTreeMap::new).insert(
            keys::LABEL_PLUGIN_INSTANCE.to_owned(),
            self.instance.clone(),
        );
    }

    /// Whether the labels say the object is this instance's, for `uid`.
    pub fn is_ours(&self, labels: &BTreeMap<String, String>, uid: &str) -> bool {
        ownership(labels, uid, &self.instance) == Ownership::Ours
    }

    /// Creates the pod, or finds it from an earlier create of the same
    /// local pod. Returns it and whether it was created now.
    pub(super) async fn create_pod(
        &self,
        ns: &str,
        pod: &Pod,
        uid: &str,
    ) -> Result<Option<(Pod, bool)>, RemoteError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let name = pod.name_any();
        self.metrics.remote_call("create_pod");
        match pods.create(&post_params(), pod).await {
            Ok(p) => {
                info!(pod = %name, namespace = %ns, "created remote pod");
                Ok(Some((p, true)))
            }
            Err(e) if is_status(&e, 409) => {
                self.metrics.remote_call("get_pod");
                let existing = pods.get(&name).await?;
                if !self.is_ours(existing.labels(), uid) {
                    warn!(pod = %name, namespace = %ns, "create refused: a foreign pod holds the name");
                    return Err(foreign("pod", ns, &name));
                }
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(RemoteError::Conflict(format!(
                        "remote pod {ns}/{name} is being deleted; retry the create when it is gone"
                    )));
                }
                debug!(pod = %name, "remote pod already exists (retried create)");
                Ok(Some((existing, false)))
            }
            // Not ready for pods yet: the caller retries within its deadline.
            Err(kube::Error::Api(s))
                if s.message.contains("service account")
                    || s.message.contains("serviceaccount") =>
            {
                debug!(message = %s.message, "namespace not ready for pods yet");
                Ok(None)
            }
            // The namespace was deleted (namespace GC, possibly by another
            // replica) since this process set it up: set it up again on retry.
            Err(kube::Error::Api(s))
                if s.code == 404 || (s.code == 403 && s.message.contains("being terminated")) =>
            {
                self.namespace_gone(ns);
                Err(RemoteError::NamespaceNotReady(ns.to_string()))
            }
            Err(e) => Err(rejected(format!("pod {ns}/{name}"), e)),
        }
    }

    /// Creates `objects`, each owned by `owner`; one that exists already is
    /// taken only if it is ours (updated if its content changed), anything
    /// else is a conflict. What was created is pushed to `created`.
    pub(super) async fn create_owned<K: Namespaced + Payload>(
        &self,
        ns: &str,
        objects: &[K],
        owner: &OwnerReference,
        ctx: OwnedCtx<'_>,
        created: &mut Vec<Created>,
    ) -> Result<(), RemoteError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        for obj in objects {
            let mut obj = obj.clone();
            obj.meta_mut().owner_references = Some(vec![owner.clone()]);
            self.instance_labels(&mut obj.meta_mut().labels);
            let name = obj.name_any();
            self.metrics.remote_call(ctx.op);
            match api.create(&post_params(), &obj).await {
                Ok(made) => created.push(Created {
                    kind: ctx.kind,
                    name,
                    uid: made.meta().uid.clone().unwrap_or_default(),
                }),
                Err(e) if is_status(&e, 409) => {
                    self.take_existing(&api, obj, ns, ctx).await?;
                }
                // Never echo the object (a Secret's data): the message is the
                // apiserver's reason only.
                Err(e) => return Err(rejected(format!("{} {name:?}", ctx.kind), e)),
            }
        }
        Ok(())
    }

    /// An object of our name exists: ours -> keep it (updated to `want` with
    /// its resourceVersion if it differs), foreign -> conflict.
    async fn take_existing<K: Namespaced + Payload>(
        &self,
        api: &Api<K>,
        mut want: K,
        ns: &str,
        ctx: OwnedCtx<'_>,
    ) -> Result<(), RemoteError> {
        let name = want.name_any();
        self.metrics.remote_call("get_existing");
        let existing = match api.get(&name).await {
            Ok(o) => o,
            Err(e) if is_status(&e, 403) => {
                // No `get` on this kind (Secrets): decide from the pod.
                return match unreadable_ownership(ctx.pod_created_now) {
                    Ownership::Ours => Ok(()),
                    Ownership::Foreign => Err(foreign(ctx.kind, ns, &name)),
                };
            }
            Err(e) if is_status(&e, 404) => {
                return Err(RemoteError::Conflict(format!(
                    "{} {ns}/{name} was deleted while being created; retry",
                    ctx.kind
                )));
            }
            Err(e) => return Err(rejected(format!("{} {name:?}", ctx.kind), e)),
        };
        if !self.is_ours(existing.labels(), ctx.uid) {
            warn!(kind = ctx.kind, name = %name, namespace = %ns, "create refused: a foreign object holds the name");
            return Err(foreign(ctx.kind, ns, &name));
        }
        if existing.same_payload(&want)
            && existing.meta().owner_references == want.meta().owner_references
        {
            return Ok(());
        }
        want.meta_mut().resource_version = existing.meta().resource_version.clone();
        self.metrics.remote_call("update_existing");
        api.replace(&name, &post_params(), &want)
            .await
            .map_err(|e| rejected(format!("{} {name:?}", ctx.kind), e))?;
        Ok(())
    }

    /// Deletes what this request created, newest first, each with its UID
    /// as precondition. Best effort: what stays is garbage collected with
    /// the pod (every object is owned by it).
    pub(super) async fn roll_back(&self, ns: &str, created: Vec<Created>) {
        for c in created.into_iter().rev() {
            let result = match c.kind {
                "ConfigMap" => self.delete_exact::<ConfigMap>(ns, &c.name, &c.uid).await,
                "Secret" => self.delete_exact::<Secret>(ns, &c.name, &c.uid).await,
                _ => self.delete_exact::<Pod>(ns, &c.name, &c.uid).await,
            };
            if let Err(e) = result {
                warn!(kind = c.kind, name = %c.name, error = %e, "roll-back delete failed");
            }
        }
    }

    /// Deletes exactly the object of this UID (a replacement of the same
    /// name is left alone: the apiserver answers 409). Gone already is fine.
    pub(super) async fn delete_exact<K: Namespaced>(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool, RemoteError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        self.metrics.remote_call("delete_exact");
        match api.delete(name, &delete_params(uid)).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) if is_status(&e, 409) => Err(RemoteError::Conflict(format!(
                "{ns}/{name} was replaced by another object; left alone"
            ))),
            Err(e) => Err(rejected(format!("deleting {ns}/{name}"), e)),
        }
    }

    /// Deletes the remote pod of local pod `uid` if it is ours; what it owns
    /// goes with it (garbage collector). A foreign pod of that name is left
    /// alone. Returns whether a pod of ours was there.
    pub async fn delete(&self, ns: &str, name: &str, uid: &str) -> Result<bool, RemoteError> {
        Ok(self.delete_outcome(ns, name, uid).await? == Deleted::Ours)
    }

    /// [`Remote::delete`], saying what was there.
    pub async fn delete_outcome(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<Deleted, RemoteError> {
        let Some(pod) = self.get_pod(ns, name).await? else {
            return Ok(Deleted::Absent);
        };
        if !self.is_ours(pod.labels(), uid) {
            warn!(pod = %name, namespace = %ns, "delete refused: the remote pod is not managed by this plugin instance for this UID; left alone");
            return Ok(Deleted::Foreign);
        }
        let remote_uid = pod.metadata.uid.clone().unwrap_or_default();
        match self.delete_exact::<Pod>(ns, name, &remote_uid).await {
            Ok(true) => Ok(Deleted::Ours),
            Ok(false) => Ok(Deleted::Absent),
            // Replaced since the cache saw it: not the pod we know; the
            // current one is judged on the next delete.
            Err(RemoteError::Conflict(m)) => {
                warn!(pod = %name, namespace = %ns, message = %m, "delete skipped");
                Ok(Deleted::Foreign)
            }
            Err(e) => Err(e),
        }
    }
}

/// What a delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Our pod, deleted.
    Ours,
    /// No pod of that name.
    Absent,
    /// A pod that is not ours: left alone.
    Foreign,
}

impl Created {
    pub(super) fn pod(name: String, uid: String) -> Self {
        Self {
            kind: "Pod",
            name,
            uid,
        }
    }
}

/// What `create_owned` needs to know of the create under way.
#[derive(Clone, Copy)]
pub(super) struct OwnedCtx<'a> {
    /// Local pod UID.
    pub uid: &'a str,
    pub pod_created_now: bool,
    pub op: &'static str,
    pub kind: &'static str,
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn delete_params(uid: &str) -> DeleteParams {
    DeleteParams::default().preconditions(Preconditions {
        uid: Some(uid.to_owned()),
        resource_version: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c1f1e-0000-4000-8000-000000000001";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_our_labels_for_this_pod_and_instance_are_ours() {
        let ours = [
            (keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PLUGIN),
            (keys::LABEL_SOURCE_POD_UID, UID),
            (keys::LABEL_PLUGIN_INSTANCE, "a"),
        ];
        assert_eq!(ownership(&labels(&ours), UID, "a"), Ownership::Ours);
        // Before the instance label existed.
        assert_eq!(ownership(&labels(&ours[..2]), UID, "a"), Ownership::Ours);
        assert_eq!(ownership(&labels(&ours), UID, "b"), Ownership::Foreign);
        assert_eq!(
            ownership(&labels(&ours), "6f1c1f1e-0000-4000-8000-000000000002", "a"),
            Ownership::Foreign
        );
        assert_eq!(ownership(&labels(&ours[1..]), UID, "a"), Ownership::Foreign);
        assert_eq!(ownership(&labels(&[]), UID, "a"), Ownership::Foreign);
        let provider = [
            (keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PROVIDER),
            (keys::LABEL_SOURCE_POD_UID, UID),
        ];
        assert_eq!(ownership(&labels(&provider), UID, "a"), Ownership::Foreign);
    }

    #[test]
    fn an_unreadable_object_next_to_a_new_pod_is_foreign() {
        assert_eq!(unreadable_ownership(true), Ownership::Foreign);
        assert_eq!(unreadable_ownership(false), Ownership::Ours);
    }

    #[test]
    fn payload_comparison() {
        let a = ConfigMap {
            data: Some(BTreeMap::from([("k".into(), "v".into())])),
            ..Default::default()
        };
        let mut b = a.clone();
        b.metadata.resource_version = Some("7".into());
        assert!(a.same_payload(&b), "metadata is not payload");
        b.data = Some(BTreeMap::from([("k".into(), "w".into())]));
        assert!(!a.same_payload(&b));
    }
}
