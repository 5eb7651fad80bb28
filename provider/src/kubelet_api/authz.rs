//! What a kubelet API request asks for, in the terms of a SubjectAccessReview,
//! exactly as the kubelet computes it in `--authorization-mode=Webhook`
//! (`pkg/kubelet/server/auth.go`): the verb from the HTTP method, resource
//! `nodes`, the node's name, and a subresource chosen by path. Pure: the
//! review itself is in `auth`.

use std::collections::BTreeMap;

use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};

/// The group every authenticated caller is in (the apiserver adds it to
/// x509 users; TokenReview answers already carry it).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Who is asking: the authenticated identity.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// Adds `system:authenticated` unless present, as the apiserver's
    /// authenticator chain does.
    pub fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_string());
        }
        self
    }
}

/// What is asked: `verb` on `nodes/<subresource>` of this node.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The resource every kubelet API request is checked against.
pub const RESOURCE: &str = "nodes";

/// The kubelet's verb for an HTTP method (HEAD reads like GET); `None` for
/// methods the kubelet API has no verb for.
pub fn verb(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    })
}

/// `path` is `prefix` or below it (`/stats`, `/stats/summary`, not `/statsx`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The kubelet's subresource for a request path: everything that is not a
/// named one (`/pods`, `/containerLogs`, `/exec`, `/run`, `/attach`,
/// `/portForward`, ...) is `proxy`, the right to everything on the node.
pub fn subresource(path: &str) -> &'static str {
    const NAMED: [(&str, &str); 6] = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
        ("/configz", "configz"),
        ("/healthz", "healthz"),
    ];
    NAMED
        .iter()
        .find(|(prefix, _)| is_subpath(path, prefix))
        .map_or("proxy", |(_, sub)| sub)
}

impl Attributes {
    /// The attributes of a request, `None` for a method without a verb.
    pub fn of(method: &Method, path: &str) -> Option<Attributes> {
        Some(Attributes {
            verb: verb(method)?,
            subresource: subresource(path),
        })
    }
}

/// The SubjectAccessReview the kubelet sends for `user` asking `attrs` on
/// node `node`.
pub fn review(user: &UserInfo, attrs: Attributes, node: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(String::new()),
                version: Some("v1".into()),
                resource: Some(RESOURCE.into()),
                subresource: Some(attrs.subresource.into()),
                name: Some(node.into()),
                verb: Some(attrs.verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The kubelet's 403 body: it names the permission that is missing.
pub fn forbidden_message(user: &UserInfo, attrs: Attributes) -> String {
    format!(
        "Forbidden (user={}, verb={}, resource={RESOURCE}, subresource={})",
        user.name, attrs.verb, attrs.subresource
    )
}

/// The kubelet's 500 body when the apiserver could not be asked.
pub fn error_message(user: &UserInfo, attrs: Attributes) -> String {
    format!(
        "Authorization error (user={}, verb={}, resource={RESOURCE}, subresource={})",
        user.name, attrs.verb, attrs.subresource
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        let cases = [
            ("/stats", "stats"),
            ("/stats/summary", "stats"),
            ("/metrics", "metrics"),
            ("/metrics/cadvisor", "metrics"),
            ("/logs/", "log"),
            ("/logs/kubelet.log", "log"),
            ("/spec/", "spec"),
            ("/configz", "configz"),
            ("/healthz", "healthz"),
            ("/pods", "proxy"),
            ("/containerLogs/ns/p/c", "proxy"),
            ("/exec/ns/p/c", "proxy"),
            ("/run/ns/p/c", "proxy"),
            ("/attach/ns/p/c", "proxy"),
            ("/portForward/ns/p", "proxy"),
            ("/", "proxy"),
            ("", "proxy"),
            // Only whole path segments name a subresource.
            ("/statsx", "proxy"),
            ("/metricsfoo/x", "proxy"),
            ("/healthzz", "proxy"),
            ("/logsx", "proxy"),
        ];
        for (path, want) in cases {
            assert_eq!(subresource(path), want, "{path}");
        }
    }

    #[test]
    fn methods_map_to_verbs() {
        let cases = [
            (Method::GET, Some("get")),
            (Method::HEAD, Some("get")),
            (Method::POST, Some("create")),
            (Method::PUT, Some("update")),
            (Method::PATCH, Some("patch")),
            (Method::DELETE, Some("delete")),
            (Method::OPTIONS, None),
            (Method::TRACE, None),
        ];
        for (m, want) in cases {
            assert_eq!(verb(&m), want, "{m}");
        }
        assert_eq!(
            Attributes::of(&Method::POST, "/exec/ns/p/c"),
            Some(Attributes {
                verb: "create",
                subresource: "proxy"
            })
        );
        assert_eq!(Attributes::of(&Method::OPTIONS, "/pods"), None);
    }

    #[test]
    fn review_carries_the_identity_and_the_node() {
        let user = UserInfo {
            name: "system:serviceaccount:ns:sa".into(),
            uid: "u-1".into(),
            groups: vec!["system:serviceaccounts".into()],
            extra: BTreeMap::from([("scopes".to_string(), vec!["a".to_string()])]),
        }
        .authenticated();
        let attrs = Attributes::of(&Method::GET, "/containerLogs/a/b/c").expect("verb");
        let v = serde_json::to_value(review(&user, attrs, "vn-1")).expect("json");
        assert_eq!(
            v["spec"],
            serde_json::json!({
                "user": "system:serviceaccount:ns:sa",
                "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"scopes": ["a"]},
                "resourceAttributes": {
                    "group": "", "version": "v1", "resource": "nodes",
                    "subresource": "proxy", "name": "vn-1", "verb": "get"
                }
            })
        );
        // A user without uid, groups or extra sends none.
        let bare = review(&UserInfo::default(), attrs, "vn-1");
        let v = serde_json::to_value(bare).expect("json");
        assert_eq!(v["spec"].get("groups"), None);
        assert_eq!(v["spec"].get("uid"), None);
    }

    #[test]
    fn authenticated_group_added_once() {
        let u = UserInfo {
            groups: vec![AUTHENTICATED_GROUP.into()],
            ..Default::default()
        }
        .authenticated()
        .authenticated();
        assert_eq!(u.groups, vec![AUTHENTICATED_GROUP.to_string()]);
    }

    #[test]
    fn messages_name_the_missing_permission() {
        let u = UserInfo {
            name: "mallory".into(),
            ..Default::default()
        };
        let a = Attributes {
            verb: "get",
            subresource: "proxy",
        };
        assert_eq!(
            forbidden_message(&u, a),
            "Forbidden (user=mallory, verb=get, resource=nodes, subresource=proxy)"
        );
        assert!(error_message(&u, a).starts_with("Authorization error (user=mallory"));
    }
}
