//! Applying the plugin's status-change stream (`offload_wire::watch`): what
//! each event means for the followed pods, and the resume token to reconnect
//! with. Pure: the stream consumer (`controller::status_watch`) does the I/O.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod,
};
use kube::ResourceExt;
use offload_wire::PodStatus as RemoteStatus;
use offload_wire::watch::WatchEvent;

use super::{containers, init_containers};

/// Exit code of the containers of a pod whose remote pod is gone: what the
/// plugin's `/status` answers for a remote pod it saw vanish (a SIGKILL).
pub const GONE_EXIT_CODE: i32 = 137;
/// Their reason, the plugin's too.
pub const GONE_REASON: &str = "RemotePodDeleted";

/// What to do after an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Write this status (if the pod is followed and it changes anything).
    Status(RemoteStatus),
    /// The remote pod of this local pod is gone.
    Gone {
        namespace: String,
        name: String,
        uid: String,
    },
    /// A replay ended: these followed pods (UIDs) were not in it, so the
    /// plugin has no remote pod for them; ask `/status` about them, as the
    /// polling would.
    Unmentioned(Vec<String>),
    /// Nothing to write.
    Nothing,
}

/// The consumer's side of one stream, across reconnects.
#[derive(Debug, Default)]
pub struct StreamState {
    /// The last token processed: sent on the next connection.
    token: Option<String>,
    /// Pods heard about since the connection opened or the last bookmark:
    /// the ones a replay mentioned when its `Synced` comes.
    mentioned: HashSet<String>,
}

impl StreamState {
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A new connection: a replay (if the token is not honoured) starts now.
    pub fn connected(&mut self) {
        self.mentioned.clear();
    }

    /// Apply one event. `followed` lists the UIDs of the pods whose status is
    /// followed now (only read on `Synced`).
    pub fn apply(&mut self, event: WatchEvent, followed: impl FnOnce() -> Vec<String>) -> Step {
        // An empty token is none: the next connection gets a full replay.
        let token = event.resume();
        self.token = (!token.is_empty()).then(|| token.to_owned());
        match event {
            WatchEvent::Status { status, .. } => {
                self.mentioned.insert(status.uid.clone());
                Step::Status(status)
            }
            WatchEvent::Gone {
                namespace,
                name,
                uid,
                ..
            } => {
                self.mentioned.insert(uid.clone());
                Step::Gone {
                    namespace,
                    name,
                    uid,
                }
            }
            WatchEvent::Synced { .. } => {
                let missing = followed()
                    .into_iter()
                    .filter(|uid| !self.mentioned.contains(uid))
                    .collect();
                self.mentioned.clear();
                Step::Unmentioned(missing)
            }
            WatchEvent::Bookmark { .. } => {
                // A replay is sent at once, so a bookmark means none is under
                // way: forget what was mentioned, so the set stays small on a
                // resumed connection (which never ends in `Synced`). Were a
                // bookmark ever sent mid-replay, the pods mentioned before it
                // would only be asked about through `/status` once more.
                self.mentioned.clear();
                Step::Nothing
            }
        }
    }
}

/// The remote status of `pod` after a [`Step::Gone`]: every container
/// terminated, as `/status` answers for a remote pod that vanished, so the
/// local pod fails instead of showing its last state forever.
pub fn gone_status(pod: &Pod) -> RemoteStatus {
    let gone = |c: &Container| ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: GONE_EXIT_CODE,
                reason: Some(GONE_REASON.into()),
                message: Some(
                    "the remote pod disappeared (deleted or evicted on the remote cluster)".into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    RemoteStatus {
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.namespace().unwrap_or_default(),
        jid: String::new(),
        containers: containers(pod).iter().map(gone).collect(),
        init_containers: init_containers(pod).iter().map(gone).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(uid: &str) -> RemoteStatus {
        RemoteStatus {
            name: format!("p-{uid}"),
            uid: uid.into(),
            namespace: "ns".into(),
            ..Default::default()
        }
    }

    fn ev_status(token: &str, uid: &str) -> WatchEvent {
        WatchEvent::Status {
            resume: token.into(),
            status: status(uid),
        }
    }

    fn none() -> Vec<String> {
        vec![]
    }

    fn uids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_event_advances_the_token() {
        let mut s = StreamState::default();
        assert_eq!(s.token(), None);
        s.apply(ev_status("t:1", "a"), none);
        assert_eq!(s.token(), Some("t:1"));
        s.apply(
            WatchEvent::Bookmark {
                resume: "t:2".into(),
            },
            none,
        );
        assert_eq!(s.token(), Some("t:2"));
        s.connected();
        assert_eq!(s.token(), Some("t:2"), "kept across reconnects");
        s.apply(WatchEvent::Bookmark { resume: "".into() }, none);
        assert_eq!(s.token(), None, "an empty token is none");
    }

    #[test]
    fn status_and_gone_are_handed_on() {
        let mut s = StreamState::default();
        assert_eq!(
            s.apply(ev_status("1", "a"), none),
            Step::Status(status("a"))
        );
        let gone = WatchEvent::Gone {
            resume: "2".into(),
            namespace: "ns".into(),
            name: "p".into(),
            uid: "b".into(),
        };
        assert_eq!(
            s.apply(gone, none),
            Step::Gone {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "b".into()
            }
        );
    }

    #[test]
    fn after_a_replay_the_followed_pods_it_did_not_mention_are_asked_about() {
        let mut s = StreamState::default();
        s.connected();
        s.apply(ev_status("1", "a"), none);
        s.apply(
            WatchEvent::Gone {
                resume: "2".into(),
                namespace: "ns".into(),
                name: "p".into(),
                uid: "b".into(),
            },
            none,
        );
        let step = s.apply(WatchEvent::Synced { resume: "3".into() }, || {
            uids(&["a", "b", "c", "d"])
        });
        assert_eq!(step, Step::Unmentioned(vec!["c".into(), "d".into()]));
        // A second replay (a reconnect) starts from nothing.
        s.connected();
        s.apply(ev_status("4", "c"), none);
        let step = s.apply(WatchEvent::Synced { resume: "5".into() }, || {
            uids(&["a", "c"])
        });
        assert_eq!(step, Step::Unmentioned(vec!["a".into()]));
    }

    #[test]
    fn a_bookmark_forgets_what_was_mentioned() {
        let mut s = StreamState::default();
        s.apply(ev_status("1", "a"), none);
        s.apply(WatchEvent::Bookmark { resume: "2".into() }, none);
        let step = s.apply(WatchEvent::Synced { resume: "3".into() }, || uids(&["a"]));
        assert_eq!(step, Step::Unmentioned(vec!["a".into()]));
    }

    #[test]
    fn a_gone_pod_fails_with_every_container_killed() {
        let pod = testbed::fixtures::pod("p")
            .restart_policy("Never")
            .container(testbed::fixtures::container("main"))
            .build();
        let st = gone_status(&pod);
        assert_eq!(st.containers.len(), 1);
        let t = st.containers[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some(GONE_REASON)));
        let local = crate::status::map_remote_status(&pod, &st, None, jiff::Timestamp::now());
        assert_eq!(local.phase.as_deref(), Some("Failed"));
    }
}
