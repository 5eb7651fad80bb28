//! `kubectl port-forward`: one client WebSocket is one TCP connection to one
//! port of the remote pod, through kube-rs' [`Portforwarder`] (one remote
//! WebSocket, so one connection in the pod, per client WebSocket).

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{
        RawQuery, State,
        ws::{Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::Response,
};
use futures::{
    FutureExt, SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Portforwarder};
use offload_wire::stream::PortForwardQuery;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, info, info_span, warn};

use super::{
    Kind, OpenStream, RemotePod, admit, bad_query,
    metrics::{End, StreamMetrics},
};
use crate::{caller::Principal, http::AppState};

/// Bytes read at once from the remote connection (kube-rs buffers up to
/// 1 MiB more per connection; both bounded).
const BUF: usize = 64 * 1024;
/// How long a remote error message may trail the end of the data.
const ERROR_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) async fn port_forward(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let q = match PortForwardQuery::parse(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let (pod, ws, open) = match admit(&state, &principal, &q.target, Kind::PortForward, ws).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let span = info_span!("stream", kind = "portforward", pod = %q.target.name,
        namespace = %q.target.namespace, uid = %q.target.uid, port = q.port, remote = %pod.name);
    ws.on_upgrade(move |socket| bridge(state, pod, q.port, socket, open).instrument(span))
}

async fn bridge(
    state: Arc<AppState>,
    pod: RemotePod,
    port: u16,
    socket: WebSocket,
    open: OpenStream,
) {
    let started = Instant::now();
    let metrics = state.streams.metrics.clone();
    let (mut tx, rx) = socket.split();
    let api: Api<Pod> = Api::namespaced(state.remote.client().clone(), &pod.namespace);
    state.metrics.remote_call("portforward");
    let work = async {
        match api.portforward(&pod.name, &[port]).await {
            Err(e) => {
                let msg = format!("port-forward to port {port} of the remote pod: {e}");
                warn!(error = %e, "remote port-forward refused");
                let _ = tx.send(Message::Text(msg.into())).await;
                End::RemoteError
            }
            Ok(forwarder) => relay(forwarder, port, &mut tx, rx, &metrics).await,
        }
    };
    // A shutdown ends the stream in any phase (connecting included).
    let end = tokio::select! {
        end = work => end,
        () = state.shutdown.cancelled() => End::Shutdown,
    };
    let _ = tx.send(Message::Close(None)).await;
    metrics.ended(Kind::PortForward, end);
    info!(result = ?end, secs = started.elapsed().as_secs_f64(), "stream ended");
    drop(open);
}

/// How the copying ended.
enum Copy {
    ClientGone,
    RemoteEnded,
    RemoteError(String),
}

/// Copies both ways until either side ends; then ends kube-rs' task (its
/// remote connection closes, and with it the connection in the pod).
async fn relay(
    mut forwarder: Portforwarder,
    port: u16,
    tx: &mut SplitSink<WebSocket, Message>,
    rx: SplitStream<WebSocket>,
    metrics: &StreamMetrics,
) -> End {
    let (Some(stream), Some(error)) = (forwarder.take_stream(port), forwarder.take_error(port))
    else {
        forwarder.abort();
        return End::RemoteError;
    };
    let (mut from_pod, mut to_pod) = tokio::io::split(stream);
    // Fused: polled in the select and again after it.
    let mut error = std::pin::pin!(error.fuse());
    let copy = tokio::select! {
        () = upstream(rx, &mut to_pod, metrics) => Copy::ClientGone,
        gone = downstream(&mut from_pod, tx, metrics) => if gone { Copy::ClientGone } else { Copy::RemoteEnded },
        // `None`: kube-rs' task ended; the data still buffered drains first.
        Some(msg) = &mut error => Copy::RemoteError(msg),
    };
    let end = match copy {
        Copy::ClientGone => End::ClientGone,
        Copy::RemoteError(msg) => remote_error(tx, msg).await,
        Copy::RemoteEnded => {
            // An error (e.g. nothing listens on the port) comes with the end.
            match tokio::time::timeout(ERROR_GRACE, &mut error).await {
                Ok(Some(msg)) => remote_error(tx, msg).await,
                _ => End::Completed,
            }
        }
    };
    drop((from_pod, to_pod));
    forwarder.abort();
    let _ = forwarder.join().await;
    end
}

/// The remote's error as the one text message of the contract.
async fn remote_error(tx: &mut SplitSink<WebSocket, Message>, msg: String) -> End {
    info!(error = %msg, "remote port-forward error");
    let _ = tx.send(Message::Text(msg.into())).await;
    End::RemoteError
}

/// Client -> pod until the client closes.
async fn upstream(
    mut rx: SplitStream<WebSocket>,
    to_pod: &mut (impl AsyncWrite + Unpin),
    metrics: &StreamMetrics,
) {
    while let Some(Ok(msg)) = rx.next().await {
        match msg {
            Message::Binary(b) => {
                if to_pod.write_all(&b).await.is_err() {
                    // The remote side is gone: downstream sees it too.
                    std::future::pending::<()>().await;
                }
                metrics.bytes(Kind::PortForward, true, b.len());
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Pod -> client until the pod's side ends; `true` if the client went away
/// (also found out by the pings on a silent connection).
async fn downstream(
    from_pod: &mut (impl AsyncRead + Unpin),
    tx: &mut SplitSink<WebSocket, Message>,
    metrics: &StreamMetrics,
) -> bool {
    let mut buf = vec![0u8; BUF];
    let mut ping = tokio::time::interval(super::PING_EVERY);
    ping.reset();
    loop {
        let read = tokio::select! {
            r = from_pod.read(&mut buf) => r,
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return true;
                }
                continue;
            }
        };
        match read {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                metrics.bytes(Kind::PortForward, false, n);
                let data = bytes::Bytes::copy_from_slice(&buf[..n]);
                if tx.send(Message::Binary(data)).await.is_err() {
                    return true;
                }
            }
        }
    }
}
