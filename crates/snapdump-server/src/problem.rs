//! Errors as HTTP responses: RFC 7807 `application/problem+json`, as dotnet-monitor answers.
//!
//! Client mistakes keep their 4xx and say what was wrong; internal failures become a generic
//! 500 whose cause goes to the log, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One RFC 7807 problem: `type`, `title`, `status`, `detail`, plus a stable `code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    /// A short stable name (the engine's `Error::name()` where there is one).
    pub code: &'static str,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            code,
        }
    }

    /// 400: the request was wrong; `detail` says how.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 500: logs `error` and tells the client only that something failed inside.
    pub fn internal(error: &dyn std::fmt::Display) -> Problem {
        tracing::error!("internal error: {error}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; its log has the details",
        )
    }

    /// 401, with the `WWW-Authenticate` challenge added by [`IntoResponse`].
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API needs an API key: send `Authorization: Bearer <key>` \
             (`snapdump generatekey` makes one)",
        )
    }

    /// The problem for an engine error met before any byte of a dump was sent.
    pub fn from_engine(error: &snapdump::Error) -> Problem {
        use snapdump::Error as E;
        let status = match error {
            E::NoSuchProcess { .. }
            | E::NoProcessNamed { .. }
            | E::AmbiguousName { .. }
            | E::Zombie { .. }
            | E::KernelThread { .. }
            | E::SelfDump { .. } => StatusCode::BAD_REQUEST,
            E::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            E::AlreadyTraced { .. } | E::TargetExited { .. } => StatusCode::CONFLICT,
            E::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
            E::InsufficientSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::OutputDirMissing { .. }
            | E::OutputNotWritable { .. }
            | E::OutputExists { .. }
            | E::Ptrace { .. }
            | E::Snapshot { .. }
            | E::Io { .. }
            | E::Parse { .. } => return Problem::internal(error),
        };
        Problem::new(status, error.name(), error.to_string())
    }

    /// The `type` URI: the RFC 9110 section of the status, as ASP.NET does.
    fn type_uri(&self) -> String {
        let section = match self.status.as_u16() {
            400 => "15.5.1",
            401 => "15.5.2",
            403 => "15.5.4",
            404 => "15.5.5",
            409 => "15.5.10",
            413 => "15.5.14",
            500 => "15.6.1",
            503 => "15.6.4",
            507 => return "https://tools.ietf.org/html/rfc4918#section-11.5".into(),
            429 => return "https://tools.ietf.org/html/rfc6585#section-4".into(),
            _ => return "about:blank".into(),
        };
        format!("https://tools.ietf.org/html/rfc9110#section-{section}")
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: self.type_uri(),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            json,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"snapdump\""),
            );
        }
        response
    }
}
