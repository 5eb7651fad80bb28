//! offload-runtime: what the four binaries (provider, plugin, standalone
//! gateway-manager, bastion) share so that each `main.rs` stays a few lines.
//!
//! - [`shutdown`]: one `CancellationToken`, cancelled on SIGTERM/SIGINT.
//! - [`telemetry`]: tracing setup (one JSON layout, no ANSI colours off a terminal).
//! - [`admin`]: the admin router (`/metrics`, `/healthz`, `/readyz`) over the
//!   process's one metrics registry ([`admin::SharedRegistry`]), where every
//!   component's `Metrics` registers under its own prefix (an
//!   [`admin::Registrar`] builds and registers a metrics struct in one
//!   literal).
//! - [`tls`]: loading certificates and serving HTTPS (and plain HTTP) with a
//!   handshake timeout and a graceful drain; a verified client certificate
//!   reaches handlers as [`tls::PeerCertificates`]. No certificate is generated
//!   here (the remote plugin links this crate and must not link rcgen).
//! - [`duration`]: the one duration syntax of every flag (`500ms`, `30s`, `5m`, `2d`).
//! - [`cli`]: clap helpers for flags shared by two binaries that used to spell
//!   them differently (former flags as aliases, former variables as fallbacks).
//! - [`kubeapi`]: Kubernetes write helpers (server-side apply, delete ignoring
//!   404, create-once key Secrets) and the field-manager names.

pub mod admin;
pub mod cli;
pub mod duration;
pub mod kubeapi;
pub mod shutdown;
pub mod spdy;
pub mod telemetry;
pub mod tls;
