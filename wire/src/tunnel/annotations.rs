//! The tunnel annotations on a pod: encode and decode, no I/O.
//!
//! gateway-manager writes them on the local pod before it is offloaded, the
//! plugin copies them onto the remote pod, the bastion reads them there.
//! Keys come from [`crate::keys::tunnel`]. Values:
//! - `GATEWAY_ADDRESS`: `host:port` of the gateway SSH server as the remote
//!   side reaches it;
//! - `GATEWAY_HOST_KEY`: the gateway's host *public* key, `ssh-ed25519 AAAA…`
//!   (no comment), pinned by the bastion;
//! - `PORTS`: JSON object `{"<containerPort>": <gatewayPort>}`.

use std::collections::BTreeMap;

use super::ports::{ContainerPort, GatewayPort, PortMap};
use crate::keys::tunnel;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelAnnotations {
    pub gateway_address: String,
    pub gateway_host_key: String,
    pub ports: PortMap,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {key} is not a JSON object of containerPort to gateway port: {reason}")]
    Ports { key: &'static str, reason: String },
    #[error("annotation {0} is missing while {1} is set")]
    Missing(&'static str, &'static str),
    #[error("annotation {key} is not valid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Encode a port map as the value of [`tunnel::PORTS`].
pub fn encode_ports(ports: &PortMap) -> String {
    let obj: BTreeMap<String, u16> = ports.iter().map(|(c, g)| (c.to_string(), g.0)).collect();
    // A map of strings to integers always serialises.
    serde_json::to_string(&obj).unwrap_or_else(|_| "{}".to_owned())
}

/// Decode the value of [`tunnel::PORTS`].
pub fn decode_ports(value: &str) -> Result<PortMap, AnnotationError> {
    let err = |reason: String| AnnotationError::Ports {
        key: tunnel::PORTS,
        reason,
    };
    let obj: BTreeMap<String, u32> = serde_json::from_str(value).map_err(|e| err(e.to_string()))?;
    let mut out = PortMap::new();
    for (c, g) in obj {
        let cp: u16 = c
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(format!("{c:?} is not a port")))?;
        let gp = u16::try_from(g)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(format!("{g} is not a port")))?;
        out.insert(ContainerPort(cp), GatewayPort(gp));
    }
    Ok(out)
}

impl TunnelAnnotations {
    /// The annotations to merge into the pod's metadata.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                tunnel::GATEWAY_ADDRESS.to_owned(),
                self.gateway_address.clone(),
            ),
            (
                tunnel::GATEWAY_HOST_KEY.to_owned(),
                self.gateway_host_key.clone(),
            ),
            (tunnel::PORTS.to_owned(), encode_ports(&self.ports)),
        ])
    }

    /// Read the tunnel annotations of a pod. `Ok(None)` when the pod has no
    /// tunnel (no `PORTS` annotation).
    pub fn from_map(
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, AnnotationError> {
        let Some(ports) = annotations.get(tunnel::PORTS) else {
            return Ok(None);
        };
        let ports = decode_ports(ports)?;
        let gateway_address = required(annotations, tunnel::GATEWAY_ADDRESS)?;
        if split_host_port(&gateway_address).is_none() {
            return Err(AnnotationError::Invalid {
                key: tunnel::GATEWAY_ADDRESS,
                reason: format!("{gateway_address:?} is not host:port"),
            });
        }
        let gateway_host_key = required(annotations, tunnel::GATEWAY_HOST_KEY)?;
        if gateway_host_key.split_whitespace().count() < 2 {
            return Err(AnnotationError::Invalid {
                key: tunnel::GATEWAY_HOST_KEY,
                reason: "not an OpenSSH public key line".to_owned(),
            });
        }
        Ok(Some(Self {
            gateway_address,
            gateway_host_key,
            ports,
        }))
    }
}

/// An annotation that must be there once `PORTS` is.
fn required(
    annotations: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<String, AnnotationError> {
    annotations
        .get(key)
        .cloned()
        .ok_or(AnnotationError::Missing(key, tunnel::PORTS))
}

/// Split `host:port` (or `[v6]:port`).
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn round_trip() {
        let a = TunnelAnnotations {
            gateway_address: "10.201.0.1:30222".into(),
            gateway_host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ".into(),
            ports: PortMap::from([
                (ContainerPort(80), GatewayPort(40000)),
                (ContainerPort(8080), GatewayPort(40001)),
            ]),
        };
        let m = a.to_map();
        assert_eq!(m[tunnel::PORTS], r#"{"80":40000,"8080":40001}"#);
        assert_eq!(TunnelAnnotations::from_map(&m), Ok(Some(a)));
    }

    #[test]
    fn absent_and_broken() {
        assert_eq!(TunnelAnnotations::from_map(&BTreeMap::new()), Ok(None));
        for bad in [
            r#"{"x":1}"#,
            r#"{"80":0}"#,
            r#"{"80":70000}"#,
            "[1]",
            "nope",
        ] {
            assert!(decode_ports(bad).is_err(), "{bad}");
        }
        let only_ports = BTreeMap::from([(tunnel::PORTS.to_owned(), "{}".to_owned())]);
        assert!(matches!(
            TunnelAnnotations::from_map(&only_ports),
            Err(AnnotationError::Missing(_, _))
        ));
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a.b:22"), Some(("a.b", 22)));
        assert_eq!(split_host_port("[::1]:2222"), Some(("::1", 2222)));
        assert_eq!(split_host_port("a.b"), None);
        assert_eq!(split_host_port(":22"), None);
        assert_eq!(split_host_port("h:0"), None);
    }
}
