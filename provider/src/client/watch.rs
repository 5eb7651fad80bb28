//! Our status-change extension of the plugin API (`offload_wire::watch`) on
//! the client side: which extensions the plugin offers, and the stream of
//! status changes, one JSON event per line.

use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use http::Method;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use offload_wire::watch::{
    CAPABILITIES_PATH, Capabilities, FOLLOW_PATH, FollowAnswer, FollowRequest, WATCH_PATH,
    WatchEvent, WatchQuery,
};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use super::{PluginClient, PluginError, classify};

/// Longest line of the stream: one pod's status (a few KiB) with room to spare.
const MAX_LINE: usize = 1 << 20;

/// The events of one stream connection; it ends when the connection does.
pub type WatchStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent, PluginError>> + Send>>;

/// A pod reduced to what identifies it (name, namespace, UID) and its node
/// (the plugin tells its callers apart by it): what a plugin offering our
/// extensions needs in a `/status` request (it answers from the remote
/// pod's spec when the request has no containers).
pub fn identity(pod: &Pod) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl PluginClient {
    /// The extensions the plugin offers. A plugin without the route (404,
    /// 405 or 501: the interLink API server, another plugin) offers none;
    /// any other failure (unreachable, 503 while it starts) is an error, to
    /// be asked again: it must not switch the provider to polling.
    pub async fn capabilities(&self) -> Result<Capabilities, PluginError> {
        let asked = self
            .call::<()>(
                "capabilities",
                Method::GET,
                CAPABILITIES_PATH,
                None,
                Some(self.ping_timeout()),
            )
            .await;
        match asked {
            Ok(resp) => self.json(resp).await,
            Err(PluginError::Status { status, .. }) if offers_nothing(status) => {
                Ok(Capabilities::default())
            }
            Err(e) => Err(e),
        }
    }

    /// Tell the plugin which pods this node follows (`/status/follow`).
    pub async fn follow(&self, req: &FollowRequest) -> Result<FollowAnswer, PluginError> {
        let resp = self
            .call(
                "follow",
                Method::POST,
                FOLLOW_PATH,
                Some(req),
                Some(self.timeout()),
            )
            .await?;
        self.json(resp).await
    }

    /// Open the status-change stream of `query`. The answer's headers must
    /// come within `header_timeout`; the body is read for as long as the
    /// connection lives (the caller decides when it is silent for too long).
    pub async fn watch_status(
        &self,
        query: &WatchQuery,
        header_timeout: Duration,
    ) -> Result<WatchStream, PluginError> {
        let path = format!("{WATCH_PATH}?{}", query_string(query));
        let resp = tokio::time::timeout(
            header_timeout,
            self.call::<()>("status_watch", Method::GET, &path, None, None),
        )
        .await
        .map_err(|_| PluginError::Timeout)??;
        let body = resp.bytes_stream().map_err(|e| {
            let e = classify(e);
            std::io::Error::other(e.to_string())
        });
        let lines = FramedRead::new(
            StreamReader::new(body),
            LinesCodec::new_with_max_length(MAX_LINE),
        );
        let events = lines.filter_map(|line| async move {
            match line {
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some(parse_event(&l)),
                Err(LinesCodecError::MaxLineLengthExceeded) => Some(Err(PluginError::TooLarge {
                    limit: MAX_LINE as u64,
                })),
                Err(LinesCodecError::Io(e)) => Some(Err(PluginError::Other(e.to_string()))),
            }
        });
        Ok(Box::pin(events))
    }
}

/// An answer to `GET /capabilities` that means "no such route".
fn offers_nothing(status: u16) -> bool {
    matches!(status, 404 | 405 | 501)
}

fn query_string(query: &WatchQuery) -> String {
    let mut qs = form_urlencoded::Serializer::new(String::new());
    qs.append_pair("node", &query.node);
    if let Some(t) = &query.resume {
        qs.append_pair("resume", t);
    }
    qs.finish()
}

/// One line of the stream.
fn parse_event(line: &str) -> Result<WatchEvent, PluginError> {
    serde_json::from_str(line).map_err(|e| {
        let snippet: String = line.chars().take(300).collect();
        PluginError::Decode(format!("{e} in {snippet:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_name_namespace_uid_and_node_only() {
        let mut pod = testbed::fixtures::pod("p")
            .node("vn")
            .container(testbed::fixtures::container("main"))
            .build();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("u1".into());
        let id = identity(&pod);
        assert_eq!(id.metadata.name.as_deref(), Some("p"));
        assert_eq!(id.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(id.metadata.uid.as_deref(), Some("u1"));
        assert!(id.metadata.labels.is_none());
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(
            json,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns","uid":"u1"},"spec":{"containers":[],"nodeName":"vn"}}"#
        );
    }

    #[test]
    fn only_a_missing_route_means_no_extension() {
        assert!(offers_nothing(404) && offers_nothing(405) && offers_nothing(501));
        assert!(!offers_nothing(503) && !offers_nothing(401) && !offers_nothing(500));
        let q = WatchQuery {
            node: "vn 1".into(),
            resume: Some("e:1&x".into()),
        };
        assert_eq!(query_string(&q), "node=vn+1&resume=e%3A1%26x");
    }

    #[test]
    fn lines_parse_as_events() {
        let ev = parse_event(r#"{"type":"bookmark","resume":"x:1"}"#).expect("parses");
        assert_eq!(ev.resume(), "x:1");
        assert!(matches!(
            parse_event(r#"{"type":"later","resume":"x"}"#),
            Err(PluginError::Decode(_))
        ));
    }
}
