//! Leader election over a `coordination.k8s.io/v1` Lease, so the bastion can
//! run a standby replica: only the Lease holder connects to the gateways; the
//! standby takes over when the holder's Lease expires (holder crashed,
//! partitioned) or is released (holder stopped cleanly).
//!
//! kube-runtime 5 has no leader election (and the crates that add one pull
//! their own dependency trees), so this is a small hand-written loop with the
//! semantics of client-go's `leaderelection`:
//! - expiry is judged on **our own monotonic clock**: a Lease held by someone
//!   else counts as expired when its record has not changed for
//!   `leaseDurationSeconds` since *we* first saw that record, so clock skew
//!   between the replicas does not matter (`renewTime` is only informative);
//! - every write is an optimistic-concurrency `replace` (resourceVersion), so
//!   two candidates can never both believe they won: the loser gets 409;
//! - the holder renews every `retry_period`, and steps down by itself when it
//!   could not renew for `renew_deadline` (< lease duration), i.e. before any
//!   standby may take over;
//! - on a clean stop the holder releases the Lease (empty holder), so the
//!   standby takes over at its next retry instead of after the full duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use offload_runtime::admin::Registrar;
use offload_runtime::shutdown::CancellationToken;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are (the pod name): unique per replica.
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// The holder steps down when it could not renew for this long.
    pub renew_deadline: Duration,
    /// Time between attempts (renewals, or checks of the standby).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Same ratios as the defaults, for a given lease duration.
    pub fn with_lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self.renew_deadline = d.mul_f64(2.0 / 3.0);
        self.retry_period = (d / 7).max(Duration::from_millis(200));
        self
    }
}

/// The parts of a Lease the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `None` or empty: free.
    pub holder: Option<String>,
    /// As written (compared for change only, never against our clock).
    pub renew_time: Option<String>,
    pub duration: Option<Duration>,
    pub transitions: i32,
    pub resource_version: Option<String>,
}

impl Record {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            transitions: spec.lease_transitions.unwrap_or(0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What to do after looking at the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nobody holds it, or the holder's Lease expired: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live Lease.
    Follow {
        holder: String,
        expires_in: Duration,
    },
}

/// The pure decision, with the observation memory it needs.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    default_duration: Duration,
    /// The other holder's record as last seen, and when we first saw it.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    pub fn new(identity: impl Into<String>, default_duration: Duration) -> Self {
        Self {
            identity: identity.into(),
            default_duration,
            observed: None,
        }
    }

    pub fn decide(&mut self, current: Option<&Record>, now: Instant) -> Action {
        let Some(rec) = current else {
            self.observed = None;
            return Action::Acquire;
        };
        let Some(holder) = rec.holder.clone() else {
            self.observed = None;
            return Action::Acquire;
        };
        if holder == self.identity {
            self.observed = None;
            return Action::Renew;
        }
        // Any change of the record (a renewal bumps renewTime and the
        // resourceVersion) means the holder is alive: restart its clock.
        let since = match &self.observed {
            Some((seen, at)) if seen == rec => *at,
            _ => {
                self.observed = Some((rec.clone(), now));
                now
            }
        };
        let duration = rec.duration.unwrap_or(self.default_duration);
        let expires = since + duration;
        if now >= expires {
            Action::Acquire
        } else {
            Action::Follow {
                holder,
                expires_in: expires - now,
            }
        }
    }
}

/// The lease spec to write when acquiring or renewing.
pub fn next_spec(
    current: Option<&Lease>,
    identity: &str,
    duration: Duration,
    now: k8s_openapi::jiff::Timestamp,
) -> LeaseSpec {
    let old = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let was_mine = old.holder_identity.as_deref() == Some(identity);
    let transitions = old.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: if was_mine {
            old.acquire_time
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            if was_mine
                || old
                    .holder_identity
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty()
            {
                transitions
            } else {
                transitions + 1
            },
        ),
        ..Default::default()
    }
}

#[derive(Default)]
pub struct LeaderMetrics {
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// Times this replica became the leader.
    pub acquired: Counter,
    /// Failed Lease reads/writes.
    pub errors: Counter,
}

impl LeaderMetrics {
    /// The election's metrics, registered into `registry` (the
    /// `offload_bastion` sub-registry). `default()`: unregistered.
    pub fn registered(registry: &mut Registry) -> Self {
        let mut m = Registrar::new(registry);
        LeaderMetrics {
            leader: m.add(
                "leader",
                "1 while this replica holds the Lease and runs the tunnels, 0 on standby",
            ),
            acquired: m.add("leader_acquired", "Times this replica became the leader"),
            errors: m.add("leader_errors", "Failed Lease reads or writes"),
        }
    }
}

/// Runs the election until `shutdown`, publishing whether we lead on
/// `leader` (false at start and at the end; the Lease is released on a clean
/// stop).
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    metrics: Arc<LeaderMetrics>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut elector = Elector::new(cfg.identity.clone(), cfg.lease_duration);
    let mut last_renew: Option<Instant> = None;
    let set = |is: bool| {
        let was = *leader.borrow();
        if was != is {
            if is {
                metrics.acquired.inc();
                info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
            } else {
                info!(lease = %cfg.name, identity = %cfg.identity, "standing by");
            }
            leader.send_replace(is);
        }
        metrics.leader.set(i64::from(is));
    };
    loop {
        let now = Instant::now();
        match attempt(&api, &cfg, &mut elector, now).await {
            Ok(true) => {
                last_renew = Some(now);
                set(true);
            }
            Ok(false) => {
                last_renew = None;
                set(false);
            }
            Err(e) => {
                metrics.errors.inc();
                warn!(lease = %cfg.name, error = %e, "lease update failed");
                if last_renew.is_none_or(|t| now.duration_since(t) >= cfg.renew_deadline) {
                    set(false);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_period) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if *leader.borrow() {
        set(false);
        if let Err(e) = release(&api, &cfg).await {
            warn!(lease = %cfg.name, error = %e, "cannot release the lease");
        } else {
            info!(lease = %cfg.name, "lease released");
        }
    }
}

/// One look at the Lease; `Ok(true)` when we hold it afterwards.
async fn attempt(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    elector: &mut Elector,
    now: Instant,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let record = current.as_ref().map(Record::of);
    match elector.decide(record.as_ref(), now) {
        Action::Follow { .. } => Ok(false),
        Action::Acquire | Action::Renew => {
            let spec = next_spec(
                current.as_ref(),
                &cfg.identity,
                cfg.lease_duration,
                k8s_openapi::jiff::Timestamp::now(),
            );
            let result = match current {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(cfg.name.clone()),
                            namespace: Some(cfg.namespace.clone()),
                            ..Default::default()
                        },
                        spec: Some(spec),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Some(mut lease) => {
                    // resourceVersion stays set: a concurrent writer makes this 409.
                    lease.spec = Some(spec);
                    lease.metadata.managed_fields = None;
                    api.replace(&cfg.name, &PostParams::default(), &lease).await
                }
            };
            match result {
                Ok(_) => Ok(true),
                // Someone else wrote first (created it, or renewed/took it).
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    lease.metadata.managed_fields = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Pass `source` through to `out` while `leader` is true, and the empty
/// default (no forwards: the supervisor drops every connection) while it is
/// false. Returns when `source` or `leader` closes.
pub async fn gate<T: Default + Clone>(
    mut source: watch::Receiver<T>,
    mut leader: watch::Receiver<bool>,
    out: watch::Sender<T>,
) {
    loop {
        let value = if *leader.borrow_and_update() {
            source.borrow_and_update().clone()
        } else {
            T::default()
        };
        out.send_replace(value);
        tokio::select! {
            r = source.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const D: Duration = Duration::from_secs(15);

    fn rec(holder: Option<&str>, renew: &str) -> Record {
        Record {
            holder: holder.map(str::to_owned),
            renew_time: Some(renew.to_owned()),
            duration: Some(D),
            transitions: 0,
            resource_version: Some(format!("rv-{renew}")),
        }
    }

    #[tokio::test]
    async fn gate_passes_desired_state_only_while_leading() {
        let (src_tx, src_rx) = watch::channel(vec![1, 2]);
        let (lead_tx, lead_rx) = watch::channel(false);
        let (out_tx, mut out_rx) = watch::channel(vec![9]);
        let task = tokio::spawn(gate(src_rx, lead_rx, out_tx));
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), out_rx.changed())
                .await
                .expect("gate answers")
                .expect("open");
            out_rx.borrow_and_update().clone()
        };
        assert_eq!(next().await, Vec::<i32>::new());
        lead_tx.send_replace(true);
        assert_eq!(next().await, vec![1, 2]);
        src_tx.send_replace(vec![3]);
        assert_eq!(next().await, vec![3]);
        lead_tx.send_replace(false);
        assert_eq!(next().await, Vec::<i32>::new());
        drop(src_tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("gate ends")
            .expect("no panic");
    }

    #[test]
    fn free_or_missing_lease_is_taken_own_lease_renewed() {
        let t0 = Instant::now();
        let mut e = Elector::new("a", D);
        assert_eq!(e.decide(None, t0), Action::Acquire);
        assert_eq!(e.decide(Some(&rec(None, "1")), t0), Action::Acquire);
        assert_eq!(e.decide(Some(&rec(Some("a"), "1")), t0), Action::Renew);
    }

    #[test]
    fn standby_takes_over_only_after_a_full_unrenewed_duration() {
        let t0 = Instant::now();
        let mut e = Elector::new("b", D);
        let follow = |expires_in| Action::Follow {
            holder: "a".into(),
            expires_in,
        };
        // (seconds after t0, a's resourceVersion, what b decides)
        let steps = [
            // First sight of a's lease: its clock starts now, whatever renewTime says
            // (renewTime is another machine's clock).
            (0, "1", follow(D)),
            // a renews at +10 s: the clock restarts.
            (10, "2", follow(D)),
            // Unchanged until +24 s: still a's.
            (24, "2", follow(Duration::from_secs(1))),
            // Unchanged for the full 15 s since it was seen: expired.
            (25, "2", Action::Acquire),
        ];
        for (secs, version, expected) in steps {
            let now = t0 + Duration::from_secs(secs);
            let decided = e.decide(Some(&rec(Some("a"), version)), now);
            assert_eq!(decided, expected, "at +{secs} s");
        }
    }

    #[test]
    fn lease_duration_of_the_record_wins_over_ours() {
        let t0 = Instant::now();
        let mut e = Elector::new("b", D);
        let mut short = rec(Some("a"), "1");
        short.duration = Some(Duration::from_secs(1));
        assert!(matches!(e.decide(Some(&short), t0), Action::Follow { .. }));
        assert_eq!(
            e.decide(Some(&short), t0 + Duration::from_secs(1)),
            Action::Acquire
        );
        // No duration in the record: ours.
        let mut none = rec(Some("c"), "9");
        none.duration = None;
        assert!(matches!(
            e.decide(Some(&none), t0 + Duration::from_secs(2)),
            Action::Follow { expires_in, .. } if expires_in == D
        ));
    }

    #[test]
    fn next_spec_counts_transitions_and_keeps_acquire_time_on_renewal() {
        let now = k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
        let held_by = |h: Option<&str>, n: i32| Lease {
            spec: Some(LeaseSpec {
                holder_identity: h.map(str::to_owned),
                lease_transitions: Some(n),
                acquire_time: Some(MicroTime(now)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(60);
        let s = next_spec(None, "a", D, later);
        assert_eq!(s.lease_transitions, Some(0));
        assert_eq!(s.lease_duration_seconds, Some(15));
        let s = next_spec(Some(&held_by(Some("a"), 3)), "a", D, later);
        assert_eq!(s.lease_transitions, Some(3));
        assert_eq!(s.acquire_time, Some(MicroTime(now)));
        assert_eq!(s.renew_time, Some(MicroTime(later)));
        let s = next_spec(Some(&held_by(Some("b"), 3)), "a", D, later);
        assert_eq!(s.lease_transitions, Some(4));
        assert_eq!(s.acquire_time, Some(MicroTime(later)));
        let s = next_spec(Some(&held_by(None, 3)), "a", D, later);
        assert_eq!(s.lease_transitions, Some(3));
    }
}
