//! Our streaming extension of the plugin API: `kubectl exec`, `attach` and
//! `port-forward` on an offloaded pod. interLink has no such endpoints; a
//! plugin that lacks them answers 404 and the provider then answers the
//! kubelet API call with 501, as before.
//!
//! Each endpoint is a `GET` upgraded to a WebSocket (RFC 6455), authenticated
//! like every other plugin route (bearer token or client certificate). The
//! pod is named by its *local* identity plus the virtual node it is bound to:
//! the plugin derives the caller from the authenticated principal and `node`
//! (as for `/create`) and refuses (404, no hint of existence) a pod that this
//! plugin instance did not create for that caller.
//!
//! - [`EXEC_PATH`] and [`ATTACH_PATH`] take an [`ExecQuery`] and speak the
//!   framing of Kubernetes' `v5.channel.k8s.io`: every binary message starts
//!   with one [`channel`] byte, the rest is payload. The plugin answers the
//!   upgrade with the `Sec-WebSocket-Protocol` [`EXEC_PROTOCOL`].
//!   - client -> plugin: [`channel::STDIN`] data, [`channel::RESIZE`] a JSON
//!     [`TerminalSize`], [`channel::CLOSE`] followed by one byte naming the
//!     channel the client closes (only `STDIN`: end of input).
//!   - plugin -> client: [`channel::STDOUT`], [`channel::STDERR`] data, then
//!     exactly one [`channel::ERROR`] message carrying the remote
//!     `metav1.Status` JSON as the kubelet sends it (`Success`, or `Failure`
//!     with reason `NonZeroExitCode` and the cause `ExitCode`), then a
//!     WebSocket close. A failure before the remote process started (no such
//!     container, remote apiserver refused) is also an `ERROR` message with a
//!     `Failure` status whose message says why.
//! - [`PORT_FORWARD_PATH`] takes a [`PortForwardQuery`]: one WebSocket is one
//!   TCP connection to one port of the pod. Binary messages are the raw bytes
//!   both ways; one text message from the plugin is an error (e.g. nothing
//!   listens on the port) and is followed by a close. A WebSocket close from
//!   either side ends the connection (half-close is not carried: kube-rs'
//!   port-forward closes the whole remote connection once its one writer
//!   ends). So the provider keeps the WebSocket open when its client only
//!   half-closes (kubectl closes its SPDY data stream after the client's
//!   last byte, while the answer is still coming) and closes it when the
//!   client's connection is gone altogether.
//!
//! Answers before the upgrade (JSON errors like every route): 400 for a
//! query that does not parse (the message says which parameter), 401
//! unauthenticated, 404 for a pod that is not the caller's, 503 with
//! `Retry-After` when the plugin's limit of open streams is reached. After
//! the upgrade every failure is in the stream (an `ERROR` status, or the
//! port-forward text message).
//!
//! Two behaviours of the remote side the provider may rely on:
//! - A remote apiserver before 1.30 speaks `v4.channel.k8s.io`, which cannot
//!   carry the end of stdin: the plugin then ends stdin by closing the remote
//!   stream; the remote sends no status, and the plugin reports `Success`
//!   (the exit code of such a process is lost, and so is what it writes after
//!   stdin's end; its output until then is not).
//! - When the client goes away, the remote stream is closed (the process
//!   reads end-of-file on stdin); an exec'd interactive terminal (`tty` and
//!   `stdin`) is hung up first (^C, ^D), so a foreground process that reads
//!   nothing ends too. An attach only detaches: the container runs on.
//!
//! Flow control: both sides read from the socket only as fast as they can
//! write on, so a slow reader slows the writer and no buffer grows without
//! bound. No message is larger than [`MAX_MESSAGE`] (a larger one closes the
//! stream). Either side may send WebSocket pings; the plugin pings every
//! stream every 30 s (a client must answer them, as WebSocket libraries do).

use serde::{Deserialize, Serialize};

/// `kubectl exec`.
pub const EXEC_PATH: &str = "/stream/exec";
/// `kubectl attach`.
pub const ATTACH_PATH: &str = "/stream/attach";
/// `kubectl port-forward` (one WebSocket per TCP connection).
pub const PORT_FORWARD_PATH: &str = "/stream/portforward";
/// The largest WebSocket message (payload bytes, channel byte included)
/// either side sends or accepts.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The WebSocket subprotocol of exec and attach.
pub const EXEC_PROTOCOL: &str = "v5.channel.k8s.io";

/// Channel bytes of [`EXEC_PROTOCOL`] (the first byte of each binary message).
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// The final `metav1.Status` (JSON).
    pub const ERROR: u8 = 3;
    /// A [`super::TerminalSize`] (JSON).
    pub const RESIZE: u8 = 4;
    /// Followed by the channel being closed.
    pub const CLOSE: u8 = 255;
}

/// The local pod a stream is about, and the virtual node it is bound to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamTarget {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The virtual node (`spec.nodeName`): with the principal, the caller.
    pub node: String,
}

/// Query of [`EXEC_PATH`] and [`ATTACH_PATH`]: `namespace`, `name`, `uid`,
/// `node`, `container`, `command` (repeated, one per argv element; ignored by
/// attach), `stdin`, `stdout`, `stderr`, `tty` (`true`/`1` or absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecQuery {
    pub target: StreamTarget,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Query of [`PORT_FORWARD_PATH`]: the target's fields and `port`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortForwardQuery {
    pub target: StreamTarget,
    pub port: u16,
}

/// A query that names no pod, or a value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("query parameter {0} is required")]
    Missing(&'static str),
    #[error("query parameter {0}={1:?} is not valid")]
    Invalid(&'static str, String),
}

// Hand-written rather than serde: axum's Query (serde_urlencoded) supports
// neither repeated keys (`command`) nor booleans inside a flattened struct.
impl StreamTarget {
    fn push(&self, q: &mut form_urlencoded::Serializer<'_, String>) {
        q.append_pair("namespace", &self.namespace)
            .append_pair("name", &self.name)
            .append_pair("uid", &self.uid)
            .append_pair("node", &self.node);
    }

    fn take(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        Ok(StreamTarget {
            namespace: required(pairs, "namespace")?,
            name: required(pairs, "name")?,
            uid: required(pairs, "uid")?,
            node: required(pairs, "node")?,
        })
    }
}

fn pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn required(pairs: &[(String, String)], key: &'static str) -> Result<String, QueryError> {
    first(pairs, key)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or(QueryError::Missing(key))
}

fn flag(pairs: &[(String, String)], key: &'static str) -> Result<bool, QueryError> {
    match first(pairs, key) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(QueryError::Invalid(key, v.to_string())),
    }
}

impl ExecQuery {
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        self.target.push(&mut q);
        q.append_pair("container", &self.container);
        for c in &self.command {
            q.append_pair("command", c);
        }
        for (k, v) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            if v {
                q.append_pair(k, "true");
            }
        }
        q.finish()
    }

    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let p = pairs(query);
        Ok(ExecQuery {
            target: StreamTarget::take(&p)?,
            container: required(&p, "container")?,
            command: p
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag(&p, "stdin")?,
            stdout: flag(&p, "stdout")?,
            stderr: flag(&p, "stderr")?,
            tty: flag(&p, "tty")?,
        })
    }
}

impl PortForwardQuery {
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        self.target.push(&mut q);
        q.append_pair("port", &self.port.to_string());
        q.finish()
    }

    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let p = pairs(query);
        let port = required(&p, "port")?;
        Ok(PortForwardQuery {
            target: StreamTarget::take(&p)?,
            port: port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or(QueryError::Invalid("port", port))?,
        })
    }
}

/// A terminal resize (the kubelet's `remotecommand.TerminalSize` JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> StreamTarget {
        StreamTarget {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u-1".into(),
            node: "vk".into(),
        }
    }

    #[test]
    fn exec_query_round_trips_repeated_commands() {
        let q = ExecQuery {
            target: target(),
            container: "c".into(),
            command: vec!["sh".into(), "-c".into(), "echo a&b=c".into()],
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        };
        assert_eq!(ExecQuery::parse(&q.to_query()), Ok(q));
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        assert_eq!(
            ExecQuery::parse("namespace=ns&name=web&uid=u&node=vk"),
            Err(QueryError::Missing("container"))
        );
        assert_eq!(
            PortForwardQuery::parse("namespace=ns&name=web&uid=u&node=vk&port=0"),
            Err(QueryError::Invalid("port", "0".into()))
        );
        let pf = PortForwardQuery {
            target: target(),
            port: 8080,
        };
        assert_eq!(PortForwardQuery::parse(&pf.to_query()), Ok(pf));
    }
}
