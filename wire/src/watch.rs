//! Our status-change extension of the plugin API (issue: scale). interLink's
//! provider polls `/status` with every pod; a plugin that offers
//! [`STATUS_WATCH`] in its [`Capabilities`] instead streams the changes, so
//! the cost follows the rate of change, not the number of pods. A provider
//! that does not find the capability (404 on [`CAPABILITIES_PATH`], or the
//! name missing) polls `/status` as interLink does: both stay drop-ins.
//!
//! [`WATCH_PATH`]: `GET` with a [`WatchQuery`], authenticated like every
//! route. The answer is `application/x-ndjson`: one [`WatchEvent`] JSON per
//! line, flushed as it happens, for as long as the connection lives. It
//! carries the pods this plugin instance created for the caller (principal +
//! `node`, as for `/create`), never another caller's.
//!
//! Resume: every event carries a `resume` token (opaque to the provider).
//! Reconnecting with the last token it *processed* replays every change
//! after it. A token the plugin cannot honour (another plugin process, or
//! older than what it keeps) is answered with a full replay: the current
//! status of every pod of the caller, then [`WatchEvent::Synced`]. A first
//! connection (no token) is a full replay too. The `Status` lines of a full
//! replay carry a token that asks for a full replay again: a replay cut short
//! is not complete, so a reconnect must not resume from its middle; the
//! token of [`WatchEvent::Synced`] is the first that resumes. An empty
//! `resume` is no token. So a transition that happened
//! while either side was down is never lost: at worst its final state comes
//! in the replay. [`WatchEvent::Bookmark`] lines (about every
//! [`BOOKMARK_SECONDS`]) keep an idle connection alive and advance the
//! token; the provider treats a silent connection (no line for
//! 3 x [`BOOKMARK_SECONDS`]) as dead and reconnects. The provider still
//! re-reads everything through `/status` every half hour, as a safety net.
//!
//! [`FOLLOW_PATH`] ([`STATUS_FOLLOW`]): the stream names no pods, but the
//! plugin's orphan sweep needs a caller that says which pods it still
//! follows (interLink's polling does it with every `/status` call). So a
//! streaming provider `POST`s a [`FollowRequest`] about every
//! minute (the provider's `--status-follow-interval`): the number and [`follow_digest`] of the local pod UIDs
//! it follows (a few dozen bytes, whatever the number of pods). The plugin
//! compares them with the caller's running remote pods: equal, the caller is
//! alive and names all of them ([`FollowAnswer::matched`]); different, the
//! provider sends the UIDs themselves, and only those count as named. A
//! digest alone that does not match proves nothing: it keeps no pod and
//! does not make the caller look alive.

use serde::{Deserialize, Serialize};

use crate::types::PodStatus;

/// `GET`: which extensions this plugin offers ([`Capabilities`]).
pub const CAPABILITIES_PATH: &str = "/capabilities";
/// `GET`: the stream of status changes.
pub const WATCH_PATH: &str = "/status/watch";
/// Capability name of [`WATCH_PATH`].
pub const STATUS_WATCH: &str = "statusWatch";
/// `POST`: which pods a streaming caller follows ([`FollowRequest`]).
pub const FOLLOW_PATH: &str = "/status/follow";
/// Capability name of [`FOLLOW_PATH`].
pub const STATUS_FOLLOW: &str = "statusFollow";
/// Capability names of the streaming endpoints ([`crate::stream`]).
pub const EXEC: &str = "exec";
pub const ATTACH: &str = "attach";
pub const PORT_FORWARD: &str = "portForward";
/// Seconds between bookmarks on an idle stream.
pub const BOOKMARK_SECONDS: u64 = 15;

/// Answer of [`CAPABILITIES_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Extension names, e.g. [`STATUS_WATCH`].
    #[serde(default)]
    pub extensions: Vec<String>,
}

impl Capabilities {
    pub fn offers(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }
}

/// Query of [`WATCH_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// The virtual node: with the principal, the caller.
    pub node: String,
    /// The last token processed; absent on a first connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// Body of [`FOLLOW_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowRequest {
    /// The virtual node: with the principal, the caller.
    pub node: String,
    /// How many pods the caller follows.
    pub count: u64,
    /// [`follow_digest`] of their local UIDs.
    pub digest: String,
    /// The UIDs themselves: sent after an answer `matched: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uids: Option<Vec<String>>,
}

/// Answer of [`FOLLOW_PATH`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowAnswer {
    /// The plugin's running pods of the caller are exactly the ones named.
    pub matched: bool,
}

/// A digest of a set of pod UIDs: order and repeats do not matter
/// (SHA-256 over the sorted, distinct UIDs, 32 hex digits).
pub fn follow_digest<'a>(uids: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&str> = uids.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    h.update(b"offload-follow/v1");
    for u in sorted {
        h.update((u.len() as u64).to_be_bytes());
        h.update(u.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WatchEvent {
    /// The pod's status as `/status` would answer it now.
    Status { resume: String, status: PodStatus },
    /// The remote pod of this local pod is gone (deleted remotely, or never
    /// existed after a replay): what `/status` answers for a missing pod.
    Gone {
        resume: String,
        namespace: String,
        name: String,
        uid: String,
    },
    /// The replay is complete: every pod of the caller was sent since the
    /// connection opened; a pod the provider follows and did not hear about
    /// has no remote pod.
    Synced { resume: String },
    /// Nothing changed; the token advances.
    Bookmark { resume: String },
}

impl WatchEvent {
    pub fn resume(&self) -> &str {
        match self {
            WatchEvent::Status { resume, .. }
            | WatchEvent::Gone { resume, .. }
            | WatchEvent::Synced { resume }
            | WatchEvent::Bookmark { resume } => resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_lines() {
        let e = WatchEvent::Synced {
            resume: "a:1".into(),
        };
        let line = serde_json::to_string(&e).expect("serialises");
        assert_eq!(line, r#"{"type":"synced","resume":"a:1"}"#);
        let back: WatchEvent = serde_json::from_str(&line).expect("parses");
        assert_eq!(back.resume(), "a:1");
    }

    #[test]
    fn follow_digest_is_of_the_set() {
        let a = follow_digest(["u2", "u1", "u1"]);
        assert_eq!(a, follow_digest(["u1", "u2"]));
        assert_eq!(a.len(), 32);
        assert_ne!(a, follow_digest(["u1"]));
        assert_ne!(follow_digest(["u1u2"]), follow_digest(["u1", "u2"]));
        assert_ne!(follow_digest([]), follow_digest([""]));
    }

    #[test]
    fn follow_request_omits_absent_uids() {
        let r = FollowRequest {
            node: "vn".into(),
            count: 0,
            digest: follow_digest([]),
            uids: None,
        };
        let line = serde_json::to_string(&r).expect("serialises");
        assert!(!line.contains("uids"), "{line}");
    }
}
