use super::*;

#[test]
fn standby_replicas_elect_a_leader_over_their_own_lease() {
    let single = BastionSpec::new("remote-ns", "img");
    assert!(single.lease_role().is_none());
    let args = single
        .deployment()
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(!args.contains(&"--lease-name".to_owned()));

    let mut ha = BastionSpec::new("remote-ns", "img");
    ha.replicas = 2;
    let (role, binding) = ha.lease_role().expect("lease role");
    assert_eq!(role.metadata.namespace.as_deref(), Some("remote-ns"));
    let rules = role.rules.expect("rules");
    assert!(rules.iter().all(|r| r.api_groups.as_deref()
        == Some(&["coordination.k8s.io".to_owned()][..])
        && r.resources.as_deref() == Some(&["leases".to_owned()][..])));
    // Only create is unscoped; reads and renewals are for its own Lease.
    assert_eq!(rules[0].verbs, ["create"]);
    assert_eq!(rules[1].verbs, ["get", "update"]);
    assert_eq!(
        rules[1].resource_names.as_deref(),
        Some(&[ha.lease_name()][..])
    );
    assert_eq!(binding.role_ref.name, ha.lease_name());
    let d = ha.deployment();
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let c = &spec.template.spec.expect("pod").containers[0];
    let args = c.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--lease-name")
        .expect("--lease-name");
    assert_eq!(args[at + 1], ha.lease_name());
    let pod_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(pod_name.as_deref(), Some("metadata.name"));
}

#[test]
fn namespaced_watch_gets_a_role_only() {
    let mut s = BastionSpec::new("offload-system", "localhost/offload/bastion:0.1.0");
    s.watch_namespace = Some("work".into());
    let (role, binding) = s.role().expect("role");
    assert!(s.cluster_role().is_none());
    assert_eq!(role.metadata.namespace.as_deref(), Some("work"));
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let subj = &binding.subjects.expect("subjects")[0];
    assert_eq!(subj.namespace.as_deref(), Some("offload-system"));
    let args = s
        .deployment()
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .args
        .clone()
        .expect("args");
    assert!(args.windows(2).any(|w| w == ["--namespace", "work"]));
}

#[test]
fn cluster_wide_watch_gets_a_cluster_role_only() {
    let s = BastionSpec::new("offload-system", "img:1");
    assert!(s.role().is_none());
    let (role, binding) = s.cluster_role().expect("cluster role");
    assert_eq!(role.metadata.namespace, None);
    assert_eq!(binding.role_ref.name, s.cluster_rbac_name());
    let keyed = s.deployment_for_key("ssh-ed25519 AAAAkey offload-bastion\n");
    let ann = keyed
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(ANNOTATION_PUBLIC_KEY))
        .cloned();
    assert_eq!(ann.as_deref(), Some("ssh-ed25519 AAAAkey offload-bastion"));
    let d = s.deployment();
    let pod = d.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some("offload-bastion"));
    let sc = pod.security_context.expect("sc");
    assert_eq!(sc.run_as_user, Some(BASTION_UID));
    assert!(
        !pod.containers[0]
            .args
            .as_ref()
            .expect("args")
            .contains(&"--namespace".to_owned())
    );
}

#[test]
fn the_configured_gateways_and_instance_reach_the_bastion_and_come_back() {
    let mut spec = BastionSpec::new("remote-ns", "img");
    let gw = |a: &str| Gateway {
        address: a.into(),
        host_key: "ssh-ed25519 AAAA".into(),
    };
    spec.gateways = BTreeSet::from([gw("10.0.0.2:30222"), gw("10.0.0.1:30222")]);
    spec.plugin_instance = Some("blue".into());
    let d = spec.deployment();
    assert_eq!(BastionSpec::gateways_of(&d), spec.gateways);
    let c = d
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].clone())
        .expect("container");
    let args = c.args.unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--plugin-instance")
        .expect("--plugin-instance");
    assert_eq!(args[at + 1], "blue");
    let env = c.env.unwrap_or_default();
    let gws = env
        .iter()
        .find(|e| e.name == "BASTION_GATEWAYS")
        .and_then(|e| e.value.clone())
        .expect("BASTION_GATEWAYS");
    // Sorted: the same set always renders the same template (no rollout).
    assert!(gws.find("10.0.0.1").expect("1") < gws.find("10.0.0.2").expect("2"));
    assert_eq!(
        crate::run::parse_gateways(&gws).expect("parses"),
        spec.gateways
    );
    // Cluster-wide, the bastion may read namespaces (to tell the plugin's own).
    let (role, _) = spec.cluster_role().expect("cluster role");
    assert!(role.rules.unwrap_or_default().iter().any(|r| {
        r.resources.as_deref() == Some(&["namespaces".to_owned()][..]) && r.verbs == ["get"]
    }));
}
