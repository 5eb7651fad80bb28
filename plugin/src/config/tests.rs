use super::*;
use pretty_assertions::assert_eq;
use std::time::Duration;

#[test]
fn listen_forms() {
    assert_eq!(
        "unix:///run/p.sock".parse::<Listen>(),
        Ok(Listen::Unix("/run/p.sock".into()))
    );
    assert_eq!(
        "http://0.0.0.0:4000".parse::<Listen>(),
        Ok(Listen::Tcp("0.0.0.0:4000".parse().expect("addr")))
    );
    assert!("nonsense".parse::<Listen>().is_err());
    assert!("unix://".parse::<Listen>().is_err());
}

#[test]
fn value_parsers() {
    assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
    assert_eq!(parse_size("100"), Ok(100));
    assert!(parse_size("8XB").is_err());
    assert_eq!(
        parse_key_values(r#"{"a":"b"}"#).map(|k| k.0),
        Ok([("a".to_string(), "b".to_string())].into())
    );
    assert_eq!(parse_key_values("a=b, c=d").map(|k| k.0.len()), Ok(2));
    assert_eq!(
        parse_string_list(r#"["x","y"]"#).map(|l| l.0),
        Ok(vec!["x".to_string(), "y".to_string()])
    );
    assert_eq!(parse_string_list("").map(|l| l.0), Ok(vec![]));
    assert_eq!(
        parse_tolerations(r#"[{"key":"k","operator":"Exists"}]"#).map(|t| t.0.len()),
        Ok(1)
    );
}

#[test]
fn defaults_refuse_to_run_without_auth() {
    let c = PluginConfig::load(["offload-plugin"]).expect("parses");
    assert_eq!(
        c.listen,
        Listen::Tcp("0.0.0.0:30400".parse().expect("addr"))
    );
    assert!(matches!(c.auth_token(), Err(ConfigError::NoAuth)));
    let c = PluginConfig::load(["offload-plugin", "--insecure-no-auth"]).expect("parses");
    assert!(matches!(c.auth_token(), Ok(None)));
}

#[test]
fn bastion_flags() {
    let c = PluginConfig::load(["offload-plugin", "--insecure-no-auth"]).expect("parses");
    let spec = c.bastion_spec().expect("on by default");
    assert_eq!(spec.image, DEFAULT_BASTION_IMAGE);
    assert_eq!(spec.name, "offload-bastion");
    assert_eq!(spec.watch_namespace, None);
    assert_eq!(spec.replicas, 2, "a standby by default");
    assert!(spec.leader_election());
    let c = PluginConfig::load([
        "offload-plugin",
        "--insecure-no-auth",
        "--bastion-replicas=1",
    ])
    .expect("parses");
    assert!(!c.bastion_spec().expect("on").leader_election());
    assert!(
        PluginConfig::load([
            "offload-plugin",
            "--insecure-no-auth",
            "--bastion-replicas=0"
        ])
        .is_err()
    );
    let c = PluginConfig::load([
        "offload-plugin",
        "--bastion-namespace",
        "tunnels",
        "--bastion-watch-namespace",
        "work",
        "--bastion-image",
        "reg/b:2",
    ])
    .expect("parses");
    let spec = c.bastion_spec().expect("on");
    assert_eq!(
        (spec.namespace.as_str(), spec.image.as_str()),
        ("tunnels", "reg/b:2")
    );
    assert_eq!(spec.watch_namespace.as_deref(), Some("work"));
    let c = PluginConfig::load(["offload-plugin", "--no-bastion"]).expect("parses");
    assert!(c.bastion_spec().is_none());
    assert!(PluginConfig::for_tests().bastion_spec().is_none());
    PluginConfig::command().debug_assert();
}

#[test]
fn config_file_sets_defaults_and_cli_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_config(
        &dir,
        "plugin.toml",
        "listen = \"127.0.0.1:4000\"\nallow-privileged = true\nnamespace-prefix-exclusions = [\"a\", \"b\"]\nnode_selector = { pool = \"gpu\" }\nbody-limit = \"1MiB\"\n",
    );
    let c = PluginConfig::load(["offload-plugin", "--config", &p]).expect("parses");
    assert_eq!(
        c.listen,
        Listen::Tcp("127.0.0.1:4000".parse().expect("addr"))
    );
    assert!(c.allow_privileged);
    assert_eq!(c.namespace_prefix_exclusions.0, vec!["a", "b"]);
    assert_eq!(
        c.node_selector.0.get("pool").map(String::as_str),
        Some("gpu")
    );
    assert_eq!(c.body_limit, 1024 * 1024);
    let c = PluginConfig::load([
        "offload-plugin",
        "--config",
        &p,
        "--listen",
        "unix:///tmp/x.sock",
    ])
    .expect("parses");
    assert_eq!(c.listen, Listen::Unix("/tmp/x.sock".into()));

    let c = load_file(
        &dir,
        "plugin.yaml",
        "insecure-no-auth: true\nnamespace-prefix: remote\n",
    )
    .expect("parses");
    assert!(c.insecure_no_auth);
    assert_eq!(c.namespace_prefix, "remote");

    assert!(matches!(
        load_file(&dir, "plugin.toml", "no-such-flag = 1\n"),
        Err(ConfigError::UnknownKey { .. })
    ));
}

/// Every duration setting takes the runtime's syntax, and a bare number of
/// seconds as before, from a flag or from the config file (a TOML integer
/// too: the file's values reach clap as text).
#[test]
fn durations_from_flags_and_the_config_file() {
    let c = PluginConfig::load([
        "offload-plugin",
        "--sweep-interval",
        "500ms",
        "--orphan-after=15m",
        "--namespace-ready-timeout",
        "90",
    ])
    .expect("parses");
    assert_eq!(c.sweep_interval, Duration::from_millis(500));
    assert_eq!(c.orphan_after, Duration::from_secs(900));
    assert_eq!(c.namespace_ready_timeout, Duration::from_secs(90));
    assert!(PluginConfig::load(["offload-plugin", "--orphan-after", "soon"]).is_err());

    let dir = tempfile::tempdir().expect("tempdir");
    let c = load_file(
        &dir,
        "plugin.toml",
        "orphan-finished-after = \"2d\"\ncaller-alive-within = 120\nbastion_resync_interval = \"1m30s\"\n",
    )
    .expect("parses");
    assert_eq!(c.orphan_finished_after, Duration::from_secs(2 * 86_400));
    assert_eq!(c.caller_alive_within, Duration::from_secs(120));
    assert_eq!(c.bastion_resync_interval, Duration::from_secs(90));
    // The defaults, as documented.
    let c = PluginConfig::load(["offload-plugin"]).expect("parses");
    assert_eq!(
        (c.sweep_interval, c.orphan_after, c.orphan_finished_after),
        (
            Duration::from_secs(60),
            Duration::from_secs(1800),
            Duration::from_secs(86_400)
        )
    );
}

/// Writes a config file `name` into `dir`; its path as an argument.
fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().to_string()
}

/// The config of file `name` (in `dir`) holding `text`, without other flags.
fn load_file(dir: &tempfile::TempDir, name: &str, text: &str) -> Result<PluginConfig, ConfigError> {
    let p = write_config(dir, name, text);
    PluginConfig::load(["offload-plugin", "--config", &p])
}

#[test]
fn pod_security_flags_reach_the_policy() {
    use crate::policy::Level;
    let c = PluginConfig::for_tests();
    let p = c.policy();
    assert_eq!(p.level, Level::Baseline);
    assert!(p.volume_types.contains("ephemeral") && !p.volume_types.contains("nfs"));
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write_config(
        &dir,
        "plugin.yaml",
        "pod-security-level: restricted\nallow-volume-types: [configMap, csi]\nallow-capabilities: NET_ADMIN\nkeep-security-annotations: [\"container.apparmor.security.beta.kubernetes.io/*\"]\n",
    );
    let c = PluginConfig::load(["offload-plugin", "--config", &f]).expect("parses");
    let p = c.policy();
    assert_eq!(p.level, Level::Restricted);
    assert_eq!(
        p.volume_types,
        ["configMap".to_string(), "csi".to_string()].into()
    );
    assert!(p.extra_capabilities.contains("NET_ADMIN"));
    assert!(p.keeps_annotation("container.apparmor.security.beta.kubernetes.io/app"));
    let err = PluginConfig::load(["offload-plugin", "--pod-security-level", "strict"]);
    assert!(err.is_err());
}

#[test]
fn instance_and_server_limits() {
    let c = PluginConfig::load(["offload-plugin"]).expect("parses");
    assert_eq!(c.instance, "offload-plugin");
    assert_eq!(c.max_concurrent_requests, 64);
    assert_eq!(c.request_timeout, Duration::from_secs(120));
    let c = PluginConfig::load([
        "offload-plugin",
        "--instance=site-a.plugin_1",
        "--max-concurrent-requests=3",
        "--request-timeout=5s",
    ])
    .expect("parses");
    assert_eq!(c.instance, "site-a.plugin_1");
    assert_eq!(
        (c.max_concurrent_requests, c.request_timeout),
        (3, Duration::from_secs(5))
    );
    for bad in [
        "--instance=",
        "--instance=a b",
        "--instance=-a",
        "--max-concurrent-requests=0",
    ] {
        assert!(
            PluginConfig::load(["offload-plugin", bad]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn namespace_mapping_is_checked_at_start_up() {
    let mut c = PluginConfig::for_tests();
    assert!(c.check_namespaces().is_ok());
    c.namespace_prefix = String::new();
    assert!(matches!(
        c.check_namespaces(),
        Err(ConfigError::Namespace(_))
    ));
    let mut c = PluginConfig::for_tests();
    c.namespace_prefix_exclusions = StringList(vec!["kube-system".into()]);
    let e = c.check_namespaces().expect_err("kube-system exclusion");
    assert!(e.to_string().contains("kube-system"), "{e}");
    // The bastion's namespace is protected even with --no-bastion.
    let mut c = PluginConfig::for_tests();
    c.bastion_namespace = Some("offloading-tunnels".into());
    let m = c.check_namespaces().expect("valid");
    assert!(m.checked_remote("tunnels").is_err());
    let c = PluginConfig::load(["offload-plugin", "--bastion-namespace=tunnels"]).expect("parses");
    assert!(c.namespaces().protected.contains(&"tunnels".to_string()));
}
