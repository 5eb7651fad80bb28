use super::*;
use k8s_openapi::ByteString;
use pretty_assertions::assert_eq;

use http::{Request, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use std::sync::{Arc, Mutex};

/// What a request looked like: method, path, query, content type.
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A client whose apiserver records each request and answers `answer`.
fn recording_client(seen: Seen, answer: String) -> Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let header = |n| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        seen.lock().expect("lock").push((
            req.method().to_string(),
            req.uri().path().to_owned(),
            req.uri().query().unwrap_or_default().to_owned(),
            header(http::header::CONTENT_TYPE),
        ));
        let answer = answer.clone();
        async move { Ok::<_, std::convert::Infallible>(Response::new(answer)) }
    });
    Client::new(service, "default")
}

fn meta(name: Option<&str>, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: name.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
        ..Default::default()
    }
}

/// `apply` through a recording client that answers with `obj` itself.
async fn apply_recorded<K>(seen: &Seen, fm: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    K::Scope: ApplyScope,
{
    let answer = serde_json::to_string(obj).expect("json");
    apply(&recording_client(Arc::clone(seen), answer), fm, obj).await
}

#[tokio::test]
async fn apply_addresses_the_object_by_its_own_metadata() {
    let seen = Seen::default();
    let configmap = |name: Option<&str>, ns: Option<&str>| ConfigMap {
        metadata: meta(name, ns),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta(Some("r"), None),
        ..Default::default()
    };
    let cm = configmap(Some("c"), Some("ns"));
    apply_recorded(&seen, field_manager::PLUGIN, &cm)
        .await
        .expect("apply");
    apply_recorded(&seen, field_manager::BASTION_INSTALLER, &role)
        .await
        .expect("apply cluster-scoped");
    let e = apply_recorded(&seen, field_manager::PLUGIN, &configmap(Some("c"), None)).await;
    assert!(matches!(e, Err(Error::NoNamespace { .. })), "{e:?}");
    let e = apply_recorded(&seen, field_manager::PLUGIN, &configmap(None, Some("ns"))).await;
    assert!(matches!(e, Err(Error::Unnamed { .. })), "{e:?}");

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "no request for a broken object: {seen:?}");
    let (method, path, query, ctype) = &seen[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/c")
    );
    assert!(query.contains("fieldManager=offload-plugin"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(ctype, "application/apply-patch+yaml");
    assert_eq!(
        seen[1].1,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/r"
    );
}

#[tokio::test]
async fn merge_patches_name_their_field_manager() {
    let seen = Seen::default();
    let cm = ConfigMap {
        metadata: meta(Some("c"), Some("ns")),
        ..Default::default()
    };
    let answer = serde_json::to_string(&cm).expect("json");
    let client = recording_client(Arc::clone(&seen), answer);
    let api: Api<ConfigMap> = Api::namespaced(client, "ns");
    let patch = serde_json::json!({"metadata": {"annotations": {"a": "b"}}});
    merge_patch(&api, field_manager::GATEWAY_MANAGER, "c", &patch)
        .await
        .expect("patch");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen[0].2.contains("fieldManager=offload-gateway-manager"),
        "{seen:?}"
    );
    assert_eq!(seen[0].3, "application/merge-patch+json");
}

#[test]
fn params_always_carry_a_field_manager() {
    let a = apply_params(field_manager::BASTION_INSTALLER);
    assert_eq!(
        a.field_manager.as_deref(),
        Some("offload-bastion-installer")
    );
    assert!(a.force);
    let m = merge_params(field_manager::GATEWAY_MANAGER);
    assert_eq!(m.field_manager.as_deref(), Some("offload-gateway-manager"));
    assert!(!m.force);
}

#[test]
fn recreate() {
    let sel = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
    let d = recreate_deployment(
        meta(Some("d"), Some("ns")),
        2,
        sel.clone(),
        PodTemplateSpec::default(),
    );
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.selector.match_labels, Some(sel));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate")
    );
}

#[test]
fn hardening() {
    let c = hardened_security_context();
    assert_eq!(c.allow_privilege_escalation, Some(false));
    assert_eq!(c.read_only_root_filesystem, Some(true));
    assert_eq!(c.run_as_non_root, Some(true));
    assert_eq!(
        c.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    let k = hardened_container("c", "img:1", "Never");
    assert_eq!(k.name, "c");
    assert_eq!(
        (k.image.as_deref(), k.image_pull_policy.as_deref()),
        (Some("img:1"), Some("Never"))
    );
    assert_eq!(k.security_context, Some(hardened_security_context()));
    let p = non_root_pod_security_context(65532);
    assert_eq!(
        (p.run_as_user, p.run_as_group, p.fs_group),
        (Some(65532), Some(65532), Some(65532))
    );
    assert_eq!(p.run_as_non_root, Some(true));
}

#[test]
fn resources() {
    let r = container_resources("50m", "32Mi", "512Mi");
    let q = |s: &str| Quantity(s.to_owned());
    assert_eq!(
        r.requests,
        Some(BTreeMap::from([
            ("cpu".to_owned(), q("50m")),
            ("memory".to_owned(), q("32Mi")),
        ]))
    );
    assert_eq!(
        r.limits,
        Some(BTreeMap::from([("memory".to_owned(), q("512Mi"))]))
    );
    let p = tcp_container_port("ssh", 2222);
    assert_eq!(
        (p.name.as_deref(), p.container_port, p.protocol.as_deref()),
        (Some("ssh"), 2222, Some("TCP"))
    );
}

#[test]
fn the_public_key_comes_from_the_stored_private_key() {
    let spec = KeypairSecret {
        namespace: "ns".into(),
        name: "k".into(),
        private_key: "id_ed25519".into(),
        comment: "test".into(),
    };
    let (private, public) = sshkey::generate_ed25519("test").expect("keygen");
    let secret = |data: Vec<(&str, &str)>| Secret {
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    assert_eq!(
        spec.public_key_of(&secret(vec![("id_ed25519", &private)]))
            .expect("public"),
        public
    );
    for broken in [vec![], vec![("id_ed25519", "garbage")]] {
        let e = spec.public_key_of(&secret(broken)).expect_err("unusable");
        assert_eq!(e.metric_label(), "key_secret");
        assert!(e.to_string().contains("ns/k"), "{e}");
    }
}
