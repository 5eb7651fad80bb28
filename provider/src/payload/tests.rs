use super::*;
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, DownwardAPIProjection,
    EnvFromSource, EnvVar, EnvVarSource, PodSpec, ProjectedVolumeSource,
    ServiceAccountTokenProjection, VolumeMount, VolumeProjection,
};
use pretty_assertions::assert_eq;
use testbed::fixtures;

fn mount(name: &str) -> VolumeMount {
    fixtures::mount(name, &format!("/m/{name}"))
}

fn cm(name: &str, kv: &[(&str, &str)]) -> ConfigMap {
    let mut cm = fixtures::config_map("ns", name, kv);
    // What the apiserver returns; never part of the payload.
    cm.metadata.managed_fields = Some(vec![]);
    cm
}

fn secret(name: &str, kv: &[(&str, &str)], type_: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: type_.map(str::to_string),
        ..fixtures::secret("", name, kv)
    }
}

fn test_pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            labels: Some(
                [
                    ("b".to_string(), "2".to_string()),
                    ("a".into(), "x\"y".into()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            init_containers: Some(vec![Container {
                name: "init".into(),
                volume_mounts: Some(vec![mount("cfg")]),
                ..Default::default()
            }]),
            containers: vec![Container {
                name: "main".into(),
                volume_mounts: Some(vec![
                    mount("cfg"),
                    mount("sec"),
                    mount("proj"),
                    mount("token"),
                ]),
                env: Some(vec![
                    EnvVar {
                        name: "A".into(),
                        value_from: Some(EnvVarSource {
                            config_map_key_ref: Some(ConfigMapKeySelector {
                                name: "env-cm".into(),
                                key: "k".into(),
                                optional: Some(true),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    fixtures::env_from_secret("B", "env-sec", "k"),
                    fixtures::env_from_field("POD", "metadata.name"),
                ]),
                env_from: Some(vec![EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "from-cm".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![
                fixtures::config_map_volume("cfg", "vol-cm"),
                fixtures::secret_volume("sec", "vol-sec"),
                fixtures::secret_volume("token", "default-token-abc"),
                Volume {
                    name: "proj".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![
                            VolumeProjection {
                                config_map: Some(ConfigMapProjection {
                                    name: "proj-cm".into(),
                                    items: Some(vec![KeyToPath {
                                        key: "a".into(),
                                        path: "dir/a.txt".into(),
                                        mode: None,
                                    }]),
                                    optional: None,
                                }),
                                ..Default::default()
                            },
                            VolumeProjection {
                                downward_api: Some(DownwardAPIProjection {
                                    items: Some(vec![
                                        field_file("labels", "metadata.labels"),
                                        field_file("ns", "metadata.namespace"),
                                    ]),
                                }),
                                ..Default::default()
                            },
                            VolumeProjection {
                                service_account_token: Some(ServiceAccountTokenProjection {
                                    path: "token".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                fixtures::config_map_volume("unused", "never-mounted"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A downward-API file `path` of the pod field `field_path`.
fn field_file(path: &str, field_path: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field_path.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The names of `objects`, in order.
fn names<K: kube::Resource>(objects: &[K]) -> Vec<&str> {
    objects
        .iter()
        .filter_map(|o| o.meta().name.as_deref())
        .collect()
}

fn all_fetched() -> Fetched {
    let mut f = Fetched::default();
    for n in ["vol-cm", "from-cm"] {
        f.config_maps.insert(n.into(), Some(cm(n, &[("k", "v")])));
    }
    f.config_maps.insert(
        "proj-cm".into(),
        Some(cm("proj-cm", &[("a", "line1\nline2\n"), ("b", "no")])),
    );
    f.config_maps.insert("env-cm".into(), None);
    f.secrets.insert(
        "vol-sec".into(),
        Some(secret("vol-sec", &[("pw", "s3cret")], None)),
    );
    f.secrets.insert(
        "env-sec".into(),
        Some(secret("env-sec", &[("k", "v")], None)),
    );
    f.secrets.insert(
        "default-token-abc".into(),
        Some(secret(
            "default-token-abc",
            &[("token", "local-credential")],
            Some(SA_TOKEN_TYPE),
        )),
    );
    f
}

#[test]
fn references_per_container_with_optional_flags() {
    let r = references(&test_pod());
    assert_eq!(r.containers.len(), 2);
    assert_eq!(r.containers[0].name, "init");
    assert_eq!(
        r.containers[0].config_maps,
        vec![ObjectRef {
            name: "vol-cm".into(),
            optional: false
        }]
    );
    let main = &r.containers[1];
    let cms: Vec<&str> = main.config_maps.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(cms, vec!["vol-cm", "env-cm", "from-cm"]);
    assert_eq!(main.projected_volumes, vec!["proj".to_string()]);
    assert_eq!(
        r.config_maps.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["env-cm", "from-cm", "proj-cm", "vol-cm"]
    );
    assert_eq!(r.config_maps.get("env-cm"), Some(&true));
    assert_eq!(r.config_maps.get("never-mounted"), None);
    assert_eq!(
        r.secrets.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["default-token-abc", "env-sec", "vol-sec"]
    );
}

#[test]
fn payload_has_per_container_objects_and_rendered_projected_volume() {
    let p = test_pod();
    let data = build_payload(&p, &references(&p), &all_fetched(), false).expect("payload");
    assert_eq!(data.containers[0].name, "init");
    assert_eq!(data.containers[0].config_maps.len(), 1);
    let main = &data.containers[1];
    // env-cm is optional and missing: skipped.
    assert_eq!(names(&main.config_maps), vec!["vol-cm", "from-cm"]);
    assert!(main.config_maps[0].metadata.managed_fields.is_none());
    // The service-account token secret is not shipped.
    assert_eq!(names(&main.secrets), vec!["vol-sec", "env-sec"]);
    let proj = &main.projected_volume_maps[0];
    assert_eq!(proj.metadata.name.as_deref(), Some("proj"));
    let d = proj.data.as_ref().expect("data");
    assert_eq!(
        d.get("dir/a.txt").map(String::as_str),
        Some("line1\nline2\n")
    );
    assert_eq!(
        d.get("labels").map(String::as_str),
        Some("a=\"x\\\"y\"\nb=\"2\"")
    );
    assert_eq!(d.get("ns").map(String::as_str), Some("ns"));
    assert!(!d.contains_key("token"));
    assert!(!d.contains_key("b"), "only listed items");
    // Shipped pod: token volume and mount gone, fieldRef env resolved.
    let spec = data.pod.spec.as_ref().expect("spec");
    assert!(spec.volumes.iter().flatten().all(|v| v.name != "token"));
    let c = &spec.containers[0];
    assert!(c.volume_mounts.iter().flatten().all(|m| m.name != "token"));
    let pod_env = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD")
        .expect("env");
    assert_eq!(pod_env.value.as_deref(), Some("p"));
    assert!(pod_env.value_from.is_none());
    // Secret references stay references: the plugin creates them remotely.
    assert!(
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == "B" && e.value_from.is_some())
    );
    let json = serde_json::to_string(&data).expect("json");
    assert!(
        !json.contains("bG9jYWwtY3JlZGVudGlhbA"),
        "sa token never shipped"
    );
}

#[test]
fn sa_token_shipped_when_asked() {
    let p = test_pod();
    let data = build_payload(&p, &references(&p), &all_fetched(), true).expect("payload");
    assert_eq!(data.containers[1].secrets.len(), 3);
}

#[test]
fn missing_required_reference_is_an_error() {
    let p = test_pod();
    let mut f = all_fetched();
    f.secrets.insert("env-sec".into(), None);
    assert_eq!(
        build_payload(&p, &references(&p), &f, false).err(),
        Some(MissingRef {
            kind: "secret",
            name: "env-sec".into()
        })
    );
    let mut f = all_fetched();
    f.config_maps.insert("proj-cm".into(), None);
    assert_eq!(
        build_payload(&p, &references(&p), &f, false)
            .err()
            .map(|e| e.to_string()),
        Some("configmap \"proj-cm\" not found".to_string())
    );
}

#[test]
fn interlink_create_requests_dedupe_across_containers() {
    let p = test_pod();
    let data = build_payload(&p, &references(&p), &all_fetched(), false).expect("payload");
    let req = to_create_requests(&data);
    let names: Vec<_> = req
        .config_maps
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["vol-cm".to_string(), "from-cm".to_string()]);
    assert_eq!(req.projected_volume_maps.len(), 1);
    let v = serde_json::to_value(&req).expect("json");
    assert!(v.get("projectedvolumesmaps").is_some());
    assert!(v.get("configmaps").is_some());
    assert_eq!(v.get("jobscriptURL"), Some(&serde_json::json!("")));
}

#[test]
fn downward_api_volume_rendered() {
    let p = test_pod();
    let v = Volume {
        name: "dw".into(),
        downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIVolumeSource {
            items: Some(vec![
                field_file("uid", "metadata.uid"),
                field_file("b", "metadata.labels['b']"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cm = render_volume(&p, &v, &Fetched::default()).expect("renders");
    let d = cm.data.expect("data");
    assert_eq!(d.get("uid").map(String::as_str), Some("uid-1"));
    assert_eq!(d.get("b").map(String::as_str), Some("2"));
}
