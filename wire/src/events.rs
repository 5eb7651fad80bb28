//! Our extension of the interLink plugin API that carries the remote
//! cluster's Events about offloaded pods back to the provider:
//! `GET /events?node=<local node>&since=<cursor>` answers [`EventsAnswer`].
//!
//! - `node` names the caller's virtual node: with the authenticated
//!   principal it makes the caller, and only events about pods the plugin
//!   created for that caller are answered.
//! - `since` is the `cursor` of the previous answer (absent on the first
//!   call). A cursor the plugin does not know (from before a plugin restart,
//!   or older than what it keeps) is no error: the answer holds everything
//!   the plugin still keeps, and the provider's deduplication absorbs the
//!   repeats (every event names its remote Event and that Event's count).
//! - The answer holds at most [`MAX_EVENTS`] events; `more` says that more
//!   are waiting (ask again at once with the new cursor).
//! - A plugin without this extension answers 404: the provider then checks
//!   again only rarely.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// The path of the extension.
pub const EVENTS_PATH: &str = "/events";
/// Most events in one answer.
pub const MAX_EVENTS: usize = 500;
/// Longest message carried, in bytes (Kubernetes caps an Event's note at
/// 1 KiB in `events.k8s.io/v1`); longer ones are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The local pod an event is about (names and UID of the local cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventPod {
    #[serde(rename = "namespace")]
    pub namespace: String,
    #[serde(rename = "name")]
    pub name: String,
    #[serde(rename = "uid")]
    pub uid: String,
}

/// One remote Event, translated to the local pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteEvent {
    /// The remote Event's UID: the same occurrence series across answers.
    #[serde(rename = "id")]
    pub id: String,
    #[serde(rename = "pod")]
    pub pod: EventPod,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(rename = "reason")]
    pub reason: String,
    #[serde(rename = "message", default)]
    pub message: String,
    /// How often the remote cluster saw it (at least 1).
    #[serde(rename = "count", default = "one")]
    pub count: i32,
    #[serde(
        rename = "firstTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub first_timestamp: Option<Time>,
    #[serde(
        rename = "lastTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_timestamp: Option<Time>,
    /// `spec.containers{name}` / `spec.initContainers{name}` of the local
    /// pod (container names are the same on both sides), if about one.
    #[serde(rename = "fieldPath", default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

fn one() -> i32 {
    1
}

/// The answer of `GET /events`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsAnswer {
    /// Opaque; send it back as `since`.
    #[serde(rename = "cursor")]
    pub cursor: String,
    #[serde(rename = "events", default)]
    pub events: Vec<RemoteEvent>,
    /// More events are waiting after `cursor`.
    #[serde(rename = "more", default)]
    pub more: bool,
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] bytes, at a character
/// boundary.
pub fn truncate_message(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_message("short"), "short");
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate_message(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES && cut.len() >= MAX_MESSAGE_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_answer_reads_what_a_minimal_plugin_sends() {
        let a: EventsAnswer = serde_json::from_str(
            r#"{"cursor":"c","events":[{"id":"1","pod":{"namespace":"n","name":"p","uid":"u"},
                "type":"Warning","reason":"Failed","message":"m"}]}"#,
        )
        .expect("decode");
        assert_eq!(a.events[0].count, 1);
        assert!(!a.more);
        let back: EventsAnswer =
            serde_json::from_value(serde_json::to_value(&a).expect("encode")).expect("again");
        assert_eq!(back, a);
    }
}
