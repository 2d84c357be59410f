//! The admin API under `/admin/v1`: the conflict log and resource histories, for operators and
//! the dashboard. It reads across tenants, so it takes its own bearer tokens (`admin_tokens`);
//! a tenant's token is refused here, and an admin token is refused by the SCIM API.
//!
//! - `GET /admin/v1/conflicts?tenant=&rule=&resource=&since=&until=&startIndex=&count=`
//! - `GET /admin/v1/resources/{type}/{id}/history?tenant=`
//! - the live views of `admin_live` (cluster, pending offboardings, the conflict stream,
//!   resources, chart samples).
//!
//! Every route is a read (GET). Besides an admin bearer token, the dashboard's session cookie
//! is accepted (`dashboard::session`): SameSite=Strict, so another site's page cannot make the
//! browser send it, and a read changes nothing.
//!
//! Answers are plain `application/json`; errors are SCIM error bodies like everywhere else.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{blocking, not_allowed, not_found, token_hash, ApiError, AppState};
use crate::conflict::history::history;
use crate::conflict::{ConflictQuery, Rule};
use crate::scim::list;
use crate::scim::schema::ResourceKind;
use crate::scim::ScimError;

/// The admin router (nested under `/admin/v1`), behind admin-token authentication.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/conflicts", get(conflicts).fallback(not_allowed))
        .route(
            "/resources/{kind}/{id}/history",
            get(resource_history).fallback(not_allowed),
        )
        .route(
            "/conflicts/stream",
            get(super::admin_live::conflict_stream).fallback(not_allowed),
        )
        .route(
            "/cluster",
            get(super::admin_live::cluster_view).fallback(not_allowed),
        )
        .route(
            "/offboardings/pending",
            get(super::admin_live::pending_offboardings).fallback(not_allowed),
        )
        .route(
            "/resources/{kind}",
            get(super::admin_live::resource_search).fallback(not_allowed),
        )
        .route(
            "/resources/{kind}/{id}",
            get(super::admin_live::resource).fallback(not_allowed),
        )
        .route(
            "/samples",
            get(super::admin_live::samples).fallback(not_allowed),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, authenticate_admin))
}

/// An admin bearer token or a live dashboard session, else 401. Tenant tokens are not admin
/// tokens.
async fn authenticate_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let token = super::bearer_token(request.headers());
    if token.is_none() && state.dashboard.session(request.headers()).is_some() {
        return next.run(request).await;
    }
    let Some(token) = token else {
        return ApiError(ScimError::Unauthorized(
            "an admin bearer token is required".into(),
        ))
        .into_response();
    };
    if !state.admin_tokens.contains(&token_hash(&token)) {
        return ApiError(ScimError::Unauthorized(
            "not an admin token (tenant tokens are not accepted here)".into(),
        ))
        .into_response();
    }
    next.run(request).await
}

/// A query string as (name, value) pairs; each name at most once.
pub(super) fn params(
    raw: Option<String>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let Some(name) = known.iter().find(|n| n.eq_ignore_ascii_case(&k)) else {
            continue;
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(ScimError::BadRequest(format!(
                "query parameter '{k}' is given more than once"
            ))
            .into());
        }
        out.push((name.to_string(), v.into_owned()));
    }
    Ok(out)
}

/// The conflict query a request asks for, checked: paging as in SCIM lists (`startIndex` below
/// 1 means 1, `count` below 0 means 0, above `scim.max_page_size` is capped).
pub fn conflict_query(
    raw: Option<String>,
    default_count: usize,
    max_count: usize,
) -> Result<ConflictQuery, ApiError> {
    let mut q = ConflictQuery {
        start_index: 1,
        count: default_count.min(max_count),
        ..ConflictQuery::default()
    };
    let known = [
        "tenant",
        "rule",
        "resource",
        "since",
        "until",
        "startIndex",
        "count",
    ];
    for (name, value) in params(raw, &known)? {
        match name.as_str() {
            "tenant" => q.tenant = Some(value),
            "rule" => {
                q.rule = Some(Rule::parse(&value).ok_or_else(|| {
                    let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                    ScimError::InvalidFilter(format!(
                        "unknown rule {value:?}; rules are {}",
                        names.join(", ")
                    ))
                })?)
            }
            "resource" => q.resource_id = Some(value),
            "since" => q.since = Some(comparable_time("since", &value)?),
            "until" => q.until = Some(comparable_time("until", &value)?),
            "startIndex" => q.start_index = list::start_index(list::parse_int_text(&name, &value)?),
            _ => q.count = list::page_size(list::parse_int_text(&name, &value)?, max_count),
        }
    }
    Ok(q)
}

/// An RFC 3339 time as UTC with nine fractional digits: records carry RFC 3339 UTC times and
/// are filtered by comparing text, and with nine digits that comparison is the time order
/// whatever the number of digits a record's time has.
fn comparable_time(name: &str, text: &str) -> Result<String, ApiError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ScimError::InvalidFilter(format!(
                "'{name}' must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {text:?} ({e})"
            ))
        })?
        .to_offset(time::UtcOffset::UTC);
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    ))
}

pub(super) fn json_response(body: &Value) -> Response {
    let mut response =
        (StatusCode::OK, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /admin/v1/conflicts`: a page of the conflict log, oldest first.
async fn conflicts(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = conflict_query(
        raw,
        state.config.scim.default_page_size,
        state.config.scim.max_page_size,
    )?;
    let start_index = q.start_index;
    let (total, page) = blocking(&state, move |store| store.conflicts(&q)).await?;
    Ok(json_response(&json!({
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": page.len(),
        "Resources": page,
    })))
}

/// `Users`/`User`/`Groups`/`Group`, any case; a SCIM 404 otherwise.
pub(super) fn resource_kind(text: &str) -> Result<ResourceKind, ApiError> {
    resource_kind_of(text).ok_or_else(|| {
        ApiError(ScimError::NotFound(format!(
            "unknown resource type {text:?}; use Users or Groups"
        )))
    })
}

/// `Users`/`User`/`Groups`/`Group`, any case.
fn resource_kind_of(text: &str) -> Option<ResourceKind> {
    ResourceKind::ALL
        .into_iter()
        .find(|k| text.eq_ignore_ascii_case(k.name()) || text.eq_ignore_ascii_case(k.endpoint()))
}

/// Membership changes are not in a group's document (members are records of their own): their
/// history comes from the store's membership history, one entry per write. A write that also
/// changed the document (same region, same time) is one entry; the others are `update`s of
/// their own, in time order.
fn merge_member_history(
    entries: &mut Vec<crate::conflict::history::HistoryEntry>,
    members: Vec<crate::store::MemberHistory>,
) {
    use crate::conflict::history::{Action, HistoryEntry};
    for m in members {
        let at = crate::conflict::rfc3339_millis(m.at);
        let region = m.region;
        let mut attributes = m.paths;
        if m.more > 0 {
            attributes.push(format!("members (+{} more)", m.more));
        }
        match entries
            .iter_mut()
            .find(|e| e.at == at && e.region == region)
        {
            Some(e) => {
                e.attributes.extend(attributes);
                e.attributes.sort();
                e.attributes.dedup();
            }
            None => {
                attributes.sort();
                entries.push(HistoryEntry {
                    at,
                    region,
                    action: Action::Update,
                    attributes,
                    change: m.write,
                });
            }
        }
    }
    entries.sort_by(|a, b| a.at.cmp(&b.at));
}

/// `GET /admin/v1/resources/{type}/{id}/history?tenant=T`: every change of a resource, live or
/// deleted, oldest first. `tenant` is required: admin tokens act for no tenant of their own.
async fn resource_history(
    State(state): State<Arc<AppState>>,
    Path((kind_text, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let kind = resource_kind(&kind_text)?;
    let tenant = params(raw, &["tenant"])?
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ScimError::InvalidValue("query parameter 'tenant' is required".into()))?;
    let (t, i) = (tenant.clone(), id.clone());
    let entries = blocking(&state, move |store| {
        let Some(mut doc) = store.document(&t, kind, &i)? else {
            return Ok(None);
        };
        let mut entries = history(&mut doc);
        if kind == ResourceKind::Group {
            merge_member_history(&mut entries, store.member_history(&t, &i)?);
        }
        Ok(Some(entries))
    })
    .await?
    .ok_or_else(|| {
        ScimError::NotFound(format!("no {} {id:?} in tenant {tenant:?}", kind.name()))
    })?;
    Ok(json_response(&json!({
        "tenant": tenant,
        "resourceType": kind.name(),
        "id": id,
        "history": entries,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(raw: &str) -> Result<ConflictQuery, ScimError> {
        conflict_query(Some(raw.to_string()), 100, 1000).map_err(|e| e.0)
    }

    #[test]
    fn conflict_query_defaults_and_caps_paging() {
        let q = query("").unwrap();
        assert_eq!((q.start_index, q.count), (1, 100));
        let q = query("startIndex=0&count=5000").unwrap();
        assert_eq!((q.start_index, q.count), (1, 1000));
        let q = query("STARTINDEX=3&count=-2").unwrap();
        assert_eq!((q.start_index, q.count), (3, 0));
        assert!(matches!(query("count=ten"), Err(ScimError::BadRequest(_))));
        assert!(matches!(
            query("count=1&count=2"),
            Err(ScimError::BadRequest(_))
        ));
    }

    #[test]
    fn conflict_query_checks_rules_and_times() {
        let q = query("tenant=acme&rule=delete-wins&resource=u1&since=2025-01-31T13:00:00%2B01:00")
            .unwrap();
        assert_eq!(q.tenant.as_deref(), Some("acme"));
        assert_eq!(q.rule, Some(Rule::DeleteWins));
        assert_eq!(q.resource_id.as_deref(), Some("u1"));
        assert_eq!(q.since.as_deref(), Some("2025-01-31T12:00:00.000000000Z"));
        let err = query("rule=last-writer-wins").unwrap_err();
        assert!(matches!(err, ScimError::InvalidFilter(_)));
        assert!(err.detail().contains("sticky-deactivation"), "{err}");
        let err = query("until=yesterday").unwrap_err();
        assert!(matches!(err, ScimError::InvalidFilter(_)));
        assert!(err.detail().contains("until"), "{err}");
    }

    #[test]
    fn comparable_times_order_as_text_whatever_the_record_precision() {
        let since = comparable_time("since", "2025-01-31T12:00:00Z")
            .map_err(|e| e.0)
            .unwrap();
        // Records: RFC 3339 UTC with 0 to 9 fractional digits.
        for at in [
            "2025-01-31T12:00:00Z",
            "2025-01-31T12:00:00.5Z",
            "2025-01-31T12:00:00.000001Z",
        ] {
            assert!(at >= since.as_str(), "{at} is not before {since}");
        }
        assert!("2025-01-31T11:59:59.999Z" < since.as_str());
    }

    #[test]
    fn resource_types_are_case_insensitive_singular_or_plural() {
        assert_eq!(resource_kind_of("users"), Some(ResourceKind::User));
        assert_eq!(resource_kind_of("User"), Some(ResourceKind::User));
        assert_eq!(resource_kind_of("GROUPS"), Some(ResourceKind::Group));
        assert_eq!(resource_kind_of("roles"), None);
    }
}
