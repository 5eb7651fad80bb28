//! Pure pieces: the script's `info` JSON, namespace names, the fixed layout.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::Cluster;

/// What `testbed.sh info` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    pub state_dir: PathBuf,
    pub kubectl: PathBuf,
    pub clusters: BTreeMap<String, ClusterInfo>,
}

/// One cluster in `testbed.sh info`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterInfo {
    pub kubeconfig: PathBuf,
    pub server: String,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub node_port_range: String,
    pub logs: PathBuf,
}

impl Info {
    pub fn parse(json: &[u8]) -> anyhow::Result<Self> {
        serde_json::from_slice(json).context("testbed info is not the expected JSON")
    }

    pub fn cluster(&self, name: &str) -> anyhow::Result<Cluster> {
        let c = self
            .clusters
            .get(name)
            .with_context(|| format!("testbed info has no cluster named {name:?}"))?;
        Ok(Cluster {
            name: name.to_owned(),
            kubeconfig: c.kubeconfig.clone(),
            node_name: c.node_name.clone(),
            node_ip: c.node_ip,
        })
    }
}

/// NodePort ranges as testbed.sh configures them (disjoint: the local cluster's NodePorts
/// open on every host address).
pub(crate) fn node_port_range(cluster: &str) -> std::ops::RangeInclusive<u16> {
    match cluster {
        "remote" => 31500..=32767,
        _ => 30000..=31499,
    }
}

/// `<prefix>-<6 random [a-z0-9]>`, a valid namespace name (DNS label, at most 63 chars).
pub fn namespace_name(prefix: &str) -> anyhow::Result<String> {
    const SUFFIX: usize = 6;
    let valid = !prefix.is_empty()
        && prefix.len() <= 63 - 1 - SUFFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-');
    if !valid {
        bail!(
            "namespace prefix {prefix:?} must be 1-{} chars of [a-z0-9-], not starting with '-'",
            63 - 1 - SUFFIX
        );
    }
    Ok(format!("{prefix}-{}", random_suffix(SUFFIX)))
}

fn random_suffix(len: usize) -> String {
    // std's RandomState is randomly keyed per process; the counter keeps names unique
    // within one process. Good enough for test names, no extra dependency.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let mut v = hasher.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            let c = ALPHABET[(v % ALPHABET.len() as u64) as usize];
            v /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"{
      "state_dir": "/x/.state/testbed",
      "kubectl": "/h/.cache/offload/kubernetes-1.20.2/bin/kubectl",
      "clusters": {
        "local": {
          "kubeconfig": "/x/.state/testbed/local/kubeconfig",
          "server": "https://10.201.0.1:26443",
          "node_name": "local-node",
          "node_ip": "10.201.0.1",
          "pod_cidr": "10.244.0.0/16",
          "service_cidr": "10.96.0.0/16",
          "node_port_range": "30000-31499",
          "logs": "/x/.state/testbed/logs"
        }
        ,
        "remote": {
          "kubeconfig": "/x/.state/testbed/remote/kubeconfig",
          "server": "https://10.202.0.254:26444",
          "node_name": "remote-node",
          "node_ip": "10.202.0.1",
          "pod_cidr": "10.245.0.0/16",
          "service_cidr": "10.97.0.0/16",
          "node_port_range": "31500-32767",
          "logs": "/x/.state/testbed/logs"
        }
      }
    }"#;

    #[test]
    fn parses_the_scripts_info() {
        let info = Info::parse(INFO.as_bytes()).expect("valid info");
        let remote = info.cluster("remote").expect("remote exists");
        assert_eq!(remote.node_name, "remote-node");
        assert_eq!(remote.node_ip, "10.202.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            remote.kubeconfig,
            PathBuf::from("/x/.state/testbed/remote/kubeconfig")
        );
        assert!(info.cluster("other").is_err());
    }

    #[test]
    fn node_port_ranges_match_the_script_and_are_disjoint() {
        let info = Info::parse(INFO.as_bytes()).expect("valid info");
        for (name, c) in &info.clusters {
            let r = node_port_range(name);
            assert_eq!(c.node_port_range, format!("{}-{}", r.start(), r.end()));
        }
        assert!(node_port_range("local").end() < node_port_range("remote").start());
    }

    #[test]
    fn namespace_names_are_valid_and_distinct() {
        let a = namespace_name("gc-test").expect("valid prefix");
        let b = namespace_name("gc-test").expect("valid prefix");
        assert_ne!(a, b);
        assert!(a.starts_with("gc-test-"));
        assert_eq!(a.len(), "gc-test-".len() + 6);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }

    #[test]
    fn bad_namespace_prefixes_are_refused() {
        for bad in ["", "Upper", "under_score", "-lead", &"x".repeat(57)] {
            assert!(namespace_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(namespace_name(&"x".repeat(56)).is_ok());
    }
}
