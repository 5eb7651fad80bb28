//! The `v5.channel.k8s.io` framing of exec and attach
//! ([`offload_wire::stream`]): what a client message means, and the
//! messages the plugin sends. Pure; the bridge in `exec.rs` does the I/O.

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use offload_wire::stream::{TerminalSize, channel};

/// What one binary message from the client asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// Bytes for the process's stdin.
    Stdin(Bytes),
    /// The terminal's new size.
    Resize(TerminalSize),
    /// The end of stdin (`CLOSE` + `STDIN`).
    CloseStdin,
    /// Nothing to do: an empty message, or the close of a channel the
    /// client does not write (the kubelet ignores those too).
    Nothing,
}

/// A client message that breaks the framing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("channel {0} cannot be written by the client")]
    Channel(u8),
    #[error("resize message is not a terminal size: {0}")]
    Resize(String),
}

/// The meaning of one binary message from the client.
pub fn parse_client(mut msg: Bytes) -> Result<ClientFrame, FrameError> {
    if msg.is_empty() {
        return Ok(ClientFrame::Nothing);
    }
    let ch = msg.split_to(1)[0];
    match ch {
        channel::STDIN if msg.is_empty() => Ok(ClientFrame::Nothing),
        channel::STDIN => Ok(ClientFrame::Stdin(msg)),
        channel::RESIZE => serde_json::from_slice(&msg)
            .map(ClientFrame::Resize)
            .map_err(|e| FrameError::Resize(e.to_string())),
        channel::CLOSE => match msg.first() {
            Some(&channel::STDIN) => Ok(ClientFrame::CloseStdin),
            _ => Ok(ClientFrame::Nothing),
        },
        other => Err(FrameError::Channel(other)),
    }
}

/// A message carrying `payload` on `ch` (stdout or stderr).
pub fn data(ch: u8, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(ch);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// The final `ERROR` message carrying `status`.
pub fn status(status: &Status) -> Bytes {
    // Serialising a Status (strings, numbers, vectors) cannot fail; an
    // empty object would still end the stream.
    let json = serde_json::to_vec(status).unwrap_or_else(|_| b"{}".to_vec());
    data(channel::ERROR, &json)
}

/// `Success`: what the kubelet sends when the process exited 0.
pub fn success() -> Status {
    Status {
        status: Some("Success".into()),
        ..Default::default()
    }
}

/// A `Failure` with `message` (and the kubelet's `reason`, e.g.
/// `InternalError`, `NotFound`, `BadRequest`) and the HTTP `code`.
pub fn failure(message: impl Into<String>, reason: &str, code: u16) -> Status {
    Status {
        status: Some("Failure".into()),
        message: Some(message.into()),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        code: (code != 0).then_some(i32::from(code)),
        ..Default::default()
    }
}

/// The exit code a status reports: 0 for `Success`, the `ExitCode` cause
/// of a `NonZeroExitCode` failure, `None` otherwise (for metrics and logs).
pub fn exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    if status.reason.as_deref() != Some("NonZeroExitCode") {
        return None;
    }
    status
        .details
        .as_ref()
        .and_then(|d: &StatusDetails| d.causes.as_ref())
        .and_then(|c: &Vec<StatusCause>| {
            c.iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref()?.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_map_to_actions() {
        let p = |b: &'static [u8]| parse_client(Bytes::from_static(b));
        assert_eq!(
            p(b"\x00ls\n"),
            Ok(ClientFrame::Stdin(Bytes::from_static(b"ls\n")))
        );
        assert_eq!(p(b"\x00"), Ok(ClientFrame::Nothing));
        assert_eq!(p(b""), Ok(ClientFrame::Nothing));
        assert_eq!(
            p(br#"{"Width":80,"Height":24}"#.as_slice())
                .err()
                .map(|e| e.to_string()),
            Some("channel 123 cannot be written by the client".into())
        );
        assert_eq!(
            p(b"\x04{\"Width\":80,\"Height\":24}"),
            Ok(ClientFrame::Resize(TerminalSize {
                width: 80,
                height: 24
            }))
        );
        assert!(matches!(
            p(b"\x04{\"Width\":-1}"),
            Err(FrameError::Resize(_))
        ));
        assert_eq!(p(b"\xff\x00"), Ok(ClientFrame::CloseStdin));
        // Closing stdout (which the client does not write) or nothing: ignored.
        assert_eq!(p(b"\xff\x01"), Ok(ClientFrame::Nothing));
        assert_eq!(p(b"\xff"), Ok(ClientFrame::Nothing));
        assert_eq!(p(b"\x01out"), Err(FrameError::Channel(channel::STDOUT)));
        assert_eq!(p(b"\x03{}"), Err(FrameError::Channel(channel::ERROR)));
    }

    #[test]
    fn server_messages_carry_their_channel() {
        assert_eq!(&data(channel::STDERR, b"oops")[..], b"\x02oops");
        let s = status(&success());
        assert_eq!(s[0], channel::ERROR);
        let back: Status = serde_json::from_slice(&s[1..]).expect("status JSON");
        assert_eq!(back.status.as_deref(), Some("Success"));
        let f = failure("container \"x\" not found", "NotFound", 404);
        let json: serde_json::Value = serde_json::from_slice(&status(&f)[1..]).expect("json");
        assert_eq!(json["status"], "Failure");
        assert_eq!(json["reason"], "NotFound");
        assert_eq!(json["code"], 404);
        assert_eq!(json["message"], "container \"x\" not found");
    }

    #[test]
    fn exit_codes_are_read_as_the_kubelet_writes_them() {
        // What a kubelet sends for `sh -c 'exit 3'`.
        let remote: Status = serde_json::from_str(
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
        )
        .expect("kubelet status");
        assert_eq!(exit_code(&remote), Some(3));
        assert_eq!(exit_code(&success()), Some(0));
        assert_eq!(exit_code(&failure("x", "InternalError", 500)), None);
        // Forwarded as received: the cause survives a round trip.
        let again: Status = serde_json::from_slice(&status(&remote)[1..]).expect("json");
        assert_eq!(exit_code(&again), Some(3));
        assert_eq!(again.message, remote.message);
    }
}
