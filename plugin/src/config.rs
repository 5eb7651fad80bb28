//! Configuration: one clap struct, with env fallbacks and an optional config
//! file (TOML or YAML) whose keys are the long flag names. Precedence:
//! command line > environment > config file > built-in default.
//!
//! For compatibility with the Python plugin, its environment overrides are
//! honoured where the meaning is the same: `OFFLOADING_NAMESPACE_PREFIX`,
//! `OFFLOADING_NAMESPACE_PREFIX_EXCLUSIONS` (JSON list),
//! `OFFLOADING_NODE_SELECTOR` (JSON object), `OFFLOADING_NODE_TOLERATIONS`
//! (JSON list) and `K8S_KUBECONFIG_PATH`.

use std::{
    collections::BTreeMap, ffi::OsString, net::SocketAddr, path::PathBuf, str::FromStr,
    time::Duration,
};

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use k8s_openapi::api::core::v1::Toleration;
use offload_bastion::install::BastionSpec;

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
}

/// Where the API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a path, e.g. unix:///var/run/plugin.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        let addr = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("{s:?} is neither host:port nor unix:///path ({e})"))
    }
}

/// `key=value,...` or a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValues(pub BTreeMap<String, String>);

fn parse_key_values(s: &str) -> Result<KeyValues, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(KeyValues::default());
    }
    if t.starts_with('{') {
        return serde_json::from_str(t)
            .map(KeyValues)
            .map_err(|e| format!("not a JSON object of strings: {e}"));
    }
    let mut out = BTreeMap::new();
    for pair in t.split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(KeyValues(out))
}

/// A JSON list of strings, or a comma-separated list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

fn parse_string_list(s: &str) -> Result<StringList, String> {
    let t = s.trim();
    if t.starts_with('[') {
        return serde_json::from_str(t)
            .map(StringList)
            .map_err(|e| format!("not a JSON list of strings: {e}"));
    }
    Ok(StringList(
        t.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
    ))
}

/// A JSON list of Kubernetes tolerations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tolerations(pub Vec<Toleration>);

fn parse_tolerations(s: &str) -> Result<Tolerations, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(Tolerations::default());
    }
    serde_json::from_str(t)
        .map(Tolerations)
        .map_err(|e| format!("not a JSON list of tolerations: {e}"))
}

/// `90`, `90s`, `15m`, `24h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86400),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 24h"))?;
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// `1048576`, `512KiB`, `8MiB`, `8M`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 8MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1024,
        "M" | "MB" | "MiB" => 1024 * 1024,
        "G" | "GB" | "GiB" => 1024 * 1024 * 1024,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    Ok(n.saturating_mul(mult))
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

    /// Remote namespace = <prefix>-<local namespace>. Empty: same name as locally.
    #[arg(
        long,
        env = "OFFLOADING_NAMESPACE_PREFIX",
        default_value = "offloading"
    )]
    pub namespace_prefix: String,

    /// Local namespaces mapped to the remote namespace of the same name
    /// (comma list or JSON list).
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

    /// Policy: allow hostPath volumes.
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

    /// Largest request body accepted (bytes, or with KiB/MiB/GiB). Bigger
    /// bodies get 413.
    #[arg(long, env = "OFFLOAD_PLUGIN_BODY_LIMIT", value_parser = parse_size, default_value = "16MiB")]
    pub body_limit: usize,

    /// Disable the orphan sweep.
    #[arg(long, env = "OFFLOAD_PLUGIN_NO_SWEEP", action = ArgAction::SetTrue)]
    pub no_sweep: bool,

    /// How often the orphan sweep runs.
    #[arg(long, env = "OFFLOAD_PLUGIN_SWEEP_INTERVAL", value_parser = parse_duration, default_value = "60s")]
    pub sweep_interval: Duration,

    /// A running or pending remote pod whose UID no caller mentioned (create,
    /// status, logs) for this long, while status calls for other pods keep
    /// arriving, is an orphan and is deleted with what it owns.
    #[arg(long, env = "OFFLOAD_PLUGIN_ORPHAN_AFTER", value_parser = parse_duration, default_value = "30m")]
    pub orphan_after: Duration,

    /// Same for finished remote pods (no longer polled by the caller).
    #[arg(long, env = "OFFLOAD_PLUGIN_ORPHAN_FINISHED_AFTER", value_parser = parse_duration, default_value = "24h")]
    pub orphan_finished_after: Duration,

    /// The caller counts as alive only if a status call arrived within this
    /// window; otherwise nothing is swept (a dead caller is not a dead pod).
    #[arg(long, env = "OFFLOAD_PLUGIN_CALLER_ALIVE_WITHIN", value_parser = parse_duration, default_value = "5m")]
    pub caller_alive_within: Duration,

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

fn file_values(path: &PathBuf) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let value: serde_json::Value = if yaml {
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?
    } else {
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?
    };
    let serde_json::Value::Object(map) = value else {
        return Err(ConfigError::Parse {
            path: path.clone(),
            message: "the top level must be a table/mapping".into(),
        });
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            // Lists of strings become comma lists; everything else JSON.
            serde_json::Value::Array(ref items)
                if items.iter().all(|i| i.is_string())
                    && k != "node-tolerations"
                    && k != "node_tolerations" =>
            {
                items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        out.insert(k, s);
    }
    Ok(out)
}

fn config_path_from_args(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("OFFLOAD_PLUGIN_CONFIG").map(PathBuf::from)
}

impl PluginConfig {
    /// Parses command line, environment and config file.
    pub fn load<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Self::command();
        if let Some(path) = config_path_from_args(&args) {
            let values = file_values(&path)?;
            let ids: Vec<String> = cmd
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .collect();
            for (key, value) in values {
                let id = key.replace('-', "_");
                if !ids.contains(&id) || id == "config" {
                    return Err(ConfigError::UnknownKey { path, key });
                }
                cmd = cmd.mut_arg(id, |a| a.default_value(value));
            }
        }
        let matches = cmd.try_get_matches_from(args)?;
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// A configuration for tests: loopback on an ephemeral port, no
    /// authentication, prefix `offloading`, default policy, no sweep.
    pub fn for_tests() -> Self {
        let mut c = Self::parse_from(["offload-plugin", "--insecure-no-auth"]);
        c.listen = Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.namespace_prefix = "offloading".into();
        c.namespace_prefix_exclusions = StringList::default();
        c.node_selector = KeyValues::default();
        c.node_tolerations = Tolerations::default();
        c.no_sweep = true;
        c.no_bastion = true;
        c.token_file = None;
        c.tls_cert = None;
        c.tls_key = None;
        c.tls_client_ca = None;
        c
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
        Policy {
            allow_host_path: self.allow_host_path,
            allow_privileged: self.allow_privileged,
            allow_host_network: self.allow_host_network,
            allow_host_pid: self.allow_host_pid,
            allow_host_ipc: self.allow_host_ipc,
        }
    }

    pub fn namespaces(&self) -> NamespaceMapper {
        NamespaceMapper::new(
            self.namespace_prefix.clone(),
            self.namespace_prefix_exclusions.0.clone(),
        )
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
        Some(spec)
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
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn listen_forms() {
        assert_eq!(
            "unix:///run/p.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/p.sock".into()))
        );
        assert_eq!(
            "http://0.0.0.0:4000".parse::<Listen>(),
            Ok(Listen::Tcp("0.0.0.0:4000".parse().expect("addr")))
        );
        assert!("nonsense".parse::<Listen>().is_err());
        assert!("unix://".parse::<Listen>().is_err());
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("8XB").is_err());
        assert_eq!(
            parse_key_values(r#"{"a":"b"}"#).map(|k| k.0),
            Ok([("a".to_string(), "b".to_string())].into())
        );
        assert_eq!(parse_key_values("a=b, c=d").map(|k| k.0.len()), Ok(2));
        assert_eq!(
            parse_string_list(r#"["x","y"]"#).map(|l| l.0),
            Ok(vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(parse_string_list("").map(|l| l.0), Ok(vec![]));
        assert_eq!(
            parse_tolerations(r#"[{"key":"k","operator":"Exists"}]"#).map(|t| t.0.len()),
            Ok(1)
        );
    }

    #[test]
    fn defaults_refuse_to_run_without_auth() {
        let c = PluginConfig::load(["offload-plugin"]).expect("parses");
        assert_eq!(
            c.listen,
            Listen::Tcp("0.0.0.0:30400".parse().expect("addr"))
        );
        assert!(matches!(c.auth_token(), Err(ConfigError::NoAuth)));
        let c = PluginConfig::load(["offload-plugin", "--insecure-no-auth"]).expect("parses");
        assert!(matches!(c.auth_token(), Ok(None)));
    }

    #[test]
    fn bastion_flags() {
        let c = PluginConfig::load(["offload-plugin", "--insecure-no-auth"]).expect("parses");
        let spec = c.bastion_spec().expect("on by default");
        assert_eq!(spec.image, DEFAULT_BASTION_IMAGE);
        assert_eq!(spec.name, "offload-bastion");
        assert_eq!(spec.watch_namespace, None);
        assert_eq!(spec.replicas, 2, "a standby by default");
        assert!(spec.leader_election());
        let c = PluginConfig::load([
            "offload-plugin",
            "--insecure-no-auth",
            "--bastion-replicas=1",
        ])
        .expect("parses");
        assert!(!c.bastion_spec().expect("on").leader_election());
        assert!(
            PluginConfig::load([
                "offload-plugin",
                "--insecure-no-auth",
                "--bastion-replicas=0"
            ])
            .is_err()
        );
        let c = PluginConfig::load([
            "offload-plugin",
            "--bastion-namespace",
            "tunnels",
            "--bastion-watch-namespace",
            "work",
            "--bastion-image",
            "reg/b:2",
        ])
        .expect("parses");
        let spec = c.bastion_spec().expect("on");
        assert_eq!(
            (spec.namespace.as_str(), spec.image.as_str()),
            ("tunnels", "reg/b:2")
        );
        assert_eq!(spec.watch_namespace.as_deref(), Some("work"));
        let c = PluginConfig::load(["offload-plugin", "--no-bastion"]).expect("parses");
        assert!(c.bastion_spec().is_none());
        assert!(PluginConfig::for_tests().bastion_spec().is_none());
        PluginConfig::command().debug_assert();
    }

    #[test]
    fn config_file_sets_defaults_and_cli_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml_path = dir.path().join("plugin.toml");
        std::fs::write(
            &toml_path,
            "listen = \"127.0.0.1:4000\"\nallow-privileged = true\nnamespace-prefix-exclusions = [\"a\", \"b\"]\nnode_selector = { pool = \"gpu\" }\nbody-limit = \"1MiB\"\n",
        )
        .expect("write");
        let p = toml_path.to_string_lossy().to_string();
        let c = PluginConfig::load(["offload-plugin", "--config", &p]).expect("parses");
        assert_eq!(
            c.listen,
            Listen::Tcp("127.0.0.1:4000".parse().expect("addr"))
        );
        assert!(c.allow_privileged);
        assert_eq!(c.namespace_prefix_exclusions.0, vec!["a", "b"]);
        assert_eq!(
            c.node_selector.0.get("pool").map(String::as_str),
            Some("gpu")
        );
        assert_eq!(c.body_limit, 1024 * 1024);
        let c = PluginConfig::load([
            "offload-plugin",
            "--config",
            &p,
            "--listen",
            "unix:///tmp/x.sock",
        ])
        .expect("parses");
        assert_eq!(c.listen, Listen::Unix("/tmp/x.sock".into()));

        let yaml_path = dir.path().join("plugin.yaml");
        std::fs::write(
            &yaml_path,
            "insecure-no-auth: true\nnamespace-prefix: remote\n",
        )
        .expect("write");
        let y = yaml_path.to_string_lossy().to_string();
        let c = PluginConfig::load(["offload-plugin", "--config", &y]).expect("parses");
        assert!(c.insecure_no_auth);
        assert_eq!(c.namespace_prefix, "remote");

        std::fs::write(&toml_path, "no-such-flag = 1\n").expect("write");
        assert!(matches!(
            PluginConfig::load(["offload-plugin", "--config", &p]),
            Err(ConfigError::UnknownKey { .. })
        ));
    }
}
