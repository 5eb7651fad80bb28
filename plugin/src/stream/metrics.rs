//! The streams' metrics, prefixed `offload_plugin_` like the rest.

use offload_runtime::admin::{Registrar, SharedRegistry};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use super::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub kind: &'static str,
    pub direction: &'static str,
}

/// Open streams, how they ended, refusals and bytes carried.
#[derive(Clone)]
pub struct StreamMetrics {
    open: Family<KindLabels, Gauge>,
    ended: Family<EndLabels, Counter>,
    refused: Family<KindLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
}

/// How a stream ended (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The remote side ended it (the process exited, the connection closed).
    Completed,
    /// The client went away first.
    ClientGone,
    /// The remote apiserver refused or the connection failed.
    RemoteError,
    /// The plugin shut down.
    Shutdown,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Completed => "completed",
            End::ClientGone => "client_gone",
            End::RemoteError => "remote_error",
            End::Shutdown => "shutdown",
        }
    }
}

impl StreamMetrics {
    pub fn register(shared: &SharedRegistry) -> Self {
        shared.register("offload_plugin", |registry| {
            let mut m = Registrar::new(registry);
            Self {
                open: m.add(
                    "streams_open",
                    "Exec, attach and port-forward streams open now, by kind (one per port-forwarded TCP connection)",
                ),
                ended: m.add(
                    "streams",
                    "Streams ended, by kind and result (completed, client_gone, remote_error, shutdown)",
                ),
                refused: m.add(
                    "streams_refused",
                    "Streams refused because --max-open-streams were open, by kind",
                ),
                bytes: m.add(
                    "stream_bytes",
                    "Bytes carried by streams, by kind and direction (to_remote: stdin and port-forward uploads; from_remote: output and downloads)",
                ),
            }
        })
    }

    pub(super) fn open(&self, kind: Kind) -> Gauge {
        self.open
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .clone()
    }

    pub(super) fn refused(&self, kind: Kind) {
        self.refused
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub(super) fn ended(&self, kind: Kind, end: End) {
        self.ended
            .get_or_create(&EndLabels {
                kind: kind.as_str(),
                result: end.as_str(),
            })
            .inc();
    }

    /// `n` bytes towards the remote pod (`up`) or from it.
    pub(super) fn bytes(&self, kind: Kind, up: bool, n: usize) {
        self.bytes
            .get_or_create(&BytesLabels {
                kind: kind.as_str(),
                direction: if up { "to_remote" } else { "from_remote" },
            })
            .inc_by(n as u64);
    }
}
