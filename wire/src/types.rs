//! interLink wire types (plugin API and the interLink API server's VK-facing API).

use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod, Secret};
use serde::{Deserialize, Deserializer, Serialize};

/// Go serialises nil slices as `null`: treat `null` like a missing list.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The objects interLink ships for one container of the pod (init containers
/// first, then containers, in spec order).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievedContainer {
    #[serde(rename = "name", default)]
    pub name: String,
    #[serde(rename = "configMaps", default, deserialize_with = "null_as_default")]
    pub config_maps: Vec<ConfigMap>,
    /// Projected and downward-API volumes, each as a ConfigMap named after the
    /// *volume* whose `data` maps file path to content. Note the spelling:
    /// no `s` after `volume`, unlike [`PodCreateRequests`].
    #[serde(
        rename = "projectedvolumemaps",
        default,
        deserialize_with = "null_as_default"
    )]
    pub projected_volume_maps: Vec<ConfigMap>,
    #[serde(rename = "secrets", default, deserialize_with = "null_as_default")]
    pub secrets: Vec<Secret>,
    /// Deprecated by interLink and always empty; the plugin creates emptyDirs itself.
    #[serde(rename = "emptyDirs", default, deserialize_with = "null_as_default")]
    pub empty_dirs: Vec<String>,
}

/// Body of the plugin's `POST /create` (interLink >= 0.5 sends one object,
/// older versions a one-element array: see [`CreateBody`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievedPodData {
    #[serde(rename = "pod")]
    pub pod: Pod,
    #[serde(rename = "container", default, deserialize_with = "null_as_default")]
    pub containers: Vec<RetrievedContainer>,
    /// HPC script settings; irrelevant to a Kubernetes plugin, kept opaque.
    #[serde(rename = "jobConfig", default, skip_serializing_if = "Option::is_none")]
    pub job_config: Option<serde_json::Value>,
    #[serde(rename = "jobScript", default, skip_serializing_if = "Option::is_none")]
    pub job_script: Option<String>,
}

/// What `/create` may carry: one object (interLink >= 0.5) or a one-element array (<= 0.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CreateBody {
    // `Many` must come first: serde structs also deserialise from a sequence,
    // so `One` would swallow an array.
    Many(Vec<RetrievedPodData>),
    One(Box<RetrievedPodData>),
}

/// Answer of `/create`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateStruct {
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "PodJID")]
    pub pod_jid: String,
}

/// One element of the `/status` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodStatus {
    #[serde(rename = "name")]
    pub name: String,
    #[serde(rename = "UID")]
    pub uid: String,
    #[serde(rename = "namespace")]
    pub namespace: String,
    #[serde(rename = "JID", default)]
    pub jid: String,
    #[serde(rename = "containers", default, deserialize_with = "null_as_default")]
    pub containers: Vec<ContainerStatus>,
    #[serde(
        rename = "initContainers",
        default,
        deserialize_with = "null_as_default"
    )]
    pub init_containers: Vec<ContainerStatus>,
}

/// Log options of `/getLogs`. Zero values mean "not set"; `Bytes` is
/// Kubernetes' `limitBytes`; `SinceTime` is Go's zero time when unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLogOpts {
    #[serde(rename = "Tail", default)]
    pub tail: i64,
    #[serde(rename = "Bytes", default)]
    pub limit_bytes: i64,
    #[serde(rename = "Timestamps", default)]
    pub timestamps: bool,
    #[serde(rename = "Follow", default)]
    pub follow: bool,
    #[serde(rename = "Previous", default)]
    pub previous: bool,
    #[serde(rename = "SinceSeconds", default)]
    pub since_seconds: i64,
    #[serde(rename = "SinceTime", default, skip_serializing_if = "Option::is_none")]
    pub since_time: Option<String>,
}

/// Go's zero `time.Time`, which interLink sends for an unset `SinceTime`.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl ContainerLogOpts {
    /// `SinceTime` if it is really set (not absent, empty or Go's zero time).
    pub fn since_time_set(&self) -> Option<&str> {
        self.since_time
            .as_deref()
            .filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
    }
}

/// Body of `/getLogs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStruct {
    #[serde(rename = "Namespace")]
    pub namespace: String,
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "PodName")]
    pub pod_name: String,
    #[serde(rename = "ContainerName", default)]
    pub container_name: String,
    #[serde(rename = "Opts", default)]
    pub opts: ContainerLogOpts,
}

/// Body the Virtual Kubelet sends to the interLink API server's `/create`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodCreateRequests {
    #[serde(rename = "pod")]
    pub pod: Pod,
    #[serde(rename = "configmaps", default, deserialize_with = "null_as_default")]
    pub config_maps: Vec<ConfigMap>,
    #[serde(rename = "secrets", default, deserialize_with = "null_as_default")]
    pub secrets: Vec<Secret>,
    #[serde(
        rename = "projectedvolumesmaps",
        default,
        deserialize_with = "null_as_default"
    )]
    pub projected_volume_maps: Vec<ConfigMap>,
    #[serde(rename = "jobscriptURL", default)]
    pub job_script_url: String,
}

/// Optional body of the ping (`/status` with `[]`) since interLink 0.6.2.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PingResponse {
    #[serde(rename = "status", default)]
    pub status: String,
    #[serde(rename = "resources", default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PingResources>,
    #[serde(rename = "taints", default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<PingTaint>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PingResources {
    #[serde(rename = "cpu", default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(rename = "memory", default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(rename = "pods", default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<String>,
    #[serde(rename = "accelerators", default, deserialize_with = "null_as_default")]
    pub accelerators: Vec<PingAccelerator>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PingAccelerator {
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    #[serde(rename = "available")]
    pub available: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PingTaint {
    #[serde(rename = "key")]
    pub key: String,
    #[serde(rename = "value", default)]
    pub value: String,
    #[serde(rename = "effect")]
    pub effect: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn create_body_accepts_object_with_nulls_and_zero_job_config() {
        let json = r#"{"pod":{"metadata":{"name":"hello","namespace":"default","uid":"6f1c1f1e-0000-4000-8000-000000000000"},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}},
            "container":[{"name":"c","configMaps":null,"projectedvolumemaps":null,"secrets":null,"emptyDirs":null}],
            "jobConfig":{"SingularityHubProxy":{"server":"","master_token":"","cache_validity_seconds":0}}}"#;
        let body: CreateBody = serde_json::from_str(json).expect("parses");
        let CreateBody::One(data) = body else {
            panic!("expected one object")
        };
        assert_eq!(data.containers.len(), 1);
        assert!(data.containers[0].config_maps.is_empty());
        assert_eq!(data.pod.metadata.name.as_deref(), Some("hello"));
    }

    #[test]
    fn create_body_accepts_one_element_array() {
        let json = r#"[{"pod":{"metadata":{"name":"a"}},"container":[]}]"#;
        let body: CreateBody = serde_json::from_str(json).expect("parses");
        assert!(matches!(body, CreateBody::Many(v) if v.len() == 1));
    }

    #[test]
    fn status_uses_interlink_casing() {
        let s = PodStatus {
            name: "p".into(),
            uid: "u".into(),
            namespace: "n".into(),
            jid: "j".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(&s).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({"name":"p","UID":"u","namespace":"n","JID":"j","containers":[],"initContainers":[]})
        );
    }

    #[test]
    fn log_struct_reads_bytes_and_zero_since_time() {
        let json = r#"{"Namespace":"default","PodUID":"u","PodName":"p","ContainerName":"c",
            "Opts":{"Tail":5,"Bytes":100,"Timestamps":true,"Follow":false,"Previous":false,"SinceSeconds":0,"SinceTime":"0001-01-01T00:00:00Z"}}"#;
        let l: LogStruct = serde_json::from_str(json).expect("parses");
        assert_eq!(l.opts.limit_bytes, 100);
        assert_eq!(l.opts.tail, 5);
        assert_eq!(l.opts.since_time_set(), None);
    }

    #[test]
    fn create_struct_round_trip() {
        let c: CreateStruct =
            serde_json::from_str(r#"{"PodUID":"a","PodJID":"b"}"#).expect("parses");
        assert_eq!(c.pod_jid, "b");
    }
}
