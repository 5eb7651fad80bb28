//! What the remote cluster can take, as the ping answer reports it to the
//! virtual node: the allocatable of its schedulable nodes (not cordoned,
//! `Ready`) summed per resource, minus the operator's reserve
//! (`--capacity-reserve`). `cpu`, `memory` and `pods` are the ping's own
//! fields; extended resources (`nvidia.com/gpu`, `example.com/widget`: a
//! domain-prefixed name outside `kubernetes.io/`) are its accelerators.
//! Pure; the node cache that feeds it is [`nodes`].
//!
//! Quantities are summed exactly in nano-units: `k8s-openapi`'s `Quantity`
//! is only a string, and the crates that parse it go through `f64`, which
//! loses bytes of a large memory sum. Parsing is hand-written for that.

pub mod nodes;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use offload_wire::{PingAccelerator, PingResources};

pub use self::nodes::RemoteCapacity;

const NANO: i128 = 1_000_000_000;

/// A Kubernetes quantity in nano-units (`1` is 10⁹, `500m` is 5·10⁸).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1G)")]
pub struct QuantityError(String);

impl std::str::FromStr for Amount {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(s.to_string());
        let t = s.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, suffix) = t.split_at(end);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
            return Err(err());
        }
        // The mantissa as an integer of `frac.len()` decimals.
        let mantissa: u128 = format!("{whole}{frac}").parse().map_err(|_| err())?;
        let scale = multiplier(suffix).ok_or_else(err)?;
        // Below a nano-unit rounds up, as Kubernetes rounds.
        let nano = mantissa
            .checked_mul(scale)
            .ok_or_else(err)?
            .div_ceil(10_u128.pow(frac.len() as u32));
        let nano = i128::try_from(nano).map_err(|_| err())?;
        Ok(Amount(if negative { -nano } else { nano }))
    }
}

impl Amount {
    /// `self - other`, never below zero (a reserve above what is there).
    pub fn minus(self, other: Amount) -> Amount {
        Amount((self.0 - other.0).max(0))
    }
}

/// Nano-units per unit of a suffix (binary SI, decimal SI, or `e<n>`).
fn multiplier(suffix: &str) -> Option<u128> {
    let binary = |p: u32| Some(1024_u128.pow(p) * NANO as u128);
    let decimal = |p: u32| Some(10_u128.pow(p));
    match suffix {
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(0),
        "u" => decimal(3),
        "m" => decimal(6),
        "" => decimal(9),
        "k" => decimal(12),
        "M" => decimal(15),
        "G" => decimal(18),
        "T" => decimal(21),
        "P" => decimal(24),
        "E" => decimal(27),
        _ => {
            let exp: u32 = suffix
                .strip_prefix(['e', 'E'])?
                .parse()
                .ok()
                .filter(|e| *e <= 18)?;
            decimal(9 + exp)
        }
    }
}

impl std::fmt::Display for Amount {
    /// The shortest exact form: `2`, `1500m`, `250u`, `7n`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        for (div, suffix) in [(NANO, ""), (1_000_000, "m"), (1_000, "u")] {
            if v % div == 0 {
                return write!(f, "{}{suffix}", v / div);
            }
        }
        write!(f, "{v}n")
    }
}

/// What the operator keeps back from the remote cluster's allocatable
/// (`--capacity-reserve cpu=500m,memory=512Mi,nvidia.com/gpu=1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserve(pub BTreeMap<String, Amount>);

/// Parses `name=quantity,...` (clap value parser).
pub fn parse_reserve(s: &str) -> Result<Reserve, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not resource=quantity"))?;
        let amount: Amount = v.parse().map_err(|e: QuantityError| e.to_string())?;
        if amount.0 < 0 {
            return Err(format!("{pair:?}: a reserve cannot be negative"));
        }
        out.insert(k.trim().to_string(), amount);
    }
    Ok(Reserve(out))
}

/// Cordoned nodes and nodes that are not `Ready` take no new pods.
pub fn is_schedulable(n: &Node) -> bool {
    let cordoned = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    !cordoned && ready
}

/// A resource a pod asks for by a domain-prefixed name of its own
/// (Kubernetes' "extended resource"): reported as an accelerator.
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// The allocatable of the schedulable `nodes`, summed, minus `reserve`
/// (never below zero). Resources of no schedulable node are absent (an
/// extended resource removed from every node disappears from the answer).
pub fn allocatable<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    reserve: &Reserve,
) -> PingResources {
    let mut sum: BTreeMap<String, Amount> = BTreeMap::new();
    for n in nodes.into_iter().filter(|n| is_schedulable(n)) {
        let Some(status) = n.status.as_ref() else {
            continue;
        };
        let Some(alloc) = status.allocatable.as_ref().or(status.capacity.as_ref()) else {
            continue;
        };
        for (name, q) in alloc {
            // A quantity the apiserver accepted parses; skip anything else.
            if let Ok(a) = q.0.parse::<Amount>() {
                sum.entry(name.clone()).or_default().0 += a.0;
            }
        }
    }
    for (name, r) in &reserve.0 {
        if let Some(a) = sum.get_mut(name) {
            *a = a.minus(*r);
        }
    }
    let take = |k: &str| sum.get(k).map(ToString::to_string);
    PingResources {
        cpu: take("cpu"),
        memory: take("memory"),
        pods: take("pods"),
        accelerators: sum
            .iter()
            .filter(|(k, _)| is_extended(k))
            .map(|(k, v)| PingAccelerator {
                resource_type: k.clone(),
                available: v.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
