//! The HTTP error of the plugin API: a status code and a JSON body
//! `{"error": "<code>", "message": "<what is wrong>"}`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    logs::LogOptsError, naming::NamespaceRefusal, policy::Violation, remote::RemoteError,
    translate::TranslateError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Of a policy refusal: every violation (field, rule, message), so a
    /// client can show them without parsing the message.
    pub violations: Vec<Violation>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    violations: &'a [Violation],
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            violations: Vec::new(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 503: the caller should retry later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// 500: a bug of the plugin; details are in its log, not in the answer.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// Why a request failed (the error code, e.g. `missing_object`), left on the
/// response for the access log, which sees only the response: its WARN line
/// then says why, not only the status. Not the message: a message may quote
/// the request body, which may hold secret values.
#[derive(Clone, Copy, Debug)]
pub struct FailureReason(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(Body {
                error: self.code,
                message: &self.message,
                violations: &self.violations,
            }),
        )
            .into_response();
        r.extensions_mut().insert(FailureReason(self.code));
        r
    }
}

impl From<TranslateError> for ApiError {
    fn from(e: TranslateError) -> Self {
        let (status, code) = match &e {
            TranslateError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_pod"),
            TranslateError::Missing { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "missing_object"),
            TranslateError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            TranslateError::Policy(_) => (StatusCode::FORBIDDEN, "policy"),
        };
        let mut err = Self::new(status, code, e.to_string());
        if let TranslateError::Policy(v) = e {
            err.violations = v;
        }
        err
    }
}

impl From<NamespaceRefusal> for ApiError {
    fn from(e: NamespaceRefusal) -> Self {
        Self::new(StatusCode::FORBIDDEN, "namespace_refused", e.to_string())
    }
}

impl From<LogOptsError> for ApiError {
    fn from(e: LogOptsError) -> Self {
        let status = match e {
            LogOptsError::UnknownContainer { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_log_request", e.to_string())
    }
}

impl From<RemoteError> for ApiError {
    fn from(e: RemoteError) -> Self {
        let (status, code) = match &e {
            RemoteError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            RemoteError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            RemoteError::NamespaceNotReady(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "namespace_not_ready")
            }
            // 401/403 from the remote apiserver are the plugin's own missing
            // credentials or RBAC, not the caller's fault.
            RemoteError::Rejected { status, .. } if *status == 401 || *status == 403 => {
                (StatusCode::BAD_GATEWAY, "remote_forbidden")
            }
            RemoteError::Rejected { status, .. } if (400..500).contains(status) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "remote_rejected")
            }
            RemoteError::Rejected { .. } | RemoteError::Kube(_) => {
                (StatusCode::BAD_GATEWAY, "remote_error")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl ApiError {
    /// A remote failure of a log request, answered as the kubelet answers
    /// `containerLogs` (the local apiserver keeps the text only of a 400 or
    /// a 500): the remote apiserver's refusal (a container waiting to start,
    /// `previous` of a container that never restarted) is 400 with its
    /// message as it is; a remote pod that is gone is 404, as the kubelet
    /// says of a pod it does not know; anything else (the plugin's own
    /// credentials refused, the remote cluster unreachable) is 500.
    pub fn log_failure(e: RemoteError, remote_pod: &str, local_pod: &str) -> Self {
        let localized = |m: &str| crate::logs::localized_message(m, remote_pod, local_pod);
        let answered = match &e {
            RemoteError::Rejected {
                status, message, ..
            } => Some((*status, message.as_str())),
            RemoteError::Kube(kube::Error::Api(s)) => Some((s.code, s.message.as_str())),
            _ => None,
        };
        match (&e, answered) {
            (RemoteError::NotFound(m), _) => Self::not_found(localized(m)),
            (_, Some((404, m))) => Self::not_found(localized(m)),
            (_, Some((status, m)))
                if (400..500).contains(&status) && status != 401 && status != 403 =>
            {
                Self::new(StatusCode::BAD_REQUEST, "remote_rejected", localized(m))
            }
            (_, Some((_, m))) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "remote_error",
                localized(m),
            ),
            (_, None) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "remote_error",
                e.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, message: &str) -> RemoteError {
        RemoteError::Rejected {
            what: "logs of ns/web-uid".into(),
            status,
            message: message.into(),
        }
    }

    #[test]
    fn log_failures_are_answered_as_the_kubelet_does() {
        let e = ApiError::log_failure(
            rejected(
                400,
                "container \"c\" in pod \"web-uid\" is waiting to start: ErrImagePull",
            ),
            "web-uid",
            "web",
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "container \"c\" in pod \"web\" is waiting to start: ErrImagePull"
        );
        // The plugin's own RBAC is not the caller's fault.
        let e = ApiError::log_failure(rejected(403, "forbidden"), "web-uid", "web");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::log_failure(rejected(503, "unavailable"), "web-uid", "web");
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "unavailable")
        );
        let e = ApiError::log_failure(
            RemoteError::NotFound("pods \"web-uid\" not found".into()),
            "web-uid",
            "web",
        );
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
