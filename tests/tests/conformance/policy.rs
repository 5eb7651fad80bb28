//! What a user sees when the remote cluster's pod security policy refuses a
//! pod: the pod fails for good, and its status and its Warning event name
//! the field and the rule; nothing runs remotely.

use anyhow::{Result, ensure};
use offload_e2e::conformance::*;
use serde_json::json;

/// NET_ADMIN is outside the Baseline capabilities (the plugin's default policy).
pub async fn refused_by_policy(s: &Suite) -> Result<()> {
    s.in_process_only(
        "expects the in-process plugin's default pod security level (Baseline); an \
         installation's policy is its own",
    )?;
    let field = "spec.containers[0].securityContext.capabilities.add[0]";
    let rule = "baseline: capabilities";
    let mut c = sh("main", "echo never");
    c["securityContext"] = json!({ "capabilities": { "add": ["NET_ADMIN"] } });
    s.apply(&s.pod("refused", pod_spec("Never", &[c], json!([]))))
        .await?;
    let pod = s
        .wait_pod("refused", "Failed with reason OffloadFailed", START, |p| {
            phase(p) == "Failed"
                && p.status.as_ref().and_then(|st| st.reason.as_deref()) == Some("OffloadFailed")
        })
        .await?;
    let message = pod
        .status
        .as_ref()
        .and_then(|st| st.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("HTTP 403") && message.contains(field) && message.contains(rule),
        "status.message does not name {field} [{rule}]: {message}"
    );
    let events = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=refused,reason=OffloadFailed",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .await?;
    ensure!(
        events.contains(field) && events.contains(rule),
        "the OffloadFailed event does not name {field} [{rule}]: {events:?}"
    );
    ensure!(
        s.remote_pods_of(&pod).await?.is_empty(),
        "a refused pod runs remotely"
    );
    Ok(())
}
