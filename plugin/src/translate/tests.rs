use super::*;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    Probe, ProjectedVolumeSource, SecretEnvSource, SecurityContext, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use offload_wire::RetrievedContainer;
use pretty_assertions::assert_eq;
use testbed::fixtures::{
    self, config_map_volume, container, env, env_from_config_map, env_from_field, env_from_secret,
    mount, secret_volume,
};

mod references;

const UID: &str = "6f1c1f1e-0000-4000-8000-000000000001";

/// The local pod `default/hello` as the virtual node holds it: bound to the
/// node, with a label, a VK control annotation (secret) and a user one.
fn pod(containers: Vec<Container>, volumes: Vec<Volume>) -> Pod {
    let mut p = fixtures::pod("hello")
        .namespace("default")
        .uid(UID)
        .label("app", "web")
        .annotation("interlink.eu/wg-private-key", "SECRET")
        .annotation("team", "a")
        .node("virtual-node")
        .restart_policy("Never");
    for c in containers {
        p = p.container(c);
    }
    for v in volumes {
        p = p.volume(v);
    }
    let mut p = p.build();
    if let Some(spec) = p.spec.as_mut() {
        spec.service_account_name = Some("default".into());
    }
    p
}

/// A ConfigMap of the local namespace (with a UID, as the apiserver gives it).
fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = fixtures::config_map("default", name, data);
    cm.metadata.uid = Some(format!("cm-{name}"));
    cm
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    fixtures::secret("default", name, data)
}

fn data(
    pod: Pod,
    cms: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    projected: Vec<ConfigMap>,
) -> RetrievedPodData {
    RetrievedPodData {
        containers: vec![RetrievedContainer {
            name: "c".into(),
            config_maps: cms,
            secrets,
            projected_volume_maps: projected,
            empty_dirs: vec![],
        }],
        pod,
        job_config: None,
        job_script: None,
    }
}

fn spec_of(plan: &RemotePlan) -> &PodSpec {
    plan.pod.spec.as_ref().expect("spec")
}

#[test]
fn copies_the_spec_faithfully_and_strips_local_fields() {
    let mut c = container("c");
    c.working_dir = Some("/work".into());
    c.image_pull_policy = Some("IfNotPresent".into());
    c.liveness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(8080),
            path: Some("/healthz".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    c.lifecycle = Some(Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["touch".into(), "/tmp/x".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c.env = Some(vec![
        env("A", "1"),
        env("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        env_from_field("ME", "metadata.name"),
        env_from_field("IP", "status.podIP"),
    ]);
    let plan = translate(
        &data(pod(vec![c], vec![]), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect("translates");
    assert_eq!(plan.namespace, "offloading-default");
    assert_eq!(plan.pod_name(), format!("hello-{UID}"));
    let spec = spec_of(&plan);
    assert_eq!(spec.node_name, None);
    assert_eq!(spec.service_account_name, None);
    assert_eq!(spec.hostname.as_deref(), Some("hello"));
    let c = &spec.containers[0];
    assert_eq!(c.working_dir.as_deref(), Some("/work"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert!(c.liveness_probe.is_some());
    assert!(
        c.lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .is_some()
    );
    let env: Vec<(&str, Option<&str>)> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env,
        vec![("A", Some("1")), ("ME", Some("hello")), ("IP", None)]
    );
    let labels = plan.pod.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        labels.get(keys::LABEL_SOURCE_POD_UID).map(String::as_str),
        Some(UID)
    );
    assert_eq!(
        labels.get(keys::LABEL_MANAGED_BY).map(String::as_str),
        Some(keys::MANAGED_BY_PLUGIN)
    );
    let ann = plan.pod.metadata.annotations.as_ref().expect("annotations");
    assert!(!ann.contains_key("interlink.eu/wg-private-key"));
    assert_eq!(ann.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        ann.get(keys::ANNOTATION_SOURCE_NAME).map(String::as_str),
        Some("hello")
    );
    assert!(plan.config_maps.is_empty() && plan.secrets.is_empty());
}

#[test]
fn scheduling_fields_are_the_remote_operators() {
    let mut p = pod(vec![container("c")], vec![]);
    let spec = p.spec.as_mut().expect("spec");
    // What a user writes to land on the virtual node: none of it may reach
    // the remote scheduler (no remote node has these labels).
    spec.node_selector = Some(
        [
            ("offload.dev/demo".to_string(), "true".to_string()),
            (
                "virtual-node.interlink/type".to_string(),
                "virtual-kubelet".to_string(),
            ),
        ]
        .into(),
    );
    spec.tolerations = Some(vec![Toleration {
        key: Some("virtual-node.interlink/no-schedule".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    let anti = k8s_openapi::api::core::v1::PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![
            k8s_openapi::api::core::v1::WeightedPodAffinityTerm {
                weight: 1,
                pod_affinity_term: k8s_openapi::api::core::v1::PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                },
            },
        ]),
        ..Default::default()
    };
    spec.affinity = Some(k8s_openapi::api::core::v1::Affinity {
        node_affinity: Some(Default::default()),
        pod_anti_affinity: Some(anti.clone()),
        ..Default::default()
    });

    let plan = translate(
        &data(p.clone(), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect("translates");
    let spec = spec_of(&plan);
    assert_eq!(spec.node_selector, None);
    assert_eq!(spec.tolerations, None);
    let affinity = spec.affinity.as_ref().expect("pod anti-affinity stays");
    assert_eq!(affinity.node_affinity, None);
    assert_eq!(affinity.pod_anti_affinity.as_ref(), Some(&anti));

    let cfg = TranslateConfig {
        node_selector: [("pool".to_string(), "batch".to_string())].into(),
        tolerations: vec![Toleration {
            key: Some("batch".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let plan = translate(&data(p, vec![], vec![], vec![]), &cfg).expect("translates");
    let spec = spec_of(&plan);
    assert_eq!(
        spec.node_selector,
        Some([("pool".to_string(), "batch".to_string())].into())
    );
    let keys: Vec<&str> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.as_deref())
        .collect();
    assert_eq!(keys, vec!["batch"]);
}

#[test]
fn sidecars_need_a_new_enough_remote() {
    let mut init = container("sidecar");
    init.restart_policy = Some("Always".into());
    let mut p = pod(vec![container("c")], vec![]);
    p.spec.as_mut().expect("spec").init_containers = Some(vec![init]);
    let err = translate(
        &data(p.clone(), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect_err("1.20 has no sidecars");
    assert!(err.to_string().contains("native sidecar"), "{err}");
    let cfg = TranslateConfig {
        remote_minor: 30,
        ..Default::default()
    };
    let plan = translate(&data(p, vec![], vec![], vec![]), &cfg).expect("1.30 has sidecars");
    let inits = spec_of(&plan).init_containers.as_ref().expect("inits");
    assert_eq!(inits[0].restart_policy.as_deref(), Some("Always"));
}

#[test]
fn policy_refuses_privileged_with_a_reason() {
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let err = translate(
        &data(pod(vec![c], vec![]), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect_err("privileged");
    assert!(matches!(err, TranslateError::Policy(_)));
    assert!(err.to_string().contains("--allow-privileged"), "{err}");
}

/// The 1.20 seccomp/AppArmor annotations do not cross unless kept; the
/// others do, and a refusal carries every violation.
#[test]
fn security_annotations_are_dropped_and_violations_all_listed() {
    let mut p = pod(vec![container("c")], vec![]);
    let ann = p.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert(
        "container.apparmor.security.beta.kubernetes.io/c".into(),
        "runtime/default".into(),
    );
    ann.insert("team".into(), "a".into());
    let plan = translate(
        &data(p.clone(), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect("allowed");
    let out = plan.pod.metadata.annotations.unwrap_or_default();
    assert!(out.contains_key("team"));
    assert!(!out.keys().any(|k| k.contains("apparmor")), "{out:?}");
    assert!(plan.warnings.iter().any(|w| w.contains("apparmor")));

    p.spec.as_mut().expect("spec").host_pid = Some(true);
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.insert(
            "seccomp.security.alpha.kubernetes.io/pod".into(),
            "unconfined".into(),
        );
    }
    let err = translate(
        &data(p, vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect_err("refused");
    let TranslateError::Policy(v) = err else {
        panic!("not a policy error: {err}")
    };
    let fields: Vec<&str> = v.iter().map(|x| x.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.hostPID",
            "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]"
        ]
    );
}

type Mutation = Box<dyn Fn(&mut Pod)>;

#[test]
fn malformed_pods_are_invalid() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "pod.metadata.uid is missing",
            Box::new(|p: &mut Pod| p.metadata.uid = None),
        ),
        (
            "pod.metadata.name is missing",
            Box::new(|p: &mut Pod| p.metadata.name = None),
        ),
        (
            "not a valid pod name",
            Box::new(|p: &mut Pod| p.metadata.name = Some("Bad_Name".into())),
        ),
        (
            "pod.metadata.namespace is missing",
            Box::new(|p: &mut Pod| p.metadata.namespace = None),
        ),
        ("pod.spec is missing", Box::new(|p: &mut Pod| p.spec = None)),
        (
            "containers is empty",
            Box::new(|p: &mut Pod| p.spec.as_mut().expect("spec").containers.clear()),
        ),
        (
            "used twice",
            Box::new(|p: &mut Pod| {
                let s = p.spec.as_mut().expect("spec");
                s.containers.push(s.containers[0].clone());
            }),
        ),
        (
            "not in pod.spec.volumes",
            Box::new(|p: &mut Pod| {
                p.spec.as_mut().expect("spec").containers[0].volume_mounts =
                    Some(vec![mount("nope", "/x")]);
            }),
        ),
        (
            "has no image",
            Box::new(|p: &mut Pod| p.spec.as_mut().expect("spec").containers[0].image = None),
        ),
    ];
    for (want, mutate) in cases {
        let mut p = pod(vec![container("c")], vec![]);
        mutate(&mut p);
        let err = translate(
            &data(p, vec![], vec![], vec![]),
            &TranslateConfig::default(),
        )
        .expect_err(want);
        assert!(matches!(err, TranslateError::Invalid(_)), "{want}: {err:?}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

#[test]
fn translation_is_deterministic() {
    let d = data(pod(vec![container("c")], vec![]), vec![], vec![], vec![]);
    let a = translate(&d, &TranslateConfig::default()).expect("a");
    let b = translate(&d, &TranslateConfig::default()).expect("b");
    assert_eq!(a.pod, b.pod);
}

/// What the bastion needs on the remote pod: the tunnel annotations
/// gateway-manager wrote on the local pod, unchanged, and the label its
/// reflector selects. (The interLink VK's secret annotations stay behind.)
#[test]
fn tunnel_annotations_and_the_bastion_label_reach_the_remote_pod() {
    use offload_wire::keys::tunnel;
    let mut p = pod(vec![container("c")], vec![]);
    let tunnel_annotations = [
        (tunnel::GATEWAY_ADDRESS, "10.201.0.1:30222"),
        (
            tunnel::GATEWAY_HOST_KEY,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ",
        ),
        (tunnel::PORTS, r#"{"8080":40000}"#),
        (tunnel::SERVICE, "web"),
    ];
    if let Some(a) = p.metadata.annotations.as_mut() {
        for (k, v) in tunnel_annotations {
            a.insert(k.into(), v.into());
        }
    }
    let plan = translate(
        &data(p, vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect("translates");
    let ann = plan.pod.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in tunnel_annotations {
        assert_eq!(ann.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(!ann.contains_key("interlink.eu/wg-private-key"));
    let labels = plan.pod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(keys::LABEL_OFFLOADING).map(String::as_str),
        Some(keys::OFFLOADING_VALUE)
    );
    assert_eq!(
        offload_bastion::install::BastionSpec::new("ns", "img").label_selector,
        format!("{}={}", keys::LABEL_OFFLOADING, keys::OFFLOADING_VALUE)
    );
}
