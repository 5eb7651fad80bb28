//! What a container sees in its environment: values, ConfigMap and Secret references, the downward API.

use anyhow::Result;
use offload_e2e::conformance::*;
use serde_json::{Value, json};

/// Env values with quotes, newlines, backticks and `$` survive the trip.
pub async fn env_values(s: &Suite) -> Result<()> {
    let values = [
        ("QUOTES", "he said \"hi\" and 'bye'"),
        ("NEWLINES", "line1\nline2\n\nline4"),
        ("BACKTICKS", "`echo nope` $(NOT_DEFINED) $HOME \\ back"),
        ("UNICODE", "ünïcødé ✓ 😀"),
        ("EMPTY", ""),
    ];
    let env: Vec<Value> = values
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let mut c = sh(
        "main",
        "printf '<%s>\\n' \"$QUOTES\" \"$NEWLINES\" \"$BACKTICKS\" \"$UNICODE\" \"$EMPTY\"",
    );
    c["env"] = json!(env);
    let want: String = values.iter().map(|(_, v)| format!("<{v}>\n")).collect();
    s.expect_success_log("envvalues", run_once(&[c]), want)
        .await
}

/// `valueFrom` ConfigMap and Secret keys, `envFrom` of both (with a prefix).
pub async fn env_from(s: &Suite) -> Result<()> {
    s.apply_all(&[
        config_map("env-cm", json!({ "color": "blue", "size": "XL" })),
        config_map("env-cm-all", json!({ "ALPHA": "a1", "BETA": "b 2" })),
        secret("env-secret", json!({ "password": "p@ss w0rd!\"'" })),
        secret("env-secret-all", json!({ "TOKEN": "t0k3n" })),
    ])
    .await?;
    let mut c = sh(
        "main",
        "printf '%s\\n' \"COLOR=$COLOR\" \"PASSWORD=$PASSWORD\" \"ALPHA=$ALPHA\" \"BETA=$BETA\" \
         \"S_TOKEN=$S_TOKEN\" \"TOKEN=${TOKEN-unset}\"",
    );
    c["env"] = json!([
        { "name": "COLOR", "valueFrom": { "configMapKeyRef": { "name": "env-cm", "key": "color" } } },
        { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "env-secret", "key": "password" } } },
    ]);
    c["envFrom"] = json!([
        { "configMapRef": { "name": "env-cm-all" } },
        { "prefix": "S_", "secretRef": { "name": "env-secret-all" } },
    ]);
    s.expect_success_log(
        "envfrom",
        run_once(&[c]),
        "COLOR=blue\nPASSWORD=p@ss w0rd!\"'\nALPHA=a1\nBETA=b 2\nS_TOKEN=t0k3n\nTOKEN=unset\n",
    )
    .await
}

/// Downward-API env vars, hostname, workingDir and runAsUser: the values a pod
/// sees are the local pod's.
pub async fn pod_identity(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "printf '%s\n' \"name=$POD_NAME\" \"ns=$POD_NS\" \"uid=$POD_UID\" \"label=$LABEL\" \
         \"sa=$SA\" \"mem=$MEM\" \"host=$(hostname)\" \"cwd=$(pwd)\" \"id=$(id -u):$(id -g)\"",
    );
    c["workingDir"] = json!("/tmp");
    c["resources"] = json!({ "limits": { "memory": "64Mi" } });
    c["securityContext"] = json!({ "runAsUser": 1234, "runAsGroup": 2345 });
    c["env"] = json!([
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "POD_NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
        { "name": "POD_UID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.uid" } } },
        { "name": "LABEL", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['case']" } } },
        { "name": "SA", "valueFrom": { "fieldRef": { "fieldPath": "spec.serviceAccountName" } } },
        { "name": "MEM", "valueFrom": { "resourceFieldRef": {
            "resource": "limits.memory", "divisor": "1Mi" } } },
    ]);
    let pod = s.run_succeeded("identity", run_once(&[c])).await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    s.expect_log(
        "identity",
        format!(
            "name=identity\nns={}\nuid={uid}\nlabel=identity\nsa=default\nmem=64\n\
             host=identity\ncwd=/tmp\nid=1234:2345\n",
            s.ns
        ),
    )
    .await
}

/// A pod referencing a ConfigMap that does not exist yet waits (the kubelet
/// shows CreateContainerConfigError) and starts once it is created; an
/// optional missing one is just empty.
pub async fn missing_config_map(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "echo \"value=$VALUE optional=${OPT-unset}\"; ls /opt-cfg | wc -l",
    );
    c["env"] = json!([
        { "name": "VALUE", "valueFrom": { "configMapKeyRef": { "name": "late-cm", "key": "v" } } },
        { "name": "OPT", "valueFrom": { "configMapKeyRef": {
            "name": "never-cm", "key": "v", "optional": true } } },
    ]);
    c["volumeMounts"] = mounts(&[("opt", "/opt-cfg")]);
    s.apply(&s.pod(
        "late-config",
        pod_spec(
            "Never",
            &[c],
            json!([{ "name": "opt", "configMap": { "name": "never-cm", "optional": true } }]),
        ),
    ))
    .await?;
    s.wait_pod(
        "late-config",
        "waiting with CreateContainerConfigError",
        START,
        |p| {
            phase(p) == "Pending"
                && status(p, "main")
                    .and_then(|c| c.state.as_ref())
                    .and_then(|st| st.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        },
    )
    .await?;
    s.expect_status_column("late-config", "CreateContainerConfigError")
        .await?;
    s.apply(&config_map("late-cm", json!({ "v": "arrived" })))
        .await?;
    s.ended("late-config", Some("Succeeded")).await?;
    s.expect_log("late-config", "value=arrived optional=unset\n0\n")
        .await
}
