//! Volumes and the ConfigMaps/Secrets a pod references: renamed, shipped
//! once, required unless optional, rendered data as a Secret.

use super::*;
use pretty_assertions::assert_eq;
use testbed::fixtures::token_volume;

#[test]
fn service_account_token_volumes_do_not_cross() {
    let mut c = container("c");
    c.volume_mounts = Some(vec![mount("default-token-abcde", SA_MOUNT_PATH)]);
    let mut c2 = container("d");
    c2.volume_mounts = Some(vec![mount("kube-api-access-xyz", SA_MOUNT_PATH)]);
    let vols = vec![
        secret_volume("default-token-abcde", "default-token-abcde"),
        token_volume("kube-api-access-xyz"),
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
    let from = |i: usize| env[i].value_from.clone().unwrap_or_default();
    let secret_key = from(0).secret_key_ref.map(|r| r.name);
    assert_eq!(secret_key.as_deref(), Some(secret_name.as_str()));
    let config_map_key = from(1).config_map_key_ref.map(|r| r.name);
    assert_eq!(config_map_key.as_deref(), Some(cm_name.as_str()));
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
    let vols = vec![token_volume("tok")];
    let err = translate(
        &data(pod(vec![c], vols), vec![], vec![], vec![]),
        &TranslateConfig::default(),
    )
    .expect_err("refused");
    assert!(matches!(err, TranslateError::Missing { .. }), "{err}");
}
