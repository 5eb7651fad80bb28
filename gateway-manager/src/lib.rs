//! gateway-manager: the local half of the tunnel.
//!
//! It owns the one SSH gateway of a local cluster (a stock OpenSSH `sshd`
//! Deployment listening on 2222, a ClusterIP and a NodePort Service, its
//! config and an ed25519 host key kept in a Secret), allocates one gateway
//! port per TCP `containerPort` of each offloaded pod, writes the tunnel
//! annotations the plugin and the bastion read, and keeps local Services whose
//! Endpoints point at the gateway pod on those ports while the tunnels are up.
//!
//! # API for the provider
//!
//! ```ignore
//! use gateway_manager::{GatewayManager, Settings, objects::GatewaySpec};
//!
//! // Once at start-up: apply the gateway objects, then rebuild the port
//! // allocations from the annotations of live pods bound to the virtual node
//! // that gateway-manager signed (`settings.node_name`, [`signature`]).
//! let mut settings = Settings::new(
//!     GatewaySpec {
//!         namespace: "offload-system".into(),
//!         name: "offload-gateway".into(),
//!         image: gateway_manager::DEFAULT_GATEWAY_IMAGE.into(),
//!         image_pull_policy: "IfNotPresent".into(),
//!         service_port: 2222,
//!         node_port: Some(30222),
//!     },
//!     "10.201.0.1:30222", // how the remote side reaches the gateway
//! );
//! settings.bastion_public_key = Some(key_from_plugin); // or later: set_bastion_key()
//! let gm = GatewayManager::start(client.clone(), settings).await?;
//! tokio::spawn(gm.clone().run_until(Duration::from_secs(1), cancel.clone())); // probes + Endpoints
//!
//! // Before the plugin's create (idempotent; Ok(None) when the pod has no TCP port):
//! //   allocates ports, merges the tunnel annotations into the pod, applies the
//! //   pod's Service `<pod>-tunnel` (and `interlink.io/tunnel-service` if set).
//! //   Send the *returned* annotations along with the pod to the plugin.
//! //   Err(Error::Alloc(..)) = range exhausted: a Warning event is on the pod;
//! //   do not offload it yet, retry later.
//! let tunnel = gm.prepare_pod(&pod).await?;
//!
//! // Status: gm.tunnel_up(uid) -> Option<bool>; manager::tunnel_condition(up)
//! // is the pod condition (`tunnel.offload.dev/Up`) to merge into the status.
//!
//! // On delete (after the plugin's delete): releases ports, deletes Services.
//! gm.release_pod(&pod).await?;
//! ```
//!
//! # Modules
//!
//! The tunnel contract (annotation codec, port newtypes and range, sshd
//! policy, SSH keys) lives in [`offload_wire::tunnel`], shared with the
//! remote side.
//!
//! Pure (no `kube::Client`, plain unit tests):
//! - [`ports`]: the allocator: range, next-fit, all-or-nothing,
//!   idempotent per pod UID, rebuilt from live pods' annotations.
//! - [`objects`]: the Deployment, Services, ConfigMap, Secret and tunnel
//!   Endpoints as plain values (fields Kubernetes 1.20 knows only).
//! - [`plan`]: the Endpoints plan: from the probe results, which pods are up
//!   and what every tunnel Service's Endpoints list.
//! - [`signature`]: the HMAC over each allocation gateway-manager writes, so
//!   a restart takes back only allocations it provably wrote, for pods bound
//!   to its virtual node.
//! - [`pod`]: what the tunnel reads from a pod (TCP containerPorts, its
//!   tunnel as annotated, which gateway annotated it).
//! - [`webhook::admission`]: the admission decisions and the JSON patch.
//!
//! Kubernetes I/O, thin around the above (every write through
//! `offload_runtime::kubeapi`: server-side apply under one field manager,
//! merge patches under it too, deletes that ignore 404):
//! - [`manager`]: [`GatewayManager`]: gateway objects and host key, pod
//!   annotations and Services, the sync loop (probe, plan, write).
//! - [`webhook`]: standalone mode, next to another Virtual Kubelet: a
//!   mutating admission webhook that reserves ports and writes the same
//!   annotations at pod creation, and a pod watcher (the node's pods and
//!   the unscheduled ones only) that hands reservations over to the created
//!   pods (`prepare_pod`) and releases them on delete; served by
//!   `offload_runtime::tls::serve_tls`.
//! - [`metrics`]: the embedded manager's metrics, read from its state at
//!   scrape time into the provider's one registry.
//! - [`standalone`]: the `gateway-manager` binary's flags and wiring (its
//!   `main.rs` only parses, sets up logging and waits for a signal).
//! - [`args`]: the gateway flags ([`args::GatewayArgs`]) the provider and
//!   the standalone binary share (`#[command(flatten)]`), so both take the
//!   same names; the standalone binary's former names still work.
//!
//! Long-running tasks stop on a `tokio_util::sync::CancellationToken`.

pub mod args;
pub mod manager;
pub mod metrics;
pub mod objects;
pub mod plan;
pub mod pod;
pub mod ports;
pub mod signature;
pub mod standalone;
pub mod webhook;

pub use manager::{Error, GatewayManager, Settings, TunnelPod};

/// The gateway image of this release (`deploy/images/gateway.sh` builds it);
/// the default of `--gateway-image` in the provider and the standalone binary.
pub const DEFAULT_GATEWAY_IMAGE: &str = "localhost/offload/gateway:1.0";
