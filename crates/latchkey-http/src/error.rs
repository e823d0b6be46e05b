//! Error rendering. Every API family answers errors in the shape its generated clients parse:
//!
//! | family | paths | body |
//! |---|---|---|
//! | A nextAuth, own | `/servers/...`, everything else | `{"error": "<code>", "message": "<text>"}` |
//! | B Polario | `/auth/...` | `{"error": "<text>"}` |
//! | C NestJS | `/sessions...` | `{"statusCode": N, "message": "<text>", "error": "<reason>"}` |
//! | D Quatrix | `/session/...` | ErrorModel `{"msg": "<text>", "code": N, "details": {...}}` |
//!
//! The family of an error is the family of the path it answers, so extractor rejections, body
//! limits and unknown routes are rendered alike. Internal errors are logged with context and
//! answered opaquely.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::marker::PhantomData;

use serde_json::{json, Value};

use latchkey_core::Error;

/// The API family a path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    NextAuth,
    Polario,
    Nestjs,
    Quatrix,
    Own,
    /// latchkey's pages for people (`/login`, `/account`, `/logout`, `/admin`,
    /// `/admin/console/...`): errors are HTML pages.
    Page,
}

impl Family {
    pub fn of(path: &str) -> Family {
        if path == "/session" || path.starts_with("/session/") {
            Family::Quatrix
        } else if path == "/sessions" || path.starts_with("/sessions/") {
            Family::Nestjs
        } else if path.starts_with("/auth/") {
            Family::Polario
        } else if path.starts_with("/servers/") || path == "/servers" {
            Family::NextAuth
        } else if path == "/admin"
            || ["/login", "/account", "/logout", "/admin/console"]
                .iter()
                .any(|page| {
                    path.strip_prefix(page)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
        {
            Family::Page
        } else {
            Family::Own
        }
    }
}

/// ErrorModel `code` values of family D (documented in docs/api.md).
pub mod quatrix_code {
    pub const INVALID_REQUEST: i64 = 1;
    pub const BAD_CREDENTIALS: i64 = 2;
    pub const SESSION_INVALID: i64 = 3;
    pub const WRONG_STATE: i64 = 4;
    pub const NOT_FOUND: i64 = 5;
    pub const METHOD_NOT_ALLOWED: i64 = 6;
    pub const FORBIDDEN: i64 = 7;
    pub const CONFLICT: i64 = 8;
    pub const INTERNAL: i64 = 9;
    pub const CAPTCHA_REQUIRED: i64 = 11;
    pub const PAYLOAD_TOO_LARGE: i64 = 13;
    pub const HEADER_TOO_LARGE: i64 = 14;
    pub const RATE_LIMITED: i64 = 15;
    pub const OVERLOADED: i64 = 16;
}

/// An error answer: status, a stable machine code, a message for people, and extra headers.
#[derive(Debug)]
pub struct ApiError {
    pub family: Family,
    pub status: StatusCode,
    /// snake_case code of the own/nextAuth shape.
    pub code: &'static str,
    /// ErrorModel code of family D.
    pub quatrix_code: i64,
    pub message: String,
    pub details: Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(family: Family, status: StatusCode, message: impl Into<String>) -> Self {
        let (code, quatrix_code) = match status {
            StatusCode::BAD_REQUEST => ("invalid_request", quatrix_code::INVALID_REQUEST),
            StatusCode::UNAUTHORIZED => ("unauthorized", quatrix_code::BAD_CREDENTIALS),
            StatusCode::FORBIDDEN => ("forbidden", quatrix_code::FORBIDDEN),
            StatusCode::NOT_FOUND => ("not_found", quatrix_code::NOT_FOUND),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", quatrix_code::METHOD_NOT_ALLOWED)
            }
            StatusCode::CONFLICT => ("conflict", quatrix_code::CONFLICT),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", quatrix_code::PAYLOAD_TOO_LARGE),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                ("header_too_large", quatrix_code::HEADER_TOO_LARGE)
            }
            _ => ("internal", quatrix_code::INTERNAL),
        };
        Self {
            family,
            status,
            code,
            quatrix_code,
            message: message.into(),
            details: json!({}),
            headers: Vec::new(),
        }
    }

    pub fn with_codes(mut self, code: &'static str, quatrix_code: i64) -> Self {
        self.code = code;
        self.quatrix_code = quatrix_code;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// Renders a domain error in a family's shape.
    pub fn from_core(family: Family, e: Error) -> Self {
        use quatrix_code as q;
        match e {
            Error::Invalid(msg) => ApiError::new(family, StatusCode::BAD_REQUEST, msg),
            Error::BadCredentials => {
                ApiError::new(family, StatusCode::UNAUTHORIZED, "invalid credentials")
                    .with_codes("invalid_credentials", q::BAD_CREDENTIALS)
            }
            Error::SessionInvalid => ApiError::new(
                family,
                StatusCode::UNAUTHORIZED,
                "session is expired, revoked, or does not exist",
            )
            .with_codes("session_invalid", q::SESSION_INVALID),
            Error::WrongState(msg) => ApiError::new(family, StatusCode::UNAUTHORIZED, msg)
                .with_codes("wrong_session_state", q::WRONG_STATE),
            Error::CaptchaRequired { token, session_id } => ApiError::new(
                family,
                StatusCode::FORBIDDEN,
                "CAPTCHA required: fetch GET /session/captcha and answer POST /session/unblock-captcha",
            )
            .with_codes("captcha_required", q::CAPTCHA_REQUIRED)
            .with_details(json!({ "session_id": session_id }))
            .with_header(HeaderName::from_static("x-auth-token"), &token),
            Error::RefreshRejected => ApiError::new(
                family,
                StatusCode::RANGE_NOT_SATISFIABLE,
                "refresh token is invalid, expired, reused or revoked",
            )
            .with_codes("refresh_rejected", q::BAD_CREDENTIALS),
            Error::Forbidden(msg) => ApiError::new(family, StatusCode::FORBIDDEN, msg),
            Error::NotFound(msg) => ApiError::new(family, StatusCode::NOT_FOUND, msg),
            Error::Conflict(msg) => ApiError::new(family, StatusCode::CONFLICT, msg),
            Error::Gone(msg) => {
                let mut e = ApiError::new(family, StatusCode::GONE, msg);
                e.code = "gone";
                e
            }
            Error::RateLimited { retry_after } => ApiError::new(
                family,
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many logins from this address: retry after {retry_after} s"),
            )
            .with_codes("rate_limited", q::RATE_LIMITED)
            .with_header(header::RETRY_AFTER, &retry_after.to_string()),
            Error::Overloaded { retry_after } => ApiError::new(
                family,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many logins in progress: retry after {retry_after} s"),
            )
            .with_codes("overloaded", q::OVERLOADED)
            .with_header(header::RETRY_AFTER, &retry_after.to_string()),
            Error::Unavailable(msg) => {
                let mut e = ApiError::new(family, StatusCode::SERVICE_UNAVAILABLE, msg);
                e.code = "unavailable";
                e
            }
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                ApiError::new(family, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }

    fn body(&self) -> Value {
        match self.family {
            Family::Quatrix => json!({
                "msg": self.message,
                "code": self.quatrix_code,
                "details": self.details,
            }),
            Family::Polario => json!({ "error": self.message }),
            Family::Nestjs => json!({
                "statusCode": self.status.as_u16(),
                "message": self.message,
                "error": self.status.canonical_reason().unwrap_or("Error"),
            }),
            Family::NextAuth | Family::Own | Family::Page => json!({
                "error": self.code,
                "message": self.message,
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.family == Family::Page {
            let mut response = crate::pages::status_page(self.status, self.message);
            for (name, value) in self.headers {
                response.headers_mut().insert(name, value);
            }
            return response;
        }
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if self.status == StatusCode::UNAUTHORIZED && self.family == Family::Quatrix {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"latchkey\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// How one API family renders the core's errors: its handlers return
/// `Result<_, Failure<ThatFamily>>` and use `?` on core calls, so this is the one conversion
/// from a domain error to that family's answer.
pub trait Renders: 'static {
    const FAMILY: Family;

    fn render(e: Error) -> ApiError {
        ApiError::from_core(Self::FAMILY, e)
    }
}

/// A handler's error in family `F`'s shape.
pub struct Failure<F>(pub ApiError, PhantomData<fn() -> F>);

impl<F: Renders> From<Error> for Failure<F> {
    fn from(e: Error) -> Self {
        Failure(F::render(e), PhantomData)
    }
}

impl<F> From<ApiError> for Failure<F> {
    fn from(e: ApiError) -> Self {
        Failure(e, PhantomData)
    }
}

impl<F> std::fmt::Debug for Failure<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<F> IntoResponse for Failure<F> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::Family;

    #[test]
    fn the_console_is_pages_and_the_admin_api_is_latchkeys_own() {
        for page in [
            "/admin",
            "/admin/console/users",
            "/login",
            "/account/password",
        ] {
            assert_eq!(Family::of(page), Family::Page, "{page}");
        }
        for own in [
            "/admin/servers",
            "/admin/apikeys",
            "/adminx",
            "/admin/consolex",
        ] {
            assert_eq!(Family::of(own), Family::Own, "{own}");
        }
    }
}
