//! What a plugin (or network) outage does to the virtual node, as pure
//! functions: the node stays `Ready` (the provider, our kubelet, is alive),
//! a condition of our own says the plugin is unreachable, and a `NoSchedule`
//! taint keeps new pods away.
//!
//! Why not `Ready=False`: the node-lifecycle-controller taints a NotReady
//! node `node.kubernetes.io/not-ready:NoExecute`, and the taint manager then
//! evicts every pod after its toleration (300 s by default). For a virtual
//! node an eviction deletes the remote pod too, so a network blip of five
//! minutes would delete every offloaded workload. The offloaded pods keep
//! running remotely during an outage; only their status is stale.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{NodeCondition, Taint};
use offload_wire::keys::{CONDITION_PLUGIN_REACHABLE, TAINT_PLUGIN_UNREACHABLE};

use super::{Reachability, condition, truncate};

/// Effect of [`TAINT_PLUGIN_UNREACHABLE`]: keeps new pods off, never evicts.
pub const UNREACHABLE_EFFECT: &str = "NoSchedule";

/// The node's `Ready` condition: `(status, reason, message)`. `True` while
/// the provider runs, whatever the plugin does; `False` only once the
/// provider has stopped. The reason still names the plugin's state so that
/// `kubectl get node -o wide` / `describe` show it at a glance.
pub fn ready(reach: &Reachability) -> (&'static str, &'static str, String) {
    match reach {
        Reachability::Reachable => (
            "True",
            "PluginReachable",
            "offload-provider is posting ready status; the plugin answered the last ping".into(),
        ),
        Reachability::Unknown => (
            "True",
            "PluginNotPinged",
            "offload-provider is posting ready status; plugin not pinged yet".into(),
        ),
        Reachability::Unreachable { .. } => (
            "True",
            "PluginUnreachable",
            format!(
                "offload-provider is posting ready status; the plugin is unreachable (condition \
                 {CONDITION_PLUGIN_REACHABLE}): offloaded pods are kept with their last known \
                 status, new pods are not scheduled here (taint {TAINT_PLUGIN_UNREACHABLE})"
            ),
        ),
        Reachability::Stopped => (
            "False",
            "ProviderStopped",
            "offload-provider stopped".into(),
        ),
    }
}

/// The `PluginReachable` condition: `(status, reason, message)`.
pub fn plugin_reachable(reach: &Reachability) -> (&'static str, &'static str, String) {
    match reach {
        Reachability::Reachable => (
            "True",
            "PluginAnswered",
            "the plugin answered the last ping".into(),
        ),
        Reachability::Unknown => ("Unknown", "PluginNotPinged", "plugin not pinged yet".into()),
        Reachability::Unreachable { error } => (
            "False",
            "PluginUnreachable",
            format!("plugin unreachable: {}", truncate(error, 800)),
        ),
        Reachability::Stopped => (
            "Unknown",
            "ProviderStopped",
            "offload-provider stopped: plugin reachability unknown".into(),
        ),
    }
}

/// The `PluginReachable` node condition, keeping its transition time.
pub fn plugin_condition(
    reach: &Reachability,
    old: &[NodeCondition],
    now: Timestamp,
) -> NodeCondition {
    let (status, reason, message) = plugin_reachable(reach);
    condition(
        old,
        CONDITION_PLUGIN_REACHABLE,
        status,
        reason,
        &message,
        now,
    )
}

/// Whether the node must carry [`TAINT_PLUGIN_UNREACHABLE`]: `Some(true)`
/// add it, `Some(false)` remove it, `None` leave the taints as they are (not
/// pinged yet, or the provider is stopping: the node-lifecycle-controller
/// takes over then).
pub fn wants_taint(reach: &Reachability) -> Option<bool> {
    match reach {
        Reachability::Reachable => Some(false),
        Reachability::Unreachable { .. } => Some(true),
        Reachability::Unknown | Reachability::Stopped => None,
    }
}

/// Our taint (no value, no time: only `NoExecute` taints use `timeAdded`).
pub fn unreachable_taint() -> Taint {
    Taint {
        key: TAINT_PLUGIN_UNREACHABLE.into(),
        value: None,
        effect: UNREACHABLE_EFFECT.into(),
        time_added: None,
    }
}

fn is_ours(t: &Taint) -> bool {
    t.key == TAINT_PLUGIN_UNREACHABLE && t.effect == UNREACHABLE_EFFECT
}

/// `existing` with our taint added (at the end) or removed; every other
/// taint (the user's, interLink's, the node-lifecycle-controller's) is kept
/// as it is, in its order. `None` when nothing changes, so no write is made.
pub fn merge_taints(existing: &[Taint], present: bool) -> Option<Vec<Taint>> {
    let has = existing.iter().any(is_ours);
    match (present, has) {
        (true, false) => {
            let mut t = existing.to_vec();
            t.push(unreachable_taint());
            Some(t)
        }
        (false, true) => Some(existing.iter().filter(|t| !is_ours(t)).cloned().collect()),
        _ => None,
    }
}

/// The reachability change worth an Event on the node: `(warning, reason,
/// note)`. The first ping (from `Unknown`) only reports a failure.
pub fn transition_event(
    before: &Reachability,
    after: &Reachability,
) -> Option<(bool, &'static str, String)> {
    match (before, after) {
        (Reachability::Unreachable { .. }, Reachability::Unreachable { .. }) => None,
        (_, Reachability::Unreachable { error }) => Some((
            true,
            "PluginUnreachable",
            format!(
                "plugin unreachable: {}; node tainted {TAINT_PLUGIN_UNREACHABLE}:NoSchedule, \
                 offloaded pods are kept",
                truncate(error, 600)
            ),
        )),
        (Reachability::Unreachable { .. }, Reachability::Reachable) => Some((
            false,
            "PluginReachable",
            format!("plugin reachable again; taint {TAINT_PLUGIN_UNREACHABLE} removed"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some("v".into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn down() -> Reachability {
        Reachability::Unreachable {
            error: "connection refused".into(),
        }
    }

    #[test]
    fn an_outage_keeps_the_node_ready_and_says_why_in_our_condition() {
        let (status, reason, message) = ready(&down());
        assert_eq!((status, reason), ("True", "PluginUnreachable"));
        assert!(message.contains(TAINT_PLUGIN_UNREACHABLE), "{message}");
        let (status, reason, message) = plugin_reachable(&down());
        assert_eq!((status, reason), ("False", "PluginUnreachable"));
        assert!(message.contains("connection refused"), "{message}");
        assert_eq!(ready(&Reachability::Reachable).0, "True");
        assert_eq!(plugin_reachable(&Reachability::Reachable).0, "True");
        assert_eq!(ready(&Reachability::Unknown).0, "True");
        assert_eq!(plugin_reachable(&Reachability::Unknown).0, "Unknown");
        // Only a stopped provider is a NotReady kubelet.
        assert_eq!(ready(&Reachability::Stopped).0, "False");
        assert_eq!(plugin_reachable(&Reachability::Stopped).0, "Unknown");
    }

    #[test]
    fn the_taint_follows_reachability_and_is_left_alone_when_unknown() {
        assert_eq!(wants_taint(&down()), Some(true));
        assert_eq!(wants_taint(&Reachability::Reachable), Some(false));
        assert_eq!(wants_taint(&Reachability::Unknown), None);
        assert_eq!(wants_taint(&Reachability::Stopped), None);
        let t = unreachable_taint();
        assert_eq!(
            (t.key.as_str(), t.effect.as_str()),
            (TAINT_PLUGIN_UNREACHABLE, "NoSchedule")
        );
    }

    #[test]
    fn merging_keeps_foreign_taints_in_order() {
        let foreign = vec![
            taint("virtual-node.interlink/no-schedule", "NoSchedule"),
            taint("user/dedicated", "NoExecute"),
            // Same key, other effect: not ours.
            taint(TAINT_PLUGIN_UNREACHABLE, "PreferNoSchedule"),
        ];
        let added = merge_taints(&foreign, true).expect("added");
        assert_eq!(&added[..3], &foreign[..]);
        assert_eq!(added[3], unreachable_taint());
        assert_eq!(merge_taints(&added, true), None, "already there: no write");
        let removed = merge_taints(&added, false).expect("removed");
        assert_eq!(removed, foreign);
        assert_eq!(merge_taints(&foreign, false), None, "absent: no write");
        // Ours with a value someone set by hand is still ours.
        let mut by_hand = taint(TAINT_PLUGIN_UNREACHABLE, "NoSchedule");
        by_hand.value = Some("x".into());
        assert_eq!(merge_taints(&[by_hand], false), Some(vec![]));
        assert_eq!(merge_taints(&[], true), Some(vec![unreachable_taint()]));
    }

    #[test]
    fn events_on_the_way_down_and_back_only() {
        let up = Reachability::Reachable;
        let (warning, reason, note) = transition_event(&up, &down()).expect("down");
        assert!(warning);
        assert_eq!(reason, "PluginUnreachable");
        assert!(note.contains("connection refused"));
        assert!(transition_event(&Reachability::Unknown, &down()).is_some());
        let other = Reachability::Unreachable {
            error: "timed out".into(),
        };
        assert_eq!(transition_event(&down(), &other), None, "still down");
        let (warning, reason, _) = transition_event(&down(), &up).expect("back");
        assert!(!warning);
        assert_eq!(reason, "PluginReachable");
        assert_eq!(transition_event(&Reachability::Unknown, &up), None);
        assert_eq!(transition_event(&up, &up), None);
        assert_eq!(transition_event(&down(), &Reachability::Stopped), None);
    }
}
