//! `imagePullSecrets` reach the remote cluster, on the two real clusters
//! with the real plugin: the pod's pull Secret is shipped, created remotely
//! with the same type and data, referenced by the remote pod (the remote
//! kubelet pulls with it), and removed with the pod.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};

const RUN: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secret_is_shipped_used_and_cleaned_up() {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-pull");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-pull", &[&node]).await;

    let config = br#"{"auths":{"registry.example:5000":{"auth":"dXNlcjpzM2NyZXQ="}}}"#;
    let regcred = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("regcred".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some([(".dockerconfigjson".to_string(), ByteString(config.to_vec()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.local.clone(), &ns)
        .create(&PostParams::default(), &regcred)
        .await
        .expect("create the pull Secret");
    let mut p = pod(
        "pulls",
        &node,
        "Never",
        None,
        container("main", "echo pulled"),
    );
    if let Some(s) = p.spec.as_mut() {
        s.image_pull_secrets = Some(vec![LocalObjectReference {
            name: "regcred".into(),
        }]);
    }
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let local = wait_phase(&pods, "pulls", "Succeeded", RUN).await;

    let remote = remote_pods(&env.remote, &uid(&local))
        .await
        .into_iter()
        .next()
        .expect("the remote pod");
    let rns = remote.metadata.namespace.clone().expect("remote namespace");
    let refs: Vec<String> = remote
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        refs.len(),
        1,
        "the remote pod references one pull Secret: {refs:?}"
    );
    assert_ne!(
        refs[0], "regcred",
        "the shipped copy, under the plugin's name"
    );
    let secrets = Api::<Secret>::namespaced(env.remote.clone(), &rns);
    let shipped = secrets
        .get(&refs[0])
        .await
        .expect("the shipped Secret exists remotely");
    assert_eq!(shipped.type_, regcred.type_, "same type");
    assert_eq!(shipped.data, regcred.data, "same data");

    pods.delete("pulls", &DeleteParams::default())
        .await
        .expect("delete pod");
    wait_gone(&pods, "pulls", RUN).await;
    wait_for("the shipped Secret removed with the pod", RUN, async || {
        secrets
            .get_opt(&refs[0])
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let left: Vec<Pod> = remote_pods(&env.remote, &uid(&local)).await;
    assert!(left.is_empty(), "remote pod gone too");
    prov.shutdown().await;
}
