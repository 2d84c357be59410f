//! The HTTP side of OAuth 2.0 client credentials: `POST /oauth/token` (RFC 6749 §4.4, outside
//! the SCIM bearer-token layer) and the answer to a bearer JWT the SCIM API refuses
//! (RFC 6750 §3). The rules are in `crate::oauth`; this is the mapping to HTTP.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::oauth::{self, OAuthError, TokenError};
use crate::scim::ScimError;

/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/oauth/token";

/// `/oauth/token`, for a region with `[oauth]`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(TOKEN_PATH, post(token).fallback(token_method_not_allowed))
}

/// Issue an access token to an authenticated client.
async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(service) = state.oauth.as_ref() else {
        return ApiError(ScimError::NotFound("no such endpoint".into())).into_response();
    };
    let (parts, body) = request.into_parts();
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let authorization = header_text(header::AUTHORIZATION);
    let limit = state.config.http.max_body_bytes;
    let wait = std::time::Duration::from_millis(state.config.http.body_read_timeout_ms);
    let body = match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return refused(
                &state,
                OAuthError::InvalidRequest("the request body exceeds http.max_body_bytes"),
            )
        }
        Err(_) => {
            state.metrics.body_timeouts.inc();
            return refused(
                &state,
                OAuthError::InvalidRequest(
                    "the request body did not arrive within http.body_read_timeout_ms",
                ),
            );
        }
    };
    let issued = oauth::request::parse(content_type.as_deref(), authorization.as_deref(), &body)
        .and_then(|r| service.issue(&r, oauth::unix_now()));
    match issued {
        Ok(issued) => {
            state.metrics.oauth_tokens_issued.inc();
            tracing::info!(tenant = %issued.tenant, "issued an access token");
            oauth_json(
                StatusCode::OK,
                &oauth::request::token_response(&issued.access_token, issued.expires_in),
            )
        }
        Err(e) => refused(&state, e),
    }
}

async fn token_method_not_allowed(State(state): State<Arc<AppState>>) -> Response {
    let mut r = refused(
        &state,
        OAuthError::InvalidRequest("the token endpoint takes POST"),
    );
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// An error answer of the token endpoint (RFC 6749 §5.2), counted by its code.
fn refused(state: &AppState, e: OAuthError) -> Response {
    state
        .metrics
        .oauth_token_requests_refused
        .get_or_create(&super::metrics::ReasonLabels {
            reason: e.code().to_string(),
        })
        .inc();
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = oauth_json(status, &e.to_json());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"geoscim\", charset=\"UTF-8\""),
        );
    }
    r
}

/// A token endpoint answer: JSON, never cached (RFC 6749 §5.1).
fn oauth_json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// The 401 for a bearer JWT the SCIM API refuses: a SCIM error body, and
/// `WWW-Authenticate: Bearer error="invalid_token", error_description="…"` (RFC 6750 §3.1),
/// counted by reason.
pub fn invalid_token(state: &AppState, e: TokenError) -> Response {
    state
        .metrics
        .oauth_access_tokens_refused
        .get_or_create(&super::metrics::ReasonLabels {
            reason: e.reason().to_string(),
        })
        .inc();
    let mut r = ApiError(ScimError::Unauthorized(e.to_string())).into_response();
    // The descriptions are fixed ASCII without quotes (a unit test checks), so this parses.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{e}\""
    )) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The `authenticationSchemes` entry of `/ServiceProviderConfig` for client credentials;
/// `scim_base` is the SCIM base URL (`…/scim/v2`).
pub fn authentication_scheme(scim_base: &str) -> Value {
    let root = scim_base.strip_suffix("/scim/v2").unwrap_or(scim_base);
    serde_json::json!({
        "type": "oauth2",
        "name": "OAuth 2.0 client credentials",
        "description": format!(
            "Short-lived JWT access tokens from POST {root}{TOKEN_PATH} \
             (grant_type=client_credentials; client id and secret by HTTP Basic or in the \
             form body), sent as bearer tokens (RFC 6750)."
        ),
        "specUri": "https://www.rfc-editor.org/info/rfc6749",
        "primary": false,
    })
}
