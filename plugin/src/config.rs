//! Configuration: one clap struct, with env fallbacks and an optional config
//! file (TOML or YAML) whose keys are the long flag names. Precedence:
//! command line > environment > config file > built-in default.
//!
//! For compatibility with the Python plugin, its environment overrides are
//! honoured where the meaning is the same: `OFFLOADING_NAMESPACE_PREFIX`,
//! `OFFLOADING_NAMESPACE_PREFIX_EXCLUSIONS` (JSON list),
//! `OFFLOADING_NODE_SELECTOR` (JSON object), `OFFLOADING_NODE_TOLERATIONS`
//! (JSON list) and `K8S_KUBECONFIG_PATH`.
//!
//! Layout: this file holds the struct and what the rest of the plugin derives
//! from it; `values` the flag value types and parsers, `file` the config file.

mod file;
mod policy;
mod values;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use offload_bastion::install::BastionSpec;
use offload_runtime::duration::parse_duration;

pub use self::policy::PolicyFlags;
pub use self::values::{
    KeyValues, Listen, StringList, Tolerations, parse_instance, parse_key_values, parse_size,
    parse_string_list, parse_tolerations,
};
use crate::{
    naming::NamespaceMapper, policy::Policy, sweep::SweepPolicy, translate::TranslateConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown key {key:?} (keys are the long flag names, see --help)")]
    UnknownKey { path: PathBuf, key: String },
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error(
        "authentication is not configured: give --token-file, or --insecure-no-auth to run without authentication"
    )]
    NoAuth,
    #[error("--tls-cert and --tls-key must be given together")]
    TlsPair,
    #[error("reading token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error(transparent)]
    Namespace(#[from] crate::naming::NamespaceRefusal),
}

/// `--help` section of the bastion flags.
const BASTION: &str = "Bastion (the remote end of the tunnels, installed and kept by the plugin)";
/// The bastion image of this release (`deploy/images/bastion.sh` builds it).
pub const DEFAULT_BASTION_IMAGE: &str =
    concat!("localhost/offload/bastion:", env!("CARGO_PKG_VERSION"));

/// offload-plugin: the interLink plugin API (create, delete, status, getLogs)
/// in front of a remote Kubernetes cluster.
///
/// Every flag can also be set by its environment variable or by a key of the
/// same name (without the leading dashes) in the --config file.
#[derive(Clone, Debug, Parser)]
#[command(name = "offload-plugin", version, about, long_about = None)]
pub struct PluginConfig {
    /// Config file (TOML, or YAML if it ends in .yaml/.yml). Keys are the long
    /// flag names, e.g. `listen = "0.0.0.0:30400"`, `allow-privileged = true`.
    #[arg(long, env = "OFFLOAD_PLUGIN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the plugin API listens: a TCP address (host:port, an http:// prefix
    /// is accepted) or a unix socket (unix:///path/to/plugin.sock).
    #[arg(long, env = "OFFLOAD_PLUGIN_LISTEN", default_value = "0.0.0.0:30400")]
    pub listen: Listen,

    /// Kubeconfig of the remote cluster. Without it: KUBECONFIG, ~/.kube/config
    /// or the in-cluster service account, in that order.
    #[arg(long, env = "K8S_KUBECONFIG_PATH", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// File holding the bearer token callers must send (`Authorization: Bearer
    /// <token>`). Required unless --insecure-no-auth.
    #[arg(long, env = "OFFLOAD_PLUGIN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Serve the API without authentication. Needed behind a stock interLink
    /// API server, which sends no credentials: then listen on a unix socket
    /// (file permissions are the access control) or on loopback only.
    #[arg(long, env = "OFFLOAD_PLUGIN_INSECURE_NO_AUTH", action = ArgAction::SetTrue)]
    pub insecure_no_auth: bool,

    /// PEM certificate chain for TLS on the TCP listener (with --tls-key).
    #[arg(long, env = "OFFLOAD_PLUGIN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "OFFLOAD_PLUGIN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    #[arg(long, env = "OFFLOAD_PLUGIN_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Remote namespace = <prefix>-<local namespace>. Required: an empty
    /// prefix, `kube` or `kube-*` is refused at start, and a request whose
    /// namespace would map onto kube-*, default, the plugin's or the bastion's
    /// namespace gets 403.
    #[arg(
        long,
        env = "OFFLOADING_NAMESPACE_PREFIX",
        default_value = "offloading"
    )]
    pub namespace_prefix: String,

    /// Local namespaces mapped to the remote namespace of the same name
    /// (comma list or JSON list). kube-*, default, the plugin's and the
    /// bastion's namespace are refused at start.
    #[arg(long, env = "OFFLOADING_NAMESPACE_PREFIX_EXCLUSIONS", value_parser = parse_string_list, default_value = "")]
    pub namespace_prefix_exclusions: StringList,

    /// nodeSelector of every remote pod (key=value,... or a JSON object).
    /// The pod's own nodeSelector, tolerations and node affinity target the
    /// virtual node in the local cluster and are not copied.
    #[arg(long, env = "OFFLOADING_NODE_SELECTOR", value_parser = parse_key_values, default_value = "")]
    pub node_selector: KeyValues,

    /// Tolerations of every remote pod (JSON list of tolerations).
    #[arg(long, env = "OFFLOADING_NODE_TOLERATIONS", value_parser = parse_tolerations, default_value = "")]
    pub node_tolerations: Tolerations,

    /// Keep KUBERNETES_SERVICE_*/KUBERNETES_PORT* env vars injected for the
    /// local cluster (by default they are dropped so remote pods see their own
    /// cluster's API).
    #[arg(long, env = "OFFLOAD_PLUGIN_KEEP_KUBERNETES_ENV", action = ArgAction::SetTrue)]
    pub keep_kubernetes_env: bool,

    /// Policy: allow hostPath volumes (an exception to the pod security level).
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_HOST_PATH", action = ArgAction::SetTrue)]
    pub allow_host_path: bool,

    /// Policy: allow privileged containers.
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_PRIVILEGED", action = ArgAction::SetTrue)]
    pub allow_privileged: bool,

    /// Policy: allow hostNetwork pods.
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_HOST_NETWORK", action = ArgAction::SetTrue)]
    pub allow_host_network: bool,

    /// Policy: allow hostPID pods.
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_HOST_PID", action = ArgAction::SetTrue)]
    pub allow_host_pid: bool,

    /// Policy: allow hostIPC pods.
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_HOST_IPC", action = ArgAction::SetTrue)]
    pub allow_host_ipc: bool,

    /// Pod Security Standards level and allowlists.
    #[command(flatten)]
    pub pod_security: PolicyFlags,

    /// Largest request body accepted (bytes, or with KiB/MiB/GiB). Bigger
    /// bodies get 413.
    #[arg(long, env = "OFFLOAD_PLUGIN_BODY_LIMIT", value_parser = parse_size, default_value = "16MiB")]
    pub body_limit: usize,

    /// Name of this plugin installation (shared by its replicas). Namespaces,
    /// pods, ConfigMaps and Secrets it creates carry it as the label
    /// `offload.dev/plugin-instance`; objects of another instance are never
    /// taken over or deleted, and the orphan sweep and the namespace GC never
    /// touch them: give each plugin on one remote cluster its own. A label value: at most 63 of [A-Za-z0-9-_.].
    #[arg(long, env = "OFFLOAD_PLUGIN_INSTANCE", value_parser = parse_instance, default_value = "offload-plugin")]
    pub instance: String,

    /// Most API requests handled at once (log streams count only until their
    /// first byte); more are answered 503 with Retry-After at once.
    #[arg(long, env = "OFFLOAD_PLUGIN_MAX_CONCURRENT_REQUESTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,

    /// Offer the status-change stream (`GET /status/watch`, capability
    /// `statusWatch`). With `--status-watch=false` the route answers 404 and
    /// providers poll `/status` as interLink does.
    #[arg(long, env = "OFFLOAD_PLUGIN_STATUS_WATCH", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub status_watch: bool,

    /// Most status watch streams open at once (they do not count against
    /// --max-concurrent-requests nor --request-timeout); more get 503.
    #[arg(long, env = "OFFLOAD_PLUGIN_MAX_WATCH_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watch_streams: u32,

    /// Status changes kept for resuming a watch stream; a stream resuming
    /// from further back gets a full replay.
    #[arg(long, env = "OFFLOAD_PLUGIN_STATUS_WATCH_HISTORY", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub status_watch_history: u32,

    /// Longest an API request may take until its answer starts (a create
    /// waits up to --namespace-ready-timeout for a new namespace); then 504.
    #[arg(long, env = "OFFLOAD_PLUGIN_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "120s")]
    pub request_timeout: Duration,

    /// Disable the orphan sweep.
    #[arg(long, env = "OFFLOAD_PLUGIN_NO_SWEEP", action = ArgAction::SetTrue)]
    pub no_sweep: bool,

    /// How often the orphan sweep runs.
    #[arg(long, env = "OFFLOAD_PLUGIN_SWEEP_INTERVAL", value_parser = parse_duration, default_value = "60s")]
    pub sweep_interval: Duration,

    /// A running or pending remote pod of this instance that its own caller
    /// (principal + local node) has not named (create, status, logs) for this
    /// long, while that caller kept polling this process all that time, is an
    /// orphan and is deleted with what it owns. Pods of silent or unknown
    /// callers are never swept.
    #[arg(long, env = "OFFLOAD_PLUGIN_ORPHAN_AFTER", value_parser = parse_duration, default_value = "30m")]
    pub orphan_after: Duration,

    /// Same for finished remote pods (no longer polled by the caller).
    #[arg(long, env = "OFFLOAD_PLUGIN_ORPHAN_FINISHED_AFTER", value_parser = parse_duration, default_value = "24h")]
    pub orphan_finished_after: Duration,

    /// A caller counts as alive only if one of its status calls arrived within
    /// this window; a silent caller's pods are never swept (a partition is not
    /// a dead pod), and its polling clock restarts when it comes back.
    #[arg(long, env = "OFFLOAD_PLUGIN_CALLER_ALIVE_WITHIN", value_parser = parse_duration, default_value = "5m")]
    pub caller_alive_within: Duration,

    /// Remote namespaces of this instance (its labels, under the prefix) that
    /// held no pod and no PersistentVolumeClaim for this long are deleted
    /// (UID + resourceVersion precondition). 0 disables.
    #[arg(long, env = "OFFLOAD_PLUGIN_NAMESPACE_GC_AFTER", value_parser = parse_duration, default_value = "1h")]
    pub namespace_gc_after: Duration,

    /// How often the namespace GC looks for empty namespaces.
    #[arg(long, env = "OFFLOAD_PLUGIN_NAMESPACE_GC_INTERVAL", value_parser = parse_duration, default_value = "60s")]
    pub namespace_gc_interval: Duration,

    /// How long create waits for a new remote namespace's default ServiceAccount.
    #[arg(long, env = "OFFLOAD_PLUGIN_NAMESPACE_READY_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub namespace_ready_timeout: Duration,

    /// Minor version of the remote apiserver (20 for 1.20). Detected from
    /// /version when not given; decides which newer pod fields are dropped or refused.
    #[arg(long, env = "OFFLOAD_PLUGIN_REMOTE_MINOR_VERSION")]
    pub remote_minor_version: Option<u32>,

    /// Log as JSON lines (filter with RUST_LOG, default info).
    #[arg(long, env = "OFFLOAD_PLUGIN_LOG_JSON", action = ArgAction::SetTrue)]
    pub log_json: bool,

    /// Do not install or keep the bastion (then no tunnel reaches pods on
    /// this cluster, and GET /bastion/publicKey answers 404).
    #[arg(long, env = "OFFLOAD_PLUGIN_NO_BASTION", action = ArgAction::SetTrue, help_heading = BASTION)]
    pub no_bastion: bool,

    /// Image of the bastion (the offload-bastion binary).
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_IMAGE", default_value = DEFAULT_BASTION_IMAGE, help_heading = BASTION)]
    pub bastion_image: String,

    /// imagePullPolicy of the bastion container.
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_IMAGE_PULL_POLICY", default_value = "IfNotPresent", help_heading = BASTION)]
    pub bastion_image_pull_policy: String,

    /// Remote namespace of the bastion (Deployment, key Secret, ServiceAccount),
    /// created if missing. Default: the plugin's own namespace when it runs
    /// in the remote cluster, else `offload-system`.
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_NAMESPACE", help_heading = BASTION)]
    pub bastion_namespace: Option<String>,

    /// Name of the bastion Deployment (and prefix of its other objects).
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_NAME", default_value = "offload-bastion", help_heading = BASTION)]
    pub bastion_name: String,

    /// Replicas of the bastion. Above 1 the extra replicas wait as standbys
    /// behind a Lease (`<name>-leader`) and take over within the lease
    /// duration when the leader goes (two connections cannot hold the same
    /// gateway ports).
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_REPLICAS", default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=5), help_heading = BASTION)]
    pub bastion_replicas: i32,

    /// Forward only pods of this remote namespace (RBAC: a Role there).
    /// Default: every namespace (a ClusterRole that can read pods).
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_WATCH_NAMESPACE", help_heading = BASTION)]
    pub bastion_watch_namespace: Option<String>,

    /// How often the bastion's objects are applied again (what was deleted
    /// comes back; an existing key Secret is never overwritten, a deleted one
    /// means a new key: that is how the key is rotated).
    #[arg(long, env = "OFFLOAD_PLUGIN_BASTION_RESYNC_INTERVAL", value_parser = parse_duration, default_value = "30s", help_heading = BASTION)]
    pub bastion_resync_interval: Duration,
}

impl PluginConfig {
    /// Parses command line, environment and config file.
    pub fn load<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let cmd = file::with_file_defaults(Self::command(), &args)?;
        let matches = cmd.try_get_matches_from(args)?;
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// A configuration for tests: loopback on an ephemeral port, no
    /// authentication, prefix `offloading`, default policy, no sweep, no
    /// namespace GC.
    pub fn for_tests() -> Self {
        // Set explicitly what the environment could set (clap reads env vars).
        Self {
            listen: Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            namespace_prefix: "offloading".into(),
            namespace_prefix_exclusions: StringList::default(),
            node_selector: KeyValues::default(),
            node_tolerations: Tolerations::default(),
            no_sweep: true,
            namespace_gc_after: Duration::ZERO,
            no_bastion: true,
            token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ..Self::parse_from(["offload-plugin", "--insecure-no-auth"])
        }
    }

    /// Checks the combinations clap cannot, and reads the token.
    pub fn auth_token(&self) -> Result<Option<String>, ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        match &self.token_file {
            Some(path) => {
                let t = std::fs::read_to_string(path).map_err(|source| ConfigError::Token {
                    path: path.clone(),
                    source,
                })?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    return Err(ConfigError::EmptyToken(path.clone()));
                }
                Ok(Some(t))
            }
            None if self.insecure_no_auth => Ok(None),
            None => Err(ConfigError::NoAuth),
        }
    }

    pub fn policy(&self) -> Policy {
        let ps = &self.pod_security;
        let set = |l: &StringList| l.0.iter().cloned().collect();
        Policy {
            level: ps.pod_security_level,
            allow_host_path: self.allow_host_path,
            allow_privileged: self.allow_privileged,
            allow_host_network: self.allow_host_network,
            allow_host_pid: self.allow_host_pid,
            allow_host_ipc: self.allow_host_ipc,
            volume_types: set(&ps.allow_volume_types),
            extra_capabilities: set(&ps.allow_capabilities),
            extra_sysctls: set(&ps.allow_sysctls),
            kept_security_annotations: ps.keep_security_annotations.0.clone(),
        }
    }

    /// The namespace mapping, protecting the plugin's own namespace (when
    /// in a cluster) and the bastion's (even with --no-bastion when named).
    pub fn namespaces(&self) -> NamespaceMapper {
        let bastion = match self.bastion_spec() {
            Some(spec) => Some(spec.namespace),
            None => self.bastion_namespace.clone(),
        };
        NamespaceMapper::new(
            self.namespace_prefix.clone(),
            self.namespace_prefix_exclusions.0.clone(),
        )
        .with_protected(bastion.into_iter().chain(crate::bastion::own_namespace()))
    }

    /// The start-up checks of what no request may undo: the namespace
    /// mapping stays under the prefix and off reserved namespaces.
    pub fn check_namespaces(&self) -> Result<NamespaceMapper, ConfigError> {
        let m = self.namespaces();
        m.check_config()?;
        Ok(m)
    }

    pub fn translate_config(&self, remote_minor: u32) -> TranslateConfig {
        TranslateConfig {
            namespaces: self.namespaces(),
            node_selector: self.node_selector.0.clone(),
            tolerations: self.node_tolerations.0.clone(),
            drop_kubernetes_env: !self.keep_kubernetes_env,
            policy: self.policy(),
            remote_minor,
        }
    }

    /// The bastion to install, `None` with `--no-bastion`.
    pub fn bastion_spec(&self) -> Option<BastionSpec> {
        if self.no_bastion {
            return None;
        }
        let namespace = self
            .bastion_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(crate::bastion::own_namespace)
            .unwrap_or_else(|| crate::bastion::DEFAULT_NAMESPACE.to_owned());
        let mut spec = BastionSpec::new(namespace, self.bastion_image.clone());
        spec.name = self.bastion_name.clone();
        spec.image_pull_policy = self.bastion_image_pull_policy.clone();
        spec.replicas = self.bastion_replicas;
        spec.watch_namespace = self
            .bastion_watch_namespace
            .clone()
            .filter(|n| !n.is_empty());
        // The bastion forwards only pods in namespaces of this instance.
        spec.plugin_instance = Some(self.instance.clone());
        Some(spec)
    }

    /// What the namespace GC needs: never the bastion's namespace nor an
    /// exclusion.
    pub fn namespace_gc_config(&self) -> crate::namespace_gc::GcConfig {
        let mut protected = self.namespace_prefix_exclusions.0.clone();
        if let Some(b) = self.bastion_spec() {
            protected.push(b.namespace);
        }
        protected.extend(self.bastion_namespace.clone());
        crate::namespace_gc::GcConfig {
            instance: self.instance.clone(),
            prefix: self.namespace_prefix.clone(),
            protected,
            after: self.namespace_gc_after,
            every: self.namespace_gc_interval,
        }
    }

    pub fn sweep_policy(&self) -> SweepPolicy {
        SweepPolicy {
            active_after: self.orphan_after,
            finished_after: self.orphan_finished_after,
            caller_alive_within: self.caller_alive_within,
        }
    }
}

#[cfg(test)]
mod tests;
