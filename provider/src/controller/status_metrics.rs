//! Metrics of status following (stream, resync, writes), in the provider's
//! registry under the same `offload_provider_` prefix.

use std::time::Duration;

use offload_runtime::admin::SharedRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

/// How statuses are followed now (the `offload_provider_status_source`
/// gauge: 1 on the current one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The plugin's status-change stream.
    Watch,
    /// `/status` polling (the plugin does not offer the stream, or
    /// `--status-watch=false`).
    Poll,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Watch => "watch",
            Source::Poll => "poll",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StatusMetrics {
    lag: Histogram,
    write_delay: Histogram,
    writes: Family<SourceLabels, Counter>,
    coalesced: Counter,
    events: Family<TypeLabels, Counter>,
    connected: Gauge,
    reconnects: Counter,
    source: Family<SourceLabels, Gauge>,
    pending: Gauge,
}

impl StatusMetrics {
    pub fn register(registry: &SharedRegistry) -> Self {
        let m = StatusMetrics {
            lag: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            write_delay: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            writes: Family::default(),
            coalesced: Counter::default(),
            events: Family::default(),
            connected: Gauge::default(),
            reconnects: Counter::default(),
            source: Family::default(),
            pending: Gauge::default(),
        };
        registry.register("offload_provider", |r| {
            r.register(
                "status_lag_seconds",
                "From the remote transition (latest container start or finish time the plugin \
                 reports, whole seconds) to the local status write that shows it",
                m.lag.clone(),
            );
            r.register(
                "status_write_delay_seconds",
                "From a status change received from the plugin to its local write (the \
                 provider's own share of the lag)",
                m.write_delay.clone(),
            );
            r.register(
                "status_change_writes",
                "Local status writes of remote changes, by source (watch, resync, poll)",
                m.writes.clone(),
            );
            r.register(
                "status_writes_coalesced",
                "Status changes merged into a write still waiting (one write saved each)",
                m.coalesced.clone(),
            );
            r.register(
                "status_watch_events",
                "Events read from the plugin's status-change stream, by event type",
                m.events.clone(),
            );
            r.register(
                "status_watch_connected",
                "1 while the status-change stream to the plugin is open",
                m.connected.clone(),
            );
            r.register(
                "status_watch_reconnects",
                "Status-change stream connections that ended (error, silence, plugin restart)",
                m.reconnects.clone(),
            );
            r.register(
                "status_source",
                "1 on how statuses are followed now: watch (the plugin's stream) or poll",
                m.source.clone(),
            );
            r.register(
                "status_writes_pending",
                "Status writes waiting for a free writer (--status-write-concurrency)",
                m.pending.clone(),
            );
        });
        m
    }

    pub fn lag(&self, d: Duration) {
        self.lag.observe(d.as_secs_f64());
    }

    pub fn write_delay(&self, d: Duration) {
        self.write_delay.observe(d.as_secs_f64());
    }

    pub fn write(&self, source: &str) {
        self.writes
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn event(&self, type_: &str) {
        self.events
            .get_or_create(&TypeLabels {
                event: type_.into(),
            })
            .inc();
    }

    pub fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
        if !up {
            self.reconnects.inc();
        }
    }

    pub fn source(&self, now: Source) {
        for s in [Source::Watch, Source::Poll] {
            self.source
                .get_or_create(&SourceLabels {
                    source: s.as_str().into(),
                })
                .set(i64::from(s == now));
        }
    }

    pub fn pending(&self, n: usize) {
        self.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_under_the_provider_prefix() {
        let r = SharedRegistry::default();
        let m = StatusMetrics::register(&r);
        m.event("status");
        m.source(Source::Watch);
        m.write("watch");
        m.connected(false);
        let text = r.encode().expect("encodes");
        assert!(text.contains("offload_provider_status_watch_events_total{event=\"status\"} 1"));
        assert!(text.contains("offload_provider_status_source{source=\"watch\"} 1"));
        assert!(text.contains("offload_provider_status_source{source=\"poll\"} 0"));
        assert!(text.contains("offload_provider_status_change_writes_total{source=\"watch\"} 1"));
        assert!(text.contains("offload_provider_status_watch_reconnects_total 1"));
    }
}
