use super::*;
use clap::Parser;
use offload_wire::{PingAccelerator, PingResources, PingTaint};
use pretty_assertions::assert_eq;

fn input() -> NodeSpecInput {
    let c = Config::parse_from([
        "offload-provider",
        "--node-name=vn",
        "--node-label=zone=remote",
        "--node-taint=gpu=yes:NoSchedule",
    ]);
    NodeSpecInput::from_config(&c, "10.0.0.5".parse().expect("ip"), 10250)
}

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("ts")
}

#[test]
fn node_has_interlink_label_and_taint() {
    let n = node_object(&input(), None);
    let l = n.metadata.labels.expect("labels");
    assert_eq!(
        l.get("virtual-node.interlink/type").map(String::as_str),
        Some("virtual-kubelet")
    );
    assert_eq!(
        l.get("kubernetes.io/hostname").map(String::as_str),
        Some("vn")
    );
    assert_eq!(l.get("zone").map(String::as_str), Some("remote"));
    let t = n.spec.expect("spec").taints.expect("taints");
    assert_eq!(t[0].key, "virtual-node.interlink/no-schedule");
    assert_eq!(t[0].value.as_deref(), Some("true"));
    assert_eq!(t[0].effect, "NoSchedule");
    assert_eq!(t[1].key, "gpu");
    assert!(n.status.is_none());
}

#[test]
fn interlink_defaults_without_flags_and_the_taint_can_be_turned_off() {
    let bare = |args: &[&str]| {
        let c = Config::parse_from(std::iter::once("offload-provider").chain(args.iter().copied()));
        NodeSpecInput::from_config(&c, "10.0.0.5".parse().expect("ip"), 10250)
    };
    let n = node_object(&bare(&[]), None);
    assert_eq!(
        n.metadata
            .labels
            .expect("labels")
            .get("virtual-node.interlink/type")
            .map(String::as_str),
        Some("virtual-kubelet")
    );
    let t = n.spec.expect("spec").taints.expect("taints");
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (
            t[0].key.as_str(),
            t[0].value.as_deref(),
            t[0].effect.as_str()
        ),
        (
            "virtual-node.interlink/no-schedule",
            Some("true"),
            "NoSchedule"
        )
    );
    let n = node_object(&bare(&["--no-default-taint"]), None);
    assert!(n.spec.and_then(|s| s.taints).unwrap_or_default().is_empty());
}

#[test]
fn status_points_at_kubelet_api_and_fills_system_info() {
    let s = node_status(&input(), &Reachability::Reachable, None, &[], now());
    let a = s.addresses.expect("addresses");
    assert_eq!(a[0].type_, "InternalIP");
    assert_eq!(a[0].address, "10.0.0.5");
    assert_eq!(
        s.daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(10250)
    );
    let info = serde_json::to_value(s.node_info.expect("info")).expect("json");
    for k in [
        "architecture",
        "bootID",
        "containerRuntimeVersion",
        "kernelVersion",
        "kubeProxyVersion",
        "kubeletVersion",
        "machineID",
        "operatingSystem",
        "osImage",
        "systemUUID",
    ] {
        assert!(info.get(k).is_some_and(|v| v.is_string()), "{k} missing");
    }
    assert_eq!(
        info.as_object().map(|o| o.len()),
        Some(10),
        "no fields newer than 1.20"
    );
    assert_eq!(
        s.capacity.expect("cap").get("cpu"),
        Some(&Quantity("100".into()))
    );
}

fn cond<'a>(s: &'a NodeStatus, type_: &str) -> &'a NodeCondition {
    s.conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
        .expect("condition")
}

#[test]
fn an_unreachable_plugin_keeps_ready_and_turns_plugin_reachable_false() {
    let down = Reachability::Unreachable {
        error: "connection refused".into(),
    };
    let s = node_status(&input(), &down, None, &[], now());
    let r = cond(&s, "Ready");
    assert_eq!(r.status, "True", "an outage never makes the node NotReady");
    assert_eq!(r.reason.as_deref(), Some("PluginUnreachable"));
    let c = cond(&s, "PluginReachable");
    assert_eq!(c.status, "False");
    assert_eq!(c.reason.as_deref(), Some("PluginUnreachable"));
    assert!(
        c.message
            .as_deref()
            .is_some_and(|m| m.contains("connection refused"))
    );
    let old = s.conditions.clone().expect("conds");
    let later: Timestamp = "2026-01-01T00:05:00Z".parse().expect("ts");
    let s2 = node_status(
        &input(),
        &Reachability::Unreachable { error: "x".into() },
        None,
        &old,
        later,
    );
    let c2 = cond(&s2, "PluginReachable");
    assert_eq!(c2.last_transition_time, c.last_transition_time);
    assert_eq!(c2.last_heartbeat_time, Some(Time(later)));
    let s3 = node_status(&input(), &Reachability::Reachable, None, &old, later);
    assert_eq!(
        cond(&s3, "PluginReachable").last_transition_time,
        Some(Time(later))
    );
    assert_eq!(cond(&s3, "PluginReachable").status, "True");
    assert_eq!(
        cond(&s3, "Ready").last_transition_time,
        r.last_transition_time,
        "Ready never changed"
    );
    let stopped = node_status(&input(), &Reachability::Stopped, None, &old, later);
    assert_eq!(cond(&stopped, "Ready").status, "False");
}

#[test]
fn ping_resources_and_taints_override_config() {
    let ping = PingResponse {
        status: "ok".into(),
        resources: Some(PingResources {
            cpu: Some("8".into()),
            memory: Some("not a quantity".into()),
            pods: None,
            accelerators: vec![PingAccelerator {
                resource_type: "nvidia.com/gpu".into(),
                available: "2".into(),
            }],
        }),
        taints: Some(vec![PingTaint {
            key: "remote".into(),
            value: "x".into(),
            effect: "NoSchedule".into(),
        }]),
    };
    let c = capacity(&input(), Some(&ping));
    assert_eq!(c.get("cpu"), Some(&Quantity("8".into())));
    assert_eq!(c.get("memory"), Some(&Quantity("3000Gi".into())));
    assert_eq!(c.get("nvidia.com/gpu"), Some(&Quantity("2".into())));
    let n = node_object(&input(), Some(&ping));
    assert_eq!(n.spec.and_then(|s| s.taints).map(|t| t.len()), Some(3));
}

#[test]
fn quantities() {
    assert!(valid_quantity("100"));
    assert!(valid_quantity("49Gi"));
    assert!(valid_quantity("500m"));
    assert!(!valid_quantity("lots"));
    assert!(!valid_quantity("5XB"));
}

#[test]
fn lease_is_owned_by_node() {
    let l = lease("vn", Some("node-uid"), 40, now());
    assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
    assert_eq!(
        l.metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].uid.as_str()),
        Some("node-uid")
    );
    let spec = l.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("vn"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
}

#[test]
fn pinned_flags_win_over_the_ping_per_resource() {
    let c = Config::parse_from(["offload-provider", "--node-name=vn", "--cpu=12"]);
    let input = NodeSpecInput::from_config(&c, "10.0.0.5".parse().expect("ip"), 10250);
    let ping = PingResponse {
        status: "ok".into(),
        resources: Some(PingResources {
            cpu: Some("8".into()),
            memory: Some("16Gi".into()),
            pods: None,
            accelerators: vec![PingAccelerator {
                resource_type: "example.com/widget".into(),
                available: "4".into(),
            }],
        }),
        taints: None,
    };
    let cap = capacity(&input, Some(&ping));
    let get = |k: &str| cap.get(k).map(|q| q.0.as_str());
    assert_eq!(get("cpu"), Some("12"), "pinned");
    assert_eq!(get("memory"), Some("16Gi"), "reported");
    assert_eq!(get("pods"), Some("10000"), "default");
    assert_eq!(get("example.com/widget"), Some("4"));
    // The widget is gone from the next ping: gone from the node.
    let mut later = ping.clone();
    if let Some(r) = later.resources.as_mut() {
        r.accelerators.clear();
    }
    assert_eq!(
        capacity(&input, Some(&later)).get("example.com/widget"),
        None
    );
    // Without a ping: pinned, else the defaults.
    let none = capacity(&input, None);
    assert_eq!(none.get("cpu"), Some(&Quantity("12".into())));
    assert_eq!(none.get("memory"), Some(&Quantity("3000Gi".into())));
}
