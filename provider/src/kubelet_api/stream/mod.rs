//! `kubectl exec`, `attach` and `port-forward` (and so `cp`) on the virtual
//! node: the kubelet's `/exec/{ns}/{pod}/{container}`,
//! `/attach/{ns}/{pod}/{container}` and `/portForward/{ns}/{pod}`, over the
//! two protocols that reach a kubelet — SPDY/3.1 ([`spdy`]; what kubectl
//! speaks through any apiserver) and WebSocket ([`websocket`]; what a 1.20
//! apiserver passes through from a kubectl that tries it first) — each
//! bridged ([`bridge`]) to the plugin's streaming extension
//! (`offload_wire::stream`), one WebSocket per exec, attach or forwarded
//! TCP connection.
//!
//! Order of checks, as on a kubelet: the gate (nodes/proxy) before this;
//! then the query (400), the pod on this node (404), the protocol (400
//! without upgrade headers, 403 when no version is shared); for exec and
//! attach the plugin's WebSocket is opened before the upgrade, so a plugin
//! without the extension (404) answers 501 and a refusal 400 or 500 with
//! its message, as plain text.

pub mod bridge;
pub mod exec;
pub mod portforward;
pub mod spdy;
pub mod websocket;
pub mod ws_portforward;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use offload_runtime::admin::SharedRegistry;
use offload_wire::stream::{ATTACH_PATH, EXEC_PATH, EXEC_PROTOCOL, ExecQuery, StreamTarget};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{Instrument, info, info_span, warn};

use super::{KubeletState, text};
use crate::client::PluginError;
use exec::SPDY_EXEC_PROTOCOLS;
use portforward::{Forward, SPDY_PORT_FORWARD_PROTOCOL};
use websocket::WS_EXEC_PROTOCOLS;
use ws_portforward::WS_PORT_FORWARD_PROTOCOLS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Gauges of open streams, prefixed `offload_provider_kubelet_`.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    open: Family<KindLabels, Gauge>,
    total: Family<KindLabels, Counter>,
}

impl StreamMetrics {
    pub fn register(registry: &SharedRegistry) -> Self {
        registry.register("offload_provider_kubelet", |r| {
            let m = StreamMetrics {
                open: Family::default(),
                total: Family::default(),
            };
            r.register(
                "streams_open",
                "Open exec, attach and port-forward sessions and forwarded connections \
                 (kind exec, attach, portforward, portforward_connection)",
                m.open.clone(),
            );
            r.register(
                "streams",
                "Exec, attach and port-forward sessions and forwarded connections started",
                m.total.clone(),
            );
            m
        })
    }

    /// Counts one open `kind` until the guard is dropped.
    pub fn open(&self, kind: &'static str) -> OpenGuard {
        let l = KindLabels { kind: kind.into() };
        self.total.get_or_create(&l).inc();
        let g = self.open.get_or_create(&l).clone();
        g.inc();
        OpenGuard(g)
    }

    /// How many `kind` are open now.
    pub fn open_now(&self, kind: &str) -> i64 {
        self.open
            .get_or_create(&KindLabels { kind: kind.into() })
            .get()
    }
}

/// Decrements its gauge when dropped (on every way a stream ends).
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The kubelet's exec/attach query: `command` repeated, and the stream
/// flags by their kubelet names (`input`, `output`, `error`, `tty`, what the
/// apiserver sends) or their user-facing ones (`stdin`, `stdout`, `stderr`),
/// `1` or `true`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    pub fn parse(query: &str) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let flag = |names: &[&str]| {
            pairs
                .iter()
                .any(|(k, v)| names.contains(&k.as_str()) && (v == "1" || v == "true"))
        };
        let mut o = ExecOptions {
            command: pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag(&["input", "stdin"]),
            stdout: flag(&["output", "stdout"]),
            stderr: flag(&["error", "stderr"]),
            tty: flag(&["tty"]),
        };
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // The kubelet's rule: a terminal merges stderr into stdout.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }
}

/// Which upgrade a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    Spdy,
    WebSocket,
}

fn values<'a>(h: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn upgrade_of(h: &HeaderMap) -> Option<Upgrade> {
    if !values(h, "connection").any(|v| v.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let up = values(h, "upgrade").next()?;
    if up.eq_ignore_ascii_case("websocket") {
        Some(Upgrade::WebSocket)
    } else if up.eq_ignore_ascii_case("SPDY/3.1") {
        Some(Upgrade::Spdy)
    } else {
        None
    }
}

/// The first of the client's protocols (in its order) that we serve; the
/// legacy default when the client names none; `Err` with the kubelet's 403.
pub fn negotiate<'a>(
    client: &[&str],
    ours: &[&'a str],
    default: &'a str,
) -> Result<&'a str, Box<Response>> {
    if client.is_empty() {
        return Ok(default);
    }
    client
        .iter()
        .find_map(|c| ours.iter().find(|o| *o == c).copied())
        .ok_or_else(|| {
            let mut r = text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {client:?}, \
                     server accepts {ours:?}"
                ),
            );
            if let Ok(v) = ours.join(", ").parse() {
                r.headers_mut()
                    .insert("X-Accepted-Stream-Protocol-Versions", v);
            }
            Box::new(r)
        })
}

/// The pod `ns/name` on this node, or the kubelet's 404.
fn pod_on_node(
    st: &KubeletState,
    ns: &str,
    name: &str,
) -> Result<std::sync::Arc<Pod>, Box<Response>> {
    st.pods
        .get(&ObjectRef::new(name).within(ns))
        .ok_or_else(|| {
            Box::new(text(
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{name} is not on node {}", st.node_name),
            ))
        })
}

fn target(st: &KubeletState, pod: &Pod, ns: &str, name: &str) -> StreamTarget {
    StreamTarget {
        namespace: ns.into(),
        name: name.into(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: st.node_name.clone(),
    }
}

/// The answer to a plugin that refused to open a stream.
fn refused(what: &str, path: &str, node: &str, e: PluginError) -> Response {
    match e {
        PluginError::Status { status: 404, body } => text(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{what} is not supported on virtual node {node}: the plugin answered 404 on {path} \
                 (a plugin without the streaming extension, or one that does not know this pod): \
                 {body}"
            ),
        ),
        PluginError::Status { status, body } if (400..500).contains(&status) => {
            text(StatusCode::BAD_REQUEST, body)
        }
        e => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}")),
    }
}

/// A `101 Switching Protocols` for `up` with `protocol`.
fn switching(up: &Upgrade, h: &HeaderMap, protocol: &str) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    b = match up {
        Upgrade::Spdy => b
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", protocol),
        Upgrade::WebSocket => {
            let key = h
                .get(header::SEC_WEBSOCKET_KEY)
                .map(|k| derive_accept_key(k.as_bytes()))
                .unwrap_or_default();
            b.header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_ACCEPT, key)
                .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        }
    };
    b.body(axum::body::Body::empty())
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The client's protocols for `up` and the ones we serve there.
fn protocols<'a>(up: &Upgrade, h: &'a HeaderMap) -> Vec<&'a str> {
    match up {
        Upgrade::Spdy => values(h, "x-stream-protocol-version").collect(),
        Upgrade::WebSocket => values(h, "sec-websocket-protocol").collect(),
    }
}

pub async fn exec(
    State(st): State<KubeletState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let span = info_span!("exec", namespace = %ns, pod = %pod, container = %container);
    remote_command(st, "exec", ns, pod, container, req)
        .instrument(span)
        .await
}

pub async fn attach(
    State(st): State<KubeletState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let span = info_span!("attach", namespace = %ns, pod = %pod, container = %container);
    remote_command(st, "attach", ns, pod, container, req)
        .instrument(span)
        .await
}

/// The kubelet's 404 for a container the pod does not have.
fn known_container(pod: &Pod, name: &str, container: &str) -> Result<(), Box<Response>> {
    let known = pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == container)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
            || s.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
    });
    if known {
        return Ok(());
    }
    Err(Box::new(text(
        StatusCode::NOT_FOUND,
        format!("container {container} is not valid for pod {name}"),
    )))
}

/// The upgrade and protocol of an exec or attach request.
fn exec_protocol(h: &HeaderMap) -> Result<(Upgrade, &'static str), Box<Response>> {
    let Some(up) = upgrade_of(h) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )));
    };
    let protocol = match up {
        Upgrade::Spdy => negotiate(&protocols(&up, h), &SPDY_EXEC_PROTOCOLS, "channel.k8s.io")?,
        Upgrade::WebSocket => negotiate(&protocols(&up, h), &WS_EXEC_PROTOCOLS, "channel.k8s.io")
            .map_err(|mut r| {
            // A WebSocket client falls back to SPDY on a failed upgrade.
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        })?,
    };
    Ok((up, protocol))
}

async fn remote_command(
    st: KubeletState,
    what: &'static str,
    ns: String,
    name: String,
    container: String,
    mut req: Request,
) -> Response {
    let opts = match ExecOptions::parse(req.uri().query().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let pod = match pod_on_node(&st, &ns, &name) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Err(r) = known_container(&pod, &name, &container) {
        return *r;
    }
    let h = req.headers().clone();
    let (up, protocol) = match exec_protocol(&h) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (path, op) = if what == "exec" {
        (EXEC_PATH, "stream_exec")
    } else {
        (ATTACH_PATH, "stream_attach")
    };
    let q = ExecQuery {
        target: target(&st, &pod, &ns, &name),
        container,
        command: if what == "exec" {
            opts.command.clone()
        } else {
            vec![]
        },
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
        tty: opts.tty,
    };
    let plugin = match st
        .plugin
        .open_stream(op, path, &q.to_query(), Some(EXEC_PROTOCOL))
        .await
    {
        Ok(ws) => ws,
        Err(e) => {
            warn!(error = %e, "the plugin refused the stream");
            return refused(what, path, &st.node_name, e);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let metrics = st.streams.clone();
    info!(
        protocol,
        tty = opts.tty,
        stdin = opts.stdin,
        "{what} started"
    );
    tokio::spawn(
        async move {
            let _open = metrics.open(what);
            let io = match on_upgrade.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    warn!(error = %e, "upgrade failed");
                    return;
                }
            };
            match up {
                Upgrade::Spdy => exec::serve_spdy(io, protocol, &opts, plugin).await,
                Upgrade::WebSocket => websocket::serve_exec(io, protocol, plugin).await,
            }
            info!("{what} ended");
        }
        .in_current_span(),
    );
    switching(&up, &h, protocol)
}

pub async fn port_forward(
    State(st): State<KubeletState>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let span = info_span!("portForward", namespace = %ns, pod = %name);
    port_forward_in(st, ns, name, req).instrument(span).await
}

/// The upgrade, protocol and (WebSocket) ports of a port-forward request.
fn port_forward_protocol(
    h: &HeaderMap,
    query: &str,
) -> Result<(Upgrade, &'static str, Vec<u16>), Box<Response>> {
    let bad = |m: String| Box::new(text(StatusCode::BAD_REQUEST, m));
    match upgrade_of(h) {
        Some(Upgrade::Spdy) => {
            let ours = [SPDY_PORT_FORWARD_PROTOCOL];
            let p = negotiate(
                &protocols(&Upgrade::Spdy, h),
                &ours,
                SPDY_PORT_FORWARD_PROTOCOL,
            )?;
            Ok((Upgrade::Spdy, p, vec![]))
        }
        Some(Upgrade::WebSocket) => {
            let ports = ws_portforward::ports(query).map_err(bad)?;
            // A refusal is a 400: kubectl then falls back to SPDY (its
            // `SPDY/3.1+portforward.k8s.io` tunnel is not served here).
            let p = negotiate(
                &protocols(&Upgrade::WebSocket, h),
                &WS_PORT_FORWARD_PROTOCOLS,
                "channel.k8s.io",
            )
            .map_err(|mut r| {
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            })?;
            Ok((Upgrade::WebSocket, p, ports))
        }
        None => Err(bad(
            "unable to upgrade: missing upgrade headers in request".into()
        )),
    }
}

async fn port_forward_in(st: KubeletState, ns: String, name: String, mut req: Request) -> Response {
    let pod = match pod_on_node(&st, &ns, &name) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let h = req.headers().clone();
    let (up, protocol, ports) = match port_forward_protocol(&h, req.uri().query().unwrap_or("")) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match st.plugin.offers(offload_wire::watch::PORT_FORWARD).await {
        Ok(true) => {}
        Ok(false) => {
            let e = PluginError::Status {
                status: 404,
                body: "no portForward in its capabilities".into(),
            };
            return refused(
                "portForward",
                offload_wire::watch::CAPABILITIES_PATH,
                &st.node_name,
                e,
            );
        }
        Err(e) => return refused("portForward", "", &st.node_name, e),
    }
    let f = Forward {
        plugin: st.plugin.clone(),
        target: target(&st, &pod, &ns, &name),
        metrics: st.streams.clone(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    info!(protocol, "port-forward started");
    tokio::spawn(
        async move {
            let _open = f.metrics.open("portforward");
            match on_upgrade.await {
                Ok(u) => match up {
                    Upgrade::Spdy => portforward::serve_spdy(TokioIo::new(u), f).await,
                    Upgrade::WebSocket => {
                        ws_portforward::serve(TokioIo::new(u), protocol, ports, f).await
                    }
                },
                Err(e) => warn!(error = %e, "upgrade failed"),
            }
            info!("port-forward ended");
        }
        .in_current_span(),
    );
    switching(&up, &h, protocol)
}

#[cfg(test)]
mod tests;
