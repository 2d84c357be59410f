//! Discovery endpoints (RFC 7644 §4): `/ServiceProviderConfig`, `/Schemas`, `/ResourceTypes`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{base_url, scim_response, ApiError, AppState};
use crate::scim::list::list_response;
use crate::scim::schema;
use crate::scim::ScimError;

pub async fn service_provider_config(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&state, &headers);
    let scim = &state.config.scim;
    let caps = schema::Capabilities {
        max_results: scim.max_page_size,
        default_page_size: scim.default_page_size.min(scim.max_page_size),
        cursor_timeout_secs: scim.cursor_timeout_secs,
        bulk_max_operations: scim.bulk_max_operations,
        bulk_max_payload: scim.bulk_max_payload_bytes,
    };
    let mut body = schema::service_provider_config(&base, &caps);
    // With `[oauth]`, client credentials are a second way to a bearer token.
    if state.oauth.is_some() {
        if let Some(schemes) = body["authenticationSchemes"].as_array_mut() {
            schemes.push(super::oauth::authentication_scheme(&base));
        }
    }
    // RFC 9967 §4: the events this server issues, when some tenant keeps a feed. Events are
    // delivered by poll or push; no request is answered asynchronously.
    if state.config.tenants.values().any(|t| t.events.is_some()) {
        body["securityEvents"] = serde_json::json!({
            "asyncRequest": "none",
            "eventUris": crate::events::set::EVENT_URIS,
        });
    }
    scim_response(StatusCode::OK, &body)
}

pub async fn schemas(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let docs = schema::schema_documents(&base_url(&state, &headers));
    scim_response(StatusCode::OK, &list_response(docs.len(), 1, docs))
}

pub async fn schema(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    find(
        schema::schema_documents(&base_url(&state, &headers)),
        &id,
        "schema",
    )
}

pub async fn resource_types(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let docs = schema::resource_type_documents(&base_url(&state, &headers));
    scim_response(StatusCode::OK, &list_response(docs.len(), 1, docs))
}

pub async fn resource_type(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    find(
        schema::resource_type_documents(&base_url(&state, &headers)),
        &id,
        "resource type",
    )
}

fn find(docs: Vec<Value>, id: &str, what: &str) -> Result<Response, ApiError> {
    docs.into_iter()
        .find(|d| d["id"].as_str() == Some(id))
        .map(|d| scim_response(StatusCode::OK, &d))
        .ok_or_else(|| ApiError(ScimError::NotFound(format!("no {what} {id:?}"))))
}
