//! The gateway flags, one `clap` group shared by the provider (embedded
//! gateway-manager, `#[command(flatten)]` in its `Config`) and the
//! standalone `gateway-manager` binary ([`crate::standalone::Args`]), so both
//! take the same flags and environment variables.
//!
//! The provider's names are canonical. The standalone binary's former names
//! (`--public-address`, `--namespace`, `--sync-secs`, `GATEWAY_MANAGER_*`)
//! still work there: [`STANDALONE_FORMER_NAMES`].

use std::time::Duration;

use clap::Args;
use offload_runtime::cli::Renamed;
use offload_runtime::duration::parse_duration;

use crate::objects::GatewaySpec;
use offload_wire::tunnel::PortRange;
use offload_wire::tunnel::split_host_port;

/// Namespace of the gateway when nothing else says where.
pub const DEFAULT_NAMESPACE: &str = "offload-system";
/// Port of the gateway's ClusterIP Service.
pub const DEFAULT_SERVICE_PORT: u16 = 2222;

/// Where and how the SSH gateway runs, and which ports it hands out.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct GatewayArgs {
    /// HOST[:PORT] at which the remote cluster's bastion reaches the gateway's
    /// SSH server: a local node's IP (the port defaults to --gateway-node-port)
    /// or a load balancer; written into every tunneled pod. In the provider,
    /// setting it turns the tunnel on: every TCP containerPort of an offloaded
    /// pod is then reachable locally through the Service `<pod>-tunnel`, and
    /// pods annotated `interlink.io/tunnel-service: <name>` through the
    /// Service `<name>`.
    #[arg(
        long = "gateway-address",
        env = "GATEWAY_ADDRESS",
        value_name = "HOST[:PORT]"
    )]
    pub address: Option<String>,

    /// Namespace of the gateway (Deployment, Services, host-key Secret).
    /// Default: the provider's own namespace when it runs in the cluster
    /// (created if missing), else `offload-system`.
    #[arg(
        long = "gateway-namespace",
        env = "GATEWAY_NAMESPACE",
        value_name = "GATEWAY_NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// Name of the gateway Deployment and Services.
    #[arg(
        long = "gateway-name",
        env = "GATEWAY_NAME",
        value_name = "GATEWAY_NAME",
        default_value = "offload-gateway"
    )]
    pub name: String,

    /// Image of the gateway (OpenSSH sshd, non-root; deploy/images/gateway.sh).
    #[arg(
        long = "gateway-image",
        env = "GATEWAY_IMAGE",
        value_name = "GATEWAY_IMAGE",
        default_value = crate::DEFAULT_GATEWAY_IMAGE
    )]
    pub image: String,

    /// imagePullPolicy of the gateway container.
    #[arg(
        long = "gateway-image-pull-policy",
        env = "GATEWAY_IMAGE_PULL_POLICY",
        value_name = "GATEWAY_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub image_pull_policy: String,

    /// Port of the gateway's ClusterIP Service.
    #[arg(
        long = "gateway-service-port",
        env = "GATEWAY_SERVICE_PORT",
        value_name = "GATEWAY_SERVICE_PORT",
        default_value_t = DEFAULT_SERVICE_PORT
    )]
    pub service_port: u16,

    /// NodePort of the gateway's SSH Service (0: no NodePort Service; then
    /// --gateway-address must name a port that reaches the gateway).
    #[arg(
        long = "gateway-node-port",
        env = "GATEWAY_NODE_PORT",
        value_name = "GATEWAY_NODE_PORT",
        default_value_t = 30222
    )]
    pub node_port: u16,

    /// Gateway ports handed out to offloaded containerPorts, FIRST-LAST (at
    /// most 4096, none below 1024). A pod that finds it exhausted waits, with
    /// a warning event, until ports are released.
    #[arg(
        long = "gateway-port-range",
        env = "GATEWAY_PORT_RANGE",
        value_name = "GATEWAY_PORT_RANGE",
        default_value = "40000-40999"
    )]
    pub port_range: PortRange,

    /// How often tunnels are probed (pod condition `tunnel.offload.dev/Up`,
    /// Service Endpoints list only tunnels that answer).
    #[arg(
        long = "gateway-sync-interval",
        env = "GATEWAY_SYNC_INTERVAL",
        value_name = "GATEWAY_SYNC_INTERVAL",
        default_value = "1s",
        value_parser = parse_duration
    )]
    pub sync_interval: Duration,
}

/// What is wrong with `--gateway-address`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("--gateway-address {0:?} is not HOST or HOST:PORT")]
    Invalid(String),
    #[error("--gateway-address {0:?} has no port and --gateway-node-port is 0")]
    NoPort(String),
}

/// `HOST[:PORT]` -> `HOST:PORT`, the port defaulting to `node_port`.
pub fn public_address(addr: &str, node_port: u16) -> Result<String, AddressError> {
    let addr = addr.trim();
    if split_host_port(addr).is_some() {
        return Ok(addr.to_owned());
    }
    let bare_host = !addr.is_empty()
        && !addr.contains(['/', ' '])
        && (!addr.contains(':') || (addr.starts_with('[') && addr.ends_with(']')));
    if !bare_host {
        return Err(AddressError::Invalid(addr.to_owned()));
    }
    if node_port == 0 {
        return Err(AddressError::NoPort(addr.to_owned()));
    }
    Ok(format!("{addr}:{node_port}"))
}

impl GatewayArgs {
    /// `--gateway-address` as `HOST:PORT`; `None` when unset or empty.
    pub fn public_address(&self) -> Result<Option<String>, AddressError> {
        self.address
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .map(|a| public_address(a, self.node_port))
            .transpose()
    }

    /// `--gateway-namespace`, else `fallback()` (the provider's own
    /// namespace), else [`DEFAULT_NAMESPACE`].
    pub fn namespace_or(&self, fallback: impl FnOnce() -> Option<String>) -> String {
        self.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(fallback)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    }

    /// The gateway objects' spec in `namespace`.
    pub fn spec(&self, namespace: String) -> GatewaySpec {
        GatewaySpec {
            namespace,
            name: self.name.clone(),
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            service_port: self.service_port,
            node_port: (self.node_port != 0).then_some(self.node_port),
        }
    }
}

const fn renamed(id: &'static str, flag: &'static str, env: &'static str) -> Renamed {
    Renamed {
        id,
        old_flag: Some(flag),
        old_env: Some(env),
    }
}

const fn former_env(id: &'static str, env: &'static str) -> Renamed {
    Renamed {
        id,
        old_flag: None,
        old_env: Some(env),
    }
}

/// The standalone binary's names of these flags before they were shared
/// with the provider: hidden aliases and fallback variables there.
pub const STANDALONE_FORMER_NAMES: &[Renamed] = &[
    renamed(
        "address",
        "public-address",
        "GATEWAY_MANAGER_PUBLIC_ADDRESS",
    ),
    renamed("namespace", "namespace", "GATEWAY_MANAGER_NAMESPACE"),
    renamed("name", "gateway-name", "GATEWAY_MANAGER_GATEWAY_NAME"),
    renamed("image", "gateway-image", "GATEWAY_MANAGER_GATEWAY_IMAGE"),
    renamed(
        "image_pull_policy",
        "image-pull-policy",
        "GATEWAY_MANAGER_IMAGE_PULL_POLICY",
    ),
    renamed(
        "service_port",
        "service-port",
        "GATEWAY_MANAGER_SERVICE_PORT",
    ),
    renamed("node_port", "node-port", "GATEWAY_MANAGER_NODE_PORT"),
    renamed("port_range", "port-range", "GATEWAY_MANAGER_PORT_RANGE"),
    renamed("sync_interval", "sync-secs", "GATEWAY_MANAGER_SYNC_SECS"),
    // The serving certificate flags (offload_runtime::tls::ServingCertArgs)
    // kept their names; only the variables were prefixed.
    former_env("tls_cert_file", "GATEWAY_MANAGER_TLS_CERT_FILE"),
    former_env("tls_key_file", "GATEWAY_MANAGER_TLS_KEY_FILE"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use pretty_assertions::assert_eq;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    #[test]
    fn defaults_and_spec() {
        let g = Cli::parse_from(["x"]).gateway;
        assert_eq!(g.public_address(), Ok(None));
        assert_eq!(g.sync_interval, Duration::from_secs(1));
        assert_eq!(g.image, crate::DEFAULT_GATEWAY_IMAGE);
        assert_eq!(g.namespace_or(|| None), DEFAULT_NAMESPACE);
        assert_eq!(g.namespace_or(|| Some("own".into())), "own");
        let spec = g.spec("ns".into());
        assert_eq!(spec.service_port, 2222);
        assert_eq!(spec.node_port, Some(30222));
        let g = Cli::parse_from([
            "x",
            "--gateway-node-port=0",
            "--gateway-namespace=t",
            "--gateway-sync-interval=500ms",
        ])
        .gateway;
        assert_eq!(g.spec(g.namespace_or(|| None)).node_port, None);
        assert_eq!(g.namespace_or(|| Some("own".into())), "t");
        assert_eq!(g.sync_interval, Duration::from_millis(500));
    }

    #[test]
    fn public_addresses() {
        let ok = |a: &str| Ok(a.to_owned());
        for (addr, node_port, want) in [
            ("10.201.0.1", 30222, ok("10.201.0.1:30222")),
            ("gw.example.org:2222", 30222, ok("gw.example.org:2222")),
            ("[fd00::1]", 30222, ok("[fd00::1]:30222")),
            ("10.0.0.1", 0, Err(AddressError::NoPort("10.0.0.1".into()))),
            (
                "http://x",
                30222,
                Err(AddressError::Invalid("http://x".into())),
            ),
        ] {
            assert_eq!(public_address(addr, node_port), want, "{addr}");
        }
    }
}
