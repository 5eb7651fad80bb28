//! port-forward over SPDY (`portforward.k8s.io`), as the kubelet serves it:
//! for each TCP connection kubectl accepts it opens two streams sharing a
//! `requestid` and a `port` header, `streamtype` error (which it half-closes
//! at once) and data. Each pair becomes one WebSocket to the plugin; a
//! failure is written on the error stream, then both are closed.

use std::collections::HashMap;
use std::time::Duration;

use offload_wire::stream::{PORT_FORWARD_PATH, PortForwardQuery, StreamTarget};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::StreamMetrics;
use super::bridge::{self, BUFFER, PortOut};
use super::exec::LINGER;
use super::spdy::{Incoming, Out, Session};
use crate::client::PluginClient;

pub const SPDY_PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// What one port-forward connection needs.
#[derive(Clone)]
pub struct Forward {
    pub plugin: PluginClient,
    pub target: StreamTarget,
    pub metrics: StreamMetrics,
}

impl Forward {
    /// The kubelet's words for a failed forward (what kubectl prints).
    pub fn error(&self, port: &str, why: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {why}",
            self.target.name, self.target.uid
        )
    }

    /// One connection to `port`: the plugin's WebSocket between `from` (the
    /// client's bytes) and `to`.
    pub async fn connect(
        &self,
        port: u16,
        from: mpsc::Receiver<bytes::Bytes>,
        to: mpsc::Sender<PortOut>,
        gone: CancellationToken,
    ) {
        let _open = self.metrics.open("portforward_connection");
        let q = PortForwardQuery {
            target: self.target.clone(),
            port,
        };
        match self
            .plugin
            .open_stream("stream_portforward", PORT_FORWARD_PATH, &q.to_query(), None)
            .await
        {
            Ok(ws) => bridge::port_forward(ws, from, to, gone).await,
            Err(e) => {
                let _ = to.send(PortOut::Error(e.to_string())).await;
            }
        }
    }
}

#[derive(Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
}

/// Serves one port-forward session on an upgraded connection.
pub async fn serve_spdy<IO>(io: IO, f: Forward)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut s = Session::start(io);
    let gone = s.closed();
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut conns = JoinSet::new();
    loop {
        let mut inc = tokio::select! {
            i = s.incoming.recv() => match i { Some(i) => i, None => break },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let key = inc.header("requestid").unwrap_or_default().to_string();
        let pair = pending.entry(key.clone()).or_default();
        match inc.header("streamtype") {
            Some("error") => {
                inc.data.close();
                pair.error = Some(inc);
            }
            Some("data") => pair.data = Some(inc),
            other => {
                debug!(stream_type = ?other, "unexpected port-forward stream");
                let _ = s.out.reset(inc.id).await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pending.remove(&key)
            else {
                continue;
            };
            conns.spawn(connection(f.clone(), error, data, s.out.clone()));
        }
    }
    // The client is gone: each connection sees it and closes its plugin side.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    drop(conns);
    if !gone.is_cancelled() {
        s.finish(LINGER).await;
    }
}

async fn connection(f: Forward, error: Incoming, data: Incoming, out: Out) {
    let port_header = data.header("port").unwrap_or_default().to_string();
    let (error_id, data_id) = (error.id, data.id);
    let Some(port) = port_header.parse::<u16>().ok().filter(|p| *p > 0) else {
        let msg = f.error(&port_header, "invalid port");
        let _ = out.data(error_id, msg.into()).await;
        let _ = out.fin(error_id).await;
        let _ = out.fin(data_id).await;
        return;
    };
    let (to_tx, mut to_rx) = mpsc::channel(BUFFER);
    let write = async {
        while let Some(m) = to_rx.recv().await {
            let r = match m {
                PortOut::Data(b) => out.data(data_id, b).await,
                PortOut::Error(e) => out.data(error_id, f.error(&port_header, &e).into()).await,
            };
            if r.is_err() {
                return;
            }
        }
    };
    // The data stream's reset (or the connection's end) ends the forward; its
    // FIN only ends what the client sends.
    tokio::join!(f.connect(port, data.data, to_tx, data.reset), write);
    let _ = out.fin(data_id).await;
    let _ = out.fin(error_id).await;
}
