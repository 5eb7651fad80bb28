//! `/getLogs` options -> Kubernetes log parameters. Pure.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use offload_wire::LogStruct;

use crate::naming::{is_rfc1123_label, is_valid_uid};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogOptsError {
    #[error("{0} must not be negative")]
    Negative(&'static str),
    #[error("Opts.SinceTime {0:?} is not an RFC 3339 time")]
    SinceTime(String),
    #[error("Namespace {0:?} is not a valid namespace name")]
    Namespace(String),
    #[error("PodName must be set")]
    PodName,
    #[error("PodUID {0:?} is not a valid pod UID")]
    PodUid(String),
    #[error("ContainerName {0:?} is not a valid container name")]
    ContainerName(String),
    #[error("container {container:?} is not in pod {pod:?} (containers: {known})")]
    UnknownContainer {
        container: String,
        pod: String,
        known: String,
    },
}

/// Checks the identity fields of a log request.
pub fn validate(req: &LogStruct) -> Result<(), LogOptsError> {
    if !is_rfc1123_label(&req.namespace) {
        return Err(LogOptsError::Namespace(req.namespace.clone()));
    }
    if req.pod_name.is_empty() {
        return Err(LogOptsError::PodName);
    }
    if !is_valid_uid(&req.pod_uid) {
        return Err(LogOptsError::PodUid(req.pod_uid.clone()));
    }
    if !req.container_name.is_empty() && !is_rfc1123_label(&req.container_name) {
        return Err(LogOptsError::ContainerName(req.container_name.clone()));
    }
    Ok(())
}

/// The Kubernetes log parameters for a request. Zero values mean "unset", as
/// interLink sends them. When both `Tail` and `Bytes` (or both
/// `SinceSeconds` and `SinceTime`) are set, both are passed on: the remote
/// apiserver applies both limits.
pub fn log_params(req: &LogStruct, container: String) -> Result<LogParams, LogOptsError> {
    let o = &req.opts;
    if o.tail < 0 {
        return Err(LogOptsError::Negative("Opts.Tail"));
    }
    if o.limit_bytes < 0 {
        return Err(LogOptsError::Negative("Opts.Bytes"));
    }
    if o.since_seconds < 0 {
        return Err(LogOptsError::Negative("Opts.SinceSeconds"));
    }
    let since_time = match o.since_time_set() {
        Some(t) => Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|_| LogOptsError::SinceTime(t.to_string()))?,
        ),
        None => None,
    };
    let nonzero = |v: i64| (v > 0).then_some(v);
    Ok(LogParams {
        container: Some(container),
        follow: o.follow,
        limit_bytes: nonzero(o.limit_bytes),
        pretty: false,
        previous: o.previous,
        // The apiserver rejects sinceSeconds together with sinceTime.
        since_seconds: if since_time.is_some() {
            None
        } else {
            nonzero(o.since_seconds)
        },
        since_time,
        tail_lines: nonzero(o.tail),
        timestamps: o.timestamps,
    })
}

/// The container whose log is wanted: the named one (container or init
/// container of the remote pod), or the pod's default container
/// (`kubectl.kubernetes.io/default-container`, else the first one), like
/// `kubectl logs`.
pub fn choose_container(remote: &Pod, requested: &str) -> Result<String, LogOptsError> {
    let spec = remote.spec.as_ref();
    let names: Vec<&str> = spec
        .map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
                .map(|c| c.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    if !requested.is_empty() {
        if names.contains(&requested) {
            return Ok(requested.to_string());
        }
        return Err(LogOptsError::UnknownContainer {
            container: requested.to_string(),
            pod: remote.metadata.name.clone().unwrap_or_default(),
            known: names.join(", "),
        });
    }
    let default = remote
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .filter(|d| names.contains(&d.as_str()))
        .cloned();
    default
        .or_else(|| {
            spec.and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
        })
        .ok_or_else(|| LogOptsError::UnknownContainer {
            container: String::new(),
            pod: remote.metadata.name.clone().unwrap_or_default(),
            known: String::new(),
        })
}

/// The remote apiserver's refusal of a log request, told as the local pod:
/// its message names the remote pod (`container "c" in pod "web-<uid>" is
/// waiting to start: ...`), which the user never sees; the local name reads
/// as a kubelet would write it. Only the quoted pod name is replaced.
pub fn localized_message(message: &str, remote_pod: &str, local_pod: &str) -> String {
    if remote_pod.is_empty() || remote_pod == local_pod {
        return message.to_string();
    }
    message.replace(
        &format!("pod \"{remote_pod}\""),
        &format!("pod \"{local_pod}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_wire::ContainerLogOpts;
    use pretty_assertions::assert_eq;
    use testbed::fixtures::{container, pod};

    fn req(opts: ContainerLogOpts) -> LogStruct {
        LogStruct {
            namespace: "default".into(),
            pod_uid: "6f1c1f1e-0000-4000-8000-000000000000".into(),
            pod_name: "hello".into(),
            container_name: "c".into(),
            opts,
        }
    }

    #[test]
    fn zero_values_mean_unset() {
        let p = log_params(
            &req(ContainerLogOpts {
                since_time: Some(offload_wire::GO_ZERO_TIME.into()),
                ..Default::default()
            }),
            "c".into(),
        )
        .expect("valid");
        assert_eq!(p.tail_lines, None);
        assert_eq!(p.limit_bytes, None);
        assert_eq!(p.since_seconds, None);
        assert_eq!(p.since_time, None);
        assert!(!p.follow && !p.previous && !p.timestamps);
        assert_eq!(p.container.as_deref(), Some("c"));
    }

    #[test]
    fn every_option_is_mapped() {
        let p = log_params(
            &req(ContainerLogOpts {
                tail: 5,
                limit_bytes: 100,
                timestamps: true,
                follow: true,
                previous: true,
                since_seconds: 30,
                since_time: None,
            }),
            "c".into(),
        )
        .expect("valid");
        assert_eq!(p.tail_lines, Some(5));
        assert_eq!(p.limit_bytes, Some(100));
        assert_eq!(p.since_seconds, Some(30));
        assert!(p.follow && p.previous && p.timestamps);
    }

    #[test]
    fn since_time_is_parsed_and_wins_over_since_seconds() {
        let p = log_params(
            &req(ContainerLogOpts {
                since_seconds: 30,
                since_time: Some("2026-01-02T03:04:05Z".into()),
                ..Default::default()
            }),
            "c".into(),
        )
        .expect("valid");
        assert_eq!(p.since_seconds, None);
        assert_eq!(
            p.since_time.map(|t| t.to_string()),
            Some("2026-01-02T03:04:05Z".to_string())
        );
        let bad = log_params(
            &req(ContainerLogOpts {
                since_time: Some("yesterday".into()),
                ..Default::default()
            }),
            "c".into(),
        );
        assert!(matches!(bad, Err(LogOptsError::SinceTime(_))));
    }

    #[test]
    fn negative_values_are_refused() {
        let bad = log_params(
            &req(ContainerLogOpts {
                tail: -1,
                ..Default::default()
            }),
            "c".into(),
        );
        assert_eq!(bad.err(), Some(LogOptsError::Negative("Opts.Tail")));
    }

    #[test]
    fn identity_validation() {
        assert!(validate(&req(Default::default())).is_ok());
        let mut r = req(Default::default());
        r.namespace = "Bad_NS".into();
        assert!(matches!(validate(&r), Err(LogOptsError::Namespace(_))));
        let mut r = req(Default::default());
        r.pod_uid = String::new();
        assert!(matches!(validate(&r), Err(LogOptsError::PodUid(_))));
        let mut r = req(Default::default());
        r.container_name = "no/slash".into();
        assert!(matches!(validate(&r), Err(LogOptsError::ContainerName(_))));
    }

    #[test]
    fn container_choice_follows_kubectl() {
        let mut pod = pod("p")
            .init_container(container("init"))
            .container(container("a"))
            .container(container("b"))
            .build();
        assert_eq!(choose_container(&pod, "").expect("default"), "a");
        assert_eq!(choose_container(&pod, "init").expect("init"), "init");
        assert!(choose_container(&pod, "zzz").is_err());
        pod.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/default-container".to_string(),
                "b".to_string(),
            )]
            .into(),
        );
        assert_eq!(choose_container(&pod, "").expect("annotated"), "b");
    }

    #[test]
    fn remote_pod_name_becomes_the_local_one() {
        let remote = "web-6f1c1f1e-0000-4000-8000-000000000000";
        assert_eq!(
            localized_message(
                &format!(
                    "container \"app\" in pod \"{remote}\" is waiting to start: image can't be pulled"
                ),
                remote,
                "web",
            ),
            "container \"app\" in pod \"web\" is waiting to start: image can't be pulled"
        );
        // Anything else in the message stays, an unquoted name too.
        assert_eq!(
            localized_message(&format!("{remote} is gone"), remote, "web"),
            format!("{remote} is gone")
        );
    }
}
