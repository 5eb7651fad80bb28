//! Ownership on the real remote test cluster, played as the attacker: a
//! remote tenant (or another tool) holds names the plugin would use, or a
//! caller aims the namespace mapping at the bastion's namespace or names
//! somebody else's pod in a delete. Each is refused or a no-op, and the
//! foreign objects are exactly as they were (same resourceVersion and data)
//! after everything of ours is deleted.
//!
//! Needs the test clusters (`bash testbed/scripts/testbed.sh up`).

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use common::*;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Namespace, Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use offload_plugin::{
    PluginConfig,
    naming::{NameKind, remote_name},
};
use offload_wire::keys;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A Secret without any of our labels, as a tenant would make it.
fn foreign_secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".into(),
            ByteString(b"tenant-owned".to_vec()),
        )])),
        ..Default::default()
    }
}

/// A running pod without any of our labels.
fn foreign_pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "tenant"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": testbed::images::BUSYBOX,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]
        }
    }))?)
}

/// resourceVersion and UID of an object, to prove it was not touched.
fn version_of<K: kube::Resource>(o: &K) -> (Option<String>, Option<String>) {
    (o.meta().resource_version.clone(), o.meta().uid.clone())
}

async fn post(
    env: &Env,
    p: &Plugin,
    path: &str,
    body: String,
) -> anyhow::Result<(StatusCode, Value)> {
    let (code, text) = send(env, Method::POST, p.url(path), body).await?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((code, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_objects_are_never_taken_over_or_deleted() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "plugin-own")?;
    let ns = &scope.remote_ns;
    // The tenant's namespace exists already (not made by the plugin).
    let namespaces: Api<Namespace> = Api::all(env.remote.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(ns.clone());
    namespaces.create(&PostParams::default(), &n).await?;
    testbed::wait_for("default ServiceAccount", RUN, || async {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(env.remote.clone(), ns);
        Ok(sa.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    let secrets: Api<Secret> = Api::namespaced(env.remote.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(env.remote.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(env.remote.clone(), ns);
    let p = Plugin::start(&env, PluginConfig::for_tests()).await?;

    // 1. A foreign Secret holds the name the pod's Secret "db" would take.
    let uid_a = uid();
    let body_a = fixture("create_full.json", &scope.local_ns, &uid_a)?;
    let secret_name = remote_name(NameKind::Secret, "db", &uid_a);
    let victim_secret = secrets
        .create(&PostParams::default(), &foreign_secret(&secret_name))
        .await?;
    let (code, v) = post(&env, &p, "/create", body_a.clone()).await?;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&secret_name),
        "names the Secret: {v}"
    );
    // Nothing of the refused create stays (the pod and ConfigMaps it made
    // before meeting the Secret are rolled back).
    wait_gone(&env, &uid_a).await?;
    assert!(
        pods.get_opt(&remote_name(NameKind::Pod, "full", &uid_a))
            .await?
            .is_none()
    );
    assert!(
        cms.get_opt(&remote_name(NameKind::ConfigMap, "settings", &uid_a))
            .await?
            .is_none()
    );

    // 2. A foreign pod holds the name of the remote pod.
    let uid_b = uid();
    let body_b = fixture("create_full.json", &scope.local_ns, &uid_b)?;
    let pod_name = remote_name(NameKind::Pod, "full", &uid_b);
    let victim_pod = pods
        .create(&PostParams::default(), &foreign_pod(&pod_name)?)
        .await?;
    let (code, v) = post(&env, &p, "/create", body_b.clone()).await?;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&pod_name),
        "names the pod: {v}"
    );
    let (_, c, s) = remote_objects(&env, &uid_b).await?;
    assert!(
        c.is_empty() && s.is_empty(),
        "nothing else made: {c:?} {s:?}"
    );

    // 3. A delete naming the foreign pod (its local name and UID) is a no-op.
    let (code, v) = post(&env, &p, "/delete", pod_of(&body_b)?.to_string()).await?;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], false, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("left alone"),
        "{v}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still = pods.get(&pod_name).await?;
    assert_eq!(still.uid(), victim_pod.uid());
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );

    // 4. A UID that is not a UUID never reaches the cluster.
    let bad = fixture("create_hello.json", &scope.local_ns, "not-a-uuid")?;
    let (code, v) = post(&env, &p, "/create", bad).await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");

    // 5. Our own create next to them works, is labelled with the instance,
    //    and a retry is idempotent (takes its own objects, not foreign ones).
    let uid_c = uid();
    let body_c = fixture("create_full.json", &scope.local_ns, &uid_c)?;
    let first = create(&env, &p, &body_c).await?;
    let again = create(&env, &p, &body_c).await?;
    assert_eq!(first["PodJID"], again["PodJID"]);
    let (ps, cs, ss) = remote_objects(&env, &uid_c).await?;
    ensure!(
        ps.len() == 1 && !cs.is_empty() && !ss.is_empty(),
        "made: {ps:?}"
    );
    let instance =
        |labels: &BTreeMap<String, String>| labels.get(keys::LABEL_PLUGIN_INSTANCE).cloned();
    let want = Some("offload-plugin".to_string());
    assert!(ps.iter().all(|o| instance(o.labels()) == want));
    assert!(cs.iter().all(|o| instance(o.labels()) == want));
    assert!(ss.iter().all(|o| instance(o.labels()) == want));
    delete_and_wait(&env, &p, &pod_of(&body_c)?, &uid_c).await?;

    // Everything of ours is gone; the foreign objects are as they were.
    let after = secrets.get(&secret_name).await?;
    assert_eq!(version_of(&after), version_of(&victim_secret));
    assert_eq!(after.data, victim_secret.data);
    let after = pods
        .get(&pod_name)
        .await
        .context("the foreign pod survives")?;
    assert_eq!(after.uid(), victim_pod.uid());
    assert!(after.metadata.deletion_timestamp.is_none());
    assert_eq!(
        after.labels(),
        victim_pod.labels(),
        "no label of ours added"
    );
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_never_reaches_the_bastion_or_system_namespaces() -> anyhow::Result<()> {
    let env = env().await?;
    // The bastion's namespace happens to be `<prefix>-<x>`: a caller
    // offloading from local namespace `x` aims at its key Secret.
    let target = scope(&env, "plugin-own-bastion")?;
    let namespaces: Api<Namespace> = Api::all(env.remote.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(target.remote_ns.clone());
    namespaces.create(&PostParams::default(), &n).await?;
    let secrets: Api<Secret> = Api::namespaced(env.remote.clone(), &target.remote_ns);
    let key = secrets
        .create(
            &PostParams::default(),
            &foreign_secret("offload-bastion-key"),
        )
        .await?;
    let mut cfg = PluginConfig::for_tests();
    cfg.bastion_namespace = Some(target.remote_ns.clone());
    let p = Plugin::start(&env, cfg).await?;

    let u = uid();
    let body = fixture("create_hello.json", &target.local_ns, &u)?;
    let (code, v) = post(&env, &p, "/create", body.clone()).await?;
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "namespace_refused", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&target.remote_ns),
        "{v}"
    );
    let (code, _) = post(&env, &p, "/delete", pod_of(&body)?.to_string()).await?;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let pods: Api<Pod> = Api::namespaced(env.remote.clone(), &target.remote_ns);
    assert!(
        pods.list(&Default::default()).await?.items.is_empty(),
        "no pod there"
    );
    let after = secrets.get("offload-bastion-key").await?;
    assert_eq!(version_of(&after), version_of(&key));
    assert_eq!(after.data, key.data);
    p.stop().await;

    // Configurations that would map onto kube-system or every namespace
    // do not start.
    for (prefix, exclusions) in [
        ("offloading", vec!["kube-system".to_string()]),
        ("", vec![]),
        ("kube", vec![]),
    ] {
        let mut cfg = PluginConfig::for_tests();
        cfg.namespace_prefix = prefix.into();
        cfg.namespace_prefix_exclusions.0 = exclusions;
        let e = Plugin::start(&env, cfg).await.err();
        assert!(e.is_some(), "prefix {prefix:?} must not start");
    }
    Ok(())
}

const RUN: std::time::Duration = std::time::Duration::from_secs(120);

/// The plugin's ClusterRole rules, as `charts/plugin/templates/rbac.yaml`
/// grants them (the chart test asserts the same verbs).
fn chart_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
    ])
}

/// A client of the remote cluster acting as `user` (impersonation by the
/// admin kubeconfig).
async fn client_as(env: &Env, user: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.tb.remote.kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    config.auth_info.impersonate = Some(user.to_owned());
    Ok(kube::Client::try_from(config)?)
}

/// The plugin with exactly the chart's rights: it works (create, retried
/// create, delete), cannot read a Secret, and a foreign Secret in the way
/// (which it cannot read) still gets a 409 and stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_suffices_and_reads_no_secret() -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let env = env().await?;
    let scope = scope(&env, "plugin-own-rbac")?;
    let name = format!("offload-test-{}", scope.local_ns);
    let roles: Api<ClusterRole> = Api::all(env.remote.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(env.remote.clone());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": name}, "rules": chart_rules()}))?,
        )
        .await?;
    // The account lives in the tenant namespace the test creates first.
    let namespaces: Api<Namespace> = Api::all(env.remote.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(scope.remote_ns.clone());
    namespaces.create(&PostParams::default(), &n).await?;
    bindings
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "plugin", "namespace": scope.remote_ns}]}))?)
        .await?;
    let result = rbac_scenario(&env, &scope).await;
    let _ = bindings.delete(&name, &Default::default()).await;
    let _ = roles.delete(&name, &Default::default()).await;
    result
}

async fn rbac_scenario(env: &Env, scope: &Scope) -> anyhow::Result<()> {
    let ns = &scope.remote_ns;
    let client = client_as(env, &format!("system:serviceaccount:{ns}:plugin")).await?;
    let denied = Api::<Secret>::namespaced(client.clone(), "kube-system")
        .list(&Default::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );
    let mut cfg = PluginConfig::for_tests();
    cfg.remote_minor_version = Some(20);
    let running = offload_plugin::start(cfg, client).await?;
    ensure!(
        running.wait_ready(RUN).await,
        "pod cache did not sync with the chart's rights"
    );
    let p = Plugin {
        base: format!("http://{}", running.addr()),
        running,
    };
    testbed::wait_for("default ServiceAccount", RUN, || async {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(env.remote.clone(), ns);
        Ok(sa.get_opt("default").await?.map(|_| ()))
    })
    .await?;

    // A foreign Secret the plugin cannot read holds a name: 409, unchanged.
    let secrets: Api<Secret> = Api::namespaced(env.remote.clone(), ns);
    let uid_a = uid();
    let body_a = fixture("create_full.json", &scope.local_ns, &uid_a)?;
    let secret_name = remote_name(NameKind::Secret, "db", &uid_a);
    let victim = secrets
        .create(&PostParams::default(), &foreign_secret(&secret_name))
        .await?;
    let (code, v) = post(env, &p, "/create", body_a).await?;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    wait_gone(env, &uid_a).await?;
    let after = secrets.get(&secret_name).await?;
    assert_eq!(
        (version_of(&after), &after.data),
        (version_of(&victim), &victim.data)
    );

    // Our own pod: create, a retry (its Secrets exist and cannot be read:
    // ours because the pod existed), delete.
    let uid_b = uid();
    let body_b = fixture("create_full.json", &scope.local_ns, &uid_b)?;
    let first = create(env, &p, &body_b).await?;
    let again = create(env, &p, &body_b).await?;
    assert_eq!(first["PodJID"], again["PodJID"]);
    delete_and_wait(env, &p, &pod_of(&body_b)?, &uid_b).await?;
    p.stop().await;
    Ok(())
}
