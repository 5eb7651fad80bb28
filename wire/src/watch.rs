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
//! re-reads everything through `/status` every few minutes, as a safety net.

use serde::{Deserialize, Serialize};

use crate::types::PodStatus;

/// `GET`: which extensions this plugin offers ([`Capabilities`]).
pub const CAPABILITIES_PATH: &str = "/capabilities";
/// `GET`: the stream of status changes.
pub const WATCH_PATH: &str = "/status/watch";
/// Capability name of [`WATCH_PATH`].
pub const STATUS_WATCH: &str = "statusWatch";
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
}
