//! The body of `/status` as the handler reads it: of each pod only what the
//! answer needs (identity, node, container names and images). interLink
//! sends whole pods; building 1,000 complete `v1.Pod`s (every env var,
//! volume, managed field) was most of the time of a 1,000-pod request, and
//! skipping what is not needed is much cheaper than building it. Unknown
//! fields are ignored, as everywhere in the API.

use k8s_openapi::{
    api::core::v1::{Container, Pod, PodSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Deserialize;

/// One pod of a `/status` body.
#[derive(Debug, Default, Deserialize)]
pub struct StatusPod {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Option<Spec>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    node_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    containers: Vec<ContainerRef>,
    init_containers: Option<Vec<ContainerRef>>,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerRef {
    name: String,
    image: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ContainerRef>, D::Error> {
    Ok(Option::<Vec<ContainerRef>>::deserialize(d)?.unwrap_or_default())
}

impl From<ContainerRef> for Container {
    fn from(c: ContainerRef) -> Self {
        Container {
            name: c.name,
            image: c.image,
            ..Default::default()
        }
    }
}

impl From<StatusPod> for Pod {
    fn from(p: StatusPod) -> Self {
        let containers = |cs: Vec<ContainerRef>| cs.into_iter().map(Container::from).collect();
        Pod {
            metadata: ObjectMeta {
                name: p.metadata.name,
                namespace: p.metadata.namespace,
                uid: p.metadata.uid,
                ..Default::default()
            },
            spec: p.spec.map(|s| PodSpec {
                node_name: s.node_name,
                containers: containers(s.containers),
                init_containers: s.init_containers.map(containers),
                ..Default::default()
            }),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_what_the_answer_needs_of_a_whole_pod() {
        let whole = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"},
                         "managedFields": [{"manager": "x"}]},
            "spec": {"nodeName": "vn", "containers": [{"name": "c", "image": "i", "env": [{"name": "E"}]}],
                     "initContainers": [{"name": "init"}], "volumes": [{"name": "v"}]},
            "status": {"phase": "Pending"}
        });
        let slim: Pod = serde_json::from_value::<StatusPod>(whole.clone())
            .expect("parses")
            .into();
        let full: Pod = serde_json::from_value(whole).expect("a pod");
        assert_eq!(slim.metadata.name, full.metadata.name);
        assert_eq!(slim.metadata.uid.as_deref(), Some("u"));
        let (s, f) = (slim.spec.expect("spec"), full.spec.expect("spec"));
        assert_eq!(s.node_name, f.node_name);
        assert_eq!(s.containers[0].name, f.containers[0].name);
        assert_eq!(s.containers[0].image, f.containers[0].image);
        assert_eq!(s.init_containers.map(|c| c.len()), Some(1));
        let bare: StatusPod =
            serde_json::from_value(json!({"metadata": {"name": "p"}})).expect("ok");
        assert!(Pod::from(bare).spec.is_none());
        assert!(serde_json::from_value::<StatusPod>(json!({"metadata": {"name": 5}})).is_err());
    }
}
