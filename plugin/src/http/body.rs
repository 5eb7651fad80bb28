//! Request bodies: lenient JSON (unknown fields ignored, any content type)
//! whose errors are 4xx JSON errors naming the offending path, and the
//! create body's shape checks.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use offload_wire::{CreateBody, RetrievedPodData};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body parsed leniently (unknown fields ignored, any content type),
/// whose errors are 4xx JSON errors naming the offending path.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "body_too_large",
                    "request body is larger than the configured limit (--body-limit)",
                )
            } else {
                ApiError::new(status, "bad_body", rej.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, reporting where it went wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON body is required",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "unexpected JSON"
        };
        ApiError::bad_request(if path == "." || path.is_empty() {
            format!("{what}: {inner}")
        } else {
            format!("{what} at {path}: {inner}")
        })
    })
}

/// The one `RetrievedPodData` of a `/create` body (an object, or an array of
/// one, as interLink versions send it), with precise errors for the shapes
/// callers get wrong.
pub fn create_data(body: &serde_json::Value) -> Result<RetrievedPodData, ApiError> {
    // Parse in two steps so a bare Pod or a wrong shape gets a precise hint.
    if body.get("metadata").is_some() && body.get("pod").is_none() {
        return Err(ApiError::bad_request(
            "expected {\"pod\": <Pod>, \"container\": [...]} (interLink RetrievedPodData), got a bare Pod",
        ));
    }
    misplaced_fields(body)?;
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    match parse_json::<CreateBody>(&bytes) {
        Ok(CreateBody::One(d)) => Ok(*d),
        Ok(CreateBody::Many(mut v)) if v.len() == 1 => Ok(v.remove(0)),
        Ok(CreateBody::Many(v)) => Err(ApiError::bad_request(format!(
            "expected one RetrievedPodData (or a one-element array), got an array of {}",
            v.len()
        ))),
        Err(_) => {
            // Untagged enums lose the error path: re-parse as the form the
            // caller used to say precisely what is wrong.
            let e = if body.is_array() {
                parse_json::<Vec<RetrievedPodData>>(&bytes).err()
            } else {
                parse_json::<RetrievedPodData>(&bytes).err()
            };
            Err(e.unwrap_or_else(|| ApiError::bad_request("unexpected JSON shape")))
        }
    }
}

/// Unknown fields are ignored (newer interLink versions add some), but
/// fields that belong somewhere else are a caller bug worth a clear 400: e.g.
/// the VK's `PodCreateRequests` (`configmaps`, `projectedvolumesmaps`) sent
/// where the plugin's `RetrievedPodData` is expected.
fn misplaced_fields(body: &serde_json::Value) -> Result<(), ApiError> {
    const TOP: &[(&str, &str)] = &[
        ("spec", "pod.spec"),
        ("status", "pod.status"),
        (
            "containers",
            "pod.spec.containers (or the per-container list \"container\")",
        ),
        ("configMaps", "container[].configMaps"),
        (
            "configmaps",
            "container[].configMaps (this is the VK->interLink PodCreateRequests shape)",
        ),
        ("secrets", "container[].secrets"),
        ("projectedvolumemaps", "container[].projectedvolumemaps"),
        (
            "projectedvolumesmaps",
            "container[].projectedvolumemaps (this is the VK->interLink PodCreateRequests shape)",
        ),
        ("emptyDirs", "container[].emptyDirs"),
    ];
    const PER_CONTAINER: &[(&str, &str)] = &[
        ("configmaps", "configMaps"),
        ("projectedvolumesmaps", "projectedvolumemaps"),
        ("projectedVolumeMaps", "projectedvolumemaps"),
        ("emptydirs", "emptyDirs"),
    ];
    let items: Vec<&serde_json::Value> = match body {
        serde_json::Value::Array(v) => v.iter().collect(),
        other => vec![other],
    };
    for (i, item) in items.into_iter().enumerate() {
        let at = if body.is_array() {
            format!("[{i}].")
        } else {
            String::new()
        };
        let Some(obj) = item.as_object() else {
            continue;
        };
        for (key, belongs) in TOP {
            if obj.contains_key(*key) {
                return Err(ApiError::bad_request(format!(
                    "field {at}{key:?} does not belong at the top level of a create body; it belongs in {belongs}. Expected {{\"pod\", \"container\", \"jobConfig\", \"jobScript\"}}"
                )));
            }
        }
        for (j, c) in obj
            .get("container")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (key, right) in PER_CONTAINER {
                if c.get(*key).is_some() {
                    return Err(ApiError::bad_request(format!(
                        "field {at}container[{j}].{key:?} is misspelled for this API: interLink sends {right:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use offload_wire::LogStruct;

    #[test]
    fn json_errors_name_the_path() {
        let e = parse_json::<LogStruct>(
            br#"{"Namespace":"a","PodUID":"u","PodName":"p","Opts":{"Tail":"x"}}"#,
        )
        .expect_err("bad type");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Opts.Tail"), "{}", e.message);
        let e = parse_json::<Vec<Pod>>(b"[not json").expect_err("syntax");
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = parse_json::<Vec<Pod>>(b"  ").expect_err("empty");
        assert!(e.message.contains("empty"));
    }
}
