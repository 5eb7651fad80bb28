//! The bastion's least-privilege RBAC: read pods (a Role in the watched
//! namespace, or a ClusterRole when every namespace is watched, with `get`
//! on namespaces to tell the plugin's own) and, with
//! standby replicas, use its own Lease.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::BastionSpec;

fn role_ref(kind: &str, name: String) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name,
    }
}

impl BastionSpec {
    /// The only permission the bastion needs: read pods.
    pub fn rules() -> Vec<PolicyRule> {
        vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]
    }

    /// A Role in the watched namespace (only when `watch_namespace` is set).
    pub fn role(&self) -> Option<(Role, RoleBinding)> {
        let ns = self.watch_namespace.as_ref()?;
        let name = format!("{}-pod-reader", self.name);
        let meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(self.labels()),
            ..Default::default()
        };
        let role = Role {
            metadata: meta.clone(),
            rules: Some(Self::rules()),
        };
        let binding = RoleBinding {
            metadata: meta,
            role_ref: role_ref("Role", name),
            subjects: Some(vec![self.subject()]),
        };
        Some((role, binding))
    }

    /// A ClusterRole (only when every namespace is watched).
    pub fn cluster_role(&self) -> Option<(ClusterRole, ClusterRoleBinding)> {
        if self.watch_namespace.is_some() {
            return None;
        }
        let name = self.cluster_rbac_name();
        let mut rules = Self::rules();
        // Which namespaces the plugin owns: only their pods' tunnels count.
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["namespaces".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        });
        let role = ClusterRole {
            metadata: self.meta(name.clone(), false),
            rules: Some(rules),
            aggregation_rule: None,
        };
        let binding = ClusterRoleBinding {
            metadata: self.meta(name.clone(), false),
            role_ref: role_ref("ClusterRole", name),
            subjects: Some(vec![self.subject()]),
        };
        Some((role, binding))
    }

    /// The Lease permission (only with leader election): create Leases in the
    /// bastion's namespace (`create` cannot be limited to a name), read and
    /// renew only its own.
    pub fn lease_role(&self) -> Option<(Role, RoleBinding)> {
        if !self.leader_election() {
            return None;
        }
        let name = self.lease_name();
        let leases = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            resource_names: names,
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        };
        let role = Role {
            metadata: self.meta(name.clone(), true),
            rules: Some(vec![
                leases(&["create"], None),
                leases(&["get", "update"], Some(vec![name.clone()])),
            ]),
        };
        let binding = RoleBinding {
            metadata: self.meta(name.clone(), true),
            role_ref: role_ref("Role", name),
            subjects: Some(vec![self.subject()]),
        };
        Some((role, binding))
    }
}
