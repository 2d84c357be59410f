//! SCIM errors (RFC 7644 §3.12): one typed enum that knows its HTTP status and `scimType`.
//!
//! Every 4xx/5xx the service answers is built from a [`ScimError`], so a client always gets
//! `schemas`, `status`, `scimType` (where one applies) and `detail`, never a bare text body.

use serde_json::{json, Value};

/// The URN of the SCIM error message schema.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A SCIM protocol error. The variant fixes the status and `scimType`; the string is the
/// human-readable `detail`, which should name the offending attribute, path or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScimError {
    /// 400 `invalidFilter`: the filter syntax was invalid or the filter was not supported.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// 400 `invalidPath`: a PATCH path (or `sortBy`/`attributes`) is malformed or names nothing.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// 400 `invalidSyntax`: the request body is not parseable or violates the schema's structure.
    #[error("invalid syntax: {0}")]
    InvalidSyntax(String),
    /// 400 `invalidValue`: a required value is missing or a value has the wrong type.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// 400 `mutability`: the request tried to change an immutable or read-only attribute.
    #[error("mutability: {0}")]
    Mutability(String),
    /// 400 `noTarget`: a PATCH path with a value filter matched nothing where a match is required.
    #[error("no target: {0}")]
    NoTarget(String),
    /// 400 `tooMany`: the request would return or touch more than a configured limit allows.
    #[error("too many: {0}")]
    TooMany(String),
    /// 400 `invalidCursor` (RFC 9865): the cursor was not issued for this query, or was changed.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// 400 `expiredCursor` (RFC 9865): the cursor is older than the cursor timeout.
    #[error("expired cursor: {0}")]
    ExpiredCursor(String),
    /// 400 `invalidCount` (RFC 9865): a cursor page's `count` is not a positive integer.
    #[error("invalid count: {0}")]
    InvalidCount(String),
    /// 400 without a `scimType`, for bad query parameters that fit no other type.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401: no or unknown bearer token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 404: unknown resource, id or endpoint.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405: the endpoint exists but not for this method.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// 409 `uniqueness`: a unique attribute (userName) is already taken by another resource.
    #[error("uniqueness: {0}")]
    Uniqueness(String),
    /// 409 without a `scimType`: the request conflicts with the state it depends on (a bulk
    /// operation's `bulkId` reference that cannot be resolved, RFC 7644 §3.7.2).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 412: `If-Match` did not match the current version.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// 408: the client did not send its request (body) within the configured time.
    #[error("request timeout: {0}")]
    RequestTimeout(String),
    /// 413: the body is larger than the configured limit.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// 503: overloaded, or a dependency (storage, quorum) is unavailable; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected storage failure. The detail never leaks internals.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ScimError {
    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        use ScimError::*;
        match self {
            InvalidFilter(_) | InvalidPath(_) | InvalidSyntax(_) | InvalidValue(_)
            | Mutability(_) | NoTarget(_) | TooMany(_) | InvalidCursor(_) | ExpiredCursor(_)
            | InvalidCount(_) | BadRequest(_) => 400,
            Unauthorized(_) => 401,
            NotFound(_) => 404,
            MethodNotAllowed(_) => 405,
            Uniqueness(_) | Conflict(_) => 409,
            PreconditionFailed(_) => 412,
            RequestTimeout(_) => 408,
            PayloadTooLarge(_) => 413,
            UnsupportedMediaType(_) => 415,
            Unavailable(_) => 503,
            Internal(_) => 500,
        }
    }

    /// The RFC 7644 `scimType`, where one applies.
    pub fn scim_type(&self) -> Option<&'static str> {
        use ScimError::*;
        Some(match self {
            InvalidFilter(_) => "invalidFilter",
            InvalidPath(_) => "invalidPath",
            InvalidSyntax(_) => "invalidSyntax",
            InvalidValue(_) => "invalidValue",
            Mutability(_) => "mutability",
            NoTarget(_) => "noTarget",
            TooMany(_) => "tooMany",
            InvalidCursor(_) => "invalidCursor",
            ExpiredCursor(_) => "expiredCursor",
            InvalidCount(_) => "invalidCount",
            Uniqueness(_) => "uniqueness",
            _ => return None,
        })
    }

    /// The `detail` text.
    pub fn detail(&self) -> &str {
        use ScimError::*;
        match self {
            InvalidFilter(d)
            | InvalidPath(d)
            | InvalidSyntax(d)
            | InvalidValue(d)
            | Mutability(d)
            | NoTarget(d)
            | TooMany(d)
            | InvalidCursor(d)
            | ExpiredCursor(d)
            | InvalidCount(d)
            | BadRequest(d)
            | Unauthorized(d)
            | NotFound(d)
            | MethodNotAllowed(d)
            | Uniqueness(d)
            | Conflict(d)
            | PreconditionFailed(d)
            | PayloadTooLarge(d)
            | UnsupportedMediaType(d)
            | Unavailable(d)
            | RequestTimeout(d)
            | Internal(d) => d,
        }
    }

    /// The SCIM error body. `status` is a string, as RFC 7644 §3.12 shows it.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status().to_string(),
            "detail": self.detail(),
        });
        if let Some(t) = self.scim_type() {
            body["scimType"] = json!(t);
        }
        body
    }
}

/// Shorthand for results in the SCIM core.
pub type ScimResult<T> = Result<T, ScimError>;
