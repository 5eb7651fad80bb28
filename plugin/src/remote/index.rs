//! Local pod UID -> remote pod, kept next to the reflector's store (which is
//! indexed by namespace/name only), so a lookup by UID (`/status` for a pod
//! created under another configuration, `/delete`) is a map lookup and not
//! a scan of every cached pod.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector::ObjectRef, watcher};
use offload_wire::keys;

#[derive(Default)]
pub(super) struct UidIndex {
    live: RwLock<HashMap<String, ObjectRef<Pod>>>,
    /// Filled during a relist, swapped in when it is done (as the store does).
    relist: Mutex<Option<HashMap<String, ObjectRef<Pod>>>>,
}

fn entry(p: &Pod) -> Option<(String, ObjectRef<Pod>)> {
    let uid = p
        .metadata
        .labels
        .as_ref()?
        .get(keys::LABEL_SOURCE_POD_UID)?;
    Some((uid.clone(), ObjectRef::from_obj(p)))
}

impl UidIndex {
    pub(super) fn apply(&self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(p) => {
                if let (Some((uid, r)), Ok(mut live)) = (entry(p), self.live.write()) {
                    live.insert(uid, r);
                }
            }
            watcher::Event::Delete(p) => {
                if let (Some((uid, r)), Ok(mut live)) = (entry(p), self.live.write())
                    && live.get(&uid) == Some(&r)
                {
                    live.remove(&uid);
                }
            }
            watcher::Event::Init => {
                if let Ok(mut relist) = self.relist.lock() {
                    *relist = Some(HashMap::new());
                }
            }
            watcher::Event::InitApply(p) => {
                if let (Some((uid, r)), Ok(mut relist)) = (entry(p), self.relist.lock())
                    && let Some(m) = relist.as_mut()
                {
                    m.insert(uid, r);
                }
            }
            watcher::Event::InitDone => {
                let done = self.relist.lock().ok().and_then(|mut r| r.take());
                if let (Some(m), Ok(mut live)) = (done, self.live.write()) {
                    *live = m;
                }
            }
        }
    }

    pub(super) fn get(&self, uid: &str) -> Option<ObjectRef<Pod>> {
        self.live.read().ok()?.get(uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([(
                    keys::LABEL_SOURCE_POD_UID.to_owned(),
                    uid.to_owned(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let i = UidIndex::default();
        i.apply(&watcher::Event::Apply(pod("a", "u1")));
        i.apply(&watcher::Event::Apply(pod("b", "u2")));
        assert_eq!(i.get("u1").map(|r| r.name), Some("a".to_owned()));
        // A delete of another pod that carried the UID leaves the entry.
        i.apply(&watcher::Event::Delete(pod("old", "u1")));
        assert!(i.get("u1").is_some());
        i.apply(&watcher::Event::Delete(pod("a", "u1")));
        assert!(i.get("u1").is_none());
        i.apply(&watcher::Event::Init);
        i.apply(&watcher::Event::InitApply(pod("c", "u3")));
        assert!(
            i.get("u2").is_some(),
            "the old view until the relist is done"
        );
        i.apply(&watcher::Event::InitDone);
        assert!(i.get("u2").is_none());
        assert_eq!(i.get("u3").map(|r| r.name), Some("c".to_owned()));
    }
}
