//! The taints the provider registers (its own, `--node-taint`s and the
//! plugin's), merged into the node's current list so that a registration
//! (provider start, new taints from the plugin) never drops a taint someone
//! else put there: a user's `kubectl taint`, the node-lifecycle-controller's,
//! or our own outage taint. Taints are an atomic list: an apply replaces all
//! of it, so the list applied must already hold the others. Pure.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Taint};

/// Node annotation naming the taints the provider registered last
/// (`key:effect`, comma-separated): only those may be dropped when they are
/// no longer wanted; any other taint is someone else's and stays.
pub const ANNOTATION_REGISTERED_TAINTS: &str = "offload.dev/registered-taints";

fn id(t: &Taint) -> (String, String) {
    (t.key.clone(), t.effect.clone())
}

/// The annotation value for `taints`.
pub fn registered_annotation(taints: &[Taint]) -> String {
    taints
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect::<Vec<_>>()
        .join(",")
}

/// `(key, effect)` pairs of an annotation value; malformed entries are skipped.
pub fn parse_registered(annotation: &str) -> BTreeSet<(String, String)> {
    annotation
        .split(',')
        .filter_map(|e| {
            let (k, effect) = e.trim().rsplit_once(':')?;
            (!k.is_empty() && !effect.is_empty()).then(|| (k.to_string(), effect.to_string()))
        })
        .collect()
}

/// `desired` first, then every taint of `existing` that is neither desired
/// (same key and effect) nor one the provider registered before
/// (`previously`), in its order.
pub fn merge_registered(
    existing: &[Taint],
    desired: &[Taint],
    previously: &BTreeSet<(String, String)>,
) -> Vec<Taint> {
    let wanted: BTreeSet<(String, String)> = desired.iter().map(id).collect();
    let mut out = desired.to_vec();
    out.extend(
        existing
            .iter()
            .filter(|t| !wanted.contains(&id(t)) && !previously.contains(&id(t)))
            .cloned(),
    );
    out
}

/// What to apply for `desired` on top of `current` (the node as it is, if
/// it exists): the merged taint list and the annotation recording ours.
pub fn for_registration(desired: &[Taint], current: Option<&Node>) -> (Vec<Taint>, String) {
    let annotation = registered_annotation(desired);
    let Some(node) = current else {
        return (desired.to_vec(), annotation);
    };
    let existing = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let previously = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REGISTERED_TAINTS))
        .map(|a| parse_registered(a))
        .unwrap_or_default();
    (
        merge_registered(&existing, desired, &previously),
        annotation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use pretty_assertions::assert_eq;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn registration_keeps_foreign_taints_and_drops_only_its_stale_ones() {
        let ours = taint("virtual-node.interlink/no-schedule", "true", "NoSchedule");
        let stale = taint("remote-gpu", "x", "NoSchedule");
        let user = taint("example.com/dedicated", "team-a", "NoExecute");
        let outage = taint("offload.dev/plugin-unreachable", "", "NoSchedule");
        let lifecycle = taint("node.kubernetes.io/not-ready", "", "NoExecute");
        let node = Node {
            metadata: ObjectMeta {
                annotations: Some(
                    [(
                        ANNOTATION_REGISTERED_TAINTS.to_string(),
                        registered_annotation(&[ours.clone(), stale.clone()]),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(vec![
                    taint("virtual-node.interlink/no-schedule", "old", "NoSchedule"),
                    user.clone(),
                    stale,
                    outage.clone(),
                    lifecycle.clone(),
                ]),
                ..Default::default()
            }),
            status: None,
        };
        let (taints, annotation) = for_registration(std::slice::from_ref(&ours), Some(&node));
        assert_eq!(taints, vec![ours.clone(), user, outage, lifecycle]);
        assert_eq!(annotation, "virtual-node.interlink/no-schedule:NoSchedule");
        // A new node: just ours.
        let (taints, _) = for_registration(std::slice::from_ref(&ours), None);
        assert_eq!(taints, vec![ours]);
    }

    #[test]
    fn annotation_round_trips_and_skips_garbage() {
        let t = [
            taint("a.example/k", "v", "NoSchedule"),
            taint("b", "", "NoExecute"),
        ];
        let parsed = parse_registered(&registered_annotation(&t));
        assert_eq!(
            parsed,
            [
                ("a.example/k".to_string(), "NoSchedule".to_string()),
                ("b".to_string(), "NoExecute".to_string())
            ]
            .into()
        );
        assert!(parse_registered("").is_empty());
        assert_eq!(parse_registered("nocolon, :x,k:").len(), 0);
    }
}
