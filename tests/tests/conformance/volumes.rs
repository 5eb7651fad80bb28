//! Volumes: ConfigMap and Secret items, a shared emptyDir, binary data, projected volumes.

use anyhow::Result;
use offload_e2e::conformance::*;
use serde_json::json;

/// ConfigMap and Secret volumes with `items`: only the listed keys, at their
/// paths, with the item's mode.
pub async fn volumes_with_items(s: &Suite) -> Result<()> {
    s.apply_all(&[
        config_map(
            "vol-cm",
            json!({ "a": "first file\nsecond line", "b": "not mounted" }),
        ),
        secret(
            "vol-secret",
            json!({ "token": "s3cr3t", "other": "not mounted" }),
        ),
    ])
    .await?;
    let mut c = sh(
        "main",
        "cat /cfg/sub/a.txt; echo; ls /cfg /cfg/sub; cat /sec/tok; echo; ls /sec; \
         stat -L -c %a /sec/tok /cfg/sub/a.txt",
    );
    c["volumeMounts"] = mounts(&[("cfg", "/cfg"), ("sec", "/sec")]);
    s.expect_success_log(
        "volumes",
        pod_spec(
            "Never",
            &[c],
            json!([
                { "name": "cfg", "configMap": { "name": "vol-cm", "defaultMode": 0o640,
                  "items": [{ "key": "a", "path": "sub/a.txt" }] } },
                { "name": "sec", "secret": { "secretName": "vol-secret",
                  "items": [{ "key": "token", "path": "tok", "mode": 0o400 }] } },
            ]),
        ),
        "first file\nsecond line\n/cfg:\nsub\n\n/cfg/sub:\na.txt\ns3cr3t\ntok\n400\n640\n",
    )
    .await
}

/// Two containers share an emptyDir; the reader's mount is read-only.
pub async fn shared_empty_dir(s: &Suite) -> Result<()> {
    let mut writer = sh(
        "writer",
        "echo shared-hello > /data/msg; echo wrote; sleep 5",
    );
    writer["volumeMounts"] = mounts(&[("data", "/data")]);
    let mut reader = sh(
        "reader",
        "until [ -f /data/msg ]; do sleep 0.2; done; cat /data/msg; \
         if touch /data/x 2>/dev/null; then echo WRITABLE; else echo read-only-ok; fi",
    );
    reader["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data", "readOnly": true }]);
    let pod = s
        .run_succeeded(
            "shared",
            pod_spec(
                "Never",
                &[writer, reader],
                json!([{ "name": "data", "emptyDir": {} }]),
            ),
        )
        .await?;
    expect_eq("writer exit", terminated(&pod, "writer")?.exit_code, 0)?;
    expect_eq("reader exit", terminated(&pod, "reader")?.exit_code, 0)?;
    s.expect_container_log("shared", "writer", "wrote\n")
        .await?;
    s.expect_container_log("shared", "reader", "shared-hello\nread-only-ok\n")
        .await
}

/// Secret `data` and ConfigMap `binaryData` that are not UTF-8 reach the files
/// byte for byte.
pub async fn binary_data(s: &Suite) -> Result<()> {
    // 0x00 0xff 0x0a 0x80 0xc3 0x28 "ok"
    let b64 = "AP8KgMMob2s=";
    s.apply_all(&[
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "bin-secret" },
                "data": { "blob": b64 } }),
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "bin-cm" },
                "binaryData": { "blob": b64 }, "data": { "text": "plain" } }),
    ])
    .await?;
    let mut c = sh(
        "main",
        "od -An -tx1 /sec/blob; od -An -tx1 /cm/blob; cat /cm/text; echo",
    );
    c["volumeMounts"] = mounts(&[("sec", "/sec"), ("cm", "/cm")]);
    s.run_succeeded(
        "binary",
        pod_spec(
            "Never",
            &[c],
            json!([
                { "name": "sec", "secret": { "secretName": "bin-secret" } },
                { "name": "cm", "configMap": { "name": "bin-cm" } },
            ]),
        ),
    )
    .await?;
    let log = s.kubectl(&["logs", "binary"]).await?;
    let words: Vec<&str> = log.split_whitespace().collect();
    let bytes = ["00", "ff", "0a", "80", "c3", "28", "6f", "6b"];
    let want: Vec<&str> = bytes
        .iter()
        .chain(bytes.iter())
        .copied()
        .chain(["plain"])
        .collect();
    expect_eq("od output", words, want)
}

/// A projected volume of a ConfigMap item, a Secret item and downward-API files.
pub async fn projected_volume(s: &Suite) -> Result<()> {
    s.apply_all(&[
        config_map(
            "proj-cm",
            json!({ "a": "from-configmap", "b": "not projected" }),
        ),
        secret("proj-secret", json!({ "s": "from-secret" })),
    ])
    .await?;
    let mut c = sh(
        "main",
        "cat /p/cm-a; echo; cat /p/sec/s; echo; cat /p/name; echo; cat /p/labels; echo; ls /p",
    );
    c["volumeMounts"] = mounts(&[("proj", "/p")]);
    let mut pod = s.pod(
        "projected",
        pod_spec(
            "Never",
            &[c],
            json!([{ "name": "proj", "projected": { "sources": [
                { "configMap": { "name": "proj-cm", "items": [{ "key": "a", "path": "cm-a" }] } },
                { "secret": { "name": "proj-secret", "items": [{ "key": "s", "path": "sec/s" }] } },
                { "downwardAPI": { "items": [
                    { "path": "name", "fieldRef": { "fieldPath": "metadata.name" } },
                    { "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } },
                ] } },
            ] } }]),
        ),
    );
    pod["metadata"]["labels"]["tier"] = json!("test");
    s.apply(&pod).await?;
    s.ended("projected", Some("Succeeded")).await?;
    s.expect_log(
        "projected",
        "from-configmap\nfrom-secret\nprojected\ncase=\"projected\"\ntier=\"test\"\n\
         cm-a\nlabels\nname\nsec\n",
    )
    .await
}
