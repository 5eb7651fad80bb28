//! Image pull Secrets (`spec.imagePullSecrets`): the remote kubelet pulls
//! the pod's images with them, so they are shipped with the pod. The
//! payload has per-container lists only, so they ride with the first
//! container (the plugin gathers the Secrets of all containers into one
//! set and renames the pod's references to the remote copies). Optional,
//! as on a kubelet, which tries the pull without a pull Secret it cannot
//! find (a private image then fails to pull, with the remote reason).

use k8s_openapi::api::core::v1::Pod;

use super::{ObjectRef, PodRefs, merge, push};

pub(super) fn add(pod: &Pod, out: &mut PodRefs) {
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty());
    let Some(first) = out.containers.first_mut() else {
        return;
    };
    for name in names {
        push(&mut first.secrets, name, Some(true));
        merge(
            &mut out.secrets,
            &ObjectRef {
                name: name.to_string(),
                optional: true,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
    use pretty_assertions::assert_eq;
    use testbed::fixtures;

    use super::super::{Fetched, build_payload, references};

    #[test]
    fn pull_secrets_ride_with_the_first_container_and_may_be_missing() {
        let mut pod = fixtures::pod("p")
            .init_container(fixtures::container("init"))
            .container(fixtures::container("main"))
            .build();
        if let Some(s) = pod.spec.as_mut() {
            s.image_pull_secrets = Some(
                ["regcred", "gone", ""]
                    .map(|n| LocalObjectReference { name: n.into() })
                    .to_vec(),
            );
        }
        let refs = references(&pod);
        assert_eq!(refs.secrets.get("regcred"), Some(&true), "optional");
        assert_eq!(refs.secrets.len(), 2, "{:?}", refs.secrets);
        let regcred = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..fixtures::secret("ns", "regcred", &[(".dockerconfigjson", "{}")])
        };
        let fetched = Fetched {
            secrets: [
                ("regcred".to_string(), Some(regcred)),
                ("gone".to_string(), None),
            ]
            .into(),
            ..Default::default()
        };
        let data =
            build_payload(&pod, &refs, &fetched, false).expect("a missing pull Secret is no error");
        let shipped: Vec<(&str, Option<&str>)> = data.containers[0]
            .secrets
            .iter()
            .map(|s| (s.metadata.name.as_deref().unwrap_or(""), s.type_.as_deref()))
            .collect();
        assert_eq!(
            shipped,
            [("regcred", Some("kubernetes.io/dockerconfigjson"))]
        );
        assert!(data.containers[1].secrets.is_empty(), "shipped once");
        let kept = data
            .pod
            .spec
            .and_then(|s| s.image_pull_secrets)
            .unwrap_or_default();
        assert_eq!(
            kept.len(),
            3,
            "the pod's references are the plugin's to rename"
        );
    }
}
