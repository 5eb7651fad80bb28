//! offload-runtime: what the four binaries (provider, plugin, standalone
//! gateway-manager, bastion) share so that each `main.rs` stays a few lines.
//!
//! - [`shutdown`]: one `CancellationToken`, cancelled on SIGTERM/SIGINT.
//! - [`telemetry`]: tracing setup (one JSON layout, no ANSI colours off a terminal).
//! - [`admin`]: the admin router (`/metrics`, `/healthz`, `/readyz`).
//! - [`tls`]: loading certificates and serving HTTPS with a handshake timeout
//!   and a graceful drain.
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
pub mod telemetry;
pub mod tls;
