use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use offload_wire::stats::{
    ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary,
};
use pretty_assertions::assert_eq;

use super::{go_float, resource_metrics, scrape_failed, zero_node_figures};

fn t(s: &str) -> Time {
    Time(s.parse().expect("time"))
}

#[test]
fn floats_are_written_as_go_writes_them() {
    let cases = [
        (0.0, "0"),
        (1.0, "1"),
        (0.5, "0.5"),
        (25130.480457465, "25130.480457465"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (4656779264.0, "4.656779264e+09"),
        (0.0001, "0.0001"),
        (0.00001234, "1.234e-05"),
        (-2.5e7, "-2.5e+07"),
        (1e21, "1e+21"),
        (f64::INFINITY, "+Inf"),
        (f64::NAN, "NaN"),
    ];
    for (f, want) in cases {
        assert_eq!(go_float(f), want, "{f}");
    }
}

fn container(name: &str, ns_cpu: u64, ws: u64) -> ContainerStats {
    ContainerStats {
        name: name.into(),
        start_time: Some(t("2026-12-06T08:00:01Z")),
        cpu: Some(CpuStats {
            time: Some(t("2026-12-06T08:11:40Z")),
            usage_nano_cores: Some(1000),
            usage_core_nano_seconds: Some(ns_cpu),
        }),
        memory: Some(MemoryStats {
            time: Some(t("2026-12-06T08:11:41Z")),
            working_set_bytes: Some(ws),
            ..Default::default()
        }),
    }
}

#[test]
fn the_kubelets_resource_metrics_text() {
    let pods = vec![
        PodStats {
            pod_ref: PodReference {
                name: "web\"1".into(),
                namespace: "b".into(),
                uid: "u2".into(),
            },
            containers: vec![container("main", 1_500_000_000, 12_000_000)],
            ..Default::default()
        },
        PodStats {
            pod_ref: PodReference {
                name: "busy".into(),
                namespace: "a".into(),
                uid: "u1".into(),
            },
            containers: vec![
                container("side", 250_000_000, 1024),
                container("main", 2_000_000_000, 2048),
            ],
            ..Default::default()
        },
    ];
    let s = Summary::for_virtual_node("vn", pods);
    let text = resource_metrics(&s, false);
    let want = r#"# HELP container_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="main",namespace="a",pod="busy"} 2 1796544700000
container_cpu_usage_seconds_total{container="main",namespace="b",pod="web\"1"} 1.5 1796544700000
container_cpu_usage_seconds_total{container="side",namespace="a",pod="busy"} 0.25 1796544700000
# HELP container_memory_working_set_bytes [ALPHA] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="main",namespace="a",pod="busy"} 2048 1796544701000
container_memory_working_set_bytes{container="main",namespace="b",pod="web\"1"} 1.2e+07 1796544701000
container_memory_working_set_bytes{container="side",namespace="a",pod="busy"} 1024 1796544701000
# HELP container_start_time_seconds [ALPHA] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="main",namespace="a",pod="busy"} 1.796544001e+09 1796544001000
container_start_time_seconds{container="main",namespace="b",pod="web\"1"} 1.796544001e+09 1796544001000
container_start_time_seconds{container="side",namespace="a",pod="busy"} 1.796544001e+09 1796544001000
# HELP node_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 3.75 1796544700000
# HELP node_memory_working_set_bytes [ALPHA] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.2003072e+07 1796544701000
# HELP pod_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="a",pod="busy"} 2.25 1796544700000
pod_cpu_usage_seconds_total{namespace="b",pod="web\"1"} 1.5 1796544700000
# HELP pod_memory_working_set_bytes [ALPHA] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="a",pod="busy"} 3072 1796544701000
pod_memory_working_set_bytes{namespace="b",pod="web\"1"} 1.2e+07 1796544701000
# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
"#;
    assert_eq!(text, want);
    assert!(resource_metrics(&s, true).ends_with("scrape_error 1\n"));
}

#[test]
fn an_empty_node_is_zeros_and_a_failure_only_the_error() {
    let mut node = NodeStats {
        node_name: "vn".into(),
        ..Default::default()
    };
    zero_node_figures(&mut node, t("2026-12-06T08:00:00Z"));
    let s = Summary { node, pods: vec![] };
    let text = resource_metrics(&s, false);
    assert!(
        text.contains("\nnode_cpu_usage_seconds_total 0 1796544000000\n"),
        "{text}"
    );
    assert!(
        text.contains("\nnode_memory_working_set_bytes 0 1796544000000\n"),
        "{text}"
    );
    assert!(!text.contains("container_"), "{text}");
    // Figures present are kept.
    let mut busy = s.node.clone();
    busy.cpu = Some(CpuStats {
        usage_core_nano_seconds: Some(5),
        ..Default::default()
    });
    zero_node_figures(&mut busy, t("2026-12-06T09:00:00Z"));
    assert_eq!(busy.cpu.and_then(|c| c.usage_core_nano_seconds), Some(5));
    assert_eq!(
        scrape_failed(),
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE scrape_error gauge\nscrape_error 1\n"
    );
}
