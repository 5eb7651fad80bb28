//! Pure builders of the Kubernetes objects unit and integration tests keep writing
//! by hand: pods, containers, container statuses, volumes, ConfigMaps and Secrets. No I/O,
//! no cluster: any test of any crate can use them.
//!
//! Small functions return a plain object with the fields that matter set; change
//! the rest with struct update syntax, which keeps a test's own detail visible:
//!
//! ```
//! use k8s_openapi::api::core::v1::ContainerStatus;
//! use testbed::fixtures::{self, pod, running, terminated};
//!
//! let p = pod("web")
//!     .namespace("ns")
//!     .restart_policy("Always")
//!     .container(fixtures::container("main"))
//!     .container_status(ContainerStatus { restart_count: 2, ..running("main") })
//!     .build();
//! assert_eq!(p.metadata.name.as_deref(), Some("web"));
//! assert_eq!(terminated("main", 1).state.and_then(|s| s.terminated).map(|t| t.exit_code), Some(1));
//! ```

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerState,
    ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, PodStatus, ProjectedVolumeSource,
    Secret, SecretKeySelector, SecretVolumeSource, ServiceAccountTokenProjection, Toleration,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The image of [`container`]: a name only, unit tests never pull it.
pub const IMAGE: &str = "busybox:1";

/// When the containers of [`running`] and [`terminated`] started (a fixed instant, so
/// tests can compare timestamps).
pub const STARTED_AT: &str = "2026-01-01T00:00:00Z";

/// How long a [`terminated`] container ran.
pub const RUN_TIME: SignedDuration = SignedDuration::from_secs(5);

/// A timestamp from RFC 3339 text; panics on a malformed literal (test input only).
pub fn timestamp(rfc3339: &str) -> Timestamp {
    rfc3339
        .parse()
        .unwrap_or_else(|e| panic!("fixture timestamp {rfc3339:?}: {e}"))
}

/// [`timestamp`] as the `Time` of Kubernetes objects.
pub fn time(rfc3339: &str) -> Time {
    Time(timestamp(rfc3339))
}

// ---------------------------------------------------------------------------
// Containers and what they reference.

/// A container named `name` running [`IMAGE`], nothing else set.
pub fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(IMAGE.into()),
        ..Default::default()
    }
}

/// A container of the test ground's busybox image running `sh -c script`. Every `$`
/// is escaped as `$$`, so the script reaches `sh` verbatim (Kubernetes expands `$(VAR)`
/// in commands), as a user writes `$$` in a manifest.
pub fn sh_container(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(crate::images::BUSYBOX.into()),
        command: Some(vec!["sh".into(), "-c".into(), script.replace('$', "$$")]),
        ..Default::default()
    }
}

/// A mount of volume `volume` at `path`.
pub fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// `name=value`.
pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// `name` from key `key` of ConfigMap `config_map`.
pub fn env_from_config_map(name: &str, config_map: &str, key: &str) -> EnvVar {
    env_from_source(
        name,
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: config_map.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        },
    )
}

/// `name` from key `key` of Secret `secret`.
pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    env_from_source(
        name,
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        },
    )
}

/// `name` from the pod's field `field_path` (downward API, e.g. `metadata.name`).
pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    env_from_source(
        name,
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn env_from_source(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(source),
        ..Default::default()
    }
}

/// Volume `name` of ConfigMap `config_map` (every key).
pub fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Volume `name` of Secret `secret` (every key).
pub fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Projected volume `name` of `sources`.
pub fn projected_volume(name: &str, sources: Vec<VolumeProjection>) -> Volume {
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A service-account token source of a projected volume, written to `path`.
pub fn token_projection(path: &str) -> VolumeProjection {
    VolumeProjection {
        service_account_token: Some(ServiceAccountTokenProjection {
            path: path.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A projected volume with a service-account token source only, as the
/// local apiserver adds (`kube-api-access-*`).
pub fn token_volume(name: &str) -> Volume {
    projected_volume(name, vec![token_projection("token")])
}

/// ConfigMap `namespace/name` holding `data`.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(namespace, name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Opaque Secret `namespace/name` holding `data` (given as text).
pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(namespace, name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Container statuses, as a kubelet reports them.

/// Running since [`STARTED_AT`], not ready, never restarted.
pub fn running(name: &str) -> ContainerStatus {
    status(
        name,
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(STARTED_AT)),
            }),
            ..Default::default()
        },
    )
}

/// Waiting with `reason` (e.g. `ContainerCreating`, `CrashLoopBackOff`).
pub fn waiting(name: &str, reason: &str) -> ContainerStatus {
    status(name, waiting_state(reason))
}

/// Exited with `exit_code` after [`RUN_TIME`]: reason `Completed` for 0, else `Error`,
/// as the kubelet says.
pub fn terminated(name: &str, exit_code: i32) -> ContainerStatus {
    status(name, terminated_state(exit_code))
}

/// In `CrashLoopBackOff` after `restarts` restarts, the last run exited `last_code`.
pub fn crash_loop(name: &str, last_code: i32, restarts: i32) -> ContainerStatus {
    ContainerStatus {
        last_state: Some(terminated_state(last_code)),
        restart_count: restarts,
        ..waiting(name, "CrashLoopBackOff")
    }
}

/// The state of [`waiting`], e.g. for a `last_state`.
pub fn waiting_state(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: None,
        }),
        ..Default::default()
    }
}

/// The state of [`terminated`], e.g. for a `last_state`.
pub fn terminated_state(exit_code: i32) -> ContainerState {
    let started = timestamp(STARTED_AT);
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
            started_at: Some(Time(started)),
            finished_at: Some(Time(started + RUN_TIME)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn status(name: &str, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: IMAGE.into(),
        state: Some(state),
        ..Default::default()
    }
}

/// What state a status is in: `"running"`, `"waiting"`, `"terminated"` or `"none"`,
/// with the waiting or terminated reason, for short assertions.
pub fn state_of(s: &ContainerStatus) -> (&'static str, Option<&str>) {
    match s.state.as_ref() {
        Some(ContainerState {
            terminated: Some(t),
            ..
        }) => ("terminated", t.reason.as_deref()),
        Some(ContainerState {
            waiting: Some(w), ..
        }) => ("waiting", w.reason.as_deref()),
        Some(ContainerState {
            running: Some(_), ..
        }) => ("running", None),
        _ => ("none", None),
    }
}

// ---------------------------------------------------------------------------
// Pods.

/// Starts a pod named `name`; see [`PodFixture`].
pub fn pod(name: &str) -> PodFixture {
    PodFixture {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        },
    }
}

/// A pod spec with containers named `main` and init containers named `init` (each a
/// [`container`]) and `restart_policy`; `init_containers` is unset when `init` is empty.
pub fn pod_spec(restart_policy: &str, init: &[&str], main: &[&str]) -> PodSpec {
    PodSpec {
        restart_policy: Some(restart_policy.into()),
        init_containers: (!init.is_empty()).then(|| init.iter().map(|n| container(n)).collect()),
        containers: main.iter().map(|n| container(n)).collect(),
        ..Default::default()
    }
}

/// Builds a [`Pod`] step by step; every step sets one thing, [`PodFixture::build`]
/// returns the pod.
#[derive(Debug, Clone)]
pub struct PodFixture {
    pod: Pod,
}

impl PodFixture {
    pub fn build(self) -> Pod {
        self.pod
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.pod.metadata.namespace = Some(namespace.into());
        self
    }

    pub fn uid(mut self, uid: &str) -> Self {
        self.pod.metadata.uid = Some(uid.into());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.pod.metadata.labels, key, value);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.pod.metadata.annotations, key, value);
        self
    }

    /// Replaces the whole spec (e.g. with [`pod_spec`]).
    pub fn spec(mut self, spec: PodSpec) -> Self {
        self.pod.spec = Some(spec);
        self
    }

    /// Bound to `node` (`spec.nodeName`), as the scheduler does.
    pub fn node(mut self, node: &str) -> Self {
        self.spec_mut().node_name = Some(node.into());
        self
    }

    pub fn restart_policy(mut self, policy: &str) -> Self {
        self.spec_mut().restart_policy = Some(policy.into());
        self
    }

    /// Appends a container.
    pub fn container(mut self, container: Container) -> Self {
        self.spec_mut().containers.push(container);
        self
    }

    /// Appends an init container.
    pub fn init_container(mut self, container: Container) -> Self {
        self.spec_mut()
            .init_containers
            .get_or_insert_with(Vec::new)
            .push(container);
        self
    }

    /// Appends a volume.
    pub fn volume(mut self, volume: Volume) -> Self {
        self.spec_mut()
            .volumes
            .get_or_insert_with(Vec::new)
            .push(volume);
        self
    }

    /// Tolerates every taint (e.g. the virtual node's).
    pub fn tolerate_all(mut self) -> Self {
        self.spec_mut().tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        self
    }

    /// Sets `status.phase`.
    pub fn phase(mut self, phase: &str) -> Self {
        self.status_mut().phase = Some(phase.into());
        self
    }

    /// Appends a container status.
    pub fn container_status(mut self, status: ContainerStatus) -> Self {
        self.status_mut()
            .container_statuses
            .get_or_insert_with(Vec::new)
            .push(status);
        self
    }

    /// Appends an init container status.
    pub fn init_container_status(mut self, status: ContainerStatus) -> Self {
        self.status_mut()
            .init_container_statuses
            .get_or_insert_with(Vec::new)
            .push(status);
        self
    }

    fn spec_mut(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(PodSpec::default)
    }

    fn status_mut(&mut self) -> &mut PodStatus {
        self.pod.status.get_or_insert_with(PodStatus::default)
    }
}

impl From<PodFixture> for Pod {
    fn from(f: PodFixture) -> Pod {
        f.build()
    }
}

fn insert(map: &mut Option<BTreeMap<String, String>>, key: &str, value: &str) {
    map.get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_fixture_sets_what_each_step_says() {
        let p = pod("web")
            .namespace("ns")
            .uid("u-1")
            .label("app", "web")
            .annotation("team", "a")
            .node("vn")
            .restart_policy("Never")
            .init_container(container("init"))
            .container(container("main"))
            .volume(config_map_volume("cfg", "settings"))
            .tolerate_all()
            .phase("Running")
            .container_status(running("main"))
            .build();
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(p.metadata.labels.expect("labels")["app"], "web");
        assert_eq!(p.metadata.annotations.expect("annotations")["team"], "a");
        let spec = p.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("vn"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.init_containers.expect("inits")[0].name, "init");
        assert_eq!(spec.containers[0].image.as_deref(), Some(IMAGE));
        assert_eq!(spec.volumes.expect("volumes")[0].name, "cfg");
        assert!(spec.tolerations.is_some());
        let status = p.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.container_statuses.expect("statuses").len(), 1);
    }

    #[test]
    fn pod_spec_leaves_init_containers_unset_when_there_are_none() {
        let spec = pod_spec("Always", &[], &["a", "b"]);
        assert_eq!(spec.init_containers, None);
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(
            pod_spec("Never", &["i"], &["a"])
                .init_containers
                .map(|i| i.len()),
            Some(1)
        );
    }

    #[test]
    fn statuses_say_what_the_kubelet_says() {
        assert_eq!(state_of(&running("c")), ("running", None));
        assert_eq!(
            state_of(&waiting("c", "ContainerCreating")),
            ("waiting", Some("ContainerCreating"))
        );
        assert_eq!(
            state_of(&terminated("c", 0)),
            ("terminated", Some("Completed"))
        );
        assert_eq!(state_of(&terminated("c", 2)), ("terminated", Some("Error")));
        let t = terminated("c", 0)
            .state
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(
            t.finished_at.expect("finished").0,
            timestamp(STARTED_AT) + RUN_TIME
        );
        let crashing = crash_loop("c", 137, 3);
        assert_eq!(state_of(&crashing), ("waiting", Some("CrashLoopBackOff")));
        assert_eq!(crashing.restart_count, 3);
        let last = crashing
            .last_state
            .and_then(|s| s.terminated)
            .expect("last");
        assert_eq!(last.exit_code, 137);
        assert_eq!(state_of(&ContainerStatus::default()), ("none", None));
    }

    #[test]
    fn sh_container_escapes_dollars_for_kubernetes() {
        let c = sh_container("main", "echo $HOME $(x)");
        assert_eq!(c.image.as_deref(), Some(crate::images::BUSYBOX));
        assert_eq!(
            c.command.expect("command"),
            ["sh", "-c", "echo $$HOME $$(x)"]
        );
    }

    #[test]
    fn config_objects_hold_their_data() {
        let cm = config_map("ns", "settings", &[("mode", "fast")]);
        assert_eq!(cm.data.expect("data")["mode"], "fast");
        let s = secret("ns", "db", &[("pw", "s3cret")]);
        assert_eq!(s.data.expect("data")["pw"].0, b"s3cret");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let e = env_from_secret("PW", "db", "pw");
        let sel = e
            .value_from
            .and_then(|v| v.secret_key_ref)
            .expect("secret ref");
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("db", "pw"));
        assert_eq!(env("A", "1").value.as_deref(), Some("1"));
        assert_eq!(mount("cfg", "/etc/cfg").mount_path, "/etc/cfg");
        assert!(secret_volume("sec", "db").secret.is_some());
        let f = env_from_field("ME", "metadata.name")
            .value_from
            .and_then(|v| v.field_ref);
        assert_eq!(f.map(|f| f.field_path).as_deref(), Some("metadata.name"));
        assert!(
            env_from_config_map("M", "settings", "mode")
                .value_from
                .is_some()
        );
    }
}
