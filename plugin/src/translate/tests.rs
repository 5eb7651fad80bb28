use super::*;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    Probe, ProjectedVolumeSource, SecretEnvSource, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use offload_wire::RetrievedContainer;
use pretty_assertions::assert_eq;
use testbed::fixtures::{
    self, config_map_volume, container, env, env_from_config_map, env_from_field, env_from_secret,
    mount, secret_volume,
};

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
fn service_account_token_volumes_do_not_cross() {
    let mut c = container("c");
    c.volume_mounts = Some(vec![mount("default-token-abcde", SA_MOUNT_PATH)]);
    let mut c2 = container("d");
    c2.volume_mounts = Some(vec![mount("kube-api-access-xyz", SA_MOUNT_PATH)]);
    let vols = vec![
        secret_volume("default-token-abcde", "default-token-abcde"),
        Volume {
            name: "kube-api-access-xyz".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut token = secret("default-token-abcde", &[("token", "t")]);
    token.type_ = Some("kubernetes.io/service-account-token".into());
    let plan = translate(
        &data(
            pod(vec![c, c2], vols),
            vec![],
            vec![token],
            vec![cm("kube-api-access-xyz", &[("token", "t")])],
        ),
        &TranslateConfig::default(),
    )
    .expect("translates");
    let spec = spec_of(&plan);
    assert_eq!(spec.volumes, None);
    assert!(
        spec.containers
            .iter()
            .all(|c| c.volume_mounts.as_ref().is_none_or(|m| m.is_empty()))
    );
    assert!(plan.secrets.is_empty());
}

#[test]
fn config_volumes_env_refs_and_env_from_are_renamed_and_shipped_once() {
    let mut c = container("c");
    c.volume_mounts = Some(vec![mount("cfg", "/etc/cfg"), mount("sec", "/etc/sec")]);
    c.env = Some(vec![
        env_from_secret("PASSWORD", "db", "password"),
        env_from_config_map("MODE", "settings", "mode"),
    ]);
    c.env_from = Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: "db".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    let mut c2 = container("d");
    c2.volume_mounts = Some(vec![mount("cfg", "/etc/cfg")]);
    let mut cfg = config_map_volume("cfg", "settings");
    if let Some(v) = cfg.config_map.as_mut() {
        v.items = Some(vec![KeyToPath {
            key: "mode".into(),
            path: "conf/mode.txt".into(),
            mode: None,
        }]);
    }
    let vols = vec![cfg, secret_volume("sec", "db")];
    let mut d = data(
        pod(vec![c, c2], vols),
        vec![cm("settings", &[("mode", "fast")])],
        vec![secret("db", &[("password", "hunter2")])],
        vec![],
    );
    // interLink lists the shared ConfigMap for the second container too.
    d.containers.push(RetrievedContainer {
        name: "d".into(),
        config_maps: vec![cm("settings", &[("mode", "fast")])],
        ..Default::default()
    });
    let plan = translate(&d, &TranslateConfig::default()).expect("translates");
    let cm_name = format!("settings-{UID}");
    let secret_name = format!("db-{UID}");
    assert_eq!(plan.config_maps.len(), 1);
    assert_eq!(
        plan.config_maps[0].metadata.name.as_deref(),
        Some(cm_name.as_str())
    );
    assert_eq!(
        plan.config_maps[0].metadata.namespace.as_deref(),
        Some("offloading-default")
    );
    assert_eq!(plan.secrets.len(), 1);
    assert_eq!(
        plan.secrets[0].metadata.name.as_deref(),
        Some(secret_name.as_str())
    );
    let spec = spec_of(&plan);
    let vols = spec.volumes.as_ref().expect("volumes");
    assert_eq!(
        vols[0].config_map.as_ref().map(|c| c.name.as_str()),
        Some(cm_name.as_str())
    );
    assert_eq!(
        vols[0]
            .config_map
            .as_ref()
            .and_then(|c| c.items.as_ref())
            .map(|i| i[0].path.as_str()),
        Some("conf/mode.txt")
    );
    assert_eq!(
        vols[1]
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some(secret_name.as_str())
    );
    let env = spec.containers[0].env.as_ref().expect("env");
    assert_eq!(
        env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|r| r.name.as_str()),
        Some(secret_name.as_str())
    );
    assert_eq!(
        env[1]
            .value_from
            .as_ref()
            .and_then(|v| v.config_map_key_ref.as_ref())
            .map(|r| r.name.as_str()),
        Some(cm_name.as_str())
    );
    assert_eq!(
        spec.containers[0]
            .env_from
            .as_ref()
            .and_then(|e| e[0].secret_ref.as_ref())
            .map(|r| r.name.as_str()),
        Some(secret_name.as_str())
    );
}

#[test]
fn missing_referenced_objects_are_named() {
    let mut c = container("c");
    c.env = Some(vec![env_from_secret("PASSWORD", "db", "password")]);
    let err = translate(
        &data(pod(vec![c.clone()], vec![]), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect_err("missing secret");
    assert_eq!(
        err.to_string(),
        "Secret \"db\" is referenced by container \"c\" env \"PASSWORD\" but was not sent with the pod"
    );
    // Present, but without the key.
    let err = translate(
        &data(
            pod(vec![c.clone()], vec![]),
            vec![],
            vec![secret("db", &[("user", "x")])],
            vec![],
        ),
        &TranslateConfig::default(),
    )
    .expect_err("missing key");
    assert!(
        err.to_string()
            .contains("key \"password\" of Secret \"db\""),
        "{err}"
    );
    // Optional: fine, nothing shipped.
    if let Some(r) = c
        .env
        .as_mut()
        .and_then(|e| e[0].value_from.as_mut())
        .and_then(|v| v.secret_key_ref.as_mut())
    {
        r.optional = Some(true);
    }
    let plan = translate(
        &data(pod(vec![c], vec![]), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect("optional ref");
    assert!(plan.secrets.is_empty());
}

#[test]
fn projected_volume_data_becomes_a_secret_with_items() {
    let mut c = container("c");
    c.volume_mounts = Some(vec![mount("proj", "/projected")]);
    let vols = vec![Volume {
        name: "proj".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![VolumeProjection {
                config_map: Some(k8s_openapi::api::core::v1::ConfigMapProjection {
                    name: "settings".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }];
    let rendered = cm("proj", &[("dir/a.txt", "line1\nline2\n"), ("b", "x")]);
    let plan = translate(
        &data(pod(vec![c], vols), vec![], vec![], vec![rendered]),
        &TranslateConfig::default(),
    )
    .expect("translates");
    assert_eq!(plan.secrets.len(), 1);
    let s = &plan.secrets[0];
    let v = &spec_of(&plan).volumes.as_ref().expect("volumes")[0];
    let sv = v.secret.as_ref().expect("secret volume");
    assert_eq!(sv.secret_name, s.metadata.name);
    assert_eq!(sv.default_mode, Some(0o440));
    let items = sv.items.as_ref().expect("items");
    let by_path: BTreeMap<&str, &str> = items
        .iter()
        .map(|i| (i.path.as_str(), i.key.as_str()))
        .collect();
    let content = |path: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(by_path[path]))
            .map(|b| String::from_utf8_lossy(&b.0).to_string())
    };
    assert_eq!(content("dir/a.txt").as_deref(), Some("line1\nline2\n"));
    assert_eq!(content("b").as_deref(), Some("x"));
    // The user ConfigMap was not needed: the rendered data replaces it.
    assert!(plan.config_maps.is_empty());
}

#[test]
fn projected_volume_without_data_and_with_a_token_is_refused() {
    let mut c = container("c");
    c.volume_mounts = Some(vec![mount("tok", "/var/run/token")]);
    let vols = vec![Volume {
        name: "tok".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let err = translate(
        &data(pod(vec![c], vols), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect_err("refused");
    assert!(matches!(err, TranslateError::Missing { .. }), "{err}");
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
