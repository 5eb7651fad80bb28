//! Port types of the tunnel. A pod declares a [`ContainerPort`]; the gateway
//! listens on a [`GatewayPort`] for it. Both are `u16` on the wire, but
//! mixing them up would forward one pod's traffic to the wrong place, so they
//! are distinct types; convert at the edges (`.0`, `From`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A TCP port the gateway listens on for one forwarded `containerPort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GatewayPort(pub u16);

/// A TCP `containerPort` declared by an offloaded pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerPort(pub u16);

macro_rules! port_conversions {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl From<u16> for $t {
            fn from(p: u16) -> Self {
                Self(p)
            }
        }
        impl From<$t> for u16 {
            fn from(p: $t) -> Self {
                p.0
            }
        }
        impl From<$t> for u32 {
            fn from(p: $t) -> Self {
                u32::from(p.0)
            }
        }
        /// Kubernetes objects carry ports as `i32`.
        impl From<$t> for i32 {
            fn from(p: $t) -> Self {
                i32::from(p.0)
            }
        }
    };
}

port_conversions!(GatewayPort);
port_conversions!(ContainerPort);

/// containerPort -> gateway port of one pod (ordered, so rendering is stable).
pub type PortMap = BTreeMap<ContainerPort, GatewayPort>;

/// A [`PortMap`] from plain `(containerPort, gateway port)` numbers (tests,
/// fixtures).
pub fn port_map(pairs: impl IntoIterator<Item = (u16, u16)>) -> PortMap {
    pairs
        .into_iter()
        .map(|(c, g)| (ContainerPort(c), GatewayPort(g)))
        .collect()
}

/// An inclusive range of gateway ports, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: GatewayPort,
    last: GatewayPort,
}

/// OpenSSH keeps at most this many `permitlisten` options per key
/// (`SSH_AUTHOPT_PERMIT_MAX` in auth-options.c), and the authorized_keys line
/// lists every port of the range.
pub const MAX_RANGE_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("port range {0:?} is not of the form FIRST-LAST")]
    Syntax(String),
    #[error("port range {first}-{last} is empty or reversed")]
    Empty { first: u16, last: u16 },
    #[error("port range {first}-{last} starts below 1024 (the gateway runs as a non-root user)")]
    Privileged { first: u16, last: u16 },
    #[error("port range {first}-{last} holds {len} ports, at most {MAX_RANGE_LEN} are allowed")]
    TooLarge { first: u16, last: u16, len: usize },
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, RangeError> {
        if first > last || first == 0 {
            return Err(RangeError::Empty { first, last });
        }
        if first < 1024 {
            return Err(RangeError::Privileged { first, last });
        }
        let len = usize::from(last - first) + 1;
        if len > MAX_RANGE_LEN {
            return Err(RangeError::TooLarge { first, last, len });
        }
        Ok(Self {
            first: GatewayPort(first),
            last: GatewayPort(last),
        })
    }

    pub fn first(&self) -> GatewayPort {
        self.first
    }

    pub fn last(&self) -> GatewayPort {
        self.last
    }

    pub fn len(&self) -> usize {
        usize::from(self.last.0 - self.first.0) + 1
    }

    /// Never: [`PortRange::new`] refuses empty ranges.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: GatewayPort) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn iter(&self) -> impl Iterator<Item = GatewayPort> + '_ {
        (self.first.0..=self.last.0).map(GatewayPort)
    }

    /// The port after `port` in the range, wrapping round to the first (also
    /// for a port outside the range).
    pub fn next_after(&self, port: GatewayPort) -> GatewayPort {
        if port >= self.last || port < self.first {
            self.first
        } else {
            GatewayPort(port.0 + 1)
        }
    }
}

impl Default for PortRange {
    /// 40000-40999: below the kernel's ephemeral range (32768-60999 by
    /// default on Linux would overlap, so the gateway pod must not make many
    /// outgoing connections; sshd makes none).
    fn default() -> Self {
        Self {
            first: GatewayPort(40000),
            last: GatewayPort(40999),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || RangeError::Syntax(s.to_owned());
        let (a, b) = s.trim().split_once('-').ok_or_else(syntax)?;
        let first = a.trim().parse().map_err(|_| syntax())?;
        let last = b.trim().parse().map_err(|_| syntax())?;
        Self::new(first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn range(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).expect("valid range")
    }

    #[test]
    fn range_parsing_and_limits() {
        assert_eq!("40000-40009".parse::<PortRange>(), Ok(range(40000, 40009)));
        assert_eq!(range(40000, 40009).len(), 10);
        assert!(matches!(
            "40000".parse::<PortRange>(),
            Err(RangeError::Syntax(_))
        ));
        assert!(matches!(
            "5-4".parse::<PortRange>(),
            Err(RangeError::Empty { .. })
        ));
        assert!(matches!(
            "80-90".parse::<PortRange>(),
            Err(RangeError::Privileged { .. })
        ));
        assert!(matches!(
            "20000-30000".parse::<PortRange>(),
            Err(RangeError::TooLarge { .. })
        ));
        assert_eq!(PortRange::default().to_string(), "40000-40999");
    }

    #[test]
    fn range_iterates_and_wraps() {
        let r = range(40000, 40002);
        let all: Vec<GatewayPort> = r.iter().collect();
        assert_eq!(all, [40000, 40001, 40002].map(GatewayPort));
        assert!(r.contains(GatewayPort(40002)) && !r.contains(GatewayPort(40003)));
        assert_eq!(r.next_after(GatewayPort(40000)), GatewayPort(40001));
        assert_eq!(r.next_after(GatewayPort(40002)), GatewayPort(40000));
        assert_eq!(r.next_after(GatewayPort(50000)), GatewayPort(40000));
    }

    #[test]
    fn ports_serialize_as_plain_numbers() {
        let m = port_map([(80, 40000)]);
        assert_eq!(serde_json::to_string(&m).expect("json"), r#"{"80":40000}"#);
        assert_eq!(GatewayPort(40000).to_string(), "40000");
        assert_eq!(i32::from(ContainerPort(8080)), 8080);
    }
}
