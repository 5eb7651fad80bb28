//! Resource usage of offloaded pods: the kubelet's Summary API shape
//! (`stats/v1alpha1`, what `GET /stats/summary` of a kubelet answers), cut
//! down to CPU and memory, and our plugin extension that carries it.
//!
//! The extension (not part of interLink): `POST /stats/summary` on the
//! plugin with a [`StatsRequest`] (the caller's virtual node, optionally the
//! local pods it wants) answers a [`StatsAnswer`]: a [`Summary`] whose
//! `podRef`s name the *local* pods, and the errors met on the way (a remote
//! node whose kubelet could not be read). A plugin without the extension
//! answers 404; the provider then serves empty figures.
//!
//! Field names and casing are the kubelet's (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`),
//! so a Summary read from a real kubelet deserializes into these structs
//! (fields we do not carry, network and file systems, are ignored) and what
//! the provider serves reads like a kubelet's to metrics-server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Path of the plugin extension.
pub const STATS_SUMMARY_PATH: &str = "/stats/summary";

/// A kubelet's `/stats/summary` answer (CPU and memory only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub pods: Vec<PodStats>,
}

/// Node-level figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    #[serde(rename = "nodeName")]
    pub node_name: String,
    #[serde(rename = "startTime", default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// Which pod a [`PodStats`] is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// Pod-level figures and its containers'.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodStats {
    #[serde(rename = "podRef")]
    pub pod_ref: PodReference,
    #[serde(rename = "startTime", default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub containers: Vec<ContainerStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// One container's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    #[serde(rename = "startTime", default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU usage at `time`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    pub time: Option<Time>,
    /// Average usage over the kubelet's sampling window, in nanocores.
    #[serde(
        rename = "usageNanoCores",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative usage since the container started, in core-nanoseconds.
    #[serde(
        rename = "usageCoreNanoSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage at `time`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    pub time: Option<Time>,
    #[serde(
        rename = "availableBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub available_bytes: Option<u64>,
    #[serde(
        rename = "usageBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_bytes: Option<u64>,
    /// What the kubelet evicts by and `kubectl top` shows.
    #[serde(
        rename = "workingSetBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_set_bytes: Option<u64>,
    #[serde(rename = "rssBytes", default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(
        rename = "pageFaults",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub page_faults: Option<u64>,
    #[serde(
        rename = "majorPageFaults",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub major_page_faults: Option<u64>,
}

/// The body of `POST /stats/summary` on the plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// The caller's virtual node: with the authenticated principal it names
    /// the caller, and only pods created for that caller are reported.
    #[serde(rename = "nodeName")]
    pub node_name: String,
    /// The local pods wanted; `None` (or absent): every pod of the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Vec<PodReference>>,
}

/// The plugin's answer: a [`Summary`] (its node is the caller's virtual
/// node, figures summed over the pods) plus what could not be read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsAnswer {
    #[serde(flatten)]
    pub summary: Summary,
    /// Why some pods have no figures (a remote kubelet unreachable, the
    /// plugin not allowed `nodes/proxy`); empty when all were read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The later of two optional times.
fn later(a: Option<Time>, b: Option<&Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b.clone() } else { a }),
        (a, b) => a.or_else(|| b.cloned()),
    }
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

/// The sum of `parts` (each figure summed where present; the time is the
/// latest), `None` when no part has one.
pub fn sum_cpu<'a>(parts: impl IntoIterator<Item = &'a CpuStats>) -> Option<CpuStats> {
    parts.into_iter().fold(None, |acc: Option<CpuStats>, c| {
        let acc = acc.unwrap_or_default();
        Some(CpuStats {
            time: later(acc.time, c.time.as_ref()),
            usage_nano_cores: add(acc.usage_nano_cores, c.usage_nano_cores),
            usage_core_nano_seconds: add(acc.usage_core_nano_seconds, c.usage_core_nano_seconds),
        })
    })
}

/// As [`sum_cpu`], for memory (`availableBytes` is not summed: the limit
/// of the whole is not the sum of the parts' headroom).
pub fn sum_memory<'a>(parts: impl IntoIterator<Item = &'a MemoryStats>) -> Option<MemoryStats> {
    parts.into_iter().fold(None, |acc: Option<MemoryStats>, m| {
        let acc = acc.unwrap_or_default();
        Some(MemoryStats {
            time: later(acc.time, m.time.as_ref()),
            available_bytes: None,
            usage_bytes: add(acc.usage_bytes, m.usage_bytes),
            working_set_bytes: add(acc.working_set_bytes, m.working_set_bytes),
            rss_bytes: add(acc.rss_bytes, m.rss_bytes),
            page_faults: add(acc.page_faults, m.page_faults),
            major_page_faults: add(acc.major_page_faults, m.major_page_faults),
        })
    })
}

/// The larger of two optional figures.
fn max(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl PodStats {
    /// Makes the pod-level figures at least the sum of its containers':
    /// kubelets before pod-level stats give none, and a kubelet whose pod
    /// cgroups are not measured (seen on 1.20 with a custom cgroup root)
    /// gives zeros, while a pod always uses at least what its containers use.
    pub fn fill_pod_level(&mut self) {
        let cpu = sum_cpu(self.containers.iter().filter_map(|c| c.cpu.as_ref()));
        self.cpu = match (self.cpu.take(), cpu) {
            (Some(p), Some(c)) => Some(CpuStats {
                time: later(p.time, c.time.as_ref()),
                usage_nano_cores: max(p.usage_nano_cores, c.usage_nano_cores),
                usage_core_nano_seconds: max(p.usage_core_nano_seconds, c.usage_core_nano_seconds),
            }),
            (p, c) => p.or(c),
        };
        let memory = sum_memory(self.containers.iter().filter_map(|c| c.memory.as_ref()));
        self.memory = match (self.memory.take(), memory) {
            (Some(p), Some(c)) => Some(MemoryStats {
                time: later(p.time, c.time.as_ref()),
                available_bytes: p.available_bytes,
                usage_bytes: max(p.usage_bytes, c.usage_bytes),
                working_set_bytes: max(p.working_set_bytes, c.working_set_bytes),
                rss_bytes: max(p.rss_bytes, c.rss_bytes),
                page_faults: max(p.page_faults, c.page_faults),
                major_page_faults: max(p.major_page_faults, c.major_page_faults),
            }),
            (p, c) => p.or(c),
        };
    }
}

impl Summary {
    /// A virtual node's Summary: its figures are the sums over `pods` (a
    /// virtual node has no machine of its own), its start the earliest pod
    /// start. The cumulative CPU counter of the node drops when a pod goes
    /// away, as a counter reset does.
    pub fn for_virtual_node(node_name: &str, mut pods: Vec<PodStats>) -> Summary {
        for p in &mut pods {
            p.fill_pod_level();
        }
        let start_time = pods
            .iter()
            .filter_map(|p| p.start_time.as_ref())
            .min_by_key(|t| t.0)
            .cloned();
        Summary {
            node: NodeStats {
                node_name: node_name.to_string(),
                start_time,
                cpu: sum_cpu(pods.iter().filter_map(|p| p.cpu.as_ref())),
                memory: sum_memory(pods.iter().filter_map(|p| p.memory.as_ref())),
            },
            pods,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("time"))
    }

    /// Trimmed from a real kubelet 1.20 answer (network and fs fields kept
    /// to show they are ignored).
    const KUBELET: &str = r#"{
      "node": {"nodeName": "remote-node", "startTime": "2026-12-06T02:11:31Z",
        "systemContainers": [{"name": "pods"}],
        "cpu": {"time": "2026-12-06T08:11:40Z", "usageNanoCores": 631538091, "usageCoreNanoSeconds": 25130480457465},
        "memory": {"time": "2026-12-06T08:11:40Z", "availableBytes": 20619415552, "usageBytes": 7516721152,
                   "workingSetBytes": 4656779264, "rssBytes": 756957184, "pageFaults": 112528, "majorPageFaults": 0},
        "network": {"name": "eth0", "rxBytes": 1}},
      "pods": [{
        "podRef": {"name": "busy-abc", "namespace": "offloading-x", "uid": "r-1"},
        "startTime": "2026-12-06T08:00:00Z",
        "containers": [{"name": "main", "startTime": "2026-12-06T08:00:01Z",
          "cpu": {"time": "2026-12-06T08:11:40Z", "usageNanoCores": 1000, "usageCoreNanoSeconds": 5000},
          "memory": {"time": "2026-12-06T08:11:40Z", "workingSetBytes": 100, "usageBytes": 150, "rssBytes": 80},
          "rootfs": {"usedBytes": 1}, "logs": null}],
        "volume": [], "ephemeral-storage": {}
      }]
    }"#;

    #[test]
    fn a_real_kubelet_summary_reads_and_round_trips() {
        let s: Summary = serde_json::from_str(KUBELET).expect("parse");
        assert_eq!(s.node.node_name, "remote-node");
        assert_eq!(
            s.node.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds),
            Some(25130480457465)
        );
        let pod = &s.pods[0];
        assert_eq!(pod.pod_ref.uid, "r-1");
        assert_eq!(pod.cpu, None, "1.20 has no pod-level figures here");
        let c = &pod.containers[0];
        assert_eq!(
            c.memory.as_ref().and_then(|m| m.working_set_bytes),
            Some(100)
        );
        let back: Summary =
            serde_json::from_value(serde_json::to_value(&s).expect("json")).expect("again");
        assert_eq!(back, s);
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["pods"][0]["podRef"]["name"], "busy-abc");
        assert_eq!(v["pods"][0]["containers"][0]["cpu"]["usageNanoCores"], 1000);
        assert_eq!(v["node"]["startTime"], "2026-12-06T02:11:31Z");
        // null lists are empty lists (Go's nil slices).
        let empty: Summary =
            serde_json::from_str(r#"{"node":{"nodeName":"n"},"pods":null}"#).expect("null");
        assert!(empty.pods.is_empty());
    }

    fn pod(name: &str, start: &str, cores: u64, seconds: u64, ws: u64, time: &str) -> PodStats {
        PodStats {
            pod_ref: PodReference {
                name: name.into(),
                namespace: "ns".into(),
                uid: format!("uid-{name}"),
            },
            start_time: Some(t(start)),
            containers: vec![ContainerStats {
                name: "main".into(),
                start_time: Some(t(start)),
                cpu: Some(CpuStats {
                    time: Some(t(time)),
                    usage_nano_cores: Some(cores),
                    usage_core_nano_seconds: Some(seconds),
                }),
                memory: Some(MemoryStats {
                    time: Some(t(time)),
                    working_set_bytes: Some(ws),
                    usage_bytes: Some(ws + 1),
                    available_bytes: Some(7),
                    ..Default::default()
                }),
            }],
            cpu: None,
            memory: None,
        }
    }

    #[test]
    fn a_virtual_node_is_the_sum_of_its_pods() {
        let s = Summary::for_virtual_node(
            "vn",
            vec![
                pod(
                    "a",
                    "2026-12-06T08:00:00Z",
                    10,
                    100,
                    1000,
                    "2026-12-06T08:10:00Z",
                ),
                pod(
                    "b",
                    "2026-12-06T07:00:00Z",
                    5,
                    50,
                    500,
                    "2026-12-06T08:10:05Z",
                ),
            ],
        );
        assert_eq!(s.node.node_name, "vn");
        assert_eq!(s.node.start_time, Some(t("2026-12-06T07:00:00Z")));
        let cpu = s.node.cpu.expect("cpu");
        assert_eq!(cpu.usage_nano_cores, Some(15));
        assert_eq!(cpu.usage_core_nano_seconds, Some(150));
        assert_eq!(cpu.time, Some(t("2026-12-06T08:10:05Z")));
        let mem = s.node.memory.expect("memory");
        assert_eq!(mem.working_set_bytes, Some(1500));
        assert_eq!(mem.usage_bytes, Some(1502));
        assert_eq!(mem.available_bytes, None);
        assert_eq!(mem.rss_bytes, None, "no part had one");
        // Pod-level figures filled from the containers.
        assert_eq!(
            s.pods[0]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds),
            Some(100)
        );
        // A kubelet's zero pod-level figures are raised to the containers' sum.
        let mut zeroed = pod(
            "z",
            "2026-12-06T08:00:00Z",
            3,
            30,
            300,
            "2026-12-06T08:10:00Z",
        );
        zeroed.cpu = Some(CpuStats {
            time: Some(t("2026-12-06T08:09:00Z")),
            usage_nano_cores: Some(0),
            usage_core_nano_seconds: Some(0),
        });
        zeroed.memory = Some(MemoryStats {
            working_set_bytes: Some(1000),
            ..Default::default()
        });
        zeroed.fill_pod_level();
        let cpu = zeroed.cpu.expect("cpu");
        assert_eq!(cpu.usage_core_nano_seconds, Some(30));
        assert_eq!(cpu.time, Some(t("2026-12-06T08:10:00Z")));
        let mem = zeroed.memory.expect("memory");
        assert_eq!(
            mem.working_set_bytes,
            Some(1000),
            "a larger pod figure stays"
        );
        assert_eq!(mem.usage_bytes, Some(301));
        let none = Summary::for_virtual_node("vn", vec![]);
        assert_eq!(none.node.cpu, None);
        assert_eq!(none.node.start_time, None);
        assert_eq!(
            serde_json::to_value(&none).expect("json"),
            serde_json::json!({"node": {"nodeName": "vn"}, "pods": []})
        );
    }

    #[test]
    fn the_request_and_answer_wire_shape() {
        let r = StatsRequest {
            node_name: "vn".into(),
            pods: None,
        };
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            serde_json::json!({"nodeName": "vn"})
        );
        let a: StatsAnswer = serde_json::from_str(
            r#"{"node":{"nodeName":"vn"},"pods":[],"errors":["remote node unreachable"]}"#,
        )
        .expect("answer");
        assert_eq!(a.errors, vec!["remote node unreachable".to_string()]);
        let plain: StatsAnswer =
            serde_json::from_str(r#"{"node":{"nodeName":"vn"},"pods":[]}"#).expect("summary");
        assert!(plain.errors.is_empty(), "a bare Summary is an answer");
    }
}
