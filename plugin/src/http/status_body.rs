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
use std::convert::Infallible;

use axum::{
    Json,
    body::{Body, Bytes},
    http::header,
    response::{IntoResponse, Response},
};
use futures::{StreamExt, stream};
use offload_wire::PodStatus;
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

/// Statuses serialised per chunk of this many.
const CHUNK: usize = 64;

/// The `/status` answer, a JSON array written in chunks as the client reads:
/// no second, serialised copy of a 1,000-pod answer in memory at once.
pub fn json_array(statuses: Vec<PodStatus>) -> Response {
    if statuses.is_empty() {
        return Json(statuses).into_response();
    }
    let chunks = stream::iter(statuses)
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            let mut buf = Vec::with_capacity(chunk.len() * 512);
            buf.push(if i == 0 { b'[' } else { b',' });
            for (j, s) in chunk.iter().enumerate() {
                if j > 0 {
                    buf.push(b',');
                }
                // Plain structs and string-keyed maps: serialising cannot fail.
                let _ = serde_json::to_writer(&mut buf, s);
            }
            Ok::<_, Infallible>(Bytes::from(buf))
        })
        .chain(stream::once(async { Ok(Bytes::from_static(b"]")) }));
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response()
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

    #[tokio::test]
    async fn the_answer_is_one_json_array_whatever_the_chunks() {
        for n in [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let statuses: Vec<PodStatus> = (0..n)
                .map(|i| PodStatus {
                    name: format!("p{i}"),
                    ..Default::default()
                })
                .collect();
            let r = json_array(statuses.clone());
            let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .expect("body");
            let back: Vec<PodStatus> = serde_json::from_slice(&bytes).expect("a JSON array");
            assert_eq!(back, statuses, "{n}");
        }
    }
}
