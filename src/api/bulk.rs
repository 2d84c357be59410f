//! `POST /Bulk` (RFC 7644 §3.7): many writes in one request, each answered as its own request
//! would be.
//!
//! The envelope and the references are the pure core's (`scim::bulk`); here each operation runs
//! through the very handlers of `POST/PUT/PATCH/DELETE /Users|/Groups` (`api::resources`), with
//! the operation's `version` as `If-Match`, so it validates, writes, waits for the quorum and
//! answers exactly as a single request does. Operations run one after another, in order, within
//! the request's own admission slot and `http.request_timeout_ms`; the body is limited by
//! `scim.bulk_max_payload_bytes` and the count by `scim.bulk_max_operations` (413 beyond either).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Map, Value};

use super::{base_url, read_json, resources, scim_response, ApiError, AppState, ScimJson, Tenant};
use crate::scim::bulk::{self, BulkIds, Method, Operation, BULK_RESPONSE_SCHEMA};
use crate::scim::ScimError;

/// The largest body one operation's answer may have to be read back (a group's answer lists at
/// most `scim.max_members_per_page` members).
const MAX_ANSWER_BYTES: usize = 64 << 20;

pub async fn bulk(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let limit = state.config.scim.bulk_max_payload_bytes;
    let body = read_json(request, &state, limit, |limit| {
        format!("the bulk request exceeds maxPayloadSize ({limit} bytes)")
    })
    .await?;
    let request = bulk::parse_request(&body, state.config.scim.bulk_max_operations)?;
    let base = base_url(&state, &headers);
    let mut ids = BulkIds::new(&request);
    let mut answers = Vec::with_capacity(request.operations.len());
    let mut errors = 0usize;
    for (index, op) in request.operations.iter().enumerate() {
        let entry = match op {
            Err(failed) => {
                let mut e = Map::new();
                if let Some(m) = &failed.method {
                    e.insert("method".into(), json!(m));
                }
                if let Some(b) = &failed.bulk_id {
                    e.insert("bulkId".into(), json!(b));
                }
                failure(e, &failed.error)
            }
            Ok(op) => run(&state, &tenant, &headers, &base, &mut ids, index, op).await,
        };
        if entry["status"]
            .as_str()
            .and_then(|s| s.parse::<u16>().ok())
            .is_none_or(|s| s >= 400)
        {
            errors += 1;
        }
        answers.push(entry);
        if request.fail_on_errors.is_some_and(|n| errors >= n) {
            break;
        }
    }
    Ok(scim_response(
        StatusCode::OK,
        &json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": answers}),
    ))
}

/// Run one well-formed operation and describe its outcome as a BulkResponse entry.
async fn run(
    state: &Arc<AppState>,
    tenant: &Tenant,
    headers: &HeaderMap,
    base: &str,
    ids: &mut BulkIds,
    index: usize,
    op: &Operation,
) -> Value {
    let mut entry = Map::new();
    entry.insert("method".into(), json!(op.method.as_str()));
    if let Some(b) = &op.bulk_id {
        entry.insert("bulkId".into(), json!(b));
    }
    let op = match ids.resolve(index, op) {
        Ok(op) => op,
        Err(e) => {
            if let Some(b) = &op.bulk_id {
                ids.failed(b);
            }
            return failure(entry, &e);
        }
    };
    let response = dispatch(state, tenant, headers, &op).await;
    let status = response.status();
    let location = header_text(&response, header::LOCATION);
    let version = header_text(&response, header::ETAG);
    let body = match axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(b) if b.is_empty() => Value::Null,
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let id = op
        .id
        .clone()
        .or_else(|| body["id"].as_str().map(str::to_string));
    if let Some(b) = &op.bulk_id {
        match (&id, status.is_success()) {
            (Some(id), true) => ids.created(b, id),
            _ => ids.failed(b),
        }
    }
    let location = location
        .or_else(|| body["meta"]["location"].as_str().map(str::to_string))
        .or_else(|| id.map(|id| format!("{base}/{}/{id}", op.kind.endpoint())));
    if let Some(l) = location {
        entry.insert("location".into(), json!(l));
    }
    if let Some(v) = version {
        entry.insert("version".into(), json!(v));
    }
    entry.insert("status".into(), json!(status.as_u16().to_string()));
    if !status.is_success() {
        entry.insert("response".into(), body);
    }
    Value::Object(entry)
}

/// Call the single-resource handler the operation stands for.
async fn dispatch(
    state: &Arc<AppState>,
    tenant: &Tenant,
    headers: &HeaderMap,
    op: &Operation,
) -> Response {
    let mut headers = headers.clone();
    for h in [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(h);
    }
    if let Some(v) = op.version.as_deref() {
        match HeaderValue::from_str(v) {
            Ok(v) => {
                headers.insert(header::IF_MATCH, v);
            }
            Err(_) => {
                return ApiError(ScimError::InvalidValue(
                    "'version' is not a valid ETag".into(),
                ))
                .into_response()
            }
        }
    }
    let s = State(state.clone());
    let t = Extension(tenant.clone());
    let data = ScimJson(op.data.clone().unwrap_or(Value::Null));
    let id = Path(op.id.clone().unwrap_or_default());
    let q = RawQuery(None);
    let result = match op.method {
        Method::Post => resources::create(s, t, headers, q, data, op.kind).await,
        Method::Put => resources::replace(s, t, headers, id, q, data, op.kind).await,
        Method::Patch => resources::patch_one(s, t, headers, id, q, data, op.kind).await,
        Method::Delete => resources::delete(s, t, headers, id, op.kind).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// An entry for an operation that failed before reaching a handler.
fn failure(mut entry: Map<String, Value>, error: &ScimError) -> Value {
    entry.insert("status".into(), json!(error.status().to_string()));
    entry.insert("response".into(), error.to_json());
    Value::Object(entry)
}

fn header_text(response: &Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
