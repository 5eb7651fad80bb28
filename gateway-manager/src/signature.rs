//! Which tunnel annotations gateway-manager provably wrote. Pure.
//!
//! Pod annotations can be written by whoever can edit the pod, so after a
//! restart they are not taken back as allocations on their word:
//! gateway-manager signs what it writes (an HMAC-SHA256 over the pod UID,
//! the gateway address, the gateway host key and the port map, keyed by a
//! random secret kept in a Secret of the gateway's namespace that only
//! gateway-manager reads), and [`AllocationKey::written_by_us`] takes back
//! only pods bound to its virtual node whose signature checks. Copying a
//! victim's annotations (signature included) onto another pod does not
//! check: the UID differs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use offload_wire::keys::tunnel;
use offload_wire::tunnel::{TunnelAnnotations, encode_ports};
use ring::hmac;

/// Version prefix of the signature annotation's value.
const VERSION: &str = "v1.";
/// Length of a fresh allocation key.
pub const KEY_LEN: usize = 32;

/// The HMAC key of the allocations.
pub struct AllocationKey(hmac::Key);

impl std::fmt::Debug for AllocationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllocationKey(..)")
    }
}

/// `type blob` of an OpenSSH key line (its comment is not signed).
fn key_id(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn message(uid: &str, t: &TunnelAnnotations) -> String {
    format!(
        "offload-tunnel-allocation/v1\n{uid}\n{}\n{}\n{}",
        t.gateway_address,
        key_id(&t.gateway_host_key),
        encode_ports(&t.ports)
    )
}

impl AllocationKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A fresh random secret for [`new`](Self::new).
    pub fn generate() -> Result<Vec<u8>, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut secret = vec![0u8; KEY_LEN];
        ring::rand::SystemRandom::new().fill(&mut secret)?;
        Ok(secret)
    }

    /// The value of [`tunnel::ALLOCATION_SIGNATURE`] for this pod's tunnel.
    pub fn sign(&self, uid: &str, t: &TunnelAnnotations) -> String {
        let tag = hmac::sign(&self.0, message(uid, t).as_bytes());
        format!("{VERSION}{}", hex::encode(tag.as_ref()))
    }

    /// The annotations gateway-manager writes on the pod: the tunnel and its signature.
    pub fn signed_map(&self, uid: &str, t: &TunnelAnnotations) -> BTreeMap<String, String> {
        let mut m = t.to_map();
        m.insert(tunnel::ALLOCATION_SIGNATURE.to_owned(), self.sign(uid, t));
        m
    }

    /// Whether `annotations` carry a tunnel signed for pod `uid` (in
    /// constant time).
    pub fn verify(&self, uid: &str, annotations: &BTreeMap<String, String>) -> bool {
        let Ok(Some(t)) = TunnelAnnotations::from_map(annotations) else {
            return false;
        };
        let Some(tag) = annotations
            .get(tunnel::ALLOCATION_SIGNATURE)
            .and_then(|s| s.strip_prefix(VERSION))
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        hmac::verify(&self.0, message(uid, &t).as_bytes(), &tag).is_ok()
    }

    /// Whether the pod's allocation is ours: bound to our virtual node
    /// (`node`; `None`: any node) and signed by us for its own UID.
    pub fn written_by_us(&self, pod: &Pod, node: Option<&str>) -> bool {
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if node.is_some_and(|n| bound != Some(n)) {
            return false;
        }
        match (&pod.metadata.uid, &pod.metadata.annotations) {
            (Some(uid), Some(a)) => self.verify(uid, a),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use offload_wire::tunnel::{ContainerPort, GatewayPort};

    fn tunnel_of(port: u16) -> TunnelAnnotations {
        TunnelAnnotations {
            gateway_address: "10.0.0.1:30222".into(),
            gateway_host_key: "ssh-ed25519 AAAAkey offload-gateway".into(),
            ports: BTreeMap::from([(ContainerPort(8080), GatewayPort(port))]),
        }
    }

    fn pod(uid: &str, node: &str, ann: BTreeMap<String, String>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                annotations: Some(ann),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_what_we_signed_for_that_pod_on_our_node_is_ours() {
        let key = AllocationKey::new(b"secret of the gateway");
        let victim = key.signed_map("uid-victim", &tunnel_of(40000));
        assert!(key.written_by_us(&pod("uid-victim", "vn", victim.clone()), Some("vn")));
        // The victim's annotations, signature included, copied onto another pod.
        assert!(!key.written_by_us(&pod("uid-thief", "vn", victim.clone()), Some("vn")));
        // The victim's own pod seen on a real node (a copy with the same UID cannot exist,
        // but the node is checked anyway).
        assert!(!key.written_by_us(&pod("uid-victim", "node-1", victim.clone()), Some("vn")));
        // A port changed after signing.
        let mut moved = victim.clone();
        moved.insert(tunnel::PORTS.into(), r#"{"8080":40001}"#.into());
        assert!(!key.written_by_us(&pod("uid-victim", "vn", moved), Some("vn")));
        // No signature, or another gateway's key.
        let mut unsigned = victim.clone();
        unsigned.remove(tunnel::ALLOCATION_SIGNATURE);
        assert!(!key.written_by_us(&pod("uid-victim", "vn", unsigned), Some("vn")));
        let other = AllocationKey::new(b"another gateway");
        assert!(!other.written_by_us(&pod("uid-victim", "vn", victim.clone()), Some("vn")));
        // The host key's comment is not signed.
        let mut recommented = victim;
        recommented.insert(
            tunnel::GATEWAY_HOST_KEY.into(),
            "ssh-ed25519 AAAAkey".into(),
        );
        assert!(key.written_by_us(&pod("uid-victim", "vn", recommented), None));
    }

    #[test]
    fn generated_keys_differ() {
        let a = AllocationKey::generate().expect("random");
        assert_eq!(a.len(), KEY_LEN);
        assert_ne!(a, AllocationKey::generate().expect("random"));
    }
}
