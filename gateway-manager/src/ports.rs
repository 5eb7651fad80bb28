//! Gateway port allocation: pure logic, no Kubernetes in sight. The port
//! types and the range are part of the tunnel contract
//! ([`offload_wire::tunnel::ports`]).
//!
//! One gateway port per declared TCP `containerPort` of an offloaded pod, from
//! a configured range. The allocator is a cache of what the cluster says: it
//! is rebuilt from the tunnel annotations of live pods ([`Allocator::rebuild`])
//! and every allocation is written back to the pod as an annotation before the
//! pod is offloaded, so a restart loses nothing.
//!
//! Ports are handed out next-fit (a cursor moving round the range), so a port
//! that was just released is the last to be reused: the remote forward of the
//! pod that had it may still be winding down.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use offload_wire::tunnel::ports::{ContainerPort, GatewayPort, PortMap, PortRange};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Not enough free ports for every containerPort of the pod. Nothing was
    /// allocated (all or nothing).
    #[error(
        "gateway port range {range} is exhausted: pod needs {wanted} more port(s), {free} free \
         ({used} in use by live pods)"
    )]
    Exhausted {
        range: PortRange,
        wanted: usize,
        free: usize,
        used: usize,
    },
}

/// A pod whose recorded allocation could not be honoured on rebuild because
/// another pod (seen first) already holds one of its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub pod: String,
    pub port: GatewayPort,
    pub held_by: String,
}

/// Which pod holds which gateway ports. Keyed by pod UID, so a pod deleted and
/// re-created under the same name is a different owner.
#[derive(Debug, Clone)]
pub struct Allocator {
    range: PortRange,
    by_pod: HashMap<String, PortMap>,
    owner: BTreeMap<GatewayPort, String>,
    cursor: GatewayPort,
}

impl Allocator {
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            by_pod: HashMap::new(),
            owner: BTreeMap::new(),
            cursor: range.first(),
        }
    }

    /// Rebuild from the allocations recorded on live pods, in the order given
    /// (give the oldest pods first: they keep their ports on a conflict).
    /// Ports outside the range (the range was changed) stay reserved for their
    /// pod until it goes. Returns the pods that lost a port to a conflict;
    /// their whole allocation is dropped and they must be allocated again.
    pub fn rebuild<I>(range: PortRange, live: I) -> (Self, Vec<Conflict>)
    where
        I: IntoIterator<Item = (String, PortMap)>,
    {
        let mut this = Self::new(range);
        let mut conflicts = Vec::new();
        for (pod, ports) in live {
            if ports.is_empty() || this.by_pod.contains_key(&pod) {
                continue;
            }
            let clash = ports
                .values()
                .find_map(|p| this.owner.get(p).map(|holder| (*p, holder.clone())));
            if let Some((port, held_by)) = clash {
                conflicts.push(Conflict { pod, port, held_by });
                continue;
            }
            for gw in ports.values() {
                this.owner.insert(*gw, pod.clone());
            }
            this.by_pod.insert(pod, ports);
        }
        // Continue after the highest port in use, so recently used ports are
        // the last to be handed out again.
        if let Some(max) = this.owner.range(range.first()..=range.last()).next_back() {
            this.cursor = this.next_in_range(*max.0);
        }
        (this, conflicts)
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Ports held by live pods (inside or outside the range).
    pub fn used(&self) -> usize {
        self.owner.len()
    }

    /// Free ports of the range.
    pub fn free(&self) -> usize {
        self.range.len()
            - self
                .owner
                .range(self.range.first()..=self.range.last())
                .count()
    }

    pub fn get(&self, pod: &str) -> Option<&PortMap> {
        self.by_pod.get(pod)
    }

    pub fn owner_of(&self, port: GatewayPort) -> Option<&str> {
        self.owner.get(&port).map(String::as_str)
    }

    /// Allocate one gateway port per container port of `pod`. Idempotent: the
    /// ports the pod already holds are kept, only missing ones are added. All
    /// or nothing: on exhaustion nothing changes.
    pub fn allocate(
        &mut self,
        pod: &str,
        container_ports: &BTreeSet<ContainerPort>,
    ) -> Result<PortMap, AllocError> {
        let mut ports = self.by_pod.get(pod).cloned().unwrap_or_default();
        let missing: Vec<ContainerPort> = container_ports
            .iter()
            .filter(|cp| !ports.contains_key(cp))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(ports);
        }
        let free = self.free();
        if missing.len() > free {
            return Err(AllocError::Exhausted {
                range: self.range,
                wanted: missing.len(),
                free,
                used: self.used(),
            });
        }
        for cp in missing {
            let gw = self.take_next();
            self.owner.insert(gw, pod.to_owned());
            ports.insert(cp, gw);
        }
        self.by_pod.insert(pod.to_owned(), ports.clone());
        Ok(ports)
    }

    /// Hand every port `from` holds over to `to` (which must hold none), keeping
    /// the port numbers: a reservation made before the pod had a UID (at
    /// admission) becomes the pod's own. Returns whether anything moved.
    pub fn transfer(&mut self, from: &str, to: &str) -> bool {
        if from == to || self.by_pod.contains_key(to) {
            return false;
        }
        let Some(ports) = self.by_pod.remove(from) else {
            return false;
        };
        for gw in ports.values() {
            if self.owner.get(gw).is_some_and(|o| o == from) {
                self.owner.insert(*gw, to.to_owned());
            }
        }
        self.by_pod.insert(to.to_owned(), ports);
        true
    }

    /// Give back every port of `pod`. Returns what it held.
    pub fn release(&mut self, pod: &str) -> Option<PortMap> {
        let ports = self.by_pod.remove(pod)?;
        for gw in ports.values() {
            if self.owner.get(gw).is_some_and(|o| o == pod) {
                self.owner.remove(gw);
            }
        }
        Some(ports)
    }

    fn next_in_range(&self, port: GatewayPort) -> GatewayPort {
        self.range.next_after(port)
    }

    /// The next free port at or after the cursor. Only called when `free() > 0`.
    fn take_next(&mut self) -> GatewayPort {
        let mut port = self.cursor;
        for _ in 0..self.range.len() {
            if !self.owner.contains_key(&port) {
                self.cursor = self.next_in_range(port);
                return port;
            }
            port = self.next_in_range(port);
        }
        // free() > 0 guarantees we found one above; stay total anyway.
        self.cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn set(ports: &[u16]) -> BTreeSet<ContainerPort> {
        ports.iter().copied().map(ContainerPort).collect()
    }

    use offload_wire::tunnel::port_map as pm;

    fn range(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).expect("valid range")
    }

    #[test]
    fn transfer_keeps_ports_and_moves_ownership() {
        let mut a = Allocator::new(range(40000, 40009));
        let held = a
            .allocate("admission:ns/web", &set(&[80, 8080]))
            .expect("alloc");
        let other = a.allocate("uid-other", &set(&[80])).expect("alloc");
        assert!(a.transfer("admission:ns/web", "uid-web"));
        assert_eq!(a.get("uid-web"), Some(&held));
        assert_eq!(a.get("admission:ns/web"), None);
        for gw in held.values() {
            assert_eq!(a.owner_of(*gw), Some("uid-web"));
        }
        // Idempotent allocation under the new owner: same ports.
        assert_eq!(a.allocate("uid-web", &set(&[80, 8080])), Ok(held.clone()));
        // Never onto an owner that already holds ports, never from nothing.
        assert!(!a.transfer("uid-web", "uid-other"));
        assert_eq!(a.get("uid-other"), Some(&other));
        assert!(!a.transfer("nobody", "uid-new"));
        // Releasing the new owner frees the ports.
        a.release("uid-web");
        assert_eq!(a.free(), 9);
    }

    #[test]
    fn one_port_per_container_port_and_idempotent() {
        let mut a = Allocator::new(range(40000, 40009));
        let m = a.allocate("uid-a", &set(&[80, 8080])).expect("alloc");
        assert_eq!(m, pm([(80, 40000), (8080, 40001)]));
        // Same pod again: same answer, nothing new used.
        assert_eq!(a.allocate("uid-a", &set(&[80, 8080])), Ok(m.clone()));
        assert_eq!(a.used(), 2);
        // Another pod serving the same containerPort gets another gateway port.
        let n = a.allocate("uid-b", &set(&[80])).expect("alloc");
        assert_eq!(n, pm([(80, 40002)]));
        // A pod without ports holds nothing.
        assert_eq!(a.allocate("uid-c", &set(&[])), Ok(pm([])));
        assert_eq!(a.get("uid-c"), None);
    }

    #[test]
    fn exhaustion_is_all_or_nothing_and_clear() {
        let mut a = Allocator::new(range(40000, 40002));
        a.allocate("a", &set(&[1, 2])).expect("alloc");
        let err = a.allocate("b", &set(&[1, 2])).expect_err("exhausted");
        assert_eq!(
            err,
            AllocError::Exhausted {
                range: range(40000, 40002),
                wanted: 2,
                free: 1,
                used: 2
            }
        );
        assert!(err.to_string().contains("40000-40002 is exhausted"));
        assert_eq!(a.get("b"), None);
        assert_eq!(a.free(), 1);
    }

    #[test]
    fn reuse_after_release_is_next_fit() {
        let mut a = Allocator::new(range(40000, 40003));
        a.allocate("a", &set(&[1])).expect("alloc"); // 40000
        a.allocate("b", &set(&[1])).expect("alloc"); // 40001
        assert_eq!(a.release("a"), Some(pm([(1, 40000)])));
        assert_eq!(a.release("a"), None);
        // The just-released 40000 is not handed out first.
        assert_eq!(a.allocate("c", &set(&[1])), Ok(pm([(1, 40002)])));
        assert_eq!(a.allocate("d", &set(&[1])), Ok(pm([(1, 40003)])));
        // Wraps round to the released one when nothing else is free.
        assert_eq!(a.allocate("e", &set(&[1])), Ok(pm([(1, 40000)])));
        assert!(a.allocate("f", &set(&[1])).is_err());
        a.release("c");
        assert_eq!(a.allocate("f", &set(&[1])), Ok(pm([(1, 40002)])));
    }

    #[test]
    fn rebuild_from_cluster_state() {
        let live = vec![
            ("old".to_owned(), pm([(80, 40003), (81, 40004)])),
            ("young".to_owned(), pm([(80, 40004)])), // clash
            ("other".to_owned(), pm([(80, 40001)])),
            ("outside".to_owned(), pm([(80, 50000)])), // range shrank
        ];
        let (mut a, conflicts) = Allocator::rebuild(range(40000, 40005), live);
        assert_eq!(
            conflicts,
            vec![Conflict {
                pod: "young".into(),
                port: GatewayPort(40004),
                held_by: "old".into()
            }]
        );
        assert_eq!(a.used(), 4);
        assert_eq!(a.free(), 3);
        assert_eq!(a.owner_of(GatewayPort(50000)), Some("outside"));
        // Existing pods keep their ports; new ones continue after the highest.
        assert_eq!(
            a.allocate("old", &set(&[80, 81])),
            Ok(pm([(80, 40003), (81, 40004)]))
        );
        assert_eq!(a.allocate("young", &set(&[80])), Ok(pm([(80, 40005)])));
        assert_eq!(a.allocate("new", &set(&[80])), Ok(pm([(80, 40000)])));
        assert_eq!(a.allocate("new2", &set(&[80])), Ok(pm([(80, 40002)])));
        assert!(a.allocate("new3", &set(&[80])).is_err());
    }

    #[test]
    fn concurrent_allocations_never_share_a_port() {
        let a = Arc::new(Mutex::new(Allocator::new(range(40000, 40999))));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let pod = format!("pod-{t}-{i}");
                        let mut guard = a.lock().expect("lock");
                        // Exhaustion is expected near the end; it must be an error.
                        let _ = guard.allocate(&pod, &set(&[80, 443]));
                        if i % 3 == 0 {
                            guard.release(&pod);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let a = a.lock().expect("lock");
        let mut seen = BTreeSet::new();
        for (pod, m) in &a.by_pod {
            for gw in m.values() {
                assert!(seen.insert(*gw), "port {gw} given twice");
                assert_eq!(a.owner_of(*gw), Some(pod.as_str()));
            }
        }
        // 8 threads x 100 pods, a third released, 2 ports each, range of 1000.
        assert_eq!(a.used(), seen.len());
        assert!(a.free() + a.used() == 1000);
    }
}
