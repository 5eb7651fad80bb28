//! The provider's one configuration struct (flags with environment fallbacks).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use gateway_manager::args::GatewayArgs;
use offload_runtime::duration::parse_duration;
use offload_runtime::telemetry::LogArgs;

/// A `key=value:Effect` taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaintArg {
    pub key: String,
    pub value: String,
    pub effect: String,
}

pub fn parse_taint(s: &str) -> Result<TaintArg, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {s:?} must be key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "taint effect {effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(format!("taint {s:?} has an empty key"));
    }
    Ok(TaintArg {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
    })
}

/// A `key=value` label.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must be key=value"))?;
    if k.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((k.into(), v.into()))
}

/// A byte size: a number with an optional `KiB`, `MiB`, `GiB` (or `K`, `M`,
/// `G`, `KB`, `MB`, `GB`: powers of 1024 too) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?} must be a number with an optional KiB/MiB/GiB suffix"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("size {s:?}: unknown unit {other:?}")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if v == 0 {
        return Err(format!("size {s:?} must be above 0"));
    }
    Ok(v)
}

/// Which HTTP API the provider talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PluginMode {
    /// Our plugin (or any interLink plugin) directly: `RetrievedPodData` to
    /// `POST /create`, `POST /delete`, `GET /status`, `GET /getLogs`.
    Plugin,
    /// An interLink API server in front of any plugin: `PodCreateRequests` to
    /// `POST /create`, `DELETE /delete`, `POST /pinglink`.
    Interlink,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "offload-provider",
    version,
    about = "Virtual Kubelet: registers a virtual node in the local cluster and runs the pods bound \
             to it on a remote cluster through the interLink plugin protocol."
)]
pub struct Config {
    /// Name of the virtual node.
    #[arg(long, env = "NODE_NAME", default_value = "virtual-node")]
    pub node_name: String,

    /// IP address the local apiserver uses to reach this provider's kubelet
    /// API (node InternalIP). Default: the local address used to reach the
    /// apiserver.
    #[arg(long, env = "NODE_IP")]
    pub node_ip: Option<IpAddr>,

    /// Extra node labels, `key=value` (repeatable or comma separated).
    /// `virtual-node.interlink/type=virtual-kubelet`, `kubernetes.io/role=agent`,
    /// `kubernetes.io/hostname` and `kubernetes.io/os` are always set.
    #[arg(long = "node-label", env = "NODE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,

    /// Extra node taints, `key[=value]:Effect` (repeatable or comma separated).
    #[arg(long = "node-taint", env = "NODE_TAINTS", value_delimiter = ',', value_parser = parse_taint)]
    pub node_taints: Vec<TaintArg>,

    /// Do not add the interLink taint `virtual-node.interlink/no-schedule=true:NoSchedule`.
    #[arg(long, env = "NO_DEFAULT_TAINT")]
    pub no_default_taint: bool,

    /// Node CPU capacity, pinned: wins over what the plugin's ping reports
    /// (our plugin reports the remote cluster's allocatable). Unset: the
    /// ping's figure, else 100.
    #[arg(long, env = "NODE_CPU")]
    pub cpu: Option<String>,

    /// Node memory capacity, pinned (as --cpu). Unset: the ping's, else 3000Gi.
    #[arg(long, env = "NODE_MEMORY")]
    pub memory: Option<String>,

    /// Node pod capacity, pinned (as --cpu). Unset: the ping's, else 10000.
    #[arg(long, env = "NODE_PODS")]
    pub pods: Option<String>,

    /// Plugin or interLink API base URL: `http://host:port`, `https://...` or
    /// `unix:///path/to.sock`.
    #[arg(long, env = "PLUGIN_URL", default_value = "http://127.0.0.1:4000")]
    pub plugin_url: String,

    /// Protocol flavour of `--plugin-url`.
    #[arg(long, env = "PLUGIN_MODE", value_enum, default_value_t = PluginMode::Plugin)]
    pub plugin_mode: PluginMode,

    /// File holding a bearer token sent to the plugin (re-read on every call,
    /// so rotation works). Never logged.
    #[arg(long, env = "PLUGIN_TOKEN_FILE")]
    pub plugin_token_file: Option<PathBuf>,

    /// PEM CA bundle to verify an `https://` plugin URL: only certificates it
    /// signed, for the URL's host name (the plugin chart generates this CA:
    /// the `ca.crt` of its TLS Secret). Without it and without
    /// --plugin-cert-sha256: the system's roots.
    #[arg(long, env = "PLUGIN_CA_FILE")]
    pub plugin_ca_file: Option<PathBuf>,

    /// SHA-256 of the plugin's serving certificate (`sha256:<64 hex>`, colons
    /// allowed): only that exact certificate is accepted, whatever its names
    /// (for a plugin reached by node IP). The plugin chart prints it.
    #[arg(long, env = "PLUGIN_CERT_SHA256", value_name = "FINGERPRINT", value_parser = crate::tls::parse_fingerprint)]
    pub plugin_cert_sha256: Option<crate::tls::CertFingerprint>,

    /// Client certificate (PEM) presented to the plugin (mTLS; the plugin's
    /// --tls-client-ca), with --plugin-client-key-file.
    #[arg(
        long,
        env = "PLUGIN_CLIENT_CERT_FILE",
        requires = "plugin_client_key_file"
    )]
    pub plugin_client_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --plugin-client-cert-file.
    #[arg(
        long,
        env = "PLUGIN_CLIENT_KEY_FILE",
        requires = "plugin_client_cert_file"
    )]
    pub plugin_client_key_file: Option<PathBuf>,

    /// Allow a plain `http://` plugin URL. Anyone on the path then reads the
    /// bearer token and can answer in the plugin's name (including the
    /// bastion key the gateway authorizes): for tests and loopback only;
    /// logged as a warning at start.
    #[arg(long, env = "PLUGIN_INSECURE")]
    pub plugin_insecure: bool,

    /// Largest plugin answer read (`64MiB`, `512KiB`, bytes); a bigger one is
    /// cut and the call fails (a broken or hostile plugin cannot exhaust
    /// the provider's memory). Log streams are not capped.
    #[arg(long, env = "PLUGIN_MAX_RESPONSE_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub plugin_max_response_size: u64,

    /// Timeout of one plugin call (log streams excepted).
    #[arg(long, env = "PLUGIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub plugin_timeout: Duration,

    /// Connect timeout for plugin calls.
    #[arg(long, env = "PLUGIN_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub plugin_connect_timeout: Duration,

    /// Retries of a plugin call that failed to connect.
    #[arg(long, env = "PLUGIN_RETRIES", default_value_t = 3)]
    pub plugin_retries: u32,

    /// Interval between status polls (interLink's VK uses 5s).
    #[arg(long, env = "STATUS_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub status_interval: Duration,

    /// Pods per status request.
    #[arg(long, env = "STATUS_BATCH", default_value_t = 100)]
    pub status_batch: usize,

    /// Follow statuses through the plugin's status-change stream when it
    /// offers one (`GET /capabilities` lists `statusWatch`): the cost follows
    /// the rate of change, not the number of pods. Off, or with a plugin
    /// that does not offer it (the interLink API server): `/status` is
    /// polled every --status-interval, as interLink does.
    #[arg(long, env = "STATUS_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub status_watch: bool,

    /// With the stream: how often every followed pod's status is read again
    /// through `/status` anyway (a safety net; the stream's resume tokens
    /// already replay what a restart missed). Against a plugin that offers
    /// the stream but not `statusFollow`, at most 4m: its orphan sweep then
    /// counts only `/status` calls as signs of life. While polling: how often
    /// (at most 5m) the plugin is asked again whether it offers the stream.
    #[arg(long, env = "STATUS_RESYNC", default_value = "30m", value_parser = parse_duration)]
    pub status_resync: Duration,

    /// With the stream: how often the plugin is told which pods this node
    /// follows (`/status/follow`: a count and a digest of their UIDs, the
    /// UIDs themselves only when they differ from the plugin's). It is the
    /// plugin's orphan sweep's sign of life: keep it well under the plugin's
    /// --caller-alive-within (5m).
    #[arg(long, env = "STATUS_FOLLOW_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub status_follow_interval: Duration,

    /// Plugin calls in flight at once for create, delete and status (more
    /// wait for a free slot). Keep it under the plugin's
    /// --max-concurrent-requests (64), or it sheds them with 503.
    #[arg(long, env = "PLUGIN_MAX_REQUESTS", default_value_t = 32)]
    pub plugin_max_requests: usize,

    /// Status writes to the local apiserver at once, from the stream. Changes
    /// of one pod that arrive before its write are coalesced into one write
    /// of the latest.
    #[arg(long, env = "STATUS_WRITE_CONCURRENCY", default_value_t = 8)]
    pub status_write_concurrency: usize,

    /// Interval between plugin pings (node readiness).
    #[arg(long, env = "PING_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Consecutive failed pings before the node is tainted plugin-unreachable (it stays Ready).
    #[arg(long, env = "PING_FAILURES", default_value_t = 2)]
    pub ping_failures: u32,

    /// Pods created or deleted at once (the work queue's workers); their
    /// plugin calls are bounded by --plugin-max-requests too.
    #[arg(long, env = "WORKERS", default_value_t = 64)]
    pub workers: usize,

    /// How long a pod may wait for a missing ConfigMap/Secret before it fails.
    #[arg(long, env = "MISSING_REF_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub missing_ref_timeout: Duration,

    /// How long plugin delete errors are retried before the pod is removed
    /// locally anyway (with a warning event).
    #[arg(long, env = "DELETE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub delete_timeout: Duration,

    /// Backoff of retried pod operations: first delay.
    #[arg(long, env = "RETRY_BASE", default_value = "500ms", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Backoff of retried pod operations: maximum delay.
    #[arg(long, env = "RETRY_MAX", default_value = "30s", value_parser = parse_duration)]
    pub retry_max: Duration,

    /// Lease duration in kube-node-lease (renewed every quarter of it).
    #[arg(long, env = "LEASE_DURATION", default_value_t = 40)]
    pub lease_duration_seconds: i32,

    /// Ship service-account token Secrets of the local cluster to the remote
    /// side (off: they are local credentials; the remote cluster injects its own).
    #[arg(long, env = "SHIP_SERVICE_ACCOUNT_TOKENS")]
    pub ship_service_account_tokens: bool,

    /// Delete the Node object on shutdown (default: leave it NotReady).
    #[arg(long, env = "DELETE_NODE_ON_SHUTDOWN")]
    pub delete_node_on_shutdown: bool,

    /// Address of the kubelet HTTPS API (logs, healthz, metrics).
    #[arg(long, env = "KUBELET_ADDR", default_value = "0.0.0.0:10250")]
    pub kubelet_addr: SocketAddr,

    /// Port advertised in the node's daemonEndpoints (default: the port of
    /// --kubelet-addr, or the bound port when it is 0).
    #[arg(long, env = "KUBELET_ADVERTISED_PORT")]
    pub kubelet_advertised_port: Option<u16>,

    /// The kubelet API's serving certificate; without it a self-signed one
    /// for the node name and IP is made at start.
    #[command(flatten)]
    pub serving: offload_runtime::tls::ServingCertArgs,

    /// CA bundle (PEM) whose client certificates are accepted on the kubelet
    /// API (the one that signs the apiserver's --kubelet-client-certificate).
    /// Default in a pod: the cluster CA of its service account
    /// (`/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`), which signs
    /// that certificate in kubeadm-style clusters; otherwise none (bearer
    /// tokens only).
    #[arg(long, env = "CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Check bearer tokens on the kubelet API with TokenReview.
    #[arg(long, env = "TOKEN_REVIEW", default_value_t = true, action = clap::ArgAction::Set)]
    pub token_review: bool,

    /// Authorization of the kubelet API (SubjectAccessReview per request)
    /// and the TokenReview cache and cap.
    #[command(flatten)]
    pub kubelet_auth: crate::kubelet_api::KubeletAuthArgs,

    /// Plain-HTTP admin server: /metrics, /healthz, /readyz (empty: off).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9099")]
    pub admin_addr: Option<SocketAddr>,

    #[command(flatten)]
    pub log: LogArgs,

    /// The gateway of the tunnel (the embedded gateway-manager); the same
    /// flags as the standalone `gateway-manager`.
    #[command(flatten, next_help_heading = TUNNEL)]
    pub gateway: GatewayArgs,

    /// The bastion's SSH public key (`ssh-ed25519 AAAA...`), authorized on the
    /// gateway. Without it the provider asks our plugin (`GET
    /// /bastion/publicKey`); required with --plugin-mode interlink.
    #[arg(long, env = "BASTION_PUBLIC_KEY", value_name = "KEY", help_heading = TUNNEL)]
    pub bastion_public_key: Option<String>,

    /// How often the bastion key is asked from the plugin again. The first
    /// key is pinned (ConfigMap `<gateway name>-bastion-pin`); another key
    /// is refused (Warning Event on the node, metric
    /// `offload_provider_bastion_key_refused`) until the rotation is
    /// accepted by annotating that ConfigMap (docs/setup.md).
    #[arg(long, env = "BASTION_KEY_REFRESH", default_value = "60s", value_parser = parse_duration, help_heading = TUNNEL)]
    pub bastion_key_refresh: Duration,
}

/// `--help` section of the tunnel flags.
const TUNNEL: &str = "Tunnel (off unless --gateway-address is set)";

impl Config {
    /// A config with all defaults and the given node and plugin, for tests
    /// and embedding.
    pub fn for_node(node_name: &str, plugin_url: &str) -> Config {
        let mut c = Config::parse_from(["offload-provider"]);
        c.node_name = node_name.into();
        c.plugin_url = plugin_url.into();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        // The parser is offload_runtime::duration's (tested there); the
        // flags still take what they took.
        let c = Config::parse_from([
            "offload-provider",
            "--retry-base=500ms",
            "--status-interval=3",
            "--plugin-timeout=1.5s",
            "--delete-timeout=2m",
        ]);
        assert_eq!(c.retry_base, Duration::from_millis(500));
        assert_eq!(c.status_interval, Duration::from_secs(3));
        assert_eq!(c.plugin_timeout, Duration::from_millis(1500));
        assert_eq!(c.delete_timeout, Duration::from_secs(120));
        assert!(Config::try_parse_from(["offload-provider", "--ping-interval=5 parsecs"]).is_err());
        assert!(Config::try_parse_from(["offload-provider", "--ping-interval=x"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        for bad in ["", "0", "MiB", "12 parsecs", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plugin_link_flags() {
        let c = Config::parse_from(["offload-provider"]);
        assert!(!c.plugin_insecure);
        assert_eq!(c.plugin_max_response_size, 64 << 20);
        assert_eq!(c.bastion_key_refresh, Duration::from_secs(60));
        let hex = "ab".repeat(32);
        let c = Config::parse_from([
            "offload-provider",
            &format!("--plugin-cert-sha256=SHA256:{hex}"),
            "--plugin-client-cert-file=c.pem",
            "--plugin-client-key-file=k.pem",
        ]);
        assert_eq!(c.plugin_cert_sha256.map(|f| f.0), Some([0xab; 32]));
        assert!(
            Config::try_parse_from(["offload-provider", "--plugin-client-cert-file=c.pem"])
                .is_err(),
            "a client certificate needs its key"
        );
        assert!(Config::try_parse_from(["offload-provider", "--plugin-cert-sha256=abc"]).is_err());
    }

    #[test]
    fn taints_and_labels() {
        assert_eq!(
            parse_taint("a=b:NoSchedule"),
            Ok(TaintArg {
                key: "a".into(),
                value: "b".into(),
                effect: "NoSchedule".into()
            })
        );
        assert_eq!(
            parse_taint("gpu:NoExecute").map(|t| t.value),
            Ok(String::new())
        );
        assert!(parse_taint("a=b").is_err());
        assert!(parse_taint("a=b:Sometimes").is_err());
        assert_eq!(parse_label("x=y"), Ok(("x".into(), "y".into())));
        assert!(parse_label("xy").is_err());
    }

    #[test]
    fn defaults_are_interlink_compatible_and_every_flag_documented() {
        let c = Config::parse_from(["offload-provider"]);
        assert_eq!(c.node_name, "virtual-node");
        assert!(!c.no_default_taint);
        assert!(c.status_interval < Duration::from_secs(5));
        assert_eq!(c.kubelet_addr.port(), 10250);
        Config::command().debug_assert();
        for a in Config::command().get_arguments() {
            assert!(a.get_help().is_some(), "flag {} lacks help", a.get_id());
        }
        let c = Config::parse_from([
            "offload-provider",
            "--node-label=a=b,c=d",
            "--node-taint",
            "x=y:NoSchedule",
            "--plugin-mode",
            "interlink",
        ]);
        assert_eq!(c.node_labels.len(), 2);
        assert_eq!(c.node_taints.len(), 1);
        assert_eq!(c.plugin_mode, PluginMode::Interlink);
    }
}
