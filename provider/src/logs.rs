//! Pure parsing of the kubelet `containerLogs` query into the interLink
//! `LogStruct`, with the kubelet's validation rules.

use axum::http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use offload_wire::{ContainerLogOpts, GO_ZERO_TIME, LogStruct};

use crate::client::PluginError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogQueryError {
    #[error("invalid value {value:?} for query parameter {name}")]
    Invalid { name: String, value: String },
    #[error("{0}")]
    Conflict(&'static str),
}

/// The options `kubectl logs` can send to the kubelet, held in kube-rs'
/// [`LogParams`] (the fields of the pods/log subresource, which is what they
/// become on the remote side); `container` and `pretty` are not part of a
/// kubelet query and stay unset.
#[derive(Clone, Debug, Default)]
pub struct LogQuery(pub LogParams);

fn parse_bool(name: &str, v: &str) -> Result<bool, LogQueryError> {
    // Go's strconv.ParseBool, which the kubelet uses.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" | "" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(LogQueryError::Invalid {
            name: name.into(),
            value: v.into(),
        }),
    }
}

fn parse_int(name: &str, v: &str, min: i64) -> Result<i64, LogQueryError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| LogQueryError::Invalid {
            name: name.into(),
            value: v.into(),
        })
}

impl LogQuery {
    /// Parse a raw query string (`follow=true&tailLines=10...`). Unknown
    /// parameters are ignored, like the kubelet does.
    pub fn parse(query: &str) -> Result<LogQuery, LogQueryError> {
        let mut q = LogParams::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            match k.as_str() {
                "follow" => q.follow = parse_bool(&k, &v)?,
                "previous" => q.previous = parse_bool(&k, &v)?,
                "timestamps" => q.timestamps = parse_bool(&k, &v)?,
                "tailLines" => q.tail_lines = Some(parse_int(&k, &v, 0)?),
                "limitBytes" => q.limit_bytes = Some(parse_int(&k, &v, 1)?),
                "sinceSeconds" => q.since_seconds = Some(parse_int(&k, &v, 1)?),
                "sinceTime" => {
                    let t: jiff::Timestamp = v.parse().map_err(|_| LogQueryError::Invalid {
                        name: k.clone(),
                        value: v.clone(),
                    })?;
                    q.since_time = Some(t);
                }
                _ => {}
            }
        }
        if q.since_seconds.is_some() && q.since_time.is_some() {
            return Err(LogQueryError::Conflict(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        Ok(LogQuery(q))
    }

    /// `tailLines=0` without follow asks for nothing at all; the wire format
    /// cannot say it (0 means "unset"), so the caller answers it directly.
    pub fn wants_nothing(&self) -> bool {
        self.0.tail_lines == Some(0) && !self.0.follow
    }

    /// The wire options, as interLink's Virtual Kubelet would send them
    /// (zero means unset; `SinceTime` is Go's zero time when unset, else
    /// RFC 3339 in UTC seconds).
    pub fn to_opts(&self) -> ContainerLogOpts {
        let p = &self.0;
        ContainerLogOpts {
            tail: p.tail_lines.unwrap_or(0),
            limit_bytes: p.limit_bytes.unwrap_or(0),
            timestamps: p.timestamps,
            follow: p.follow,
            previous: p.previous,
            since_seconds: p.since_seconds.unwrap_or(0),
            since_time: Some(p.since_time.map_or_else(
                || GO_ZERO_TIME.to_string(),
                |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            )),
        }
    }
}

/// The `/getLogs` body for a container of a local pod.
pub fn log_request(
    namespace: &str,
    pod: &str,
    pod_uid: &str,
    container: &str,
    q: &LogQuery,
) -> LogStruct {
    LogStruct {
        namespace: namespace.to_string(),
        pod_uid: pod_uid.to_string(),
        pod_name: pod.to_string(),
        container_name: container.to_string(),
        opts: q.to_opts(),
    }
}

/// A failed `/getLogs`, answered as the kubelet answers `containerLogs`:
/// the local apiserver keeps the text of a 400 or a 500 only (any other
/// status becomes a generic "is invalid" or "could not find"), so the
/// reason the remote side gave (`container "c" in pod "p" is waiting to
/// start: ...`) is a plain-text 400, what the plugin could not do a 500.
/// A pod the plugin does not know is 404, as on a kubelet. The message is
/// the plugin's `message` field when its body is our JSON error, else the
/// body itself (an interLink API server wraps the plugin's answer).
pub fn log_failure(e: &PluginError) -> (StatusCode, String) {
    match e {
        PluginError::Status { status, body } => {
            let message = plugin_message(body);
            let code = match *status {
                404 => StatusCode::NOT_FOUND,
                s if (400..500).contains(&s) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, message)
        }
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("virtual node: {other}"),
        ),
    }
}

/// What a kubelet says of a container with no log yet, from the local
/// pod's status: for a pod the remote side does not have (its create waits
/// for a missing ConfigMap, or is being retried) the plugin knows nothing,
/// but the local status has the reason. `None` when the container is not
/// waiting (then the plugin's answer stands).
pub fn waiting_message(pod: &Pod, container: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let all = status
        .container_statuses
        .iter()
        .chain(status.init_container_statuses.iter())
        .flatten();
    let c = all.into_iter().find(|c| c.name == container)?;
    let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    // The kubelet's words for the common pull failures.
    let why = match reason.as_deref() {
        Some("ErrImagePull") => "image can't be pulled".to_string(),
        Some("ImagePullBackOff") => "trying and failing to pull image".to_string(),
        Some(r) if !r.is_empty() => r.to_string(),
        _ => {
            return Some(format!(
                "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
            ));
        }
    };
    Some(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
    ))
}

/// The `message` of the plugin's error body `{"error": .., "message": ..}`,
/// else the body as it is.
fn plugin_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    serde_json::from_str::<ErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| body.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn parses_every_kubectl_option() {
        let q = LogQuery::parse(
            "follow=true&tailLines=10&timestamps=1&previous=false&limitBytes=500&sinceTime=2026-01-02T03%3A04%3A05%2B01%3A00",
        )
        .expect("parses");
        let p = &q.0;
        assert_eq!(
            (p.follow, p.previous, p.timestamps),
            (true, false, true),
            "follow, previous, timestamps"
        );
        assert_eq!(
            (p.tail_lines, p.limit_bytes, p.since_seconds),
            (Some(10), Some(500), None)
        );
        assert_eq!(
            p.since_time.map(|t| t.to_string()).as_deref(),
            Some("2026-01-02T02:04:05Z")
        );
        let l = log_request("ns", "p", "uid", "c", &q);
        let v = serde_json::to_value(&l).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"Namespace":"ns","PodUID":"uid","PodName":"p","ContainerName":"c",
                "Opts":{"Tail":10,"Bytes":500,"Timestamps":true,"Follow":true,"Previous":false,
                        "SinceSeconds":0,"SinceTime":"2026-01-02T02:04:05Z"}})
        );
    }

    #[test]
    fn empty_query_means_defaults_and_zero_time() {
        let q = LogQuery::parse("").expect("parses");
        let o = q.to_opts();
        assert_eq!(o.tail, 0);
        assert_eq!(o.since_time.as_deref(), Some(GO_ZERO_TIME));
        assert_eq!(o.since_time_set(), None);
        assert!(!q.wants_nothing());
    }

    #[test]
    fn since_seconds_and_previous() {
        let q = LogQuery::parse("sinceSeconds=30&previous=true&unknown=x").expect("parses");
        assert_eq!(q.0.since_seconds, Some(30));
        assert!(q.0.previous);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(LogQuery::parse("tailLines=-1").is_err());
        assert!(LogQuery::parse("tailLines=abc").is_err());
        assert!(LogQuery::parse("limitBytes=0").is_err());
        assert!(LogQuery::parse("sinceSeconds=0").is_err());
        assert!(LogQuery::parse("follow=maybe").is_err());
        assert!(LogQuery::parse("sinceTime=yesterday").is_err());
        assert_eq!(
            LogQuery::parse("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z").err(),
            Some(LogQueryError::Conflict(
                "at most one of sinceTime or sinceSeconds may be specified"
            ))
        );
    }

    #[test]
    fn tail_zero_without_follow_wants_nothing() {
        assert!(
            LogQuery::parse("tailLines=0")
                .expect("parses")
                .wants_nothing()
        );
        assert!(
            !LogQuery::parse("tailLines=0&follow=true")
                .expect("parses")
                .wants_nothing()
        );
    }

    #[test]
    fn decodes_percent_escapes() {
        let q = LogQuery::parse("tailLines=%31%30&follow=tr%75e").expect("parses");
        assert_eq!((q.0.tail_lines, q.0.follow), (Some(10), true));
    }

    #[test]
    fn log_failures_keep_the_remote_reason_in_a_400_or_500() {
        let waiting = PluginError::Status {
            status: 400,
            body: r#"{"error":"remote_rejected","message":"container \"c\" in pod \"p\" is waiting to start: image can't be pulled"}"#.into(),
        };
        assert_eq!(
            log_failure(&waiting),
            (
                StatusCode::BAD_REQUEST,
                "container \"c\" in pod \"p\" is waiting to start: image can't be pulled".into()
            )
        );
        // Any other refusal by the plugin is still the caller's: 400.
        let refused = PluginError::Status {
            status: 403,
            body: r#"{"error":"namespace_refused","message":"no"}"#.into(),
        };
        assert_eq!(
            log_failure(&refused),
            (StatusCode::BAD_REQUEST, "no".into())
        );
        let gone = PluginError::Status {
            status: 404,
            body: "not json".into(),
        };
        assert_eq!(
            log_failure(&gone),
            (StatusCode::NOT_FOUND, "not json".into())
        );
        let broken = PluginError::Status {
            status: 502,
            body: r#"{"error":"remote_error","message":"boom"}"#.into(),
        };
        assert_eq!(
            log_failure(&broken),
            (StatusCode::INTERNAL_SERVER_ERROR, "boom".into())
        );
        let (code, msg) = log_failure(&PluginError::Timeout);
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(msg.contains("timed out"), "{msg}");
    }

    #[test]
    fn a_waiting_container_is_told_as_the_kubelet_tells_it() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "status": {"containerStatuses": [
                {"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "CreateContainerConfigError"}}},
                {"name": "side", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {}}}
            ]}
        }))
        .expect("pod");
        assert_eq!(
            waiting_message(&pod, "app").as_deref(),
            Some(
                "container \"app\" in pod \"web\" is waiting to start: CreateContainerConfigError"
            )
        );
        assert_eq!(
            waiting_message(&pod, "side"),
            None,
            "running: the plugin's answer stands"
        );
        assert_eq!(waiting_message(&pod, "nope"), None);
        if let Some(st) = pod.status.as_mut()
            && let Some(cs) = st.container_statuses.as_mut()
            && let Some(w) = cs[0].state.as_mut().and_then(|s| s.waiting.as_mut())
        {
            w.reason = Some("ImagePullBackOff".into());
        }
        assert_eq!(
            waiting_message(&pod, "app").as_deref(),
            Some(
                "container \"app\" in pod \"web\" is waiting to start: trying and failing to pull image"
            )
        );
    }
}
