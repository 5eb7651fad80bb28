use super::*;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use offload_wire::keys::tunnel;
use pretty_assertions::assert_eq;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGf";
const ADDR: &str = "10.0.0.1:30222";

fn pod_at(ns: &str, name: &str, ip: Option<&str>, ports: &str, created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created).expect("ts"),
            )),
            annotations: Some(BTreeMap::from([
                (tunnel::GATEWAY_ADDRESS.into(), ADDR.into()),
                (tunnel::GATEWAY_HOST_KEY.into(), KEY.into()),
                (tunnel::PORTS.into(), ports.into()),
            ])),
            ..Default::default()
        },
        status: Some(PodStatus {
            pod_ip: ip.map(str::to_owned),
            phase: Some("Running".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str, ip: Option<&str>, ports: &str, created: i64) -> Pod {
    pod_at("ns", name, ip, ports, created)
}

fn gw() -> Gateway {
    Gateway {
        address: ADDR.into(),
        host_key: KEY.into(),
    }
}

/// Configured with [`gw`], pods of `ns` (and `ns2`) only.
fn policy() -> Policy {
    Policy {
        gateways: BTreeSet::from([gw()]),
        namespaces: Some(BTreeSet::from(["ns".to_owned(), "ns2".to_owned()])),
    }
}

fn t(host: &str, port: u16) -> Target {
    Target {
        host: host.into(),
        port,
    }
}

#[test]
fn pods_to_forwards_oldest_keeps_a_clashing_port() {
    let mut done = pod("done", Some("10.1.0.9"), r#"{"80":40009}"#, 1);
    if let Some(s) = done.status.as_mut() {
        s.phase = Some("Succeeded".into());
    }
    let mut gone = pod("gone", Some("10.1.0.8"), r#"{"80":40008}"#, 1);
    gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
    let pods = vec![
        pod("a", Some("10.1.0.1"), r#"{"80":40000,"8080":40001}"#, 1),
        pod("pending", None, r#"{"80":40002}"#, 1),
        // The newer pod does not take the older one's port.
        pod("new", Some("10.1.0.4"), r#"{"80":40003}"#, 2),
        pod("old", Some("10.1.0.3"), r#"{"80":40003}"#, 1),
        done,
        gone,
        pod("broken", Some("10.1.0.7"), "nope", 1),
        Pod::default(),
    ];
    let got = from_pods(&pods, &policy());
    assert_eq!(
        got.desired,
        Desired::from([(
            gw(),
            Forwards::from([
                (GatewayPort(40000), t("10.1.0.1", 80)),
                (GatewayPort(40001), t("10.1.0.1", 8080)),
                (GatewayPort(40003), t("10.1.0.3", 80)),
            ])
        )])
    );
    assert_eq!(
        got.clashes,
        vec![Clash {
            gateway: ADDR.into(),
            port: GatewayPort(40003),
            kept: "ns/old".into(),
            lost: "ns/new".into(),
        }]
    );
    assert_eq!(got.skipped.len(), 1);
    assert_eq!(got.skipped[0].pod, "ns/broken");
    assert_eq!(got.skipped[0].reason.label(), "bad_annotations");
}

#[test]
fn same_age_clash_is_settled_by_name_whatever_the_order() {
    let a = pod("a", Some("10.1.0.1"), r#"{"80":40000}"#, 5);
    let b = pod("b", Some("10.1.0.2"), r#"{"80":40000}"#, 5);
    let one = from_pods([&a, &b], &policy());
    let two = from_pods([&b, &a], &policy());
    assert_eq!(one, two);
    assert_eq!(one.clashes[0].kept, "ns/a");
}

#[test]
fn pods_of_foreign_namespaces_or_unknown_gateways_are_ignored() {
    let victim = pod("victim", Some("10.1.0.1"), r#"{"80":40000}"#, 10);
    // Older than the victim, but in a namespace the plugin does not own.
    let foreign = pod_at("tenant", "thief", Some("10.9.0.1"), r#"{"80":40000}"#, 1);
    // In an owned namespace, but naming another gateway (to be dialled).
    let mut elsewhere = pod_at("ns2", "dial", Some("10.9.0.2"), r#"{"80":40001}"#, 1);
    let a = elsewhere
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    a.insert(tunnel::GATEWAY_ADDRESS.into(), "203.0.113.9:22".into());
    // Right address, another host key.
    let mut other_key = pod_at("ns2", "key", Some("10.9.0.3"), r#"{"80":40002}"#, 1);
    let a = other_key
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    a.insert(
        tunnel::GATEWAY_HOST_KEY.into(),
        "ssh-ed25519 AAAAother".into(),
    );
    let got = from_pods([&victim, &foreign, &elsewhere, &other_key], &policy());
    assert_eq!(
        got.desired,
        Desired::from([(
            gw(),
            Forwards::from([(GatewayPort(40000), t("10.1.0.1", 80))])
        )])
    );
    let reasons: Vec<(&str, &str)> = got
        .skipped
        .iter()
        .map(|s| (s.pod.as_str(), s.reason.label()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("ns2/dial", "unknown_gateway"),
            ("ns2/key", "unknown_gateway"),
            ("tenant/thief", "foreign_namespace"),
        ]
    );
    assert!(got.clashes.is_empty());
    // No configured gateway: nothing at all is forwarded or dialled.
    let none = Policy {
        gateways: BTreeSet::new(),
        namespaces: None,
    };
    assert!(from_pods([&victim], &none).desired.is_empty());
    // Without a namespace restriction (one watched namespace) the gateway still counts.
    let any_ns = Policy {
        namespaces: None,
        ..policy()
    };
    assert_eq!(from_pods([&foreign], &any_ns).desired.len(), 1);
}

#[test]
fn the_key_comment_does_not_matter() {
    assert!(gw().same(ADDR, &format!("{KEY} offload-gateway")));
    assert!(!gw().same("10.0.0.2:30222", KEY));
}

#[test]
fn plan_diff() {
    let active = BTreeSet::from([1, 2, 3].map(GatewayPort));
    let desired = Forwards::from([(GatewayPort(2), t("a", 1)), (GatewayPort(4), t("b", 1))]);
    assert_eq!(
        Plan::diff(&active, &desired),
        Plan {
            cancel: vec![GatewayPort(1), GatewayPort(3)],
            request: vec![GatewayPort(4)]
        }
    );
    assert!(Plan::diff(&BTreeSet::from([2, 4].map(GatewayPort)), &desired).is_empty());
    assert_eq!(
        Plan::diff(&BTreeSet::new(), &Forwards::new()),
        Plan::default()
    );
}
