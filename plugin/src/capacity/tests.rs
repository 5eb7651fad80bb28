use super::*;
use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pretty_assertions::assert_eq;

fn amount(s: &str) -> Amount {
    s.parse().expect(s)
}

fn node(ready: bool, cordoned: bool, alloc: &[(&str, &str)]) -> Node {
    Node {
        spec: Some(NodeSpec {
            unschedulable: cordoned.then_some(true),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(
                alloc
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            ),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn quantities_parse_exactly_and_print_short() {
    for (input, printed) in [
        ("2", "2"),
        ("500m", "500m"),
        ("0.5", "500m"),
        ("1.5", "1500m"),
        ("512Mi", "536870912"),
        ("16335572Ki", "16727625728"),
        ("1G", "1000000000"),
        ("1e3", "1000"),
        ("250u", "250u"),
        ("7n", "7n"),
        ("+3", "3"),
        ("-1", "-1"),
    ] {
        assert_eq!(amount(input).to_string(), printed, "{input}");
    }
    for bad in ["", "m", "1.2.3", "1Q", "abc", "1e99", "0.0000000001"] {
        assert!(bad.parse::<Amount>().is_err(), "{bad:?} must not parse");
    }
}

#[test]
fn reserve_parses_and_refuses_nonsense() {
    let r = parse_reserve("cpu=500m, memory=512Mi,nvidia.com/gpu=1").expect("parses");
    assert_eq!(r.0.get("cpu"), Some(&amount("500m")));
    assert_eq!(r.0.len(), 3);
    assert_eq!(parse_reserve("").expect("empty"), Reserve::default());
    assert!(parse_reserve("cpu").is_err());
    assert!(parse_reserve("cpu=lots").is_err());
    assert!(parse_reserve("cpu=-1").is_err());
}

#[test]
fn sums_schedulable_nodes_minus_the_reserve() {
    let nodes = [
        node(
            true,
            false,
            &[
                ("cpu", "4"),
                ("memory", "8Gi"),
                ("pods", "110"),
                ("nvidia.com/gpu", "2"),
                ("ephemeral-storage", "100Gi"),
                ("hugepages-2Mi", "0"),
            ],
        ),
        node(
            true,
            false,
            &[("cpu", "1500m"), ("memory", "1Gi"), ("pods", "110")],
        ),
        // Cordoned and not Ready: not counted.
        node(true, true, &[("cpu", "64"), ("example.com/widget", "4")]),
        node(false, false, &[("cpu", "64"), ("memory", "1Ti")]),
    ];
    let reserve = parse_reserve("cpu=500m,memory=1Gi,nvidia.com/gpu=5").expect("reserve");
    let r = allocatable(&nodes, &reserve);
    assert_eq!(r.cpu.as_deref(), Some("5"));
    assert_eq!(r.memory.as_deref(), Some("8589934592"));
    assert_eq!(r.pods.as_deref(), Some("220"));
    // Extended resources only; a reserve above the sum gives zero.
    assert_eq!(
        r.accelerators,
        vec![PingAccelerator {
            resource_type: "nvidia.com/gpu".into(),
            available: "0".into(),
        }]
    );
}

#[test]
fn no_schedulable_node_reports_nothing_rather_than_zero_cpu() {
    let r = allocatable(&[node(false, false, &[("cpu", "4")])], &Reserve::default());
    assert_eq!(r, PingResources::default());
}
